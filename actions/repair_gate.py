import time

from dialog_action import DialogAction, progress, reports_errors
from lib import operation_lock
from lib.deployment_record import unknown_deployment
from lib.healing import brakes
from lib.planner import validate_deployment_name

# What the nested dialog.deploy of a repair needs from the deployment's record (the counts
# come from the record too, dialog.deploy reads them there).
DEPLOY_FIELDS = ("tier", "provider", "region", "with_storage", "droplet_class")

# Faults the sensor finds in the same poll are dispatched together, but each reaches its gate
# through its own rule and workflow: waited for before deciding, so the gate sees them all.
SETTLE_SECONDS = 5.0


def healing_settings(config):
    healing = (config or {}).get("healing") or {}
    return (int(healing.get("repair_window", brakes.DEFAULT_WINDOW)),
            float(healing.get("overlap_settle", SETTLE_SECONDS)))


def postgres_names(record, deployment):
    count = (record.get("groups") or {}).get("postgres") or 0
    return ["%s-postgres-%d" % (deployment, index) for index in range(1, count + 1)]


def postgres_primary(record, deployment):
    """The record's Postgres primary (dialog.postgres_promote sets it), else the lowest-index
    postgres host, as every deployment starts; None without Postgres hosts."""
    names = postgres_names(record, deployment)
    named = record.get("postgres_primary")
    return named if named in names else (names[0] if names else None)


class RepairGateAction(DialogAction):
    """dialog.repair_gate: may this repair start? The brakes of lib/healing/brakes.py over the
    deployment's repairs state; the result's message is the chat text."""

    @reports_errors
    def run(self, deployment, role, host, fault, execution=None, busy=False):
        validate_deployment_name(deployment)
        record = self.record(deployment)
        if not record:
            raise unknown_deployment(self.action_service, deployment)
        window, settle = healing_settings(self.config)
        state = brakes.load(self.action_service, deployment)
        brakes.note_down(state, host, role, fault, int(time.time()))
        brakes.save(self.action_service, deployment, state)
        if settle > 0:
            progress("%s: %s noted down; waiting %.0f s for faults reported with it"
                     % (deployment, host, settle))
            time.sleep(settle)
        state = brakes.load(self.action_service, deployment)
        if busy:
            holder = operation_lock.holder_of(self.action_service, deployment)
            busy = operation_lock.describe(deployment, holder) if holder else (
                "the lock was refused, and is free now")
        decision = brakes.decide(state, deployment, role, host, fault, int(time.time()),
                                 window, execution=execution, busy=busy or None)
        brakes.save(self.action_service, deployment, state)
        progress(decision["message"])
        deploy = {name: record.get(name) for name in DEPLOY_FIELDS if record.get(name) is not None}
        if record.get("profile"):
            deploy["profile"] = record["profile"]
        primary = postgres_primary(record, deployment)
        return dict(decision, deployment=deployment, role=role, host=host, deploy=deploy,
                    postgres_primary=primary, postgres_standby=next(
                        (name for name in postgres_names(record, deployment) if name != primary),
                        None))
