"""Driven node_exporters and a local Prometheus, for tests and the sandbox's autoscaling demo.

DrivenNodeExporter serves, on 127.0.0.1, the node_exporter series the pack's queries read,
with values the caller sets. It stands in for the node_exporter of a host (the sandbox's fake
container runtime runs no real one); Prometheus itself is the real Debian package.
"""

import json
import shutil
import socket
import subprocess
import threading
import time

import requests
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DrivenNodeExporter(object):
    """The node_exporter series the pack queries, with values the test sets: `cpu` (busy
    fraction: the idle counter grows by 1 - cpu per second) and `disk` (used fraction of the
    data filesystem)."""

    def __init__(self, cpu=0.2, disk=0.3):
        self.cpu, self.disk = cpu, disk
        self.idle, self.last = 1000.0, time.monotonic()
        self.lock = threading.Lock()
        self.registry = CollectorRegistry()
        self.registry.register(self)
        self.port = free_port()
        self.server, self.thread = start_http_server(self.port, addr="127.0.0.1",
                                                     registry=self.registry)

    def collect(self):
        with self.lock:
            now = time.monotonic()
            self.idle += (now - self.last) * (1.0 - self.cpu)
            self.last = now
            idle = CounterMetricFamily("node_cpu_seconds", "CPU seconds", labels=["cpu", "mode"])
            idle.add_metric(["0", "idle"], self.idle)
            yield idle
            size = 100 * 1024 ** 3
            labels = ["mountpoint", "fstype"]
            avail = GaugeMetricFamily("node_filesystem_avail_bytes", "free", labels=labels)
            avail.add_metric(["/var/lib/dialog", "ext4"], size * (1.0 - self.disk))
            yield avail
            total = GaugeMetricFamily("node_filesystem_size_bytes", "size", labels=labels)
            total.add_metric(["/var/lib/dialog", "ext4"], size)
            yield total
            for name in ("node_memory_MemAvailable_bytes", "node_memory_MemTotal_bytes"):
                gauge = GaugeMetricFamily(name, "memory")
                gauge.add_metric([], 4.0 if "Available" in name else 8.0)
                yield gauge
            load = GaugeMetricFamily("node_load1", "load")
            load.add_metric([], 0.5)
            yield load

    def close(self):
        self.server.shutdown()


class LocalPrometheus(object):
    """Debian's prometheus on 127.0.0.1 scraping `groups` ([{"labels", "targets"}]) every
    second; reload(groups) rewrites the targets and sends SIGHUP."""

    def __init__(self, workdir, groups):
        self.workdir, self.port = workdir, free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.binary = shutil.which("prometheus")
        if not self.binary:
            raise RuntimeError("prometheus is not installed (apt-get install prometheus)")
        self._write(groups)
        self.log = open("%s/prometheus.log" % workdir, "wb")
        self.process = subprocess.Popen(
            [self.binary, "--config.file=%s/prometheus.yml" % workdir,
             "--storage.tsdb.path=%s/data" % workdir,
             "--web.listen-address=127.0.0.1:%d" % self.port],
            stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/-/ready", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        self.close()
        raise RuntimeError("prometheus did not start; see %s/prometheus.log" % workdir)

    def _write(self, groups):
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "scrape_configs": [{"job_name": "node", "static_configs": groups}]}
        with open("%s/prometheus.yml" % self.workdir, "w", encoding="utf-8") as handle:
            json.dump(config, handle)

    def reload(self, groups):
        self._write(groups)
        self.process.send_signal(1)  # SIGHUP: Prometheus re-reads its configuration

    def close(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.log.close()
