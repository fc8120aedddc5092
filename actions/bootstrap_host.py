import time

from dialog_action import DialogAction, progress, reports_errors
from lib.hosts.start_order import RunGate
from lib.operations import bootstrap_one
from lib.stages import rolling_after


class BootstrapHostAction(DialogAction):
    """dialog.bootstrap_host: make one host of the deployment run its roles, healthy."""

    @reports_errors
    def run(self, deployment, host, hosts, tier=None, with_storage=None, profile=None,
            health_timeout=600, ssh_timeout=600, joining=None, run_id=None, needs=None,
            dependency_timeout=3600, replacing=None):
        started = time.monotonic()
        settings = self.profile(profile)
        context = self.deployment_context(settings, deployment, hosts, tier, with_storage,
                                          files=True)
        context["joining"] = joining or []
        context["replacing"] = replacing or {}
        gate = None
        if run_id:
            # The markers are shared by every bootstrap_host of the run: outside the action's
            # own datastore namespace (local=False). A dialog server, proxy or web host that
            # restarts waits for the hosts before it in its group (lib.stages.rolling_after).
            after = rolling_after(context["hosts"])
            gate = RunGate(lambda key: self.action_service.get_value(key, local=False),
                           lambda key, value, ttl: self.action_service.set_value(
                               key, value, ttl=ttl, local=False),
                           deployment, run_id, host, needs, dependency_timeout, progress,
                           after=after.get(host), rolls=host in after)
        return bootstrap_one(context, host, self.ssh_options(settings),
                             health_timeout=health_timeout, ssh_wait=ssh_timeout,
                             progress=progress, gate=gate, started=started)
