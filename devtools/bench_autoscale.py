#!/usr/bin/env python3
"""Autoscaling under a hostile load, and the sensor's cost per poll.

    ./dialog-local bench autoscale [seed=7] [hosts=1000]

1. A two-hour load trace replayed on a simulated clock through the sensor's decision code
   (lib.autoscale.evaluate, with the default policy and a 30 s poll): the dialog servers' CPU
   oscillates +-15% around the scale-out threshold with periods drifting between 2 and 10
   minutes, with 10% noise, and a 5x spike at minute 70. A scale event completes 5 minutes
   after it is requested (hosts boot and join): the record then shows the new count and
   dialog.scale's completion (last_scaled), which the cooldowns count from. Printed: the scale
   actions, direction reversals within 600 s (target 0), and for each scale-out the delay from
   the start of the sustained breach to the trigger (target: at most the smoothing window,
   breach_polls x poll, plus one poll interval). Then the same trace with no request ever
   answered (the record stays at 3, as with a disabled rule or a failing scale): the requests
   made (target: 1, the reask_interval is longer than the trace).
2. The HostMetricsSensor's poll against a Prometheus stand-in (a separate process on 127.0.0.1
   answering the pack's queries with canned series for `hosts` hosts): queries per poll
   (target: one per metric) and the sensor's CPU time per poll (target: under 50 ms).
"""

import json
import math
import multiprocessing
import os
import random
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, os.path.join(ROOT, "actions"), os.path.join(ROOT, "sensors"),
                os.path.join(HERE, "st2_standin")]

# pylint: disable=wrong-import-position
from lib import autoscale  # noqa: E402
from lib.tables import format_table  # noqa: E402

POLL = 30
HOURS = 2
EFFECT_DELAY = 300


def demand(t, rng_noise):
    """CPU the deployment needs, in dialog-server units (3 servers at 0.77 each = 2.31)."""
    threshold_units = 3 * 0.77
    period = 120 + 480 * (0.5 + 0.5 * math.sin(t / 1500.0))  # drifts between 2 and 10 min
    phase = 2 * math.pi * t / period
    load = threshold_units * (1 + 0.15 * math.sin(phase))
    if 70 * 60 <= t < 85 * 60:
        load *= 5
    return load * (1 + rng_noise)


def replay(seed, answered=True):
    rng = random.Random(seed)
    policy = autoscale.policy_from({})
    threshold = policy["roles"]["dialog-server"]["target"] * (1 + policy["tolerance"])
    state, servers, pending, last_scaled = {}, 3, [], {}
    events, above_since = [], None
    for second in range(0, HOURS * 3600 + 1):
        for when, count in list(pending):
            if second >= when:
                last_scaled["dialog-server"] = {
                    "direction": "out" if count > servers else "in", "from": servers,
                    "to": count, "completed_at": float(when)}
                servers = count
                pending.remove((when, count))
        cpu = min(1.0, demand(second, rng.gauss(0, 0.1 / 3)) / servers)
        if cpu > threshold:
            above_since = second if above_since is None else above_since
        else:
            above_since = None
        if second % POLL:
            continue
        metrics = {"cpu": {"dialog-server": {"s%d" % i: cpu for i in range(servers)}},
                   "disk": {"cassandra": {"c1": 0.3}}}
        findings = autoscale.evaluate(policy, "bench", "small-failover",
                                      {"dialog-server": servers, "cassandra": 3}, metrics,
                                      float(second), state, last_scaled=last_scaled)
        for kind, payload in findings:
            if kind != "scale_requested" or payload["role"] != "dialog-server":
                continue
            delay = second - above_since if payload["direction"] == "out" and \
                above_since is not None else None
            # A breach that began within the cooldown of the last completed operation waits
            # for the cooldown by design; it is reported apart from the smoothing delay.
            done = last_scaled.get("dialog-server")
            held = bool(done) and delay is not None and \
                above_since < done["completed_at"] + policy["cooldown_out"]
            events.append((second, payload["direction"], payload["current"], payload["desired"],
                           delay, cpu, held))
            if answered:
                pending.append((second + EFFECT_DELAY, payload["desired"]))
    reversals = sum(1 for a, b in zip(events, events[1:]) if a[1] != b[1] and b[0] - a[0] < 600)
    return policy, events, reversals


class _Prometheus(BaseHTTPRequestHandler):
    """Stand-in for Prometheus' /api/v1/query: canned series for every host, by role."""
    answers = {}

    def do_GET(self):  # noqa: N802 - http.server's name
        query = parse_qs(urlparse(self.path).query).get("query", [""])[0]
        body = self.answers.get(query.split("(")[0].strip()[:24], self.answers["default"])
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.counter.value += 1

    def log_message(self, *args):
        pass


