from dialog_action import DialogAction, reports_errors
from lib.planner import validate_deployment_name
from lib.tables import render_hosts


class InventoryAction(DialogAction):
    """dialog.inventory: the deployment's hosts as the provider reports them."""

    @reports_errors
    def run(self, deployment="dialog", provider=None, region=None, profile=None):
        validate_deployment_name(deployment)
        settings, provider, region = self.target(profile, provider, region)
        driver = self.driver(settings, provider, region)
        hosts = driver.inventory(deployment)
        print(render_hosts(hosts))
        return {"deployment": deployment, "provider": provider, "region": driver.region,
                "hosts": hosts}
