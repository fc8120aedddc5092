from dialog_action import DialogAction, progress, reports_errors
from lib import operations
from lib.removal_guard import check_removals


class RemovalsAction(DialogAction):
    """dialog.removals: which hosts a deploy's plan drops, refused unless each may go
    (lib.removal_guard); with allow_removal, what dialog.deploy must drain or decommission
    before it provisions, checked the way dialog.scale checks a scale-in."""

    @reports_errors
    # remove_hosts=[]: the metadata's default (never mutated here).
    def run(self, plan, profile=None, allow_removal=False, remove_hosts=[],  # pylint: disable=W0102
            dry_run=False):
        deployment = plan["deployment"]
        settings = self.profile(profile)
        driver = self.driver(settings, plan["provider"], plan["region"])
        hosts = driver.inventory(deployment) if plan["provider"] != "static" else []
        removal = check_removals(plan, hosts, self.record(deployment),
                                 allow_removal=allow_removal,
                                 remove_hosts=remove_hosts)
        for name in removal["decommission"]:
            progress("%s: decommissioned before it is deleted" % name)
        for name in removal["drain"]:
            progress("%s: drained from the proxies before it is deleted" % name)
        # Each decommission sees the ring without the nodes that left before it.
        gone, ring_of = set(), {}
        for name in removal["decommission"]:
            ring_of[name] = [h for h in hosts if h["name"] not in gone]
            gone.add(name)
        if (removal["decommission"] or removal["drain"]) and not dry_run:
            context = self.deployment_context(settings, deployment, hosts, plan["tier"],
                                              plan.get("with_storage"), inventory=hosts)
            ssh = self.ssh_options(settings)
            if removal["drain"]:
                operations.dialog_servers_healthy(context, ssh)
            for name in removal["decommission"]:
                check = operations.cassandra_decommission_check(
                    dict(context, hosts=ring_of[name]), ssh, name)
                progress("%s: decommission check: %d survivors, each with room for %d bytes"
                         % (name, check["survivors"], check["share_bytes"]))
        proxies = [h["name"] for h in removal["survivors"] if "proxy" in h["roles"]]
        return dict(removal, deployment=deployment, hosts=hosts, ring_of=ring_of,
                    proxies=proxies if removal["drain"] else [])
