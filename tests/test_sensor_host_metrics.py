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

import rules_engine
from host_metrics_sensor import STATE_KEY, HostMetricsSensor
from lib.deployment_record import record_key
from lib.errors import ProviderError
from lib.operation_lock import lock_key

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
URL = "http://prometheus.invalid:9091"
POLL = 30
HOUR = 3600 // POLL  # polls


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
        self.set_record(servers=3, cassandra=3)
        self.source = ScriptedMetricsSource()
        self.now = 1000000.0
        self.sensor = self.new_sensor()
        self.schemas = trigger_schemas()

    def set_record(self, servers=3, cassandra=3, deployment="chat", **last_scaled):
        """The deployment's record as dialog.deploy (groups) and dialog.scale (last_scaled:
        role -> (direction, from, to, completed_at)) leave it."""
        self.sensor_service.set_value(record_key(deployment), json.dumps({
            "deployment": deployment, "tier": "small-failover", "with_storage": False,
            "groups": {"dialog-server": servers, "cassandra": cassandra},
            "last_scaled": {role.replace("_", "-"): dict(zip(
                ("direction", "from", "to", "completed_at"), entry))
                for role, entry in last_scaled.items()}}), local=False)

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
            assert item["trace_context"].trace_tag.startswith(
                "dialog-autoscale-%s-" % item["payload"]["deployment"])
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
        assert (payload["repeat"], payload["reask_after"]) == (0, 21600)
        # Still breaching while the operation runs (the record still says 3): asked already.
        assert self.run_polls(*[metrics(0.9)] * 15) == []
        # dialog.scale completed now; the new servers take load: no decision either way.
        self.set_record(servers=5, dialog_server=("out", 3, 5, self.now))
        assert self.run_polls(*[metrics(0.5, servers=5)] * 40) == []

    def test_the_cooldown_runs_from_the_completed_operation_not_from_the_request(self):
        [scale] = self.run_polls(*[metrics(0.95)] * 3)
        asked = self.now - POLL
        assert scale["payload"]["desired"] == 5
        assert self.run_polls(*[metrics(0.95)] * 10) == []  # the operation runs: 300 s
        completed = self.now
        self.set_record(servers=5, dialog_server=("out", 3, 5, completed))
        # The two new servers did not absorb the load. cooldown_out (600 s) counts from the
        # completion: asked again at completed + 600, not at the request + 600.
        polls = self.run_polls(*[metrics(0.95, servers=5)] * 25)
        [again] = polls
        when = completed + 600
        assert again["trace_context"].trace_tag.endswith("-%d" % when), (asked, completed)
        assert (again["payload"]["current"], again["payload"]["desired"],
                again["payload"]["repeat"]) == (5, 7, 0)

    def test_a_request_nobody_acts_on_delays_no_other_request(self):
        # Scale-in rules ship disabled: a 5 -> 3 request stays unanswered, the record says 5.
        self.set_record(servers=5)
        [calm] = self.run_polls(*[metrics(0.3, servers=5)] * 12)
        assert (calm["payload"]["direction"], calm["payload"]["desired"]) == ("in", 3)
        # A load spike right after: three polls, not a cooldown counted from the request.
        [out] = self.run_polls(*[metrics(0.95, servers=5)] * 3)
        assert (out["payload"]["direction"], out["payload"]["current"],
                out["payload"]["desired"]) == ("out", 5, 7)

    def test_a_breach_that_does_not_hold_never_triggers(self):
        wave = [metrics(0.9), metrics(0.9), metrics(0.6)] * 10
        assert self.run_polls(*wave) == []

    def test_an_asked_request_survives_a_sensor_restart(self):
        assert len(self.run_polls(*[metrics(0.95)] * 3)) == 1
        stored = json.loads(self.sensor_service.get_value(STATE_KEY % "chat", local=True))
        pending = stored["roles"]["dialog-server"]["pending"]
        assert (pending["direction"], pending["current"], pending["desired"]) == ("out", 3, 5)
        self.sensor = self.new_sensor()  # st2 restarted the sensor container
        assert self.run_polls(*[metrics(0.95)] * 30) == []

    def test_scale_in_needs_the_window_and_a_safe_projection(self):
        self.set_record(servers=5)
        # 0.45 on 5 servers projects to 0.75 on 3: above 0.9 x 0.7 = 0.63, so never.
        assert self.run_polls(*[metrics(0.45, servers=5)] * 20) == []
        # 0.3 projects to 0.5: allowed, but only after 300 s of it (10 polls) and then once.
        calm = self.run_polls(*[metrics(0.3, servers=5)] * 12)
        assert [(t["payload"]["direction"], t["payload"]["desired"]) for t in calm] == \
            [("in", 3)]
        # The scale-in ran and the record says 3. Long past cooldown_in (900 s), as idle as
        # before: 3 is the tier's minimum, so nothing (the record saying 5 while the sensor
        # measured 3 servers would pass by the cooldown alone).
        self.set_record(servers=3, dialog_server=("in", 5, 3, self.now))
        assert self.run_polls(*[metrics(0.1, servers=3)] * 60) == [], "never below 3"

    def test_cassandra_scale_in_projects_the_survivors_larger_share_of_the_data(self):
        self.set_record(cassandra=4)
        # The fullest of 4 nodes at 50%: the 3 survivors would hold 4/3 of it, 67%, above
        # 0.9 x 70% = 63%: no scale-in, however long.
        assert self.run_polls(*[metrics(0.5, disk=0.5, cassandra=4)] * 40) == []
        # At 45% they would be at 60%: scale-in after the window.
        [calm] = self.run_polls(*[metrics(0.5, disk=0.45, cassandra=4)] * 12)
        assert (calm["payload"]["role"], calm["payload"]["current"],
                calm["payload"]["desired"]) == ("cassandra", 4, 3)
        assert "would be 60% on 3 hosts" in calm["payload"]["reason"]

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

    # ------------------------------------------------------------ asked once, end to end

    def react(self, dispatched):
        """What st2rulesengine runs for the dispatched triggers with the pack's rules as they
        ship (scale-in disabled): [(action ref, parameters)]."""
        return [(ref, params) for item in dispatched
                for _, ref, params in rules_engine.enforce(
                    item["trigger"], item["payload"], schemas_of)]

    def test_an_unanswered_scale_out_is_one_request_and_one_announcement(self):
        # Two hours of breach; dialog.scale never gets to change the record (it failed, or
        # waits behind another operation): the record says 3 throughout.
        dispatched = self.run_polls(*[metrics(0.95)] * (2 * HOUR))
        actions = self.react(dispatched)
        assert [t["trigger"] for t in dispatched] == ["dialog.scale_requested"]
        assert [ref for ref, _ in actions] == ["dialog.announce", "dialog.scale"]
        assert actions[1][1]["count"] == 5

    def test_with_scale_in_rules_disabled_a_scale_in_is_announced_once(self):
        self.set_record(servers=5)
        dispatched = self.run_polls(*[metrics(0.3, servers=5)] * (3 * HOUR))
        actions = self.react(dispatched)
        assert [ref for ref, _ in actions] == ["dialog.announce"]
        message = actions[0][1]["message"]
        assert "dialog-server 5 -> 3" in message and "scale-in rules ship disabled" in message
        assert "st2 rule enable dialog.scale_in_dialog_server" in message
        assert "Not announced again" in message and "after 6.0 h" in message

    def test_after_the_reask_interval_the_request_is_repeated_silently(self):
        self.config["autoscaling"]["reask_interval"] = 1800
        self.sensor = self.new_sensor()
        dispatched = self.run_polls(*[metrics(0.95)] * (HOUR + 5))
        assert [t["payload"]["repeat"] for t in dispatched] == [0, 1, 2]
        assert all(t["payload"]["reask_after"] == 1800 for t in dispatched)
        # Each repeat may meet a rule enabled meanwhile; only the first is announced.
        assert [ref for ref, _ in self.react(dispatched)] == \
            ["dialog.announce", "dialog.scale", "dialog.scale", "dialog.scale"]

    def test_a_different_request_replaces_the_unanswered_one(self):
        self.set_record(servers=5)
        assert len(self.run_polls(*[metrics(0.3, servers=5)] * 12)) == 1      # in, unanswered
        assert len(self.run_polls(*[metrics(0.95, servers=5)] * 3)) == 1      # out
        [again] = self.run_polls(*[metrics(0.3, servers=5)] * 12)            # in again: new
        assert (again["payload"]["direction"], again["payload"]["repeat"]) == ("in", 0)

    def test_no_request_while_an_operation_holds_the_deployment_lock(self):
        self.sensor_service.set_value(lock_key("chat"), json.dumps({
            "owner": "e1", "operation": "deploy", "detail": None, "since": "x",
            "renewed": "x"}), local=False)
        assert self.run_polls(*[metrics(0.95)] * 20) == []
        self.sensor_service.delete_value(lock_key("chat"), local=False)
        assert self.run_polls(*[metrics(0.95)] * 2) == [], "the streak starts after the lock"
        assert len(self.run_polls(metrics(0.95))) == 1

    def test_two_deployments_watched_at_once_keep_separate_state(self):
        other = ScriptedMetricsSource()
        talk_url = "http://prometheus-talk.invalid:9091"
        self.config["autoscaling"]["deployments"].append(
            {"deployment": "talk", "prometheus_url": talk_url})
        self.set_record(servers=3, deployment="talk")
        self.sensor = self.new_sensor()
        self.sensor._sources[talk_url] = other  # pylint: disable=protected-access

        def both(chat, talk, polls):
            other.polls.extend([talk] * polls)
            return self.run_polls(*[chat] * polls)

        # chat breaches, talk is fine: chat's third poll asks, talk's calm does not reset it.
        [chat] = both(metrics(0.95), metrics(0.5), 3)
        assert (chat["payload"]["deployment"], chat["payload"]["desired"]) == ("chat", 5)
        # talk breaches too: chat's unanswered request does not hold talk's back.
        [talk] = both(metrics(0.95), metrics(0.95), 3)
        assert (talk["payload"]["deployment"], talk["payload"]["desired"]) == ("talk", 5)
        # chat's operation completes; talk's record still says 3: talk is not asked again.
        self.set_record(servers=5, dialog_server=("out", 3, 5, self.now))
        assert both(metrics(0.5, servers=5), metrics(0.95), HOUR) == []
        states = {name: json.loads(self.sensor_service.get_value(STATE_KEY % name, local=True))
                  for name in ("chat", "talk")}
        assert states["chat"]["roles"]["dialog-server"]["pending"] is None
        assert states["talk"]["roles"]["dialog-server"]["pending"]["current"] == 3


def schemas_of(ref):
    import local_runner  # pylint: disable=import-outside-toplevel
    return local_runner.parameter_schemas(local_runner.load_action_metadata(ref))
