#!/usr/bin/env python3
"""Dialog servers seen healthy through the proxies during a Cassandra scale-out (sandbox).

    ./dialog-local bench rolling [interval=1]

Deploys small-failover in the sandbox (sandbox_deploy.py), then runs
`dialog.scale role=cassandra delta=1`: the new node changes every dialog server's
contact-points, so the reconcile deploy restarts each of them (one at a time: lib.stages
ROLLING_ROLES, lib.hosts.start_order turns). Meanwhile every proxy probes every dialog server's
health check (GET /v1/status on its http port) each `interval` seconds, from the proxy host, the
way nginx's upstreams reach them (devtools/rolling/probe_upstreams.py over SSH). The sandbox's
nginx is a stand-in that answers every request itself and routes nothing, and nginx.conf has no
per-server route, so the probe goes from the proxy host to each upstream address rather than
through nginx. Printed: the probes, the restarts seen, and the minimum number of healthy dialog
servers at any probe (must be >= N-1).
"""

import contextlib
import io
import os
import shlex
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, os.path.join(ROOT, "actions")]

# pylint: disable=wrong-import-position
import local_runner  # noqa: E402
from sandbox.hosts import preflight  # noqa: E402
from sandbox_deploy import sandbox  # noqa: E402

DEPLOYMENT = "roll"
PROBE = os.path.join(HERE, "rolling", "probe_upstreams.py")


class Prober(object):
    """One SSH channel per proxy running the probe; lines collected as (proxy, time, healthy,
    total, down)."""

    def __init__(self, connection, name, targets, interval):
        self.name, self.lines, self.connection = name, [], connection
        with open(PROBE, encoding="utf-8") as handle:
            source = handle.read()
        self.channel = connection.client.get_transport().open_session()
        self.channel.exec_command("python3 -c %s %g %s" % (
            shlex.quote(source), interval, " ".join(shlex.quote(t) for t in targets)))
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.channel.makefile("r"):
            if line.startswith("@probe "):
                parts = line.split()
                self.lines.append((self.name, float(parts[1]), int(parts[2]), int(parts[3]),
                                   parts[4:]))

    def close(self):
        self.channel.close()
        self.thread.join(5)


def scenario(box, interval, say=print):
    local_runner._action_base_class()  # pylint: disable=protected-access
    # pylint: disable=import-outside-toplevel
    from dialog_action import DialogAction
    from lib.catalog import default_catalog
    from lib.operations import session
    say("== dialog.deploy tier=small-failover deployment=%s" % DEPLOYMENT)
    with contextlib.redirect_stdout(io.StringIO()):
        ok, result, _ = box.run("dialog.deploy", {"tier": "small-failover",
                                                  "deployment": DEPLOYMENT},
                                progress=lambda line: None)
    if not ok:
        raise SystemExit("deploy failed: %s" % (result.get("output") or {}).get("failure"))
    hosts = result["output"]["hosts"]
    servers = [h for h in hosts if "dialog-server" in h["roles"]]
    proxies = [h for h in hosts if "proxy" in h["roles"]]
    port = default_catalog().port("dialog-server", "http")
    targets = ["%s:%d/v1/status" % (h["private_address"], port) for h in servers]
    ssh = DialogAction.login_options(box.config["profiles"]["sandbox"])
    say("deployed: %d dialog servers, %d proxies; probing every %gs from each proxy"
        % (len(servers), len(proxies), interval))
    with contextlib.ExitStack() as stack:
        probers = []
        for proxy in proxies:
            connection = stack.enter_context(session(proxy, ssh, hosts=hosts))
            probers.append(Prober(connection, proxy["name"], targets, interval))
        time.sleep(2 * interval)
        say("== dialog.scale role=cassandra delta=1")
        started = time.monotonic()
        lines = []
        with contextlib.redirect_stdout(io.StringIO()):
            ok, scaled, _ = box.run("dialog.scale", {"deployment": DEPLOYMENT,
                                                     "role": "cassandra", "delta": 1},
                                    progress=lines.append)
        seconds = time.monotonic() - started
        time.sleep(2 * interval)
        for prober in probers:
            prober.close()
    if not ok:
        raise SystemExit("scale failed: %s" % (scaled.get("output") or {}).get("failure"))
    output = scaled["output"]
    probes = [line for prober in probers for line in prober.lines]
    names = {h["name"] for h in servers}
    restarts = [line for line in lines if "one host of its group at a time" in line
                and line.split("| ", 1)[-1].split(":")[0] in names]
    for line in restarts:
        say("  " + line)
    worst = min(probes, key=lambda p: p[2])
    downs = sorted({name for p in probes for name in p[4]})
    n = len(servers)
    say("cassandra %s -> %s in %.0fs; %d probes through %d proxies"
        % (output["before"], output["after"], seconds, len(probes), len(probers)))
    say("upstreams seen down at some probe: %s" % (", ".join(downs) or "none"))
    say("minimum healthy dialog servers at any probe: %d of %d (target >= %d) at %s from %s"
        % (worst[2], n, n - 1, time.strftime("%H:%M:%S", time.localtime(worst[1])), worst[0]))
    say("dialog servers restarted in turn: %d of %d" % (len(restarts), n))
    return worst[2] >= n - 1


def main(argv):
    interval = 1.0
    for arg in argv:
        key, _, value = arg.partition("=")
        if key != "interval":
            raise SystemExit("usage: bench_rolling.py [interval=SECONDS]")
        interval = float(value)
    problems = preflight()
    if problems:
        print("the sandbox cannot run here:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    status = 1
    with sandbox() as box:
        try:
            status = 0 if scenario(box, interval, say=lambda line: print(line, flush=True)) else 1
        finally:
            with contextlib.redirect_stdout(io.StringIO()):
                box.run("dialog.destroy", {"deployment": DEPLOYMENT, "confirm": DEPLOYMENT},
                        progress=lambda line: None)
    print("sandbox torn down")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
