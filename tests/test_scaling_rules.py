"""The scale invariants over every tier, role, current count and request (exhaustively, which
for these small ranges is stronger than sampling), the decision engine's brakes, and the rules
that connect the sensor's triggers to dialog.scale and the announcements."""

import os

import pytest
import yaml

import local_runner
import rules_engine
from lib import autoscale
from lib.catalog import count_is_allowed, default_catalog
from lib.errors import InputError
from lib.planner import build_plan
from lib.scaling import COUNT_OPTIONS, scale_step
from test_workflow_deploy import inventory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CATALOG = default_catalog()
TIERS = ["small", "small-failover", "production"]


def hosts_with_counts(tier, role, current):
    option = COUNT_OPTIONS[role]
    try:
        return inventory(build_plan(tier, "aws", with_storage=role == "storage",
                                    **{option: current}))
    except InputError:
        return None


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("role", sorted(COUNT_OPTIONS))
def test_every_accepted_step_keeps_the_tier_invariants(tier, role):
    server = [s for s in CATALOG.tier(tier)["servers"] if role in s["roles"]][0]
    accepted = 0
    for current in range(1, 12):
        hosts = hosts_with_counts(tier, role, current)
        if hosts is None:
            continue  # not a count the tier allows: the deployment cannot be there
        for wanted in range(0, 14):
            try:
                step = scale_step(tier, role, hosts, count=wanted, with_storage=role == "storage")
            except InputError as exc:
                assert exc.field in ("count", "role") and str(exc)
                continue
            accepted += 1
            desired = step["desired"]
            assert count_is_allowed(server["count"], desired)
            assert len(step["joining"]) == max(0, desired - current)
            assert len(step["leaving"]) == max(0, current - desired)
            if role == "dialog-server":
                assert desired % 2 == 1 and abs(desired - current) in (0, 2)
                assert desired >= server["count"]["min"]
            if role == "cassandra":
                assert abs(desired - current) <= 1
                assert desired >= 3 or desired >= current
            names = {h["name"] for h in hosts}
            assert not names & set(step["joining"]) and set(step["leaving"]) <= names
            # The highest indexes leave, so the seeds (the first hosts) never do.
            if step["leaving"]:
                assert step["leaving"][0].endswith("-%d" % current)
    assert accepted, "some request must be possible"


def test_storage_is_never_shrunk_by_a_scale_operation():
    hosts = inventory(build_plan("production", "aws", with_storage=True, storage_nodes=3))
    with pytest.raises(InputError) as info:
        scale_step("production", "storage", hosts, count=1, with_storage=True)
    assert "ceph osd out" in str(info.value)
    grown = scale_step("production", "storage",
                       inventory(build_plan("production", "aws", with_storage=True,
                                            storage_nodes=1)), count=3, with_storage=True)
    assert grown["joining"] == ["dialog-storage-2", "dialog-storage-3"]


def test_refusals_name_the_next_allowed_count():
    hosts = inventory(build_plan("small-failover", "aws"))
    with pytest.raises(InputError) as info:
        scale_step("small-failover", "dialog-server", hosts, count=9)
    assert info.value.field == "count" and "next count is 5" in str(info.value)
    with pytest.raises(InputError) as info:
        scale_step("small-failover", "dialog-server", hosts, count=4)
    assert "3, 5, 7" in str(info.value)
    with pytest.raises(InputError) as info:
        scale_step("small-failover", "proxy", hosts, count=3)
    assert info.value.field == "role"
    with pytest.raises(InputError) as info:
        scale_step("mini", "dialog-server", inventory(build_plan("mini", "aws")), count=3)
    assert "shares its server" in str(info.value)


