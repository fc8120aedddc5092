from dialog_action import DialogAction, progress, reports_errors
from lib.operations import cassandra_decommission


class CassandraDecommissionAction(DialogAction):
    """dialog.cassandra_decommission: `nodetool decommission` on one Cassandra host."""

    @reports_errors
    def run(self, deployment, host, hosts, tier=None, profile=None):
        settings = self.profile(profile)
        context = self.deployment_context(settings, deployment, hosts, tier)
        return cassandra_decommission(context, self.ssh_options(settings), host, progress=progress)
