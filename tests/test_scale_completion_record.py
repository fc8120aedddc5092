"""dialog.scale notes each completed operation in the deployment's record (`last_scaled`), the
autoscaler's cooldowns run from it, and a later deploy's record keeps it."""

import contextlib
import io
import json

from st2tests.base import BaseActionTestCase

from lib.deployment_record import load_record, record_of, save_record
from lib.planner import build_plan
from record_scaled import RecordScaledAction
from test_workflow_scale import CannedScaleActions, scale


def names(actions):
    return [n for n, _ in actions.calls]


def test_a_scale_records_its_completion_after_the_last_step_and_before_the_release():
    actions = CannedScaleActions(tier="production")
    result = scale(actions, role="cassandra", delta=1)
    assert result.status == "succeeded", result.errors
    [record] = actions.names("record_scaled")
    assert record == {"deployment": "dialog", "role": "cassandra", "direction": "out",
                      "before": 3, "after": 4}
    calls = names(actions)
    done = calls.index("record_scaled")
    assert done > max(i for i, n in enumerate(calls) if n == "cassandra_cleanup")
    assert done < max(i for i, n in enumerate(calls) if n == "unlock")


def test_a_scale_in_is_recorded_as_such():
    actions = CannedScaleActions(dialog_servers=5)
    assert scale(actions, role="dialog-server", delta=-2).status == "succeeded"
    [record] = actions.names("record_scaled")
    assert (record["direction"], record["before"], record["after"]) == ("in", 5, 3)


def test_a_failed_or_refused_scale_records_nothing():
    failed = CannedScaleActions(tier="production", fail={"cassandra_cleanup": "timeout"})
    assert scale(failed, role="cassandra", delta=1).status == "failed"
    refused = CannedScaleActions()
    assert scale(refused, role="dialog-server", count=4).status == "failed"
    dry = CannedScaleActions()
    assert scale(dry, role="dialog-server", count=5, dry_run=True).status == "succeeded"
    for actions in (failed, refused, dry):
        assert "record_scaled" not in names(actions)


def test_a_failed_record_fails_the_scale_and_still_releases_the_lock():
    actions = CannedScaleActions(fail={"record_scaled": "datastore unavailable"})
    result = scale(actions, role="dialog-server", count=5)
    assert result.status == "failed"
    assert result.output["failure"].startswith("record_scaled: ")
    assert names(actions)[-1] == "unlock" and not actions.locks


class MemoryStore(object):
    def __init__(self):
        self.values = {}

    def get_value(self, name, local=True, scope="system", decrypt=False):
        return self.values.get(name)

    def set_value(self, name, value, ttl=None, local=True, scope="system", encrypt=False):
        self.values[name] = value
        return True


def test_a_deploy_rewriting_the_record_keeps_the_completed_scales():
    store = MemoryStore()
    plan = build_plan("small-failover", "aws", deployment="chat", dialog_servers=5)
    save_record(store, record_of(plan, "aws-eu"))
    last = {"dialog-server": {"direction": "out", "from": 3, "to": 5, "completed_at": 1000}}
    save_record(store, dict(load_record(store, "chat"), last_scaled=last))  # dialog.scale
    # The same deploy again (dialog.register_deployment): nothing changed, nothing lost.
    assert save_record(store, record_of(plan, "aws-eu")) is False
    bigger = build_plan("small-failover", "aws", deployment="chat", dialog_servers=7)
    assert save_record(store, record_of(bigger, "aws-eu")) is True
    record = load_record(store, "chat")
    assert record["groups"]["dialog-server"] == 7 and record["last_scaled"] == last


class RecordScaledActionTest(BaseActionTestCase):
    action_cls = RecordScaledAction

    def run_action(self, **params):
        action = self.get_action_instance(config={})
        with contextlib.redirect_stdout(io.StringIO()):
            return action.run(**params)

    def test_it_writes_last_scaled_of_the_role_and_keeps_the_others(self):
        plan = build_plan("production", "aws", deployment="chat")
        store = self.get_action_instance(config={}).action_service
        save_record(store, dict(record_of(plan), last_scaled={
            "dialog-server": {"direction": "out", "from": 3, "to": 5, "completed_at": 1}}))
        ok, result = self.run_action(deployment="chat", role="cassandra", direction="out",
                                     before=3, after=4)
        assert ok, result
        record = load_record(store, "chat")
        assert set(record["last_scaled"]) == {"dialog-server", "cassandra"}
        entry = record["last_scaled"]["cassandra"]
        assert (entry["direction"], entry["from"], entry["to"]) == ("out", 3, 4)
        assert entry["completed_at"] > 1600000000 and result["last_scaled"] == entry

    def test_an_unknown_deployment_is_refused_naming_the_field(self):
        ok, result = self.run_action(deployment="nope", role="cassandra", direction="out",
                                     before=3, after=4)
        assert not ok and "deployment" in json.dumps(result) and "nope" in json.dumps(result)
