from dialog_action import DialogAction, reports_errors
from lib.planner import build_plan
from lib.tables import render_plan


class PlanAction(DialogAction):
    """dialog.plan: what a tier would deploy, as JSON and as a table on stdout."""

    @reports_errors
    def run(self, tier, provider=None, region=None, deployment="dialog", with_storage=False,
            cassandra_nodes=None, storage_nodes=None, droplet_class="standard",
            admin_networks=None, profile=None):
        settings = self.profile(profile)
        provider = provider or settings.get("provider") or "aws"
        if not region and settings.get("provider") == provider:
            region = settings.get("region")
        if admin_networks is None:
            admin_networks = settings.get("admin_networks")
        plan = build_plan(tier, provider=provider, region=region, deployment=deployment,
                          with_storage=with_storage, cassandra_nodes=cassandra_nodes,
                          storage_nodes=storage_nodes, droplet_class=droplet_class,
                          admin_networks=admin_networks)
        print(render_plan(plan))
        return plan
