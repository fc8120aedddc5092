from dialog_action import DialogAction, progress, reports_errors
from lib import operation_lock
from lib.planner import validate_deployment_name


class UnlockAction(DialogAction):
    """dialog.unlock: free the deployment's operation lock if `owner` holds it. A lock held by
    another operation is left alone and named; that is no failure (the workflows release on
    every way they end, also after losing the lock)."""

    @reports_errors
    def run(self, deployment, owner):
        validate_deployment_name(deployment)
        released = operation_lock.release(self.action_service, deployment, owner)
        holder = None
        if not released:
            holder = operation_lock.holder_of(self.action_service, deployment)
        if released:
            progress("%s: lock released" % deployment)
        elif holder:
            progress("%s: lock left alone: %s" % (deployment,
                                                  operation_lock.describe(deployment, holder)))
        else:
            progress("%s: the lock was already free" % deployment)
        return {"deployment": deployment, "released": released, "held_by": holder}
