"""Every payload HostMetricsSensor dispatches passes StackStorm's own trigger payload validation.

st2's sensor service validates each dispatched payload against its trigger type's
payload_schema (st2common.validators.api.reactor.validate_trigger_payload, on by default) with
st2common.util.schema's CustomValidator, and drops the trigger when that fails. The sensor here
dispatches into a plain recording service, not st2tests' mock sensor service, so this check
means the same with the real st2tests (whose mock does not validate) as with the stand-in.
"""

import json
import logging
import sys

import pytest
from jsonschema.exceptions import SchemaError, ValidationError
from st2common.util import schema as util_schema
from st2tests.mocks.sensor import MockSensorService, MockSensorWrapper

from host_metrics_sensor import HostMetricsSensor
from lib.deployment_record import record_key
from test_sensor_host_metrics import POLL, URL, ScriptedMetricsSource, metrics, trigger_schemas


def st2_validate(trigger, payload):
    """What validate_trigger_payload does with a registered trigger type's payload_schema."""
    return util_schema.validate(payload, trigger_schemas()[trigger],
                                cls=util_schema.CustomValidator, use_default=True,
                                allow_default_none=True)


class RecordingSensorService(object):
    """What HostMetricsSensor uses of st2's SensorService; records every dispatch as is."""

    def __init__(self):
        self.values, self.dispatched = {}, []

    def get_logger(self, name):
        return logging.getLogger(name)

    def get_value(self, name, local=True, scope="system", decrypt=False):
        return self.values.get((local, name))

    def set_value(self, name, value, ttl=None, local=True, scope="system", encrypt=False):
        self.values[(local, name)] = value
        return True

    def dispatch(self, trigger, payload=None, trace_tag=None):
        self.dispatched.append((trigger, payload))


def sensor_payloads(polls, tier="small-failover", servers=3, cassandra=3):
    """[(trigger, payload)] the real sensor dispatches over the scripted polls."""
    service = RecordingSensorService()
    service.set_value(record_key("chat"), json.dumps({
        "deployment": "chat", "tier": tier,
        "groups": {"dialog-server": servers, "cassandra": cassandra}}), local=False)
    sensor = HostMetricsSensor(service, config={"autoscaling": {
        "deployments": [{"deployment": "chat", "prometheus_url": URL}]}}, poll_interval=POLL)
    source = ScriptedMetricsSource()
    source.polls = list(polls)
    sensor._sources[URL] = source  # pylint: disable=protected-access
    now = [1000000.0]
    sensor.clock = lambda: now[0]
    for _ in range(len(polls)):
        sensor.poll()
        now[0] += POLL
    return service.dispatched


def every_kind_of_payload():
    found = []
    found += sensor_payloads([metrics(cpu=0.9)] * 3)                            # dialog out
    found += sensor_payloads([metrics(disk=0.85)] * 3)                          # cassandra out
    found += sensor_payloads([metrics(cpu=0.3, servers=5)] * 12, servers=5)     # dialog in
    found += sensor_payloads([metrics(disk=0.3, cassandra=4)] * 12, cassandra=4)  # cassandra in
    found += sensor_payloads([metrics(users=2400)])                             # tier up
    found += sensor_payloads([metrics(users=200, servers=3)], tier="production")  # tier down
    found += sensor_payloads([None])                                            # source down
    return found


def test_every_payload_the_sensor_sends_passes_stackstorms_validation():
    found = every_kind_of_payload()
    kinds = {(t, p.get("role"), p.get("direction")) for t, p in found}
    assert kinds >= {
        ("dialog.scale_requested", "dialog-server", "out"),
        ("dialog.scale_requested", "cassandra", "out"),
        ("dialog.scale_requested", "dialog-server", "in"),
        ("dialog.scale_requested", "cassandra", "in"),
        ("dialog.tier_capacity", None, "up"),
        ("dialog.tier_capacity", None, "down"),
        ("dialog.metrics_unavailable", None, None)}, kinds
    down = [p for t, p in found if t == "dialog.tier_capacity" and p["direction"] == "down"]
    assert down[0]["users_max"] is None  # production has no upper bound
    for trigger, payload in found:
        assert st2_validate(trigger, payload) == payload, trigger


