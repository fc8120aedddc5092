"""HostMetricsSensor through StackStorm's sensor test API, over scripted metric sequences.

The metrics source is the one stand-in (ScriptedMetricsSource: what PrometheusSource.fetch()
returns, poll by poll); the real-Prometheus path is in test_prometheus_integration.py. The
clock is the sensor's `clock` attribute, stepped by the poll interval.
"""

import json
import os

import yaml
from st2common.util import schema as util_schema
from st2tests.base import BaseSensorTestCase

from host_metrics_sensor import STATE_KEY, HostMetricsSensor
from lib.deployment_record import record_key
from lib.errors import ProviderError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
URL = "http://prometheus.invalid:9091"
POLL = 30


def trigger_schemas():
    with open(os.path.join(ROOT, "sensors", "host_metrics_sensor.yaml"), encoding="utf-8") as fp:
        meta = yaml.safe_load(fp)
    return {"dialog." + t["name"]: t["payload_schema"] for t in meta["trigger_types"]}


class ScriptedMetricsSource(object):
    """Stand-in for PrometheusSource: each fetch() returns the next scripted poll, or raises
    ProviderError for a poll scripted as None (Prometheus down)."""

    def __init__(self):
        self.polls = []

    def fetch(self):
        poll = self.polls.pop(0)
        if poll is None:
            raise ProviderError("prometheus at %s: ConnectionError" % URL)
        return poll


def metrics(cpu=0.5, disk=0.3, servers=3, cassandra=3, users=None):
    result = {
        "cpu": {"dialog-server": {"10.0.0.%d:9100" % i: cpu for i in range(1, servers + 1)},
                "cassandra": {"10.0.1.%d:9100" % i: 0.2 for i in range(1, cassandra + 1)}},
        "disk": {"cassandra": {"10.0.1.%d:9100" % i: disk for i in range(1, cassandra + 1)}},
    }
    if users is not None:
        result["users"] = {"dialog-server": {"10.0.0.1:9100": users}}
    return result


