import time

from dialog_action import DialogAction, progress, reports_errors
from lib.deployment_record import record_scaled
from lib.planner import validate_deployment_name


class RecordScaledAction(DialogAction):
    """dialog.record_scaled: note in the deployment's record that a scale operation completed
    (the autoscaler's cooldowns run from it, not from its requests)."""

    @reports_errors
    def run(self, deployment, role, direction, before, after):
        validate_deployment_name(deployment)
        entry = record_scaled(self.action_service, deployment, role, direction, before, after,
                              int(time.time()))
        progress("%s: %s %d -> %d completed, recorded" % (deployment, role, before, after))
        return {"deployment": deployment, "role": role, "last_scaled": entry}
