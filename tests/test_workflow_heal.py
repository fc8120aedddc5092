"""The repair workflows (dialog.heal_*) run by orquesta's conductor (devtools/workflow_runner.py)
and the rules that start them, matched with devtools/rules_engine.py on real trigger payloads.

The brakes are the real actions (dialog.repair_gate, repair_done, repair_note, lock, unlock)
over one datastore; the nested dialog.deploy runs for real with the canned actions of
test_workflow_scale.py. The host-changing actions of other parts (retire_host, move_address,
fence, postgres_promote, postgres_repoint, cassandra_replace_check) are stand-ins named as such:
they change the canned inventory the way the contract says the real ones do, or fail on demand.
Announcements are what dialog.announce posts through chatops.post_message.
"""

import local_runner
import pytest
import rules_engine
import workflow_runner
from lib.deployment_record import record_of, save_record
from lib.planner import build_plan
from repair_done import RepairDoneAction
from repair_gate import RepairGateAction
from repair_note import RepairNoteAction
from test_workflow_deploy import ok, returned_error
from test_workflow_scale import CannedScaleActions

CONFIG = {"healing": {"repair_window": 1800, "overlap_settle": 0}}
REAL = {"repair_gate": RepairGateAction, "repair_done": RepairDoneAction,
        "repair_note": RepairNoteAction}


