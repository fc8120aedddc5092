"""HealthSensor through StackStorm's sensor test API: thin over lib.healing.health_watch,
its trigger types in StackStorm's dialect, and a poll that never raises."""

import json
import os

import pytest
import yaml
from jsonschema.exceptions import ValidationError
from st2common.util import schema as util_schema
from st2tests.base import BaseSensorTestCase

from health_sensor import HealthSensor
from lib.deployment_record import record_key

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def trigger_schemas():
    with open(os.path.join(ROOT, "sensors", "health_sensor.yaml"), encoding="utf-8") as fp:
        meta = yaml.safe_load(fp)
    return {"dialog." + t["name"]: t["payload_schema"] for t in meta["trigger_types"]}


def st2_validate(trigger, payload):
    return util_schema.validate(payload, trigger_schemas()[trigger],
                                cls=util_schema.CustomValidator, use_default=True,
                                allow_default_none=True)


DOWN = {"deployment": "chat", "host": "chat-proxy-1", "roles": ["proxy"], "group": "proxy",
        "reason": "stopped at the provider", "source": "provider", "since": 1700000000.0,
        "polls": 1}
SICK = {"deployment": "chat", "host": "chat-web-1", "roles": ["web"], "group": "web",
        "service": "dashboard", "check": "dashboard http", "reason": "connection refused",
        "since": 1700000000, "polls": 3}
BACK = {"deployment": "chat", "host": "chat-web-1", "roles": ["web"], "group": "web",
        "service": None, "down_for": 42.5}


def test_the_trigger_types_are_the_contracts():
    schemas = trigger_schemas()
    assert sorted(schemas) == ["dialog.host_down", "dialog.recovered",
                               "dialog.service_unhealthy"]
    for schema in schemas.values():
        assert schema["additionalProperties"] is False
        assert all(p.get("required") is True for p in schema["properties"].values())


@pytest.mark.parametrize("trigger, payload", [("dialog.host_down", DOWN),
                                              ("dialog.service_unhealthy", SICK),
                                              ("dialog.recovered", BACK),
                                              ("dialog.recovered", dict(BACK, service="nginx"))])
def test_well_formed_payloads_pass(trigger, payload):
    st2_validate(trigger, payload)


@pytest.mark.parametrize("trigger, payload", [
    ("dialog.host_down", dict(DOWN, source="guess")),
    ("dialog.host_down", dict(DOWN, polls=1.5)),
    ("dialog.host_down", {k: v for k, v in DOWN.items() if k != "group"}),
    ("dialog.service_unhealthy", dict(SICK, extra=1)),
    ("dialog.recovered", {k: v for k, v in BACK.items() if k != "service"})])
def test_malformed_payloads_are_refused(trigger, payload):
    with pytest.raises(ValidationError):
        st2_validate(trigger, payload)


class HealthSensorTest(BaseSensorTestCase):
    sensor_cls = HealthSensor

    def test_the_pack_configs_poll_interval_wins(self):
        sensor = self.get_sensor_instance(config={"healing": {"poll_interval": 7}})
        assert sensor.get_poll_interval() == 7
        assert self.get_sensor_instance(config={}).get_poll_interval() == 10

    def test_a_poll_that_fails_everywhere_never_raises(self):
        # A record whose profile the pack config does not have: every step fails.
        self.sensor_service.set_value(record_key("chat"), json.dumps({
            "deployment": "chat", "tier": "small-failover", "provider": "aws",
            "profile": "gone", "groups": {}}), local=False)
        sensor = self.get_sensor_instance(config={"healing": {"deployments": ["chat"]}})
        sensor.poll()
        sensor.poll()
        assert self.get_dispatched_triggers() == []
        assert sensor.watch.errors == 2

    def test_events_are_dispatched_with_a_trace_tag_per_outage(self):
        sensor = self.get_sensor_instance(config={})
        sensor._dispatch("dialog.host_down", dict(DOWN))  # pylint: disable=protected-access
        [item] = self.get_dispatched_triggers()
        assert item["trigger"] == "dialog.host_down" and item["payload"] == DOWN
        assert item["trace_context"].trace_tag == \
            "dialog-health-chat-chat-proxy-1-host_down-1700000000"
