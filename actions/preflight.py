from dialog_action import DialogAction, reports_errors
from lib.cloud.preflight import PreflightFailed, preflight, render


class PreflightAction(DialogAction):
    """dialog.preflight: every setting a deploy would trip over, found with read-only calls."""

    @reports_errors
    def run(self, tier, provider=None, region=None, deployment="dialog", with_storage=False,
            cassandra_nodes=None, storage_nodes=None, dialog_servers=None,
            droplet_class="standard", admin_networks=None, profile=None):
        settings, plan = self.plan(profile, tier, provider=provider, region=region,
                                   admin_networks=admin_networks, deployment=deployment,
                                   with_storage=with_storage, cassandra_nodes=cassandra_nodes,
                                   storage_nodes=storage_nodes, dialog_servers=dialog_servers,
                                   droplet_class=droplet_class)
        report = preflight(settings, plan, self.driver(settings, plan["provider"],
                                                       plan["region"]))
        print(render(report))
        report.update(deployment=plan["deployment"], tier=plan["tier"],
                      provider=plan["provider"], region=plan["region"])
        if not report["ok"]:
            raise PreflightFailed(report)
        return report
