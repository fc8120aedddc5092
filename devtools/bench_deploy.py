#!/usr/bin/env python3
"""The sandbox deploy's wall time beside its critical path, measured from the same run.

    ./dialog-local bench deploy [tier=small-failover] [boot_delay=5] [runs=1]

Runs dialog.deploy in the local sandbox (see sandbox_deploy.py: real workflow, actions, SSH,
uploads and probes; a stand-in container runtime) on hosts that take `boot_delay` seconds from
their instance's creation to accepting SSH, like a VM booting.

The critical path is the longest chain of dependent steps: the deploy's tasks run one after the
other, so it is the sum over tasks of what each must take: an action's own duration; for a
with-items stage whose items run side by side, its longest item; for a one-at-a-time stage
(the Cassandra joins), the sum of its items. Everything else in the wall time is the
orchestration's own cost: gaps between tasks, items that start late. Target: wall time within
1.15x of the critical path.
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
import yaml  # noqa: E402

import local_runner  # noqa: E402
from lib.tables import format_table  # noqa: E402
from sandbox.hosts import preflight  # noqa: E402
from sandbox_deploy import sandbox  # noqa: E402

TARGET = 1.15


def concurrency_of(workflow_ref):
    """{task: with-items concurrency (None for no items, 0 for unbounded)}."""
    meta = local_runner.load_action_metadata(workflow_ref)
    with open(os.path.join(ROOT, "actions", meta["entry_point"]), encoding="utf-8") as handle:
        spec = yaml.safe_load(handle)
    result = {}
    for name, task in spec["tasks"].items():
        items = task.get("with")
        result[name] = None if items is None else int(items.get("concurrency") or 0) \
            if isinstance(items, dict) else 0
    return result


def critical_path(trace, concurrency):
    """[(task, items, how, seconds, first start, last end)] in execution order."""
    tasks = {}
    for entry in trace:
        if "/" in entry.task_id:
            continue
        tasks.setdefault(entry.task_id, []).append(entry)
    rows = []
    for task, entries in sorted(tasks.items(), key=lambda kv: min(e.start for e in kv[1])):
        durations = [e.end - e.start for e in entries if e.action_ref]
        limit = concurrency.get(task)
        if not durations:
            how, seconds = "no items", 0.0
        elif limit is None:
            how, seconds = "action", durations[0]
        elif limit == 1 or (limit and len(durations) > limit):
            how, seconds = "one at a time", sum(durations) if limit == 1 else \
                max(durations) * -(-len(durations) // limit)
        else:
            how, seconds = "side by side", max(durations)
        rows.append((task, len(durations), how, seconds, min(e.start for e in entries),
                     max(e.end for e in entries)))
    return rows


def overlapping(rows):
    """Tasks that ran at the same time as the previous one (the sum would then overcount)."""
    return [b[0] for a, b in zip(rows, rows[1:]) if b[4] < a[5] - 1e-3]


def main(argv):
    params = dict(arg.split("=", 1) for arg in argv if "=" in arg)
    tier = params.get("tier", "small-failover")
    boot_delay = float(params.get("boot_delay", "5"))
    runs = int(params.get("runs", "1"))
    problems = preflight()
    if problems:
        print("the sandbox cannot run here:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    concurrency = concurrency_of("dialog.deploy")
    summary = []
    for run in range(1, runs + 1):
        with sandbox(boot_delay=boot_delay) as box:
            deployment = "bench%d" % run
            started = time.perf_counter()
            ok, result, workflow = box.run("dialog.deploy", {
                "tier": tier, "deployment": deployment}, progress=False)
            measured = time.perf_counter() - started
            if not ok:
                print("deploy failed: %s" % (result.get("output") or {}).get("failure"))
                return 1
            rows = critical_path(workflow.trace, concurrency)
            path = sum(r[3] for r in rows)
            print("run %d: dialog.deploy tier=%s, %d hosts, boot delay %gs per host"
                  % (run, tier, len(result["output"]["hosts"]), boot_delay))
            print(format_table(["TASK", "ACTIONS", "STAGE RUNS", "ON PATH (S)", "SPAN (S)"],
                               [[r[0], r[1], r[2], "%.2f" % r[3], "%.2f" % (r[5] - r[4])]
                                for r in rows]))
            late = overlapping(rows)
            if late:
                print("note: tasks overlapping their predecessor: %s" % ", ".join(late))
            ratio = workflow.elapsed / path
            summary.append((run, workflow.elapsed, path, ratio, measured))
            print("wall %.2fs (workflow) / %.2fs (with setup), critical path %.2fs, "
                  "ratio %.3f\n" % (workflow.elapsed, measured, path, ratio))
            with contextlib.redirect_stdout(io.StringIO()):
                box.run("dialog.destroy", {"deployment": deployment, "confirm": deployment},
                        progress=False)
    print(format_table(["RUN", "WALL (S)", "CRITICAL PATH (S)", "WALL / PATH", "TARGET"],
                       [[r[0], "%.2f" % r[1], "%.2f" % r[2], "%.3f" % r[3],
                         "<= %.2f %s" % (TARGET, "ok" if r[3] <= TARGET else "MISSED")]
                        for r in summary]))
    return 0 if all(r[3] <= TARGET for r in summary) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
