#!/usr/bin/env python3
"""Self-healing end to end in the local sandbox: faults -> health sensor -> rules -> repairs.

    ./dialog-local sandbox-chaos [faults=proxy,postgres,dialog-server,cassandra] [wait=600]
        [poll_interval=2] [down_polls=3]

Deploys small-failover on provider aws in the sandbox (sandbox_deploy.py), starts the pack's
health sensor polling and the pack's rules dispatching (devtools/chaos/reactor.py: the sensor
in one thread, each rule's action in its own, as StackStorm runs them), starts the client probe
(devtools/chaos/probe.py: every second a GET through the floating address and a write through
PgBouncer), then in turn:

1. kills proxy-1 (its processes and network end; the emulator still says running);
2. kills the Postgres primary the same way;
3. terminates a dialog server at the emulator (TerminateInstances);
4. terminates a Cassandra node at the emulator.

After each fault it waits (at most `wait` seconds) for the repair to finish on its own and the
deployment to be whole again: every host healthy in dialog.status, every role at its deployed
count, a streaming Postgres standby, the floating address answering. No step in between is
manual. At the end every committed probe write is read back from the current primary.

Exit 0 only when all faults were repaired with no human step, no committed write was lost,
every host is healthy at the end and the repairs' chat announcements were printed (here,
instead of posted). Holds the sandbox lock (/tmp/dialog-sandbox.lock) while it runs; the
sandbox is torn down on exit. What every action printed is in the run's log, whose tail is
shown on failure.
"""

import collections
import contextlib
import io
import logging
import os
import signal
import sys
import tempfile
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, os.path.join(ROOT, "actions"), os.path.join(ROOT, "sensors")]

# pylint: disable=wrong-import-position
from chaos import faults as chaos_faults  # noqa: E402
from chaos import report  # noqa: E402
from chaos.probe import Probe, PsqlClient, https_get, speaks_tls  # noqa: E402
from chaos.reactor import Reactor  # noqa: E402
from chaos.sandbox_lock import sandbox_lock  # noqa: E402
from chaos.timeline import Timeline, figures  # noqa: E402
from sandbox.hosts import RUNNING, preflight  # noqa: E402
from sandbox_deploy import sandbox, summary  # noqa: E402

DEPLOYMENT = "chaos"
CHAT_CHANNEL = "#dialog-chaos"
PROBE_HOST = "%s-dialog-server-1" % DEPLOYMENT
CHECK_EVERY = 5.0


class ScenarioFailed(AssertionError):
    """A step of the run did not end as it must."""


def group_counts(hosts):
    return collections.Counter(role for h in hosts for role in h["roles"])


def floating_address(box):
    """The deployment's floating Elastic IP (tagged dialog:floating by the pack)."""
    ec2 = box.emulator.client("ec2")
    found = ec2.describe_addresses(Filters=[
        {"Name": "tag:dialog:deployment", "Values": [DEPLOYMENT]},
        {"Name": "tag-key", "Values": ["dialog:floating"]}])["Addresses"]
    if len(found) != 1:
        raise ScenarioFailed("expected one floating address, found %d" % len(found))
    return found[0]["PublicIp"]


def probe_where(box):
    """(namespace, server.conf on this machine) of the dialog server the write probe runs on:
    the first, which the run never faults; another running one if it is gone."""
    def where():
        hosts = box.hosts.hosts
        names = [PROBE_HOST] + sorted(n for n in hosts if "-dialog-server-" in n)
        for name in names:
            info = hosts.get(name)
            conf = os.path.join(box.hosts.host_root(name), "etc", "dialog", "server.conf")
            if info is not None and info.state == RUNNING and os.path.exists(conf):
                return info.namespace, conf
        raise RuntimeError("no running dialog server to probe from")
    return where


