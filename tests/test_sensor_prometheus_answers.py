"""What PrometheusSource makes of answers that are not an instant vector of numbers: every one
is a ProviderError naming what came back, and through the sensor a metrics_unavailable
trigger, never an exception out of poll().

The session is a stand-in for requests.Session answering each query with one canned body; the
good answer's shape is the documented one (prometheus.io/docs/prometheus/latest/querying/api:
{"status": "success", "data": {"resultType": "vector", "result": [{"metric": {...},
"value": [<unix time>, "<number as a string>"]}]}}).
"""

import json

import pytest
from st2tests.base import BaseSensorTestCase

from host_metrics_sensor import HostMetricsSensor
from lib.deployment_record import record_key
from lib.errors import ProviderError
from lib.prometheus import PrometheusSource

URL = "http://prometheus.invalid:9091"


class Answer(object):
    def __init__(self, body, status=200):
        self.status_code, self.body = status, body

    def json(self):
        if isinstance(self.body, bytes):
            raise ValueError("not JSON")
        return json.loads(json.dumps(self.body))


class CannedSession(object):
    """Answers every GET with the same body."""

    def __init__(self, body, status=200):
        self.answer = Answer(body, status)

    def get(self, url, params=None, timeout=None):
        assert url == URL + "/api/v1/query" and params["query"] and timeout
        return self.answer


def vector(*series):
    return {"status": "success", "data": {"resultType": "vector", "result": list(series)}}


def sample(value, role="dialog-server", instance="10.0.0.1:9100"):
    return {"metric": {"role": role, "instance": instance}, "value": [1700000000.1, value]}


ODD = {
    "a list body": ([sample("0.5")], "a JSON list body"),
    "a string body": ("success", "a JSON str body"),
    "no data": ({"status": "success"}, "no data object"),
    "data a list": ({"status": "success", "data": []}, "data is a JSON list"),
    "a matrix": ({"status": "success", "data": {"resultType": "matrix", "result": []}},
                 "resultType 'matrix'"),
    "a scalar": ({"status": "success", "data": {"resultType": "scalar",
                                                "result": [1700000000, "1"]}},
                 "resultType 'scalar'"),
    "result missing": ({"status": "success", "data": {"resultType": "vector"}},
                       "result is not a list"),
    "series not objects": (vector("0.5"), "result is not a list of series"),
    "a value that is not a number": (vector(sample("high")), "'high' is not a number"),
    "a number not as a string": (vector(sample(0.5)), "a series"),
    "a value without its time": (vector({"metric": {"role": "cassandra"}, "value": ["0.5"]}),
                                 "a series"),
    "labels not an object": (vector({"metric": ["cassandra"], "value": [1, "0.5"]}),
                             "a series"),
    "not JSON": (b"<html>502</html>", "something other than JSON"),
    "an error status": ({"status": "error", "errorType": "bad_data", "error": "parse error"},
                        "parse error"),
}


@pytest.mark.parametrize("name", sorted(ODD))
def test_an_odd_answer_is_a_provider_error_naming_it(name):
    body, words = ODD[name]
    source = PrometheusSource(URL, session=CannedSession(body))
    with pytest.raises(ProviderError) as info:
        source.fetch()
    assert words in str(info.value) and URL in str(info.value)


def test_a_good_answer_skips_nan_and_infinities_and_keeps_the_numbers():
    body = vector(sample("0.5"), sample("NaN", instance="10.0.0.2:9100"),
                  sample("+Inf", instance="10.0.0.3:9100"),
                  sample("0.25", role="cassandra", instance="10.0.1.1:9100"))
    metrics = PrometheusSource(URL, session=CannedSession(body)).fetch()
    assert metrics["cpu"] == {"dialog-server": {"10.0.0.1:9100": 0.5},
                              "cassandra": {"10.0.1.1:9100": 0.25}}


class OddAnswersThroughTheSensorTest(BaseSensorTestCase):
    sensor_cls = HostMetricsSensor

    def poll_with(self, body):
        self.sensor_service.set_value(record_key("chat"), json.dumps({
            "deployment": "chat", "tier": "small-failover",
            "groups": {"dialog-server": 3, "cassandra": 3}}), local=False)
        sensor = self.get_sensor_instance(config={"autoscaling": {"deployments": [
            {"deployment": "chat", "prometheus_url": URL}]}})
        sensor._sources[URL] = PrometheusSource(  # pylint: disable=protected-access
            URL, session=CannedSession(body))
        sensor.poll()
        return self.get_dispatched_triggers()

    def test_every_odd_answer_is_metrics_unavailable_and_poll_does_not_raise(self):
        for name in sorted(ODD):
            self.setUp()
            body, words = ODD[name]
            [item] = self.poll_with(body)
            logger = self.sensor_service.get_logger("HostMetricsSensor")
            assert item["trigger"] == "dialog.metrics_unavailable", name
            assert words in item["payload"]["reason"], name
            assert not logger.exception.called, name
