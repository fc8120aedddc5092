import time

from dialog_action import DialogAction, progress, reports_errors
from lib.healing import brakes
from lib.planner import validate_deployment_name


class RepairDoneAction(DialogAction):
    """dialog.repair_done: record how a repair ended; a failure halts its role."""

    @reports_errors
    def run(self, deployment, role, host, status, detail=None, execution=None):
        validate_deployment_name(deployment)
        state = brakes.load(self.action_service, deployment)
        message = brakes.finish(state, deployment, role, host, status, detail, int(time.time()),
                                execution=execution)
        brakes.save(self.action_service, deployment, state)
        progress(message)
        return {"deployment": deployment, "role": role, "host": host, "status": status,
                "halted": sorted(state["halted"]), "message": message}
