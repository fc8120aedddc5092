"""PrometheusSource and HostMetricsSensor against a real Prometheus (Debian's package, started
here on 127.0.0.1) scraping two exporters whose values the test drives (prometheus_client),
labelled by role the way the deploy's prometheus.yml labels node_exporter targets.
`./dialog-local test` installs the prometheus package when it is missing.
"""

import json
import shutil
import subprocess
import time

import pytest
import requests
from st2tests.base import BaseSensorTestCase

from host_metrics_sensor import HostMetricsSensor
from lib.deployment_record import record_key
from lib.errors import ProviderError
from lib.prometheus import PrometheusSource
from metrics_driver import DrivenNodeExporter, free_port

# A short rate window: a rate over 2m needs two minutes of history before it is accurate.
WINDOW = "8s"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


@pytest.fixture(scope="module")
def exporters():
    made = {"dialog-server": DrivenNodeExporter(), "cassandra": DrivenNodeExporter()}
    yield made
    for exporter in made.values():
        exporter.close()


@pytest.fixture(scope="module")
def prometheus(exporters, tmp_path_factory):
    if not shutil.which("prometheus") and not shutil.which(PROMETHEUS):
        pytest.fail("prometheus is not installed (./dialog-local test installs Debian's "
                    "package)", pytrace=False)
    work = tmp_path_factory.mktemp("prometheus")
    groups = [{"labels": {"role": role}, "targets": ["127.0.0.1:%d" % e.port]}
              for role, e in exporters.items()]
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "scrape_configs": [{"job_name": "node", "static_configs": groups}]}
    (work / "prometheus.yml").write_text(json.dumps(config))
    port = free_port()
    process = subprocess.Popen(
        [PROMETHEUS, "--config.file=%s" % (work / "prometheus.yml"),
         "--storage.tsdb.path=%s" % (work / "data"), "--web.listen-address=127.0.0.1:%d" % port],
        stdout=subprocess.DEVNULL, stderr=open(work / "log", "wb"))
    url = "http://127.0.0.1:%d" % port
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(url + "/-/ready", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.3)
        else:
            pytest.fail("prometheus did not start: %s" % (work / "log").read_text()[-500:])
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_for(source, predicate, timeout=45):
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        last = source.fetch()
        if predicate(last):
            return last
        time.sleep(1)
    raise AssertionError("metrics never matched; last: %r" % (last,))


def test_one_query_per_metric_aggregated_by_role_and_instance(prometheus, exporters):
    url, _ = prometheus
    exporters["dialog-server"].cpu, exporters["cassandra"].disk = 0.9, 0.85
    source = PrometheusSource(url, window=WINDOW)
    metrics = wait_for(source, lambda m: m["cpu"].get("dialog-server") and abs(
        list(m["cpu"]["dialog-server"].values())[0] - 0.9) < 0.03)
    before = source.requests
    metrics = source.fetch()
    assert source.requests - before == len(source.queries) == 4
    [(instance, disk)] = metrics["disk"]["cassandra"].items()
    assert instance == "127.0.0.1:%d" % exporters["cassandra"].port
    assert abs(disk - 0.85) < 1e-6
    assert abs(metrics["memory"]["cassandra"][instance] - 0.5) < 1e-6
    assert set(metrics["cpu"]) == {"dialog-server", "cassandra"}


class SensorAgainstPrometheus(BaseSensorTestCase):
    sensor_cls = HostMetricsSensor
    url = None


def test_the_sensor_turns_a_driven_breach_into_one_scale_request(prometheus, exporters):
    url, _ = prometheus
    case = SensorAgainstPrometheus("run")
    case.setUp()
    case.sensor_service.set_value(record_key("live"), json.dumps({
        "deployment": "live", "tier": "production", "groups": {"cassandra": 3}}), local=False)
    sensor = case.get_sensor_instance(config={"autoscaling": {
        "deployments": [{"deployment": "live", "prometheus_url": url}], "breach_polls": 3,
        "rate_window": WINDOW}})
    exporters["cassandra"].disk = 0.85
    exporters["dialog-server"].cpu = 0.2
    wait_for(PrometheusSource(url, window=WINDOW), lambda m: m["cpu"].get("dialog-server") and list(
        m["cpu"]["dialog-server"].values())[0] < 0.5)
    for _ in range(3):
        sensor.poll()
    [scale] = case.get_dispatched_triggers()
    assert scale["trigger"] == "dialog.scale_requested"
    assert (scale["payload"]["role"], scale["payload"]["desired"]) == ("cassandra", 4)


def test_prometheus_down_means_no_decision(prometheus):
    url, process = prometheus
    process.terminate()
    process.wait(timeout=30)
    with pytest.raises(ProviderError) as info:
        PrometheusSource(url, timeout=2).fetch()
    assert "prometheus at %s" % url in str(info.value)
    case = SensorAgainstPrometheus("run")
    case.setUp()
    sensor = case.get_sensor_instance(config={"autoscaling": {
        "deployments": [{"deployment": "live", "prometheus_url": url, "tier": "production"}]}})
    sensor.poll()
    sensor.poll()
    assert [t["trigger"] for t in case.get_dispatched_triggers()] == [
        "dialog.metrics_unavailable"]
