"""The brakes on automatic repairs (actions/lib/healing/brakes.py), through the real actions
dialog.repair_gate, dialog.repair_done, dialog.repair_reset and dialog.repair_note over one
datastore: overlapping faults, a failed repair, the repair window, the reset."""

import json

import local_runner
from lib.deployment_record import record_of, save_record
from lib.healing import brakes
from lib.planner import build_plan
from repair_done import RepairDoneAction
from repair_gate import RepairGateAction
from repair_note import RepairNoteAction
from repair_reset import RepairResetAction

CONFIG = {"healing": {"repair_window": 1800, "overlap_settle": 0}}


class Repairs(object):
    """The four actions as StackStorm runs them, over one in-memory datastore holding the
    record of a small-failover deployment "chat"."""

    def __init__(self, config=CONFIG):
        self.store, self.config = local_runner.MemoryDatastore(), config
        save_record(self.service(), record_of(build_plan("small-failover", "aws",
                                                         deployment="chat"), "default"))

    def service(self):
        return local_runner.LocalActionService("dialog", "Repairs", self.store)

    def _run(self, cls, **params):
        status, value = cls(config=self.config, action_service=self.service()).run(**params)
        assert status, value
        return dict(value)

    def gate(self, host, role, execution="e-" + "1" * 22, **params):
        return self._run(RepairGateAction, deployment="chat", role=role, host=host,
                         fault="unreachable for 3 polls", execution=execution, **params)

    def done(self, host, role, status, detail="", execution="e-" + "1" * 22):
        return self._run(RepairDoneAction, deployment="chat", role=role, host=host,
                         status=status, detail=detail, execution=execution)

    def reset(self, role=None):
        return self._run(RepairResetAction, deployment="chat", role=role)

    def note(self, host, state, **params):
        return self._run(RepairNoteAction, deployment="chat", host=host, state=state, **params)

    def state(self):
        return json.loads(self.service().get_value(brakes.repairs_key("chat"), local=False))


def test_two_overlapping_faults_make_one_announcement_and_no_repair():
    repairs = Repairs()
    # Both hosts die in the same poll: the sensor's rule notes the second before the first
    # one's gate decides (the gate waits healing.overlap_settle for exactly this).
    repairs.note("chat-postgres-1", "down", group="postgres", fault="unreachable")
    first = repairs.gate("chat-proxy-1", "proxy", execution="a" * 24)
    second = repairs.gate("chat-postgres-1", "postgres", execution="b" * 24)
    assert not first["proceed"] and not second["proceed"]
    assert [g["announce"] for g in (first, second)] == [True, False]
    assert first["reason"] == "overlap"
    message = first["message"]
    assert "chat-proxy-1" in message and "chat-postgres-1" in message
    assert "st2 run dialog.repair_reset deployment=chat" in message
    state = repairs.state()
    assert state["active"] is None and "*" in state["halted"]
    # Halted: a third fault later is refused too, announced once.
    third = repairs.gate("chat-dialog-server-2", "dialog-server", execution="c" * 24)
    again = repairs.gate("chat-dialog-server-2", "dialog-server", execution="d" * 24)
    assert (third["proceed"], third["announce"], again["announce"]) == (False, True, False)


def test_a_fault_while_another_repair_runs_halts_everything_and_the_running_one_finishes():
    repairs = Repairs()
    running = repairs.gate("chat-proxy-1", "proxy", execution="a" * 24)
    assert running["proceed"] and running["reason"] == "proceed"
    other = repairs.gate("chat-dialog-server-1", "dialog-server", execution="b" * 24)
    assert (other["proceed"], other["reason"], other["announce"]) == (False, "overlap", True)
    assert "while the repair of chat-proxy-1" in other["message"]
    repairs.done("chat-proxy-1", "proxy", "succeeded", execution="a" * 24)
    state = repairs.state()
    assert state["active"] is None and "*" in state["halted"]
    assert list(state["down"]) == ["chat-dialog-server-1"]


