"""Hand-made bugs against the fast tests: does any test catch each one?

Each mutation below is a bug that once survived the tests that need no sandbox (issue 13's
list), or one that a guard of issue 13 exists to prevent. The tool copies the pack to a
temporary directory (the working tree is never touched), runs the fast tests there once
unmutated (the baseline), then once per mutation with its textual patch applied, and prints,
for each mutation, the tests that failed with it but passed in the baseline, or SURVIVED.

A patch is an exact snippet of a named file and its replacement. When the code has changed so
that a snippet is no longer there (or is there more often than expected), the mutation is
reported as NOT APPLIED with the file and the missing snippet, never as caught: update the
patch to the new code. A mutation may list alternatives (the same bug in an older or newer
shape of the code); the first whose every edit applies is used.

    python devtools/mutations.py                 every mutation, the table at the end
    python devtools/mutations.py --check         only check that every patch still applies
    python devtools/mutations.py --only lock-never-held --workers 1

The fast tests are tests/test_*.py minus the sandbox modules (the xdist group "netns") and
the modules in NOT_FAST (they test the environment, not the pack's code). Exit status: 0 when
every mutation applied and was caught, 1 otherwise, 2 when the baseline itself could not run.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SANDBOX_GROUP = re.compile(r"""xdist_group\(\s*["']netns["']\s*\)""")
# Fast, but about the machine rather than the pack's code: pip's resolution against the package
# index (minutes, network), pytest's own timeout settings (runs pytest in subprocesses), and
# this tool's own test.
NOT_FAST = ("test_requirements_compat.py", "test_timeouts.py", "test_mutations.py")
RUN_TIMEOUT = 1800


class Edit(object):
    """Replace `old` by `new` in `path` (relative to the pack); `old` must occur `count`
    times (every occurrence is replaced)."""

    def __init__(self, path, old, new, count=1):
        self.path, self.old, self.new, self.count = path, old, new, count

    def problem(self, root):
        """Why this edit cannot apply to the pack at `root`, or None."""
        full = os.path.join(root, self.path)
        if not os.path.isfile(full):
            return "%s: no such file" % self.path
        with open(full, encoding="utf-8") as handle:
            found = handle.read().count(self.old)
        if found != self.count:
            return "%s: snippet found %d times (expected %d): %s" % (
                self.path, found, self.count, self.old.strip().splitlines()[0][:90])
        return None

    def apply(self, root):
        full = os.path.join(root, self.path)
        with open(full, encoding="utf-8") as handle:
            text = handle.read()
        with open(full, "w", encoding="utf-8") as handle:
            handle.write(text.replace(self.old, self.new))
        return full, text


class Mutation(object):
    def __init__(self, name, bug, *alternatives):
        self.name, self.bug = name, bug
        self.alternatives = [list(edits) for edits in alternatives]

    def choose(self, root):
        """(the edits to apply, None) or (None, why none of the alternatives applies)."""
        problems = []
        for edits in self.alternatives:
            found = [e.problem(root) for e in edits]
            if not any(found):
                return edits, None
            problems.extend(p for p in found if p)
        return None, "; ".join(problems)


MUTATIONS = [
    Mutation(
        "cassandra-un-accepts-uj-decommission",
        "the decommission check counts a joining node (UJ) as up and normal",
        [Edit("actions/lib/cluster/cassandra_ops.py",
              'down = [n["address"] for n in nodes if n["state"] != "UN"]',
              'down = [n["address"] for n in nodes if n["state"] not in ("UN", "UJ")]')]),
    Mutation(
        "cassandra-un-accepts-uj-scale-out",
        "the ring check before a Cassandra scale-out counts a joining node (UJ) as normal",
        [Edit("actions/lib/cluster/cassandra_ops.py",
              'for n in nodes if n["state"] != "UN"]\n    listed',
              'for n in nodes if n["state"] not in ("UN", "UJ")]\n    listed')]),
    Mutation(
        "cassandra-un-accepts-uj-join-wait",
        "the join wait takes a node still joining (UJ) for joined",
        [Edit("actions/lib/cluster/cassandra_ops.py",
              'if node is not None and node["state"] == "UN":',
              'if node is not None and node["state"] in ("UN", "UJ"):')]),
    Mutation(
        "bootstrap-ignores-failed-health",
        "the bootstrap reports a host started although its health checks failed",
        [Edit("actions/lib/bootstrap.py",
              "checks = health.raise_for_failures(rendered, results, health_timeout)",
              "checks = results")]),
    Mutation(
        "scale-prepare-skips-health-gate",
        "dialog.scale_prepare goes on without its health gate",
        [Edit("actions/scale_prepare.py",
              "operations.scale_gate(context, self.ssh_options(settings), step, progress)",
              "None")],
        [Edit("actions/scale_prepare.py",
              "operations.dialog_servers_healthy(context, self.ssh_options(settings))",
              "None")]),
    Mutation(
        "check-decommission-ignores-free-space",
        "the decommission check does not compare the survivors' free space with their share",
        [Edit("actions/lib/cluster/cassandra_ops.py",
              'short = [n["address"] for n in survivors if free.get(n["address"], 0) < share]',
              "short = []")]),
    Mutation(
        "lock-never-held",
        "taking the deployment's lock never reports it held by another operation",
        [Edit("actions/lib/operation_lock.py",
              "    if holder and holder.get(\"owner\") != owner:\n        raise LockHeld",
              "    if False:\n        raise LockHeld")]),
    Mutation(
        "decommission-failure-keeps-lock",
        "a failed decommission ends dialog.scale without releasing the lock",
        [Edit("workflows/scale.yaml",
              "ctx(failed_task) in list('lock', 'release')",
              "ctx(failed_task) in list('lock', 'release', 'decommission')", count=2)]),
    Mutation(
        "sensor-state-shared",
        "the autoscaling sensor keeps one state for every deployment it watches",
        [Edit("sensors/host_metrics_sensor.py",
              "get_value(STATE_KEY % deployment, local=True)",
              'get_value(STATE_KEY % "shared", local=True)'),
         Edit("sensors/host_metrics_sensor.py",
              "set_value(STATE_KEY % deployment,",
              'set_value(STATE_KEY % "shared",')]),
    Mutation(
        "deploy-deletes-stateful-host",
        "the removal guard takes no host for stateful, so deploy may delete any of them",
        [Edit("actions/lib/removal_guard.py",
              "return next((role for role in STATEFUL_ROLES if role in (roles or ())), None)",
              "return None")]),
    Mutation(
        "autoscaler-repeats-request",
        "the autoscaler asks again for a change it already requested, at every breach",
        [Edit("actions/lib/autoscale.py",
              'if now - pending["requested_at"] < policy["reask_interval"]:',
              "if False:")]),
]


def fast_tests(root):
    """The test modules (paths relative to root) that boot no sandbox hosts."""
    tests = []
    folder = os.path.join(root, "tests")
    for name in sorted(os.listdir(folder)):
        if not (name.startswith("test_") and name.endswith(".py")) or name in NOT_FAST:
            continue
        with open(os.path.join(folder, name), encoding="utf-8") as handle:
            if SANDBOX_GROUP.search(handle.read()):
                continue
        tests.append("tests/" + name)
    return tests


def copy_pack(target):
    """The pack's files (no .git, virtualenv or caches) under `target`; returns its root."""
    pack = os.path.join(target, "pack")
    shutil.copytree(ROOT, pack, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.pyc", ".pytest_cache"))
    return pack


def run_tests(pack, tests, workers, report):
    """Run `tests` in the copy; {test id: "failed" | "error" | "passed"} from JUnit XML."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")  # a same-size patch must never hit
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "--junitxml", report, "-o", "junit_family=xunit1"]
    if workers > 0:
        command += ["-n", str(workers), "--dist", "loadgroup"]
    subprocess.run(command + tests, cwd=pack, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=RUN_TIMEOUT, check=False)
    if not os.path.isfile(report):
        return None
    outcomes = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        test = "%s::%s" % (case.get("file") or case.get("classname"), case.get("name"))
        kinds = {child.tag for child in case}
        outcomes[test] = ("failed" if "failure" in kinds else "error" if "error" in kinds
                          else "skipped" if "skipped" in kinds else "passed")
    os.remove(report)
    return outcomes


def caught_by(baseline, outcomes):
    """Tests that passed unmutated and fail (or error) with the mutation."""
    return sorted(test for test, outcome in outcomes.items()
                  if outcome in ("failed", "error") and baseline.get(test) == "passed")


def check(mutations, root=ROOT):
    """[(mutation, problem or None)] for the pack at root."""
    return [(m, m.choose(root)[1]) for m in mutations]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[],
                        help="run this mutation only (repeatable); names: %s"
                        % ", ".join(m.name for m in MUTATIONS))
    parser.add_argument("--check", action="store_true",
                        help="only check that every patch applies to the current tree")
    parser.add_argument("--workers", type=int, default=2,
                        help="pytest-xdist workers (0: one process)")
    parser.add_argument("--tests", nargs="*", help="test modules instead of the fast tests")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    unknown = set(args.only) - {m.name for m in MUTATIONS}
    if unknown:
        parser.error("unknown mutation(s): %s" % ", ".join(sorted(unknown)))
    if args.check:
        problems = check(chosen)
        for mutation, problem in problems:
            print("%-40s %s" % (mutation.name, "NOT APPLIED: " + problem if problem else "applies"))
        return 1 if any(p for _, p in problems) else 0
    with tempfile.TemporaryDirectory(prefix="dialog-mutations-") as scratch:
        pack = copy_pack(scratch)
        tests = args.tests or fast_tests(pack)
        report = os.path.join(scratch, "report.xml")
        started = time.monotonic()
        baseline = run_tests(pack, tests, args.workers, report)
        if not baseline:
            print("the baseline run produced no results (pytest could not start?)")
            return 2
        broken = sorted(t for t, o in baseline.items() if o in ("failed", "error"))
        print("baseline: %d tests in %d modules, %d failing unmutated (not counted), %.0fs"
              % (len(baseline), len(tests), len(broken), time.monotonic() - started),
              flush=True)
        for test in broken:
            print("  failing unmutated: %s" % test)
        rows, ok = [], True
        for mutation in chosen:
            edits, problem = mutation.choose(pack)
            if problem:
                rows.append((mutation, "NOT APPLIED: " + problem))
                ok = False
                print("%s: NOT APPLIED: %s" % (mutation.name, problem), flush=True)
                continue
            originals = [edit.apply(pack) for edit in edits]
            started = time.monotonic()
            try:
                outcomes = run_tests(pack, tests, args.workers, report) or {}
            finally:
                for path, text in originals[::-1]:
                    with open(path, "w", encoding="utf-8") as handle:
                        handle.write(text)
            catchers = caught_by(baseline, outcomes)
            verdict = ", ".join(catchers) if catchers else "SURVIVED"
            ok = ok and bool(catchers)
            rows.append((mutation, verdict))
            print("%s (%.0fs): %s" % (mutation.name, time.monotonic() - started, verdict),
                  flush=True)
        print("\n%-40s %s" % ("mutation", "caught by"))
        for mutation, verdict in rows:
            print("%-40s %s" % (mutation.name, verdict))
            print("%-40s   (%s)" % ("", mutation.bug))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
