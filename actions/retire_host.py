from dialog_action import DialogAction, reports_errors
from lib.catalog import default_catalog
from lib.cloud.failover import target_of
from lib.hosts import host_keys
from lib.planner import validate_region


class RetireHostAction(DialogAction):
    """dialog.retire_host: terminate a host, keep its data volumes aside, so that the next
    dialog.deploy creates it again (same name and index) with new empty volumes."""

    @reports_errors
    def run(self, deployment, host, profile=None):
        settings = self.profile(profile)
        provider, region = target_of(self.record(deployment), settings)
        region = validate_region(default_catalog(), provider, region)
        result = self.driver(settings, provider, region).retire(deployment, host)
        # The replacement is a new machine with a new host key, made by the pack itself.
        result["host_key_forgotten"] = host_keys.forget_host(self.action_service, deployment,
                                                             host)
        print("%s retired (instance %s); volumes kept aside: %s"
              % (host, result["instance"], ", ".join(result["volumes_kept"]) or "none"))
        return dict(result, deployment=deployment)
