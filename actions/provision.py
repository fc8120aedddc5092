from dialog_action import DialogAction, reports_errors
from lib.cloud.preflight import PreflightFailed, preflight, render
from lib.providers.base import summarize
from lib.removal_guard import check_removals
from lib.tables import render_changes, render_hosts


class ProvisionAction(DialogAction):
    """dialog.provision: reconcile the provider to the plan (Terraform's plan and apply)."""

    @reports_errors
    def run(self, tier, provider=None, region=None, deployment="dialog", with_storage=False,
            cassandra_nodes=None, storage_nodes=None, dialog_servers=None,
            droplet_class="standard", admin_networks=None, profile=None, dry_run=False,
            remove_hosts=[]):  # pylint: disable=W0102  # the metadata's default, never mutated
        settings, plan = self.plan(profile, tier, provider=provider, region=region,
                                   admin_networks=admin_networks, deployment=deployment,
                                   with_storage=with_storage, cassandra_nodes=cassandra_nodes,
                                   storage_nodes=storage_nodes, dialog_servers=dialog_servers,
                                   droplet_class=droplet_class)
        driver = self.driver(settings, plan["provider"], plan["region"])
        # Every setting known to be wrong is reported before the first mutating call.
        report = preflight(settings, plan, driver)
        print(render(report))
        print()
        if not report["ok"]:
            raise PreflightFailed(report)
        if plan["provider"] != "static":
            # Static hosts are the operator's: that driver deletes nothing. Elsewhere a host
            # the plan drops is deleted with its disks, so a stateful one must be allowed
            # (lib.removal_guard); the driver checks plan["remove_hosts"] again before it
            # deletes. A dry run shows the refusal too.
            removal = check_removals(plan, driver.inventory(plan["deployment"]),
                                     self.record(plan["deployment"]),
                                     remove_hosts=remove_hosts)
            plan["remove_hosts"] = removal["remove_hosts"]
        if plan["provider"] == "static":
            # The static driver logs in to check hardware and set the firewall: with this
            # deployment's pinned host keys, like every other login.
            driver.ssh = self.ssh_options(settings, plan["deployment"])
        changes = driver.reconcile(plan, dry_run=dry_run)
        hosts = driver.inventory(plan["deployment"])
        if not dry_run:
            # The files bucket's key is made here, once, and kept in
            # the datastore; the bootstraps that run in parallel only read it.
            self.files_storage(settings, plan["deployment"], hosts, plan["with_storage"],
                               create=True)
        print(render_changes(changes, dry_run=dry_run))
        print()
        print(render_hosts(hosts))
        return {"deployment": plan["deployment"], "tier": plan["tier"],
                "provider": plan["provider"], "region": plan["region"], "dry_run": dry_run,
                "changes": changes, "summary": summarize(changes), "hosts": hosts}