class Run:  # pylint: disable=too-many-instance-attributes
    """One chaos run in a sandbox `box`."""

    def __init__(self, box, say, log, wait=600, poll_interval=2, down_polls=3):
        self.box, self.say, self.log = box, say, log
        self.wait, self.poll_interval, self.down_polls = wait, poll_interval, down_polls
        self.timeline = Timeline()
        self.config = None
        self.expected = None
        self.client = PsqlClient(probe_where(box))
        self.web_ok = False
        self.reactor = None
        self.windows = []  # (fault, host, time injected)

    def run_action(self, ref, params):
        with contextlib.redirect_stdout(io.StringIO()):
            ok, result, _ = self.box.run(ref, params, progress=self.log)
        return ok, result

    def status(self):
        ok, state = self.run_action("dialog.status", {"deployment": DEPLOYMENT})
        if not ok:
            raise ScenarioFailed("dialog.status failed: %s" % state.get("error"))
        return state

    def deploy(self):
        self.say("== dialog.deploy tier=small-failover provider=aws deployment=%s" % DEPLOYMENT)
        started = time.monotonic()
        ok, result = self.run_action("dialog.deploy", {"tier": "small-failover",
                                                       "deployment": DEPLOYMENT})
        output = result.get("output") or {}
        if not ok:
            raise ScenarioFailed("deploy failed: %s" % output.get("failure"))
        self.expected = group_counts(output["hosts"])
        self.say("deployed %d hosts in %.0f s" % (len(output["hosts"]),
                                                  time.monotonic() - started))
        return output

    def pack_config(self):
        healing = {"poll_interval": self.poll_interval, "down_polls": self.down_polls,
                   "deployments": [DEPLOYMENT]}
        with open(os.path.join(ROOT, "config.schema.yaml"), encoding="utf-8") as handle:
            declared = "healing" in (yaml.safe_load(handle) or {})
        if declared:
            return self.box.pack_config(chat_channel=CHAT_CHANNEL, healing=healing)
        # Until the schema declares the block, the sensor and the repairs get it as is.
        return dict(self.box.pack_config(chat_channel=CHAT_CHANNEL), healing=healing)

    def whole(self, group):
        """[] when the deployment is whole again, else what is still missing."""
        state = self.status()
        missing = ["%s unhealthy" % h["name"] for h in state["hosts"] if not h["healthy"]]
        counts = group_counts(state["hosts"])
        missing += ["%s: %d of %d" % (role, counts.get(role, 0), n)
                    for role, n in sorted(self.expected.items()) if counts.get(role, 0) != n]
        if group == "postgres" and not missing:
            try:
                if self.client.streaming_standbys() < 1:
                    missing.append("no streaming Postgres standby")
            except RuntimeError as exc:
                missing.append(str(exc))
        if group == "proxy" and not self.web_ok:
            missing.append("the floating address does not answer")
        return missing

    def await_repair(self, fault, host, start):
        """Wait for the repairs the fault set off to end and the deployment to be whole."""
        deadline = start + self.wait
        missing = ["no repair started"]
        while time.monotonic() < deadline:
            time.sleep(CHECK_EVERY)
            recent = [s for s in self.timeline.samples("web", time.monotonic() - 3)]
            self.web_ok = bool(recent) and recent[-1].ok
            started = self.reactor.since(start)
            if not started or self.reactor.running():
                continue
            failed = [e for e in started if e["status"] != "succeeded"]
            if failed:
                raise ScenarioFailed("%s: repair %s failed: %s" % (
                    fault.name, failed[0]["ref"],
                    (failed[0]["result"].get("output") or {}).get("failure")
                    or failed[0]["result"]))
            missing = self.whole(fault.group)
            if not missing:
                self.timeline.mark("redundant", host=host)
                self.say("%s: whole again after %.1f s" % (fault.name, time.monotonic() - start))
                return
        raise ScenarioFailed("%s: not repaired within %d s (%s)"
                             % (fault.name, self.wait, "; ".join(missing)))

    def baseline(self, seconds=10):
        """A healthy deployment: the probes succeed and the sensor dispatches no host_down."""
        time.sleep(seconds)
        downs = self.timeline.events("trigger", trigger="dialog.host_down")
        if downs:
            raise ScenarioFailed("host_down before any fault: %s" % downs[0].fields["payload"])
        for kind in ("web", "write"):
            samples = self.timeline.samples(kind)
            if not samples or not samples[-1].ok:
                raise ScenarioFailed("the %s probe fails before any fault: %s" % (
                    kind, samples[-1].detail if samples else "no sample"))

    def chaos(self, faults):
        """Deploy, inject each fault in turn, wait for each repair; the benchmark rows."""
        self.deploy()
        self.config = self.pack_config()
        address = floating_address(self.box)
        tls = speaks_tls(address)
        self.say("floating address %s (%s); write probe from %s through its server.conf"
                 % (address, "https" if tls else "plain http: the proxy is a stand-in",
                    PROBE_HOST))
        self.client.create_table()
        probe = Probe(self.timeline, lambda: https_get(address, tls=tls), self.client.write,
                      log=self.log)
        self.reactor = Reactor(self.box, self.timeline, self.config, self.say, self.log,
                               poll_interval=self.poll_interval)
        self.reactor.start()
        probe.start()
        try:
            self.baseline()
            for fault in faults:
                hosts = self.status()["hosts"]
                start = self.timeline.mark("fault", fault=fault.name).at
                host = chaos_faults.inject(self.box, fault, DEPLOYMENT, hosts)
                self.say("\n== fault: %s (%s, %s)" % (fault.name, host, fault.how))
                self.windows.append((fault, host, start))
                self.await_repair(fault, host, start)
            time.sleep(3)  # the probes' view after the last repair
        finally:
            probe.stop()
            self.reactor.stop()

    def rows(self, found):
        ends = [w[2] for w in self.windows[1:]] + [None]
        return [figures(self.timeline, fault.name, host, start, end, found)
                for (fault, host, start), end in zip(self.windows, ends)]