class HostMetricsSensorTest(BaseSensorTestCase):
    sensor_cls = HostMetricsSensor

    def setUp(self):
        super(HostMetricsSensorTest, self).setUp()
        self.config = {"autoscaling": {"deployments": [
            {"deployment": "chat", "prometheus_url": URL}], "breach_polls": 3,
            "users_query": "sum by (role, instance) (dialog_users)"}}
        self.sensor_service.set_value(record_key("chat"), json.dumps({
            "deployment": "chat", "tier": "small-failover", "with_storage": False,
            "groups": {"dialog-server": 3, "cassandra": 3}}), local=False)
        self.source = ScriptedMetricsSource()
        self.now = 1000000.0
        self.sensor = self.new_sensor()
        self.schemas = trigger_schemas()

    def new_sensor(self):
        sensor = self.get_sensor_instance(config=self.config)
        sensor._sources[URL] = self.source  # pylint: disable=protected-access
        sensor.clock = lambda: self.now
        sensor.setup()
        return sensor

    def run_polls(self, *polls):
        """Poll once per scripted poll, POLL seconds apart; the triggers dispatched meanwhile."""
        before = len(self.get_dispatched_triggers())
        for poll in polls:
            self.source.polls.append(poll)
            self.sensor.poll()
            self.now += POLL
        dispatched = self.get_dispatched_triggers()[before:]
        for item in dispatched:
            # As st2's sensor service validates (validate_trigger_payload), also where the
            # real st2tests' mock sensor service does not.
            util_schema.validate(item["payload"], self.schemas[item["trigger"]],
                                 cls=util_schema.CustomValidator, use_default=True,
                                 allow_default_none=True)
            assert item["trace_context"].trace_tag.startswith("dialog-autoscale-chat-")
        return dispatched

    def test_a_sustained_breach_dispatches_once_then_cooldown_then_recovery(self):
        assert self.run_polls(metrics(0.5), metrics(0.6)) == []
        # Two polls beyond 77% (70% + 10% tolerance) are not yet a trend; the third is.
        assert self.run_polls(metrics(0.9), metrics(0.9)) == []
        [scale] = self.run_polls(metrics(0.9))
        self.assertTriggerDispatched("dialog.scale_requested")
        payload = scale["payload"]
        assert scale["trigger"] == "dialog.scale_requested"
        assert (payload["role"], payload["direction"], payload["current"],
                payload["desired"]) == ("dialog-server", "out", 3, 5)
        assert payload["metrics"]["value"] == 0.9 and len(payload["metrics"]["instances"]) == 3
        assert "90%" in payload["reason"]
        # Still breaching, but within cooldown_out (600 s = 20 polls): nothing more.
        assert self.run_polls(*[metrics(0.9)] * 15) == []
        # Recovered (the new servers took load): no decision either way.
        assert self.run_polls(*[metrics(0.5, servers=5)] * 5) == []

    def test_a_breach_that_does_not_hold_never_triggers(self):
        wave = [metrics(0.9), metrics(0.9), metrics(0.6)] * 10
        assert self.run_polls(*wave) == []

    def test_cooldown_survives_a_sensor_restart(self):
        assert len(self.run_polls(*[metrics(0.95)] * 3)) == 1
        stored = json.loads(self.sensor_service.get_value(STATE_KEY % "chat", local=True))
        assert stored["roles"]["dialog-server"]["last_direction"] == "out"
        self.sensor = self.new_sensor()  # st2 restarted the sensor container
        assert self.run_polls(*[metrics(0.95)] * 5) == []

    def test_scale_in_needs_the_window_and_a_safe_projection(self):
        self.sensor_service.set_value(record_key("chat"), json.dumps({
            "deployment": "chat", "tier": "small-failover",
            "groups": {"dialog-server": 5, "cassandra": 3}}), local=False)
        # 0.45 on 5 servers projects to 0.75 on 3: above 0.9 x 0.7 = 0.63, so never.
        assert self.run_polls(*[metrics(0.45, servers=5)] * 20) == []
        # 0.3 projects to 0.5: allowed, but only after 300 s of it (10 polls) and then once.
        calm = self.run_polls(*[metrics(0.3, servers=5)] * 12)
        assert [(t["payload"]["direction"], t["payload"]["desired"]) for t in calm] == \
            [("in", 3)]
        assert self.run_polls(*[metrics(0.3, servers=3)] * 20) == [], "never below 3"

    def test_cassandra_disk_breach_asks_for_exactly_one_more_node(self):
        [scale] = self.run_polls(*[metrics(0.3, disk=0.85)] * 3)
        assert (scale["payload"]["role"], scale["payload"]["current"],
                scale["payload"]["desired"]) == ("cassandra", 3, 4)
        assert scale["payload"]["metrics"]["metric"] == "disk"

    def test_source_down_reports_once_and_decides_nothing(self):
        down = self.run_polls(metrics(0.95), metrics(0.95), None, None, None, metrics(0.95))
        assert [t["trigger"] for t in down] == ["dialog.metrics_unavailable"]
        assert "ConnectionError" in down[0]["payload"]["reason"]
        # The breach count was not carried over the gap: two more polls are not enough.
        assert self.run_polls(metrics(0.95)) == []

    def test_empty_answers_count_as_unavailable(self):
        [item] = self.run_polls({"cpu": {}, "disk": {}})
        assert item["trigger"] == "dialog.metrics_unavailable"

    def test_poll_never_raises(self):
        self.sensor_service.set_value(record_key("chat"), "{not json", local=False)
        self.source.polls.append(metrics(0.9))
        self.sensor.poll()  # logged, not raised
        assert self.sensor_service.get_logger("x").exception.called

    def test_the_configured_poll_interval_wins_over_the_sensor_yaml(self):
        sensor = self.sensor_cls(sensor_service=self.sensor_service, poll_interval=30,
                                 config=dict(self.config, autoscaling=dict(
                                     self.config["autoscaling"], poll_interval=15)))
        assert sensor.get_poll_interval() == 15
        assert self.sensor_cls(sensor_service=self.sensor_service, poll_interval=30,
                               config=self.config).get_poll_interval() == 30

    def test_tier_capacity_names_the_next_tier(self):
        [item] = self.run_polls(metrics(0.5, users=2400))
        assert item["trigger"] == "dialog.tier_capacity"
        assert (item["payload"]["tier"], item["payload"]["next_tier"],
                item["payload"]["direction"]) == ("small-failover", "production", "up")
        assert self.run_polls(metrics(0.5, users=2500)) == [], "once an hour"
