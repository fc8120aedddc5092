from dialog_action import DialogAction, progress, reports_errors
from lib.deployment_secrets import datastore_key
from lib.operations import cassandra_replication, first_admin


class CreateAdminAction(DialogAction):
    """dialog.create_admin: the first Dialog user with admin rights, then the replication of
    Dialog's Cassandra keyspaces (RF min(3, nodes), NetworkTopologyStrategy); idempotent."""

    @reports_errors
    def run(self, deployment, hosts, tier=None, with_storage=None, profile=None):
        settings = self.profile(profile)
        context = self.deployment_context(settings, deployment, hosts, tier, with_storage)
        ssh = self.ssh_options(settings)
        outcome = first_admin(context, ssh, progress=progress)
        # The dialog servers made their keyspaces when they started (with the journal's
        # default RF 1): now the ring is complete, they get RF min(3, nodes) and a repair.
        outcome["replication"] = cassandra_replication(context, ssh, progress=progress)
        # The password stays in the datastore: the result says where, never what.
        outcome["credentials"] = datastore_key(deployment)
        return outcome
