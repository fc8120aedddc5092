from dialog_action import DialogAction, progress, reports_errors
from lib import operations, pending_cleanup


class CassandraJoinAction(DialogAction):
    """dialog.cassandra_join: wait, with progress, until a node dialog.scale started reads UN,
    then record the older nodes' cleanup as owed (lib.pending_cleanup) before any runs."""

    @reports_errors
    def run(self, deployment, host, hosts, tier=None, profile=None, older=None,
            join_timeout=43200):
        settings = self.profile(profile)
        context = self.deployment_context(settings, deployment, hosts, tier)
        kwargs = {"timeout": float(join_timeout)} if join_timeout else {}
        joined = operations.cassandra_join_wait(context, self.ssh_options(settings), host,
                                                progress=progress, **kwargs)
        owed = [name for name in older or () if name != host]
        if owed:
            joined["pending_cleanup"] = pending_cleanup.record(self.action_service, deployment,
                                                               owed)
            progress("cleanup owed on %s (datastore key %s)"
                     % (", ".join(owed), pending_cleanup.pending_key(deployment)))
        return joined