def print_report(say, rows, bench):
    say("\n" + report.table(rows))
    if bench:
        say("\n" + report.anchors())
    groups = {f.name: f.group for f in chaos_faults.FAULTS}
    misses = report.target_misses(rows, groups)
    say("target (service answers again within %d s after a proxy or Postgres primary "
        "fault): %s" % (report.TARGET_SECONDS, "missed by " + ", ".join(
            r.fault for r in misses) if misses else "met"))


def main(argv, bench=False):
    params = dict(arg.split("=", 1) for arg in argv if "=" in arg)
    try:
        faults = chaos_faults.pick_faults([f for f in params.get("faults", "").split(",") if f])
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    problems = preflight()
    if problems:
        print("the sandbox cannot run here:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    # timeout(1) and CI stop a run with SIGTERM: tear the sandbox down on it too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    out = sys.stdout
    begun = time.monotonic()

    def say(line):
        out.write("[%6.1f] %s\n" % (time.monotonic() - begun, line) if line.strip() else "\n")
        out.flush()

    log_fd, log_path = tempfile.mkstemp(prefix="dialog-chaos-", suffix=".log")
    log_file = os.fdopen(log_fd, "w", encoding="utf-8", buffering=1)

    def log(line):
        log_file.write("%s\n" % line)

    # In-process SSH (the sensor's probes) logs every failed handshake with a traceback: to
    # the run's log, not the terminal.
    logging.basicConfig(stream=log_file, level=logging.WARNING)

    status = 1
    with sandbox_lock(say=say), sandbox() as box:
        run = Run(box, say, log, wait=int(params.get("wait", 600)),
                  poll_interval=int(params.get("poll_interval", 2)),
                  down_polls=int(params.get("down_polls", 3)))
        problems = []
        try:
            run.chaos(faults)
        except ScenarioFailed as exc:
            problems.append(str(exc))
        except KeyboardInterrupt:
            problems.append("interrupted")
        try:
            found = run.client.read_back()
        except RuntimeError as exc:
            problems.append(str(exc))
            found = set()
        rows = run.rows(found)
        lost = len(set(run.timeline.committed()) - found)
        print_report(say, rows, bench)
        say("writes committed %d, read back from the primary %d, lost %d"
            % (len(run.timeline.committed()), len(found), lost))
        final_healthy = False
        with contextlib.suppress(ScenarioFailed):
            state = run.status()
            final_healthy = bool(state["healthy"])
            say("\n" + summary({"deployment": DEPLOYMENT, "health": state["hosts"],
                                "endpoints": state["endpoints"]}))
        problems += report.verdict(rows, [f.name for f in faults], final_healthy,
                                   run.reactor.announcements if run.reactor else [], lost)
        if problems:
            say("FAILED:\n  " + "\n  ".join(dict.fromkeys(problems)))
            say("action log: %s" % log_path)
        else:
            status = 0
    print("sandbox torn down", flush=True)
    log_file.close()
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
