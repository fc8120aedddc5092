"""The tiers' rules for changing a role's host count, one topology change at a time.

A scale request (from a person or the autoscaling sensor) is checked here before anything
happens; the answer is a step: which hosts join or leave, and the plan option that makes the
deploy reconcile to the new count. Like a Cassandra operator, one operation makes one topology
change: dialog servers move by two (2N+1 stays odd), Cassandra by one node. A request further
away is refused with the next allowed count rather than done in several silent steps.
"""

from lib.catalog import count_is_allowed, default_catalog, describe_counts
from lib.errors import InputError
from lib.stages import by_index

# The plan option that sets each scalable role's count (see planner.build_plan).
COUNT_OPTIONS = {"dialog-server": "dialog_servers", "cassandra": "cassandra_nodes",
                 "storage": "storage_nodes"}
REPLICATION_FACTOR = 3


def _server_of(catalog, tier, role, with_storage):
    servers = [s for s in catalog.tier(tier)["servers"]
               if not s.get("optional") or with_storage]
    for server in servers:
        if role in server["roles"]:
            return server
    if role not in catalog.role_names:
        raise InputError("role", "unknown value %r" % (role,),
                         sorted({r for s in servers for r in s["roles"]}))
    raise InputError("role", "the %s tier has no %s servers%s" % (
        tier, role, "" if with_storage or role not in ("storage", "s3-gateway")
        else " without with_storage"), sorted({r for s in servers for r in s["roles"]}))


def current_counts(hosts):
    """{plan option: count} of the scalable roles, read from an inventory."""
    counts = {}
    for role, option in COUNT_OPTIONS.items():
        found = sum(1 for h in hosts if role in h["roles"])
        if found:
            counts[option] = found
    return counts


def check_role(tier, role, with_storage=False, catalog=None):
    """InputError unless the tier (with or without storage) has servers of `role`."""
    _server_of(catalog or default_catalog(), tier, role, with_storage)
    return role


def scale_step(tier, role, hosts, count=None, delta=None, with_storage=False, catalog=None):
    """Check a request against the tier's rules; return the step:

    {"role", "option", "current", "desired", "direction" ("out", "in" or "none"), "joining"
    (names of new hosts), "leaving" (names of hosts to remove, highest index first), "counts"
    (every scalable role's count after the step, as plan options)}.

    InputError naming the field and what is allowed when the tier forbids it."""
    catalog = catalog or default_catalog()
    if (count is None) == (delta is None):
        raise InputError("count", "give either count or delta (not both, not neither)")
    server = _server_of(catalog, tier, role, with_storage)
    members = by_index(h for h in hosts if role in h["roles"])
    current = len(members)
    desired = count if count is not None else current + delta
    field = "count" if count is not None else "delta"
    if len(server["roles"]) > 1:
        raise InputError("role", "in the %s tier %s shares its server with %s; its count is "
                         "fixed at %d" % (tier, role, ", ".join(
                             r for r in server["roles"] if r != role), server["count"]["default"]))
    option = COUNT_OPTIONS.get(role)
    if option is None:
        allowed = describe_counts(server["count"])
        raise InputError("role", "%s has %s in the %s tier (the seed allows %s); dialog.scale "
                         "changes %s" % (role, current, tier, ", ".join(allowed),
                                         ", ".join(sorted(COUNT_OPTIONS))))
    if isinstance(desired, bool) or not isinstance(desired, int) or \
            not count_is_allowed(server["count"], desired):
        raise InputError(field, "%s %s is not a count the %s tier allows"
                         % (desired, role, tier), describe_counts(server["count"]))
    step = server["count"].get("step")
    if role == "cassandra":
        step = 1
    if step and abs(desired - current) > step:
        toward = current + step if desired > current else current - step
        raise InputError(field, "%s changes %d at a time (one topology change per scale "
                         "operation): from %d the next count is %d" % (role, step, current, toward),
                         [current - step, current + step] if count_is_allowed(
                             server["count"], current - step) else [current + step])
    if role == "storage" and desired < current:
        raise InputError(field, "storage servers are not removed by dialog.scale: Ceph must move "
                         "the data off their OSDs first (ceph osd out, then wait for "
                         "HEALTH_OK); remove them by hand, then run dialog.deploy with "
                         "storage_nodes=%d" % desired)
    if role == "cassandra" and desired < current and desired < REPLICATION_FACTOR:
        raise InputError(field, "cassandra cannot go below the replication factor (%d nodes)"
                         % REPLICATION_FACTOR)
    counts = current_counts(hosts)
    counts[option] = desired
    direction = "out" if desired > current else "in" if desired < current else "none"
    group = server["name"]
    existing = {h["name"] for h in hosts}
    prefix = members[0]["name"].rsplit("-", 1)[0] if members else None
    joining = []
    if direction == "out":
        # New hosts get the next indexes of the group, as the planner names them.
        top = max([h.get("index") or 0 for h in members] + [0])
        joining = ["%s-%d" % (prefix, i) for i in range(top + 1, top + 1 + desired - current)]
        assert not existing.intersection(joining), joining
    leaving = [h["name"] for h in reversed(members)][:current - desired] \
        if direction == "in" else []
    return {"role": role, "group": group, "option": option, "current": current,
            "desired": desired, "direction": direction, "joining": joining,
            "leaving": leaving, "counts": counts}
