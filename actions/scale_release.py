from dialog_action import DialogAction, reports_errors
from lib import scale_lock


class ScaleReleaseAction(DialogAction):
    """dialog.scale_release: free the deployment's scale lock (every end of dialog.scale)."""

    @reports_errors
    def run(self, deployment):
        released = scale_lock.release(self.action_service, deployment)
        return {"deployment": deployment, "released": released}
