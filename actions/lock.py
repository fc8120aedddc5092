import time

from dialog_action import DialogAction, progress, reports_errors
from lib import operation_lock
from lib.planner import validate_deployment_name


class LockAction(DialogAction):
    """dialog.lock: take the deployment's operation lock for `owner` (an execution id), or
    re-enter it when that owner holds it; refused, naming the running operation, otherwise."""

    @reports_errors
    def run(self, deployment, owner, operation, detail=None):
        validate_deployment_name(deployment)
        holder = operation_lock.acquire(self.action_service, deployment, owner, operation,
                                        time.time(), detail=detail)
        progress("%s: locked for %s (execution %s)" % (deployment, holder["operation"], owner))
        return {"deployment": deployment, "key": operation_lock.lock_key(deployment),
                "owner": owner, "operation": holder["operation"], "since": holder["since"],
                "ttl": operation_lock.LOCK_TTL}
