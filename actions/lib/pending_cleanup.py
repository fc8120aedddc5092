"""Cassandra cleanups owed after a join, kept in the StackStorm datastore.

Once a node has joined, the older nodes still hold the ranges they gave it until `nodetool
cleanup` drops them: wasted disk, and a later decommission counts that load too. dialog.scale
records the older nodes the moment the joiner reads UN (before any cleanup runs), each
cleanup that succeeds takes its host off the list, and the next dialog.scale or dialog.deploy
of the deployment finishes the list first, whatever became of the workflow that wrote it.

Value: a JSON list of host names, key `dialog.<deployment>.pending_cleanup` (local=False, no
TTL: the debt does not expire).
"""

import json

KEY_TEMPLATE = "dialog.%s.pending_cleanup"


def pending_key(deployment):
    return KEY_TEMPLATE % deployment


def pending(datastore, deployment):
    """The host names still owed a cleanup, in the order they were recorded."""
    stored = datastore.get_value(pending_key(deployment), local=False)
    if not stored:
        return []
    names = json.loads(stored)
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def record(datastore, deployment, names):
    """Add `names` to the list (kept once each, earlier debts first); returns the list."""
    names = list(dict.fromkeys(pending(datastore, deployment) + list(names)))
    _store(datastore, deployment, names)
    return names


def done(datastore, deployment, name):
    """Take `name` off the list once its cleanup succeeded; returns what is still owed."""
    names = [n for n in pending(datastore, deployment) if n != name]
    _store(datastore, deployment, names)
    return names


def _store(datastore, deployment, names):
    if names:
        datastore.set_value(pending_key(deployment), json.dumps(names), local=False)
    else:
        datastore.delete_value(pending_key(deployment), local=False)
