from dialog_action import DialogAction, progress, reports_errors
from lib.operations import bootstrap_one


class BootstrapHostAction(DialogAction):
    """dialog.bootstrap_host: make one host of the deployment run its roles, healthy."""

    @reports_errors
    def run(self, deployment, host, hosts, tier=None, with_storage=None, profile=None,
            health_timeout=600, ssh_timeout=600, joining=None):
        settings = self.profile(profile)
        context = self.deployment_context(settings, deployment, hosts, tier, with_storage)
        context["joining"] = joining or []
        return bootstrap_one(context, host, self.ssh_options(settings),
                             health_timeout=health_timeout, ssh_wait=ssh_timeout,
                             progress=progress)