def test_null_next_tier_and_users_max_pass_as_the_schema_says():
    payload = {"deployment": "chat", "tier": "production", "active_users": 5000,
               "users_min": 1000, "users_max": None, "next_tier": None, "direction": "up"}
    assert st2_validate("dialog.tier_capacity", payload) == payload


@pytest.mark.parametrize("trigger, change", [
    ("dialog.scale_requested", {"role": "web"}),
    ("dialog.scale_requested", {"desired": "5"}),
    ("dialog.scale_requested", {"reason": None}),
    ("dialog.scale_requested", {"surprise": 1}),
    ("dialog.tier_capacity", {"next_tier": "huge"}),
    ("dialog.tier_capacity", {"users_min": None}),
    ("dialog.metrics_unavailable", {"source": 9091}),
], ids=str)
def test_a_wrong_payload_is_refused(trigger, change):
    good = {t: p for t, p in every_kind_of_payload()}[trigger]
    st2_validate(trigger, good)
    with pytest.raises(ValidationError):
        st2_validate(trigger, dict(good, **change))


@pytest.mark.parametrize("trigger", sorted(trigger_schemas()))
def test_a_payload_missing_a_field_is_refused(trigger):
    good = {t: p for t, p in every_kind_of_payload()}[trigger]
    for name in good:
        with pytest.raises(ValidationError, match="'%s' is a required property" % name):
            st2_validate(trigger, {k: v for k, v in good.items() if k != name})


def test_the_nested_metrics_are_checked_too():
    good = {t: p for t, p in every_kind_of_payload()}["dialog.scale_requested"]
    for name in good["metrics"]:
        metrics_left = {k: v for k, v in good["metrics"].items() if k != name}
        with pytest.raises(ValidationError, match="'%s' is a required property" % name):
            st2_validate("dialog.scale_requested", dict(good, metrics=metrics_left))
    with pytest.raises(ValidationError):
        st2_validate("dialog.scale_requested", dict(good, metrics=dict(
            good["metrics"], instances={"10.0.0.1:9100": "high"})))


def test_stackstorms_dialect_refuses_a_draft4_required_list():
    """The mistake this file guards against: StackStorm refuses the schema itself."""
    schema = {"type": "object", "required": ["deployment"],
              "properties": {"deployment": {"type": "string"}}}
    with pytest.raises(SchemaError, match="is not of type 'boolean'"):
        util_schema.validate({"deployment": "chat"}, schema, cls=util_schema.CustomValidator,
                             use_default=True, allow_default_none=True)


@pytest.mark.skipif("st2_standin" not in sys.modules[MockSensorService.__module__].__file__,
                    reason="st2tests' own MockSensorService records every dispatch unvalidated")
def test_the_stand_ins_sensor_service_drops_what_stackstorm_drops():
    service = MockSensorService(MockSensorWrapper("dialog", "HostMetricsSensor"))
    good = {t: p for t, p in every_kind_of_payload()}
    for trigger, payload in good.items():
        assert service.dispatch(trigger=trigger, payload=payload, trace_tag="t") is not None
    assert [i["trigger"] for i in service.dispatched_triggers] == list(good)
    service.dispatch(trigger="dialog.scale_requested",
                     payload=dict(good["dialog.scale_requested"], role="web"))
    service.dispatch(trigger="dialog.tick", payload={"n": 1})
    assert len(service.dispatched_triggers) == len(good)  # both dropped
    warnings = [c.args[0] for c in service.get_logger("x").warning.call_args_list]
    assert any("not dispatching a trigger \"dialog.scale_requested\"" in w
               and "'web' is not one of" in w for w in warnings), warnings
    assert any("\"dialog.tick\" doesn't exist" in w for w in warnings), warnings
