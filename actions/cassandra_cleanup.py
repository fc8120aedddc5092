from dialog_action import DialogAction, progress, reports_errors
from lib import pending_cleanup
from lib.operations import cassandra_cleanup


class CassandraCleanupAction(DialogAction):
    """dialog.cassandra_cleanup: `nodetool cleanup` on one Cassandra host of a deployment."""

    @reports_errors
    def run(self, deployment, host, hosts, tier=None, profile=None):
        settings = self.profile(profile)
        context = self.deployment_context(settings, deployment, hosts, tier)
        result = cassandra_cleanup(context, self.ssh_options(settings), host, progress=progress)
        # Owed since the join (dialog.cassandra_join recorded it): paid now.
        result["still_owed"] = pending_cleanup.done(self.action_service, deployment, host)
        return result
