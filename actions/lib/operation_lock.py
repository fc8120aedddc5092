"""One operation at a time per deployment: deploy, scale and destroy share a lock in the
StackStorm datastore.

The owner token is the execution id of the operation that took it (a workflow's own
action_execution_id, a python action's ST2_ACTION_EXECUTION_ID). Only the owner renews or
releases it; the same owner taking it again re-enters (scale's nested deploy). Every write sets
LOCK_TTL, and a Renewer writes again every RENEW_EVERY seconds while an action of the operation
runs, so a lock whose runner died is gone within LOCK_TTL seconds, and a live one never expires
in the middle of a long step.

The datastore has no compare-and-set: between the read and the write of acquire() a second
operation could take it too (a window of milliseconds). StackStorm's concurrency policies
(policies/) close it where a coordination backend is configured.
"""

import datetime
import json
import threading
import time

from lib.errors import InputError

KEY_TEMPLATE = "dialog.%s.operation_lock"
LOCK_TTL = 900
RENEW_EVERY = 60


class LockHeld(InputError):
    """Another operation holds the deployment's lock."""

    def __init__(self, deployment, holder):
        self.holder = holder
        super().__init__("deployment", "%s is busy: %s"
                         % (deployment, describe(deployment, holder)))


def lock_key(deployment):
    return KEY_TEMPLATE % deployment


def describe(deployment, holder):
    """Who holds the lock, since when, and how to clear it if that operation is dead."""
    what = holder.get("operation") or "an operation"
    if holder.get("detail"):
        what += " (%s)" % holder["detail"]
    return ("%s is running, execution %s, since %s (renewed %s); wait for it to end. If that "
            "execution is no longer running (st2 execution get %s), the lock expires %d s after "
            "its last renewal, or delete it now: st2 key delete %s"
            % (what, holder.get("owner"), holder.get("since"), holder.get("renewed"),
               holder.get("owner"), LOCK_TTL, lock_key(deployment)))


def holder_of(datastore, deployment):
    """The lock's value as a dict, None when free. An unreadable value (written by hand) counts
    as held by an unknown owner, so it is never taken over silently."""
    value = datastore.get_value(lock_key(deployment), local=False)
    if not value:
        return None
    try:
        holder = json.loads(value)
    except ValueError:
        holder = None
    if isinstance(holder, dict):
        return dict(holder)
    return {"owner": None, "operation": "unknown (unreadable lock value %r)" % value}


def _stamp(now):
    return datetime.datetime.fromtimestamp(now, datetime.timezone.utc).isoformat(
        timespec="seconds")


def _write(datastore, deployment, holder, ttl):
    datastore.set_value(lock_key(deployment), json.dumps(holder, sort_keys=True),
                        ttl=int(ttl), local=False)


def acquire(datastore, deployment, owner, operation, now, detail=None, ttl=LOCK_TTL):
    """Take the lock for `owner` (an execution id) at `now` (epoch seconds), or re-enter it when
    `owner` already holds it (renewing it, keeping the first operation's description).
    Returns the lock's value; LockHeld when another owner holds it."""
    if not owner:
        raise InputError("owner", "an execution id is needed to take the lock of %s"
                         % deployment)
    holder = holder_of(datastore, deployment)
    if holder and holder.get("owner") != owner:
        raise LockHeld(deployment, holder)
    if not holder:
        holder = {"owner": owner, "operation": operation, "detail": detail,
                  "since": _stamp(now)}
    holder["renewed"] = _stamp(now)
    _write(datastore, deployment, holder, ttl)
    return holder


def renew(datastore, deployment, owner, now, ttl=LOCK_TTL):
    """Push the expiry LOCK_TTL seconds past `now`; False when `owner` no longer holds it."""
    holder = holder_of(datastore, deployment)
    if not holder or holder.get("owner") != owner:
        return False
    holder["renewed"] = _stamp(now)
    _write(datastore, deployment, holder, ttl)
    return True


def release(datastore, deployment, owner):
    """Free the lock if `owner` holds it: True when released, False when it is free or another
    operation holds it (left as it is)."""
    holder = holder_of(datastore, deployment)
    if not holder or holder.get("owner") != owner:
        return False
    return bool(datastore.delete_value(lock_key(deployment), local=False))


class Renewer(object):
    """`with Renewer(datastore, deployment, owner):` renews the lock every `every` seconds
    (RENEW_EVERY) in a daemon thread while the block runs. A lock that vanished (expired during
    a stall, deleted by hand) is taken back while free; `lost` says who holds it when another
    operation took it, so the caller fails instead of going on unprotected."""

    def __init__(self, datastore, deployment, owner, every=None, ttl=LOCK_TTL,
                 clock=time.time, log=None):
        self.datastore, self.deployment, self.owner = datastore, deployment, owner
        self.every = RENEW_EVERY if every is None else every
        self.ttl, self.clock, self.log = ttl, clock, log
        self.lost = None
        self.renewals = 0
        self._held = None
        self._stop = threading.Event()
        self._thread = None

    def tick(self):
        """One renewal; False once the lock is lost."""
        if self.lost:
            return False
        try:
            if not renew(self.datastore, self.deployment, self.owner, self.clock(), self.ttl):
                held = self._held or {}
                acquire(self.datastore, self.deployment, self.owner,
                        held.get("operation") or "unknown", self.clock(),
                        detail=held.get("detail"), ttl=self.ttl)
            self.renewals += 1
            return True
        except LockHeld as exc:
            self.lost = describe(self.deployment, exc.holder)
        except Exception as exc:  # pylint: disable=broad-except
            # A datastore hiccup: the TTL leaves room for the next tries.
            self._say("renewing the lock of %s failed (%s); next try in %s s"
                      % (self.deployment, exc, self.every))
            return True
        self._say("the lock of %s was taken by another operation: %s"
                  % (self.deployment, self.lost))
        return False

    def _say(self, message):
        if self.log:
            self.log(message)

    def _run(self):
        while not self._stop.wait(self.every):
            if not self.tick():
                return

    def __enter__(self):
        self._held = holder_of(self.datastore, self.deployment)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="lock-renewer-%s" % self.deployment)
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join(timeout=10)
        return False