def test_a_failed_repair_halts_its_role_and_is_not_retried_in_a_loop():
    repairs = Repairs()
    assert repairs.gate("chat-cassandra-2", "cassandra")["proceed"]
    failed = repairs.done("chat-cassandra-2", "cassandra", "failed",
                          detail="redeploy: cassandra ring not ready")
    assert failed["halted"] == ["cassandra"]
    assert "FAILED" in failed["message"]
    assert "st2 run dialog.repair_reset deployment=chat role=cassandra" in failed["message"]
    # The role's next fault, even hours later (past the window), is refused and announced once.
    repairs.note("chat-cassandra-2", "up")
    second = repairs.gate("chat-cassandra-3", "cassandra", execution="f" * 24)
    repeat = repairs.gate("chat-cassandra-3", "cassandra", execution="9" * 24)
    assert (second["proceed"], second["reason"], second["announce"]) == (False, "halted", True)
    assert (repeat["proceed"], repeat["announce"]) == (False, False)
    assert "halted" in second["message"] and "dialog.repair_reset" in second["message"]
    assert repairs.state()["active"] is None


def test_a_second_repair_of_a_role_inside_the_window_is_refused_until_a_reset():
    repairs = Repairs()
    assert repairs.gate("chat-dialog-server-1", "dialog-server")["proceed"]
    repairs.done("chat-dialog-server-1", "dialog-server", "succeeded")
    refused = repairs.gate("chat-dialog-server-2", "dialog-server", execution="2" * 24)
    assert (refused["proceed"], refused["reason"]) == (False, "window")
    assert "1800 s" in refused["message"]
    assert "role=dialog-server" in refused["message"]
    # Another role is not held back by this one's window.
    repairs.note("chat-dialog-server-2", "up")
    assert repairs.gate("chat-proxy-2", "proxy", execution="3" * 24)["proceed"]
    repairs.done("chat-proxy-2", "proxy", "succeeded", execution="3" * 24)
    lifted = repairs.reset("dialog-server")
    assert "allowed again" in lifted["message"]
    assert repairs.gate("chat-dialog-server-2", "dialog-server", execution="4" * 24)["proceed"]


def test_outside_the_window_a_role_is_repaired_again():
    repairs = Repairs({"healing": {"repair_window": 0, "overlap_settle": 0}})
    assert repairs.gate("chat-dialog-server-1", "dialog-server")["proceed"]
    repairs.done("chat-dialog-server-1", "dialog-server", "succeeded")
    assert repairs.gate("chat-dialog-server-3", "dialog-server", execution="5" * 24)["proceed"]


def test_a_recovered_host_no_longer_counts_as_an_overlapping_fault():
    repairs = Repairs()
    repairs.note("chat-web-1", "down", group="web", fault="unreachable")
    # One service of it back is not the host back.
    repairs.note("chat-web-1", "up", service="nginx")
    assert list(repairs.state()["down"]) == ["chat-web-1"]
    repairs.note("chat-web-1", "up")
    assert repairs.gate("chat-proxy-1", "proxy")["proceed"]


def test_a_full_reset_lifts_the_overlap_halt_and_forgets_the_faults():
    repairs = Repairs()
    repairs.note("chat-web-1", "down", group="web", fault="unreachable")
    assert repairs.gate("chat-proxy-1", "proxy")["reason"] == "overlap"
    result = repairs.reset()
    assert "*" in result["lifted"] and result["halted"] == {}
    assert repairs.state()["down"] == {}
    assert repairs.gate("chat-proxy-1", "proxy", execution="6" * 24)["proceed"]


def test_a_duplicate_report_of_a_host_under_repair_is_refused_in_silence():
    repairs = Repairs()
    assert repairs.gate("chat-proxy-1", "proxy", execution="a" * 24)["proceed"]
    dup = repairs.gate("chat-proxy-1", "proxy", execution="b" * 24)
    assert (dup["proceed"], dup["reason"], dup["announce"]) == (False, "active", False)
    assert "*" not in repairs.state()["halted"]


def test_an_unreadable_state_halts_every_repair():
    repairs = Repairs()
    repairs.service().set_value(brakes.repairs_key("chat"), "{oops", local=False)
    refused = repairs.gate("chat-proxy-1", "proxy")
    assert (refused["proceed"], refused["reason"]) == (False, "halted")
    assert "unreadable" in refused["message"]


def test_the_gate_gives_the_deploy_parameters_and_the_postgres_primary():
    repairs = Repairs()
    gate = repairs.gate("chat-postgres-1", "postgres")
    assert gate["deploy"]["tier"] == "small-failover" and gate["deploy"]["provider"] == "aws"
    assert gate["postgres_primary"] == "chat-postgres-1"
