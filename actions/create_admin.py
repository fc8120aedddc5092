from dialog_action import DialogAction, progress, reports_errors
from lib.deployment_secrets import datastore_key
from lib.operations import first_admin


class CreateAdminAction(DialogAction):
    """dialog.create_admin: the first Dialog user with admin rights; idempotent."""

    @reports_errors
    def run(self, deployment, hosts, tier=None, with_storage=None, profile=None):
        settings = self.profile(profile)
        context = self.deployment_context(settings, deployment, hosts, tier, with_storage)
        outcome = first_admin(context, self.ssh_options(settings), progress=progress)
        # The password stays in the datastore: the result says where, never what.
        outcome["credentials"] = datastore_key(deployment)
        return outcome
