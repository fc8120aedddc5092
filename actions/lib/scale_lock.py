"""One scale operation per deployment at a time: a lock in the StackStorm datastore.

StackStorm's concurrency policy (policies/) also serialises dialog.scale per deployment, but it
needs the coordination backend and does not cover a person running dialog.deploy meanwhile;
this lock does, and its TTL frees it even if a runner dies before the release.
"""

import json

from lib.errors import InputError

KEY_TEMPLATE = "dialog.%s.scale_lock"
TTL = 4 * 3600


def lock_key(deployment):
    return KEY_TEMPLATE % deployment


def acquire(datastore, deployment, holder, now, ttl=TTL):
    """Take the lock for `holder` ({"role", "direction", ...}); InputError naming the running
    operation when it is held. The datastore has no compare-and-set, so the read-then-write
    leaves a window of milliseconds; the concurrency policy closes it where configured."""
    key = lock_key(deployment)
    held = datastore.get_value(key, local=False)
    if held:
        current = json.loads(held)
        raise InputError("deployment", "a scale operation of %s is already running (%s %s, "
                         "since %s); wait for it, or delete the datastore key %s if it died"
                         % (deployment, current.get("role"), current.get("direction"),
                            current.get("since"), key))
    datastore.set_value(key, json.dumps(dict(holder, since=now), sort_keys=True), ttl=ttl,
                        local=False)
    return key


def release(datastore, deployment):
    return bool(datastore.delete_value(lock_key(deployment), local=False))
