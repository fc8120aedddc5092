from dialog_action import DialogAction, reports_errors
from lib.catalog import default_catalog
from lib.cloud.failover import target_of
from lib.planner import validate_region


class FenceAction(DialogAction):
    """dialog.fence: make a host unable to serve (stopped or powered off), waited for."""

    @reports_errors
    def run(self, deployment, host, profile=None):
        settings = self.profile(profile)
        provider, region = target_of(self.record(deployment), settings)
        region = validate_region(default_catalog(), provider, region)
        result = self.driver(settings, provider, region).fence(deployment, host)
        print("%s fenced: %s" % (host, result["method"]))
        return dict(result, deployment=deployment)
