from dialog_action import DialogAction, reports_errors
from lib.cluster.cassandra_replace import check_replacing
from lib.tables import render_plan


class PlanAction(DialogAction):
    """dialog.plan: what a tier would deploy, as JSON and as a table on stdout."""

    @reports_errors
    def run(self, tier, provider=None, region=None, deployment="dialog", with_storage=False,
            cassandra_nodes=None, storage_nodes=None, dialog_servers=None,
            droplet_class="standard", admin_networks=None, profile=None, replacing=None):
        _, plan = self.plan(profile, tier, provider=provider, region=region,
                            admin_networks=admin_networks, deployment=deployment,
                            with_storage=with_storage, cassandra_nodes=cassandra_nodes,
                            storage_nodes=storage_nodes, dialog_servers=dialog_servers,
                            droplet_class=droplet_class)
        check_replacing(replacing, plan)
        print(render_plan(plan))
        return plan
