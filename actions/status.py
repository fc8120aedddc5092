from dialog_action import DialogAction, reports_errors
from lib.deployment_record import unknown_deployment
from lib.deployment_secrets import datastore_key
from lib.errors import ResourceFailed
from lib.operations import check_all, endpoints
from lib.planner import validate_deployment_name
from lib.tables import render_status


class StatusAction(DialogAction):
    """dialog.status: the inventory with every service's health, as JSON and as a table."""

    @reports_errors
    def run(self, deployment="dialog", provider=None, region=None, profile=None, hosts=None,
            tier=None, with_storage=None, fail_when_unhealthy=False):
        validate_deployment_name(deployment)
        record = self.record(deployment)
        if not record and hosts is None and tier is None:
            # Nothing to check it against: a mistyped name, or one never deployed. Said before
            # any provider call, with the names that are known.
            raise unknown_deployment(self.action_service, deployment)
        settings, provider, region = self.target(profile or record.get("profile"),
                                                 provider or record.get("provider"),
                                                 region or record.get("region"))
        inventory = None
        if hosts is None:
            hosts = inventory = self.driver(settings, provider, region).inventory(deployment)
        context = self.deployment_context(settings, deployment, hosts,
                                          tier or record.get("tier"), with_storage,
                                          inventory=inventory)
        checked = check_all(context, self.ssh_options(settings))
        status = {"deployment": deployment, "provider": provider,
                  "healthy": bool(checked) and all(h["healthy"] for h in checked),
                  "hosts": checked, "endpoints": endpoints(hosts),
                  "admin_credentials": datastore_key(deployment)}
        table = render_status(status)
        print(table)
        if fail_when_unhealthy and not status["healthy"]:
            failing = [h["name"] for h in checked if not h["healthy"]] or ["no hosts"]
            raise ResourceFailed("deployment %s is not healthy: %s"
                                 % (deployment, ", ".join(failing)), details=status)
        return status
