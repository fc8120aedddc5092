import time

from dialog_action import DialogAction, progress, reports_errors
from lib.healing import brakes
from lib.planner import validate_deployment_name


class RepairResetAction(DialogAction):
    """dialog.repair_reset: a human lifts the halt of automatic repairs (one role, or all)."""

    @reports_errors
    def run(self, deployment, role=None):
        validate_deployment_name(deployment)
        state = brakes.load(self.action_service, deployment)
        lifted = brakes.reset(state, role, int(time.time()))
        brakes.save(self.action_service, deployment, state)
        what = role or "every role"
        message = ("%s: automatic repairs of %s allowed again%s." % (
            deployment, what, " (lifted: %s)" % "; ".join(
                "%s: %s" % item for item in sorted(lifted.items())) if lifted else
            " (none was halted; the repair window restarts)"))
        progress(message)
        return {"deployment": deployment, "role": role, "lifted": lifted,
                "halted": state["halted"], "message": message}
