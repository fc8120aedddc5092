"""A host starts its services only once the hosts it needs are running, in this deploy run.

Each host of a run writes one marker in the StackStorm datastore when its start is over:
"ready" once its health checks pass, or "failed: <reason>" when anything failed, so that the
hosts waiting for it stop at once with a message naming it instead of waiting out their bound
(the reason stays in the failed host's own result, and in the marker for `st2 key get`).
Markers are keyed by the run (dialog.<deployment>.run.<run id>.<host>), so a marker of an
earlier run never lets a host start early, and they expire on their own (MARKER_TTL).

Rolling restarts: the hosts of a rolling group (lib.stages.ROLLING_ROLES: dialog servers,
proxies, web hosts) also write a "turn" marker (dialog.<deployment>.run.<run id>.turn.<host>).
A host whose start would take running services down (lib.bootstrap.restart_plan) waits until
every host before it in its groups (lowest index first) has a turn marker: "passed" (it takes
nothing down in this run: a new or unchanged host, written as soon as it knows, so it holds no
one back) or "restarted" (it restarted and its health checks pass). So at most one host of a
group is down for a config change at any moment, and new hosts start in parallel.

Plain Python: the datastore comes in as two callables, get(key) -> str or None and
set(key, value, ttl), which the action binds to action_service.get_value / set_value with
local=False. StackStorm's get_value returns None both for a missing key and when the API call
failed (st2common/services/datastore.py logs the exception): both mean "not yet" here, and the
wait's bound catches a datastore that never answers.
"""

import time

from lib.errors import ResourceFailed

READY = "ready"
FAILED = "failed"
PASSED = "passed"        # turn marker: this host takes nothing down in this run
RESTARTED = "restarted"  # turn marker: this host restarted and is healthy again
# Longer than any run can last (every action of dialog.deploy is bounded well below a day).
MARKER_TTL = 24 * 3600
POLL_INTERVAL = 0.5
REPORT_EVERY = 30.0
REASON_LIMIT = 300


class DependencyFailed(ResourceFailed):
    """A host this one needs failed in the same run: this one does not start."""


def marker_key(deployment, run_id, host):
    return "dialog.%s.run.%s.%s" % (deployment, run_id, host)


def turn_key(deployment, run_id, host):
    return "dialog.%s.run.%s.turn.%s" % (deployment, run_id, host)


def mark_ready(set_value, deployment, run_id, host):
    set_value(marker_key(deployment, run_id, host), READY, MARKER_TTL)


def mark_failed(set_value, deployment, run_id, host, reason):
    """Tell the hosts waiting for `host` that it failed. `reason` must hold no secret (the
    pack's own errors never do; the caller passes only an exception's type for others)."""
    text = " ".join(str(reason).split())[:REASON_LIMIT]
    set_value(marker_key(deployment, run_id, host), "%s: %s" % (FAILED, text), MARKER_TTL)


def _listing(names):
    return ", ".join(names)


def wait_for(get_value, deployment, run_id, host, needs, timeout, progress=None,
             interval=POLL_INTERVAL, clock=time.monotonic, sleep=time.sleep, since=None,
             key=marker_key, done=(READY,), waits_for="before starting"):
    """Return the seconds waited once every host in `needs` is marked ready in run `run_id`.

    DependencyFailed, at once, when one is marked failed (naming it);
    ResourceFailed naming those still missing `timeout` seconds after `since` (a clock() time;
    default: now). progress(line) says what the host waits for, when it starts waiting and
    every REPORT_EVERY seconds. `key` and `done`: which marker counts, and which values of it
    (the turn markers of a rolling restart: turn_key, PASSED or RESTARTED)."""
    say = progress or (lambda line: None)
    started = clock()
    since = started if since is None else since
    pending = list(needs)
    if not pending:
        return 0.0
    say("%s: waiting for %s %s" % (host, _listing(pending), waits_for))
    reported = started
    while True:
        for name in list(pending):
            value = get_value(key(deployment, run_id, name))
            if value in done:
                pending.remove(name)
            elif value and value.startswith(FAILED):
                # The dependency's own reason is in its own result, next to this one.
                raise DependencyFailed("%s: not started: %s, which it %s, failed"
                                       % (host, name, "needs" if key is marker_key else
                                          "restarts after"))
        now = clock()
        if not pending:
            waited = round(now - started, 3)
            say("%s: %s ready after %.1fs" % (host, _listing(needs), waited))
            return waited
        if now - since >= timeout:
            raise ResourceFailed("%s: not started: still waiting for %s after %gs (its "
                                 "dependency_timeout)" % (host, _listing(pending), timeout))
        if now - reported >= REPORT_EVERY:
            reported = now
            say("%s: still waiting for %s (%.0fs)" % (host, _listing(pending), now - started))
        sleep(max(0.0, min(interval, since + timeout - now)))


class RunGate(object):
    """One host's place in a run: wait() for what it needs, then ready() or failed(reason).
    get(key) and set(key, value, ttl) reach the datastore (see the module's docstring).

    A host of a rolling group (`rolls`) also takes a turn: passed() as soon as it knows it
    takes nothing down; otherwise wait_turn() for the hosts `after` (those before it in its
    groups), restart, and ready() marks its turn "restarted". failed() ends its turn too."""

    def __init__(self, get, set_, deployment, run_id, host, needs, timeout, progress=None,
                 clock=time.monotonic, after=None, rolls=False):
        """`timeout` counts from now: the gate is made when the host's bootstrap begins."""
        self.get, self.set, self.clock, self.since = get, set_, clock, clock()
        self.deployment, self.run_id, self.host = deployment, run_id, host
        self.needs, self.timeout, self.progress = list(needs or []), timeout, progress
        self.after, self.rolls = list(after or []), bool(rolls or after)
        self.turn = None  # PASSED once passed(), RESTARTED once the restart is healthy

    def wait(self, **options):
        return wait_for(self.get, self.deployment, self.run_id, self.host, self.needs,
                        self.timeout, self.progress, clock=self.clock, since=self.since,
                        **options)

    def passed(self):
        """This host takes nothing down in this run: the hosts after it need not wait for it."""
        self.turn = PASSED
        self.set(turn_key(self.deployment, self.run_id, self.host), PASSED, MARKER_TTL)

    def wait_turn(self, **options):
        """Wait until every host before this one in its rolling groups has passed or is back,
        healthy, from its own restart (within the same bound as wait())."""
        return wait_for(self.get, self.deployment, self.run_id, self.host, self.after,
                        self.timeout, self.progress, clock=self.clock, since=self.since,
                        key=turn_key, done=(PASSED, RESTARTED),
                        waits_for="to be back (one restart at a time)", **options)

    def ready(self):
        mark_ready(self.set, self.deployment, self.run_id, self.host)
        if self.rolls and self.turn != PASSED:
            self.turn = RESTARTED
            self.set(turn_key(self.deployment, self.run_id, self.host), RESTARTED, MARKER_TTL)

    def failed(self, reason):
        mark_failed(self.set, self.deployment, self.run_id, self.host, reason)
        # A host that passed took nothing down: the restarts after it may go on.
        if self.rolls and self.turn != PASSED:
            mark_failed(lambda _key, value, ttl: self.set(
                turn_key(self.deployment, self.run_id, self.host), value, ttl),
                self.deployment, self.run_id, self.host, reason)
