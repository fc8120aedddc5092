"""What the pack remembers of a deployment between runs: its tier, where it runs and its size.

The provider's tags say which hosts exist; this record says what they were deployed as, so that
dialog.status, dialog.scale and the sensor can be called with just the deployment's name. It is
kept in the StackStorm datastore, next to (and unlike) the encrypted secrets, in plain JSON.
"""

import json

from lib.deployment_secrets import datastore_key
from lib.errors import InputError
from lib.stages import hosts_with

KEY_TEMPLATE = "dialog.%s.deployment"
FIELDS = ("tier", "provider", "region", "with_storage", "droplet_class")
# {"<role>": {"direction", "from", "to", "completed_at"}}: the last scale operation of each
# role that completed, written by dialog.scale at its successful end; the autoscaler's
# cooldowns run from it. "postgres_primary": the name of the host that is Postgres primary now,
# set by dialog.postgres_promote; a deploy renders that host as primary and keeps the field.
HISTORY = ("last_scaled", "postgres_primary")


def record_key(deployment):
    return KEY_TEMPLATE % deployment


def record_of(plan, profile=None):
    """The record of a deployment from its plan: the fields above and the size of each group
    of hosts (e.g. {"dialog-server": 3, "cassandra": 3})."""
    groups = {}
    for host in plan["hosts"]:
        groups[host["group"]] = groups.get(host["group"], 0) + 1
    record = {name: plan.get(name) for name in FIELDS}
    record.update(deployment=plan["deployment"], profile=profile, groups=groups)
    return record


def save_record(datastore, record):
    """Store the record; True when it differed from the stored one. What the record remembers
    of past operations (HISTORY) is kept when the new record (a deploy's) does not carry it."""
    key = record_key(record["deployment"])
    stored = datastore.get_value(key, local=False)
    if stored:
        previous = json.loads(stored)
        record = dict(record, **{name: previous[name] for name in HISTORY
                                 if name in previous and name not in record})
    text = json.dumps(record, sort_keys=True)
    if stored == text:
        return False
    datastore.set_value(key, text, local=False)
    return True


def record_scaled(datastore, deployment, role, direction, before, after, now):
    """Note in the record that a scale of `role` from `before` to `after` hosts completed at
    `now` (epoch seconds); the entry written."""
    record = load_record(datastore, deployment)
    if record is None:
        raise unknown_deployment(datastore, deployment)
    entry = {"direction": direction, "from": before, "to": after, "completed_at": now}
    record.setdefault("last_scaled", {})[role] = entry
    save_record(datastore, record)
    return entry


def postgres_primary(record, hosts):
    """The name of the Postgres primary among `hosts`: the record's postgres_primary when that
    host is one of them with the postgres role, else the lowest-index postgres host (what every
    deployment had before a promotion); None without postgres hosts."""
    postgres = hosts_with(hosts, "postgres")
    named = (record or {}).get("postgres_primary")
    if named and any(h["name"] == named for h in postgres):
        return named
    return postgres[0]["name"] if postgres else None


def set_postgres_primary(datastore, deployment, name):
    """Note in the record that `name` is the Postgres primary now; the previous name (None when
    the record named none)."""
    record = load_record(datastore, deployment)
    if record is None:
        raise unknown_deployment(datastore, deployment)
    previous = record.get("postgres_primary")
    record["postgres_primary"] = name
    save_record(datastore, record)
    return previous


def load_record(datastore, deployment):
    """The stored record, or None for a deployment never deployed (or deployed elsewhere)."""
    stored = datastore.get_value(record_key(deployment), local=False)
    return json.loads(stored) if stored else None


def known_deployments(datastore):
    """Names of the deployments that have a record, sorted."""
    prefix, suffix = KEY_TEMPLATE.split("%s")
    names = []
    for item in datastore.list_values(local=False, prefix=prefix) or []:
        name = getattr(item, "name", None) or ""
        if name.startswith(prefix) and name.endswith(suffix):
            names.append(name[len(prefix):-len(suffix)])
    return sorted(n for n in names if n and "." not in n)


def unknown_deployment(datastore, deployment):
    """The error for a deployment name with no record: what an operator mistyped, or one that
    was never deployed; it lists the known ones."""
    return InputError("deployment", "no deployment named %r is known (dialog.deploy records "
                      "each deployment it makes)" % (deployment,),
                      known_deployments(datastore), listed="known deployments")


def forget_deployment(datastore, deployment):
    """Delete the record and the secrets of a destroyed deployment; the keys deleted."""
    keys = [record_key(deployment), datastore_key(deployment)]
    return [key for key in keys if datastore.delete_value(key, local=False)]
