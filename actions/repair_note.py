import time

from dialog_action import DialogAction, progress, reports_errors
from lib.healing import brakes
from lib.planner import validate_deployment_name


class RepairNoteAction(DialogAction):
    """dialog.repair_note: remember a host the sensor reported down or back, for the brakes'
    overlap check (every group, also those no repair rule covers)."""

    @reports_errors
    def run(self, deployment, host, state, group=None, fault=None, service=None):
        validate_deployment_name(deployment)
        repairs = brakes.load(self.action_service, deployment)
        if state == "down":
            brakes.note_down(repairs, host, group, fault, int(time.time()))
            changed = True
        elif service:
            changed = False  # one service back: the host was not down as a whole
        else:
            changed = brakes.note_recovered(repairs, host)
        brakes.save(self.action_service, deployment, repairs)
        progress("%s: %s noted %s" % (deployment, host, state))
        return {"deployment": deployment, "host": host, "state": state, "changed": changed,
                "down": sorted(repairs["down"])}
