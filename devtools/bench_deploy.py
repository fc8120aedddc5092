#!/usr/bin/env python3
"""The sandbox deploy's wall time beside its dependency critical path, measured in the same run.

    ./dialog-local bench deploy [tier=small-failover] [boot_delay=20] [docker_delay=20]
                                [pull_delay=10] [provider=aws] [runs=1]

Runs dialog.deploy in the local sandbox (see sandbox_deploy.py: real workflow, actions, SSH,
uploads and probes; a stand-in container runtime) on hosts that take `boot_delay` seconds from
their instance's creation to accepting SSH, like a VM booting; `docker_delay` and `pull_delay`
go to the sandbox's package and registry mirror (a Docker install, an image manifest), where
the sandbox has one.

The critical path does not come from the workflow's tasks but from what a deploy must do:
- the steps before and after the hosts' bootstrap run one after the other (plan, provision,
  secrets, order; admin, health): each counts with its measured duration;
- every host's bootstrap has a part that needs no other host (SSH wait and login, prepare:
  Docker, volumes, registry, pulls, TLS, uploads) and a start (compose up, health checks) that
  needs the hosts lib.stages says it needs. With the measured per-host step times (the
  bootstrap's own "seconds"), a host is up at
      finish(h) = max(setup(h) + ssh_wait(h) + prepare(h), max(finish(d) for d in needs(h)))
                  + start(h)
  and the bootstrap takes max(finish(h)).
Everything else in the wall time is the orchestration's own cost: gaps between tasks, action
processes starting late, polling. Target: wall time within 1.15x of the critical path.
"""

import contextlib
import io
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, os.path.join(ROOT, "actions")]

# pylint: disable=wrong-import-position
from lib.catalog import default_catalog  # noqa: E402
from lib.render import proxied_push_purposes  # noqa: E402
from lib.stages import dependencies  # noqa: E402
from lib.tables import format_table  # noqa: E402
from sandbox.hosts import preflight  # noqa: E402
from sandbox_deploy import sandbox  # noqa: E402

TARGET = 1.15
BOOTSTRAP_TASK = "bootstrap"
# The slow steps of a real first deploy, on the low side of what they take: an EC2 instance
# answers SSH 20-40 s after RunInstances, Docker's apt install takes 30-60 s, and Dialog's images
# are hundreds of MB each. Smaller delays leave the sandbox's own cost (15 hosts, their fake
# containers and 15 action processes on this machine's cores) as a larger share of the wall.
DEFAULT_DELAYS = (("boot_delay", 20.0), ("docker_delay", 20.0), ("pull_delay", 10.0))
STEPS = ("setup", "ssh_wait", "prepare", "dependency_wait", "start")


def sequential_steps(trace):
    """[(task, seconds)] of the workflow's tasks other than the bootstrap, in the order they
    ran: each is one action whose measured duration is on the path."""
    rows = []
    for entry in sorted(trace, key=lambda e: e.start):
        if entry.action_ref and entry.task_id != BOOTSTRAP_TASK and "/" not in entry.task_id:
            rows.append((entry.task_id, entry.end - entry.start))
    return rows


def host_finishes(bootstrapped, needs):
    """{host: (finish, the host whose finish it waited on or None)} by the formula above."""
    seconds = {b["host"]: b["seconds"] for b in bootstrapped}
    finish = {}

    def up(name):
        if name not in finish:
            own = seconds[name]
            ready = own.get("setup", 0.0) + own["ssh_wait"] + own["prepare"]
            waited_on = None
            for dep in needs.get(name, ()):
                if up(dep)[0] > ready:
                    ready, waited_on = up(dep)[0], dep
            finish[name] = (ready + own["start"], waited_on)
        return finish[name]

    for name in seconds:
        up(name)
    return finish


def chain(finish, last):
    """The hosts on the critical chain, first to last."""
    names = []
    while last is not None:
        names.append(last)
        last = finish[last][1]
    return names[::-1]