def test_decisions_never_reverse_within_600_seconds_and_never_leave_the_tier():
    """A hostile sequence: every poll flips between far above and far below the target."""
    policy = autoscale.policy_from({})
    count = {"default": 3, "min": 3, "step": 2}
    state, current, events = {}, 3, []
    for poll in range(2000):
        now = poll * 30.0
        value = 0.95 if (poll // 12) % 2 == 0 else 0.05
        decision = autoscale.decide(policy, "dialog-server",
                                    {"a": value}, current, count, now, state)
        if decision:
            assert count_is_allowed(count, decision["desired"])
            events.append((now, decision["direction"]))
            current = decision["desired"]
    assert events
    for (t1, d1), (t2, d2) in zip(events, events[1:]):
        assert d1 == d2 or t2 - t1 >= 600, (t1, d1, t2, d2)


# ----------------------------------------------------------------------------- rules

def rules():
    return rules_engine.load_rules(include_disabled=True)


def schemas_of(ref):
    return local_runner.parameter_schemas(local_runner.load_action_metadata(ref))


def sensor_triggers():
    """The trigger types every sensor of the pack declares."""
    names = set()
    for name in ("host_metrics_sensor.yaml", "health_sensor.yaml"):
        with open(os.path.join(ROOT, "sensors", name), encoding="utf-8") as fp:
            names |= {"dialog." + t["name"] for t in yaml.safe_load(fp)["trigger_types"]}
    return names


def test_every_rule_names_a_real_trigger_action_and_parameters():
    triggers = sensor_triggers() | {"core.st2.generic.actiontrigger"}
    for rule in rules():
        assert rule["pack"] == "dialog" and rule["description"]
        assert rule["trigger"]["type"] in triggers, rule["name"]
        ref = rule["action"]["ref"]
        schemas = schemas_of(ref)
        assert set(rule["action"]["parameters"]) <= set(schemas), rule["name"]


def test_scale_in_rules_ship_disabled_scale_out_rules_enabled():
    state = {r["name"]: r.get("enabled", True) for r in rules()}
    assert state["scale_in_dialog_server"] is False and state["scale_in_cassandra"] is False
    assert state["scale_out_dialog_server"] is True and state["scale_out_cassandra"] is True


def payload(role="dialog-server", direction="out", current=3, desired=5, repeat=0):
    return {"deployment": "chat", "role": role, "direction": direction, "current": current,
            "desired": desired, "reason": "mean cpu 90% above the 70% target for 3 polls",
            "repeat": repeat, "reask_after": 21600,
            "metrics": {"metric": "cpu", "aggregate": "mean", "value": 0.9, "target": 0.7,
                        "instances": {"10.0.0.1:9100": 0.9}}}


def test_a_scale_request_runs_dialog_scale_and_is_announced():
    actions = rules_engine.enforce("dialog.scale_requested", payload(), schemas_of)
    by_ref = {ref: params for _, ref, params in actions}
    assert by_ref["dialog.scale"] == {"deployment": "chat", "role": "dialog-server",
                                      "count": 5, "reason": payload()["reason"]}
    message = by_ref["dialog.announce"]["message"]
    assert "dialog-server 3 -> 5" in message and "90%" in message
    assert "st2 rule disable dialog.scale_out_dialog_server" in message


def test_a_scale_in_request_is_announced_but_not_acted_on_while_its_rule_is_disabled():
    enabled = rules_engine.load_rules()
    actions = rules_engine.enforce("dialog.scale_requested",
                                   payload("cassandra", "in", 4, 3), schemas_of, enabled)
    assert [ref for _, ref, _ in actions] == ["dialog.announce"]
    [(_, _, params)] = actions
    assert "scale-in rules ship disabled" in params["message"]
    assert "st2 rule enable dialog.scale_in_cassandra" in params["message"]


def test_a_repeated_request_is_acted_on_but_not_announced_again():
    enabled = rules_engine.load_rules()
    first = rules_engine.enforce("dialog.scale_requested", payload(), schemas_of, enabled)
    again = rules_engine.enforce("dialog.scale_requested", payload(repeat=1), schemas_of,
                                 enabled)
    assert sorted(ref for _, ref, _ in first) == ["dialog.announce", "dialog.scale"]
    assert [ref for _, ref, _ in again] == ["dialog.scale"]


def test_scale_finish_and_capacity_announcements_render():
    finished = {"action_name": "dialog.scale", "status": "succeeded", "execution_id": "e1",
                "result": {"output": {"deployment": "chat", "role": "dialog-server",
                                      "before": 3, "after": 5,
                                      "added": ["chat-dialog-server-4", "chat-dialog-server-5"],
                                      "removed": []}}}
    [(_, _, params)] = rules_engine.enforce("core.st2.generic.actiontrigger", finished,
                                            schemas_of)
    assert params["message"] == ("Scaled chat: dialog-server 3 -> 5, added "
                                 "chat-dialog-server-4, chat-dialog-server-5.")
    failed = dict(finished, status="failed", result={"output": {
        "deployment": "chat", "role": "cassandra", "failure": "nodetool cleanup failed"}})
    [(_, _, params)] = rules_engine.enforce("core.st2.generic.actiontrigger", failed,
                                            schemas_of)
    assert params["message"] == "Scaling chat cassandra failed: nodetool cleanup failed"
    other = dict(finished, action_name="dialog.deploy")
    assert rules_engine.enforce("core.st2.generic.actiontrigger", other, schemas_of) == []
    capacity = {"deployment": "chat", "tier": "small", "active_users": 1500, "users_min": 500,
                "users_max": 1000, "next_tier": "small-failover", "direction": "up"}
    [(_, _, params)] = rules_engine.enforce("dialog.tier_capacity", capacity, schemas_of)
    assert "1500 active users" in params["message"] and "small-failover" in params["message"]


def test_the_concurrency_policy_serialises_scale_per_deployment():
    with open(os.path.join(ROOT, "policies", "scale_concurrency.yaml"), encoding="utf-8") as fp:
        policy = yaml.safe_load(fp)
    assert policy["resource_ref"] == "dialog.scale"
    assert policy["policy_type"] == "action.concurrency.attr"
    assert policy["parameters"]["attributes"] == ["deployment"]
    assert "deployment" in schemas_of("dialog.scale")
    assert "coordination" in policy["description"]


@pytest.mark.parametrize("channel, posted", [("#dialog-ops", True), ("", False)])
def test_announce_posts_to_the_configured_channel_only(channel, posted):
    import workflow_runner  # pylint: disable=import-outside-toplevel
    calls = []

    def execute(ref, params):  # core.noop and chatops.post_message are StackStorm's own
        calls.append((ref, params))
        return True, {"result": None}

    result = workflow_runner.run_workflow("dialog.announce", {
        "message": "Scaled chat: dialog-server 3 -> 5.", "channel": channel}, execute=execute)
    assert result.status == "succeeded", result.errors
    chat = [params for ref, params in calls if ref == "chatops.post_message"]
    assert chat == ([{"channel": "#dialog-ops", "message": "Scaled chat: dialog-server 3 -> 5."}]
                    if posted else [])