class HealActions(CannedScaleActions):
    """CannedScaleActions plus the repair actions: the brakes real, the host changes stand-ins
    (standin_<action>), announcements collected in `said`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.said = []
        save_record(self.service("Test"), record_of(build_plan(self.tier, "aws"), "default"))

    def __call__(self, ref, params):
        if ref == "chatops.post_message":
            self.said.append(params["message"])
            return ok(None)
        if ref == "core.noop":
            return ok(None)
        return super().__call__(ref, params)

    def _run(self, name, action_params):
        if name in REAL:
            status, value = REAL[name](config=CONFIG, action_service=self.service(name)).run(
                **action_params)
            return (ok if status else returned_error)(value)
        standin = getattr(self, "standin_" + name, None)
        if standin is not None:
            return ok(standin(**action_params))
        return super()._run(name, action_params)

    # --- stand-ins for the actions of the other parts (contracts: issue 14)

    def standin_retire_host(self, deployment, host, **_):
        self.hosts = [h for h in self.hosts if h["name"] != host]
        return {"host": host, "instance": "i-old", "volumes_kept": []}

    def standin_move_address(self, deployment, lost_host, **_):
        return {"moved": [{"address": "203.0.113.10", "from": lost_host,
                           "to": "dialog-proxy-2"}]}

    def standin_fence(self, deployment, host, **_):
        return {"host": host, "method": "StopInstances(Force=True), now stopped",
                "instance": "i-1"}

    def standin_postgres_promote(self, deployment, host, **_):
        return {"primary": host, "previous": "dialog-postgres-1", "lsn": "0/3000000",
                "seconds": 2}

    def standin_postgres_repoint(self, deployment, **_):
        return {"changed": ["dialog-postgres-2"]}

    def standin_cassandra_replace_check(self, deployment, host, profile=None):
        return {"host": host, "old_address": "10.0.0.9", "observer": "dialog-cassandra-1",
                "others": ["10.0.0.10", "10.0.0.11"]}

    def note(self, host, group):
        return self._run("repair_note", {"deployment": "dialog", "host": host, "state": "down",
                                         "group": group, "fault": "unreachable"})

    def names(self, name):
        return [p for n, p in self.calls if n == name]


@pytest.fixture(autouse=True)
def chat_channel(monkeypatch):
    """st2 renders dialog.announce's default channel ({{ config_context.chat_channel }}) from
    the pack config before the workflow starts; workflow_runner does too when its executor
    carries the config (local_runner's does): here, a config whose chat_channel is
    #dialog-ops."""
    real = workflow_runner.action_input

    def action_input(meta, given, config=None):
        return real(meta, given, dict(config or {}, chat_channel="#dialog-ops"))

    monkeypatch.setattr(workflow_runner, "action_input", action_input)


def heal(actions, role, host, **params):
    meta = local_runner.load_action_metadata("dialog.heal_" + role)
    inputs, _ = local_runner.prepare_parameters(meta, dict(params, host=host,
                                                           fault="unreachable for 3 polls"))
    return workflow_runner.run_workflow("dialog.heal_" + role, inputs, execute=actions)


def changes(actions):
    return [n for n, _ in actions.calls if n in (
        "retire_host", "move_address", "fence", "postgres_promote", "postgres_repoint",
        "provision", "bootstrap_host")]


def test_a_lost_dialog_server_is_replaced_under_the_lock_and_announced():
    actions = HealActions()
    result = heal(actions, "dialog_server", "dialog-dialog-server-2")
    assert result.status == "succeeded", (result.errors, result.output)
    assert result.output["outcome"] == "repaired"
    assert [p["host"] for p in actions.names("retire_host")] == ["dialog-dialog-server-2"]
    assert "dialog-dialog-server-2" in {p["host"] for p in actions.names("bootstrap_host")}
    assert "dialog-dialog-server-2" in {h["name"] for h in actions.hosts}
    assert len(actions.said) == 2
    assert "repairing it automatically" in actions.said[0]
    assert "repaired in" in actions.said[1]
    assert not actions.locks


def test_a_lost_proxy_moves_the_address_first_then_is_replaced():
    actions = HealActions()
    result = heal(actions, "proxy", "dialog-proxy-1")
    assert result.status == "succeeded", (result.errors, result.output)
    steps = changes(actions)
    assert steps[0] == "move_address" and steps.index("retire_host") > 0
    assert any("203.0.113.10 moved to dialog-proxy-2" in m for m in actions.said)
    assert not actions.locks


def test_two_overlapping_faults_make_one_announcement_and_no_repair():
    actions = HealActions()
    # The sensor dispatched both in the same poll: rule note_host_down noted the second.
    actions.note("dialog-dialog-server-1", "dialog-server")
    first = heal(actions, "proxy", "dialog-proxy-1")
    second = heal(actions, "dialog_server", "dialog-dialog-server-1")
    assert first.status == "failed" and second.status == "failed"
    assert first.output["outcome"] == "refused: overlap"
    assert changes(actions) == []
    assert len(actions.said) == 1, actions.said
    assert "dialog-proxy-1" in actions.said[0] and "dialog-dialog-server-1" in actions.said[0]
    assert "st2 run dialog.repair_reset deployment=dialog" in actions.said[0]
    assert not actions.locks


def test_a_failed_repair_halts_the_role_and_the_next_fault_is_refused_once():
    actions = HealActions(fail={"retire_host": "TerminateInstances: UnauthorizedOperation"})
    failed = heal(actions, "dialog_server", "dialog-dialog-server-2")
    assert failed.status == "failed"
    assert "UnauthorizedOperation" in actions.said[-1] and "FAILED" in actions.said[-1]
    assert "role=dialog-server" in actions.said[-1]
    assert not actions.locks
    before = len(actions.said)
    # A second host_down for the same role, later: refused, announced once, no action.
    for _ in range(2):
        again = heal(actions, "dialog_server", "dialog-dialog-server-3")
        assert again.status == "failed" and again.output["outcome"] == "refused: halted"
    assert len(actions.said) == before + 1
    assert "halted" in actions.said[-1]
    assert [p["host"] for p in actions.names("retire_host")] == ["dialog-dialog-server-2"]
    assert not actions.locks


def test_a_repair_inside_the_window_is_refused():
    actions = HealActions()
    assert heal(actions, "dialog_server", "dialog-dialog-server-2").status == "succeeded"
    again = heal(actions, "dialog_server", "dialog-dialog-server-3")
    assert again.output["outcome"] == "refused: window"
    assert len(actions.names("retire_host")) == 1
    assert "healing.repair_window" in actions.said[-1]


def test_a_repair_while_another_operation_holds_the_deployment_is_refused():
    actions = HealActions()
    actions.real_lock_action("lock", {"deployment": "dialog", "owner": "f" * 24,
                                      "operation": "scale", "detail": "cassandra 3 -> 4"})
    result = heal(actions, "dialog_server", "dialog-dialog-server-2")
    assert result.status == "failed" and result.output["outcome"] == "refused: busy"
    assert changes(actions) == []
    assert "scale (cassandra 3 -> 4) is running" in actions.said[-1]
    assert actions.holder()["owner"] == "f" * 24, "the scale's lock is left alone"
    # A refusal, like the brakes' others: no failure of the workflow's own to explain.
    assert result.output["failure"] is None, result.output


class ChatDown(HealActions):
    """The chat does not answer: every chatops.post_message fails."""

    def __call__(self, ref, params):
        if ref == "chatops.post_message":
            return returned_error({"error": "HTTP 503 from the chat adapter"})
        return super().__call__(ref, params)


@pytest.mark.parametrize("role, host", [("proxy", "dialog-proxy-1"),
                                        ("dialog_server", "dialog-dialog-server-2")])
def test_a_chat_that_does_not_answer_never_stops_a_repair_nor_marks_it_failed(role, host):
    actions = ChatDown()
    result = heal(actions, role, host)
    assert result.status == "succeeded", (result.errors, result.output)
    assert result.output["outcome"] == "repaired"
    assert result.output["failure"] is None, result.output
    assert host in {h["name"] for h in actions.hosts}
    assert not actions.locks


@pytest.mark.parametrize("role, host", [("proxy", "dialog-proxy-1"),
                                        ("dialog_server", "dialog-dialog-server-2"),
                                        ("postgres", "dialog-postgres-1"),
                                        ("cassandra", "dialog-cassandra-2")])
def test_a_repair_whose_end_cannot_be_recorded_says_it_was_repaired(role, host):
    """The host was replaced, then dialog.repair_done failed (the datastore did not answer):
    chat must not say the repair "did not run" (it did), and must say what a human does now.
    The brakes still count the repair as running, so the next fault is refused, not repaired."""
    actions = HealActions(fail={"repair_done:" + host: "datastore: connection refused"})
    result = heal(actions, role, host)
    assert result.status == "failed" and result.output["outcome"] == "failed"
    assert host in {h["name"] for h in actions.hosts}
    said = actions.said[-1]
    assert "did not run" not in said, said
    assert "%s was repaired" % host in said and "could not be recorded" in said, said
    assert "connection refused" in said
    assert "st2 run dialog.repair_reset deployment=dialog" in said
    assert not actions.locks
    other = "dialog-dialog-server-3" if role != "dialog_server" else "dialog-proxy-2"
    again = heal(actions, "dialog_server" if role != "dialog_server" else "proxy", other)
    assert again.output["outcome"].startswith("refused"), again.output
    assert other in {h["name"] for h in actions.hosts}
    assert [p["host"] for p in actions.names("retire_host")] == [host]


def _requires(*names):
    missing = [n for n in names if workflow_runner.load_action_metadata("dialog." + n) is None]
    if missing:
        pytest.skip("not landed yet: %s" % ", ".join(missing))


def test_a_lost_postgres_primary_is_fenced_before_the_standby_is_promoted():
    _requires("postgres_promote", "postgres_repoint")
    actions = HealActions()
    result = heal(actions, "postgres", "dialog-postgres-1")
    assert result.status == "succeeded", (result.errors, result.output)
    steps = changes(actions)
    assert steps[:4] == ["fence", "postgres_promote", "postgres_repoint", "retire_host"]
    assert actions.names("postgres_promote")[0]["host"] == "dialog-postgres-2"


def test_a_lost_postgres_standby_is_only_replaced():
    _requires("postgres_promote", "postgres_repoint")
    actions = HealActions()
    result = heal(actions, "postgres", "dialog-postgres-2")
    assert result.status == "succeeded", (result.errors, result.output)
    assert "fence" not in changes(actions) and "postgres_promote" not in changes(actions)


def test_the_only_postgres_server_is_never_fenced_and_a_human_is_told():
    """A tier with one Postgres host has no standby to promote: fencing it would stop the only
    copy of the data for nothing. The repair stops, the role is halted, chat says what to do,
    and the lock is released (before, StackStorm refused to start the promote with no host and
    the workflow ended holding the lock, the role not halted)."""
    actions = HealActions(tier="small")
    result = heal(actions, "postgres", "dialog-postgres-1")
    assert result.status == "failed" and result.output["outcome"] == "failed"
    assert changes(actions) == []
    assert "only Postgres server" in result.output["failure"]
    assert "FAILED" in actions.said[-1] and "only Postgres server" in actions.said[-1]
    assert "role=postgres" in actions.said[-1]
    assert not actions.locks
    again = heal(actions, "postgres", "dialog-postgres-1")
    assert again.output["outcome"] == "refused: halted" and changes(actions) == []


def test_a_lost_cassandra_node_is_redeployed_replacing_its_old_address():
    actions = HealActions()
    meta = local_runner.load_action_metadata("dialog.deploy")
    if "replacing" not in meta["parameters"]:
        pytest.skip("dialog.deploy has no replacing parameter yet")
    result = heal(actions, "cassandra", "dialog-cassandra-2")
    assert result.status == "succeeded", (result.errors, result.output)
    assert [n for n in changes(actions)][0] == "retire_host"
    [plan] = [p for n, p in actions.calls if n == "plan"]
    assert plan.get("replacing") == {"dialog-cassandra-2": "10.0.0.9"} or any(
        p.get("replacing") for n, p in actions.calls)


def test_a_cassandra_repair_is_refused_while_another_node_is_not_un():
    actions = HealActions(fail={"cassandra_replace_check": (
        "cassandra replacement of dialog-cassandra-2 (10.0.0.9) refused: dialog-cassandra-3 "
        "(10.0.0.10) is UJ (up, joining)")})
    result = heal(actions, "cassandra", "dialog-cassandra-2")
    assert result.status == "failed"
    assert changes(actions) == []
    assert "UJ" in actions.said[-1] and "role=cassandra" in actions.said[-1]


# ----------------------------------------------------------------------------- rules

def host_down(group, host, deployment="dialog"):
    return {"deployment": deployment, "host": host, "roles": [group], "group": group,
            "reason": "no SSH answer for 3 polls", "source": "probe", "since": 1700000000.0,
            "polls": 3}


def schemas_of(ref):
    return local_runner.parameter_schemas(local_runner.load_action_metadata(ref))


@pytest.mark.parametrize("group, workflow", [
    ("proxy", "dialog.heal_proxy"), ("postgres", "dialog.heal_postgres"),
    ("dialog-server", "dialog.heal_dialog_server"), ("cassandra", "dialog.heal_cassandra")])
def test_host_down_runs_its_repair_notes_the_fault_and_is_announced(group, workflow):
    payload = host_down(group, "dialog-%s-1" % group)
    fired = {ref: params for _, ref, params in rules_engine.enforce(
        "dialog.host_down", payload, schemas_of)}
    assert set(fired) == {workflow, "dialog.repair_note", "dialog.announce"}
    assert fired[workflow] == {"deployment": "dialog", "host": payload["host"],
                               "fault": "no SSH answer for 3 polls (seen by probe, 3 polls)"}
    assert fired["dialog.repair_note"]["state"] == "down"
    assert "st2 rule disable %s" % workflow in fired["dialog.announce"]["message"]


def test_a_host_of_a_group_without_repair_is_noted_and_announced_only():
    fired = [ref for _, ref, _ in rules_engine.enforce(
        "dialog.host_down", host_down("web", "dialog-web-1"), schemas_of)]
    assert sorted(fired) == ["dialog.announce", "dialog.repair_note"]


@pytest.mark.parametrize("disabled", ["heal_proxy", "heal_postgres", "heal_dialog_server",
                                      "heal_cassandra"])
def test_each_repair_rule_can_be_disabled_alone(disabled):
    rules = [r for r in rules_engine.load_rules() if r["name"] != disabled]
    for group, name in (("proxy", "heal_proxy"), ("postgres", "heal_postgres"),
                        ("dialog-server", "heal_dialog_server"),
                        ("cassandra", "heal_cassandra")):
        fired = {rule for rule, _, _ in rules_engine.enforce(
            "dialog.host_down", host_down(group, "dialog-%s-1" % group), schemas_of, rules)}
        assert (name in fired) == (name != disabled)
        assert {"note_host_down", "announce_health"} <= fired


def test_every_repair_rule_ships_enabled():
    state = {r["name"]: r.get("enabled", True) for r in rules_engine.load_rules(
        include_disabled=True)}
    assert all(state["heal_" + n] is True for n in ("proxy", "postgres", "dialog_server",
                                                    "cassandra"))


def test_recovered_clears_a_whole_host_not_one_service_and_is_announced():
    host = {"deployment": "dialog", "host": "dialog-web-1", "roles": ["web"], "group": "web",
            "service": None, "down_for": 42.4}
    fired = {ref: p for _, ref, p in rules_engine.enforce("dialog.recovered", host, schemas_of)}
    assert fired["dialog.repair_note"]["state"] == "up"
    assert fired["dialog.repair_note"]["service"] == ""
    assert fired["dialog.announce"]["message"] == (
        "dialog: dialog-web-1 (web) answers again after 42 s.")
    one = dict(host, service="nginx")
    fired = {ref: p for _, ref, p in rules_engine.enforce("dialog.recovered", one, schemas_of)}
    assert fired["dialog.repair_note"]["service"] == "nginx"
    unhealthy = {"deployment": "dialog", "host": "dialog-web-1", "roles": ["web"],
                 "group": "web", "service": "nginx", "check": "nginx http",
                 "reason": "connection refused", "since": 1.0, "polls": 3}
    [(_, _, params)] = rules_engine.enforce("dialog.service_unhealthy", unhealthy, schemas_of)
    assert "nginx on dialog-web-1 (web) is unhealthy" in params["message"]