def report(run, tier, output, workflow, delays):
    hosts = output["hosts"]
    needs = dependencies(hosts, bool(proxied_push_purposes(default_catalog(), tier)))
    bootstrapped = output["bootstrapped"]
    steps = sequential_steps(workflow.trace)
    finish = host_finishes(bootstrapped, needs)
    last = max(finish, key=lambda name: finish[name][0])
    path = sum(seconds for _, seconds in steps) + finish[last][0]
    spans = [e.end - e.start for e in workflow.trace if e.task_id == BOOTSTRAP_TASK]
    print("run %d: dialog.deploy tier=%s, %d hosts; %s" % (
        run, tier, len(hosts), ", ".join("%s %gs" % item for item in delays.items())))
    installed = sum(1 for b in bootstrapped if b.get("docker") == "installed")
    pulled = sum(1 for b in bootstrapped if (b.get("images") or {}).get("pulled"))
    print("Docker installed on %d hosts, images pulled on %d (the delays apply only there)"
          % (installed, pulled))
    # An item's own span in the trace minus what the action measured: the action's process
    # start, its imports and rendering, the result's way back (the orchestration's share).
    items = sorted((e for e in workflow.trace if e.task_id == BOOTSTRAP_TASK
                    and e.item_id is not None), key=lambda e: e.item_id)
    item_spans = {b["host"]: (e.start, e.end) for b, e in zip(bootstrapped, items)}
    rows = [[b["host"], ",".join(needs.get(b["host"]) or []) or "-"]
            + ["%.2f" % b["seconds"][step] for step in STEPS]
            + ["%.2f" % finish[b["host"]][0]]
            + (["%.2f" % item_spans[b["host"]][0], "%.2f" % (
                item_spans[b["host"]][1] - item_spans[b["host"]][0]
                - sum(b["seconds"].values()))] if b["host"] in item_spans else ["-", "-"])
            for b in sorted(bootstrapped, key=lambda b: finish[b["host"]][0])]
    print(format_table(["HOST", "NEEDS", "SETUP", "SSH WAIT", "PREPARE", "DEP WAIT", "START",
                        "UP AT (MODEL)", "ITEM START", "ACTION OVERHEAD"], rows))
    print(format_table(["STEP", "ON PATH (S)"],
                       [[task, "%.2f" % seconds] for task, seconds in steps]
                       + [["bootstrap (longest chain)", "%.2f" % finish[last][0]]]))
    print("critical chain: %s" % " -> ".join(chain(finish, last)))
    ratio = workflow.elapsed / path
    print("wall %.2fs (bootstrap task %.2fs), critical path %.2fs, ratio %.3f\n"
          % (workflow.elapsed, max(spans or [0.0]), path, ratio))
    return workflow.elapsed, path, ratio


def main(argv):
    params = dict(arg.split("=", 1) for arg in argv if "=" in arg)
    tier = params.get("tier", "small-failover")
    delays = {name: float(params.get(name, default)) for name, default in DEFAULT_DELAYS}
    provider = params.get("provider", "aws")
    runs = int(params.get("runs", "1"))
    problems = preflight()
    if problems:
        print("the sandbox cannot run here:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    summary = []
    for run in range(1, runs + 1):
        extra = {k: v for k, v in delays.items() if k != "boot_delay"}
        with sandbox(boot_delay=delays["boot_delay"], provider=provider, **extra) as box:
            deployment = "bench%d" % run
            started = time.perf_counter()
            ok, result, workflow = box.run("dialog.deploy", {
                "tier": tier, "deployment": deployment}, progress=False)
            measured = time.perf_counter() - started
            if not ok:
                print("deploy failed: %s" % (result.get("output") or {}).get("failure"))
                return 1
            wall, path, ratio = report(run, tier, result["output"], workflow, delays)
            summary.append((run, wall, path, ratio, measured))
            with contextlib.redirect_stdout(io.StringIO()):
                box.run("dialog.destroy", {"deployment": deployment, "confirm": deployment,
                                           "delete_data": True}, progress=False)
    print(format_table(["RUN", "WALL (S)", "CRITICAL PATH (S)", "WALL / PATH", "TARGET"],
                       [[r[0], "%.2f" % r[1], "%.2f" % r[2], "%.3f" % r[3],
                         "<= %.2f %s" % (TARGET, "ok" if r[3] <= TARGET else "MISSED")]
                        for r in summary]))
    return 0 if all(r[3] <= TARGET for r in summary) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