def _serve(port, hosts, counter, ready):
    roles = ["dialog-server"] * (hosts // 4) + ["cassandra"] * (hosts // 4)
    roles += ["web", "proxy", "postgres", "voice"] * ((hosts - len(roles)) // 4 + 1)
    rng = random.Random(1)
    series = [{"metric": {"role": role, "instance": "10.%d.%d.%d:9100" % (
        i // 65536, (i // 256) % 256, i % 256)}, "value": [time.time(), "%.4f" % rng.random()]}
        for i, role in enumerate(roles[:hosts])]
    _Prometheus.answers = {"default": json.dumps({"status": "success", "data": {
        "resultType": "vector", "result": series}}).encode()}
    server = ThreadingHTTPServer(("127.0.0.1", port), _Prometheus)
    server.counter = counter
    ready.set()
    server.serve_forever()


def sensor_cost(hosts, polls=20):
    from st2tests.mocks.sensor import MockSensorService, MockSensorWrapper  # noqa: E402
    from host_metrics_sensor import HostMetricsSensor  # noqa: E402
    from lib.deployment_record import record_key  # noqa: E402
    import socket  # noqa: E402
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    counter, ready = multiprocessing.Value("i", 0), multiprocessing.Event()
    server = multiprocessing.Process(target=_serve, args=(port, hosts, counter, ready),
                                     daemon=True)
    server.start()
    ready.wait(30)
    try:
        service = MockSensorService(MockSensorWrapper("dialog", "HostMetricsSensor"))
        service.set_value(record_key("bench"), json.dumps({
            "deployment": "bench", "tier": "production",
            "groups": {"dialog-server": hosts // 4 - (hosts // 4 + 1) % 2,
                       "cassandra": hosts // 4}}), local=False)
        sensor = HostMetricsSensor(service, config={"autoscaling": {"deployments": [{
            "deployment": "bench", "prometheus_url": "http://127.0.0.1:%d" % port}]}})
        sensor.setup()
        sensor.poll()  # connection set-up, imports
        start_queries = counter.value
        cpu, wall = [], []
        for _ in range(polls):
            c0, w0 = time.process_time(), time.perf_counter()
            sensor.poll()
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
        queries = (counter.value - start_queries) / float(polls)
        metrics = len(sensor._sources.popitem()[1].queries)  # pylint: disable=protected-access
        return queries, metrics, sorted(cpu)[len(cpu) // 2], max(cpu), sorted(wall)[polls // 2]
    finally:
        server.terminate()


def main(argv):
    params = dict(arg.split("=", 1) for arg in argv if "=" in arg)
    seed, hosts = int(params.get("seed", "7")), int(params.get("hosts", "1000"))
    policy, events, reversals = replay(seed)
    limit = policy["breach_polls"] * POLL + POLL
    print("1. two-hour trace, poll %ds, breach_polls %d, tolerance %.0f%%, cooldowns out %ds / "
          "in %ds, scale-in window %ds, effect after %ds" % (
              POLL, policy["breach_polls"], policy["tolerance"] * 100, policy["cooldown_out"],
              policy["cooldown_in"], policy["scale_in_window"], EFFECT_DELAY))
    print(format_table(["AT (MIN)", "DIRECTION", "SERVERS", "CPU", "BREACH -> TRIGGER (S)"],
                       [["%.1f" % (e[0] / 60.0), e[1], "%d -> %d" % (e[2], e[3]),
                         "%.0f%%" % (e[5] * 100), "-" if e[4] is None else
                         "%d%s" % (e[4], " (held by cooldown)" if e[6] else "")]
                        for e in events]))
    delays = [e[4] for e in events if e[4] is not None and not e[6]]
    held = [e[4] for e in events if e[6]]
    print("scale actions: %d; direction reversals within 600 s: %d (target 0); breach to "
          "trigger: max %s s (target <= %d s)%s\n" % (
              len(events), reversals, max(delays) if delays else "-", limit,
              "; %d breach(es) began in a cooldown and waited for it (max %d s)"
              % (len(held), max(held)) if held else ""))
    _, unanswered, _ = replay(seed, answered=False)
    print("the same trace, no request answered (the record stays at 3): %d request(s) over %d "
          "h (target 1; asked again only after reask_interval, %d s)\n"
          % (len(unanswered), HOURS, policy["reask_interval"]))
    queries, metrics, cpu_median, cpu_max, wall = sensor_cost(hosts)
    print("2. HostMetricsSensor.poll() for %d hosts: %.1f queries per poll for %d metrics "
          "(target: one per metric), CPU %.1f ms median / %.1f ms max (target < 50 ms), wall "
          "%.1f ms median" % (hosts, queries, metrics, cpu_median * 1000, cpu_max * 1000,
                              wall * 1000))
    ok = reversals == 0 and all(d <= limit for d in delays) and queries == metrics \
        and cpu_median < 0.05 and len(unanswered) == 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
