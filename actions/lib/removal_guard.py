"""Deploy never removes a stateful host or changes a deployment's tier on its own.

A provider driver reconciles to the plan, so a plan with fewer hosts deletes the rest, and
their disks go with them. For a Postgres, Cassandra, storage or dialog server host that is data
(or a ring member) lost without the drain or decommission an operator would run first, like a
Kubernetes StatefulSet that never deletes its volumes when it scales down. So the hosts a plan
would drop are checked here before any mutating provider call: a stateful one is removed only
when the caller names it in `remove_hosts` (it already drained or decommissioned it: dialog.scale
does), or when dialog.deploy runs with allow_removal and does that drain itself.
"""

from lib.errors import InputError

STATEFUL_ROLES = ("postgres", "cassandra", "storage", "dialog-server")
# Roles whose hosts dialog.deploy allow_removal=true can take out safely: the same steps
# dialog.scale runs (nodetool decommission; proxies re-rendered without the server).
DRAINABLE = ("cassandra", "dialog-server")
# The plan option that sets each stateful role's count (planner.build_plan), for the error.
COUNT_FIELDS = {"cassandra": "cassandra_nodes", "dialog-server": "dialog_servers",
                "storage": "storage_nodes", "postgres": "tier"}
# Dialog's keyspaces replicate 3 times (lib.cluster.cassandra_ops.REPLICATION_FACTOR): nodetool
# decommission refuses to leave fewer live nodes than that, so neither does the guard.
REPLICATION_FACTOR = 3
WHAT = {"cassandra": "Cassandra node: its share of the ring's data is on it",
        "dialog-server": "dialog server: the proxies still send users to it",
        "storage": "Ceph storage server: its OSDs hold the uploaded files",
        "postgres": "Postgres server: it holds the accounts and messages"}


class RemovalRefused(InputError):
    """The plan would delete a host the caller did not allow to go."""


def stateful_role(roles):
    """The first stateful role of a host's roles (in STATEFUL_ROLES order), or None."""
    return next((role for role in STATEFUL_ROLES if role in (roles or ())), None)


def _scale_command(deployment, role, count):
    return "st2 run dialog.scale deployment=%s role=%s count=%d" % (deployment, role, count)


def _migration(record, plan):
    deployment = plan["deployment"]
    return ("a deployment's tier is not changed in place: its hosts, sizes and data layout "
            "differ. To move from %s to %s: 1) deploy the new tier as another deployment "
            "(st2 run dialog.deploy tier=%s deployment=%s-%s ...); 2) copy the data (Postgres "
            "dump and restore, Cassandra snapshots or sstableloader, the uploaded files); "
            "3) move DNS to the new proxies; 4) destroy the old one (st2 run dialog.destroy "
            "deployment=%s confirm=%s)" % (record["tier"], plan["tier"], plan["tier"],
                                           deployment, plan["tier"], deployment, deployment))


def leaving_hosts(plan, inventory):
    """Inventory hosts the plan does not have, by name (what a reconcile would delete)."""
    planned = {host["name"] for host in plan["hosts"]}
    return [host for host in inventory if host["name"] not in planned]


def check_removals(plan, inventory, record, allow_removal=False, remove_hosts=()):
    """Raise RemovalRefused (an InputError naming the field) unless every host the plan drops
    may go; return what the drop takes:

    {"leaving": names the reconcile deletes, "remove_hosts": the stateful ones allowed,
     "decommission": Cassandra nodes to decommission first, highest index first,
     "drain": dialog servers the proxies must stop routing to first, "survivors": the
     inventory hosts that stay}.

    record: the deployment's record ({} or None when it has none). remove_hosts: hosts the
    caller already drained or decommissioned. allow_removal: the caller (dialog.deploy) drains
    Cassandra nodes and dialog servers itself before the reconcile; storage and Postgres hosts
    are refused even then."""
    record = record or {}
    deployment = plan["deployment"]
    given = list(remove_hosts or ())
    if not all(isinstance(name, str) and name for name in given):
        raise InputError("remove_hosts", "give a list of host names, e.g. [%s-cassandra-4]"
                         % deployment)
    planned = {host["name"] for host in plan["hosts"]}
    kept = sorted(set(given) & planned)
    if kept:
        raise InputError("remove_hosts", "the plan keeps %s; name only hosts it drops"
                         % ", ".join(kept))
    if inventory and record.get("tier") and record["tier"] != plan["tier"]:
        raise RemovalRefused("tier", "%s is %s, not %s; %s" % (
            deployment, record["tier"], plan["tier"], _migration(record, plan)))
    leaving = leaving_hosts(plan, inventory)
    by_role = {}
    for host in leaving:
        role = stateful_role(host.get("roles"))
        if role and host["name"] not in given:
            by_role.setdefault(role, []).append(host)
    for hosts in by_role.values():
        hosts.sort(key=lambda h: -(h.get("index") or 0))      # highest index leaves first
    for role in STATEFUL_ROLES:
        if by_role.get(role):
            _refuse_unless_drainable(plan, inventory, role, by_role[role], allow_removal)
    names = {h["name"] for h in leaving}
    return {"leaving": sorted(names),
            "remove_hosts": sorted(h["name"] for h in leaving if stateful_role(h.get("roles"))),
            "decommission": [h["name"] for h in by_role.get("cassandra", ())],
            "drain": sorted(h["name"] for h in by_role.get("dialog-server", ())),
            "survivors": [h for h in inventory if h["name"] not in names]}


def _refuse_unless_drainable(plan, inventory, role, hosts, allow_removal):
    deployment = plan["deployment"]
    names = ", ".join(h["name"] for h in hosts)
    current = sum(1 for h in inventory if role in (h.get("roles") or ()))
    desired = current - len(hosts)
    field = COUNT_FIELDS[role]
    if role == "storage" and not plan.get("with_storage"):
        field = "with_storage"
    what = "%s would remove %s (%s)" % (
        "with_storage=false" if field == "with_storage" else
        "tier %s" % plan["tier"] if field == "tier" else "%s=%d" % (field, desired),
        names, ("a " if len(hosts) == 1 else "each a ") + WHAT[role])
    if role == "storage":
        raise RemovalRefused(field, "%s; deploy never removes storage servers, and the pack "
                             "has no Ceph OSD drain, so allow_removal cannot either: mark "
                             "their OSDs out by hand (ceph osd out), wait for HEALTH_OK, then "
                             "run dialog.deploy with remove_hosts=[%s]" % (what, names))
    if role not in DRAINABLE:
        raise RemovalRefused(field, "%s; deploy never removes it, not even with "
                             "allow_removal: move its data to a new deployment first" % what)
    if role == "cassandra" and desired < REPLICATION_FACTOR <= current:
        raise RemovalRefused(field, "%s and leave %d nodes, fewer than the replication factor "
                             "(%d): nodetool decommission refuses that; keep at least %d"
                             % (what, desired, REPLICATION_FACTOR, REPLICATION_FACTOR))
    if allow_removal:
        return
    step = 1 if role == "cassandra" else 2
    first = current - min(step, current - desired)
    raise RemovalRefused(field, "%s; deploy never removes it on its own. Scale in with `%s`, "
                         "which %s first%s; or run dialog.deploy again with allow_removal=true "
                         "(not from chat) to do the same in this run" % (
                             what, _scale_command(deployment, role, first),
                             "decommissions the node" if role == "cassandra"
                             else "drains the proxies",
                             " (one step at a time, down to %d)" % desired
                             if first != desired else ""))


def refuse_unallowed_deletions(plan, doomed):
    """A driver's last check before it deletes hosts: doomed is [(name, roles)]; a stateful
    host not in plan["remove_hosts"] (set by dialog.provision once check_removals passed)
    raises RemovalRefused and nothing is deleted."""
    # A planned name here is a second host of that name (a retried create): not a removal.
    allowed = set(plan.get("remove_hosts") or ()) | {host["name"] for host in plan["hosts"]}
    refused = sorted(name for name, roles in doomed
                     if stateful_role(roles) and name not in allowed)
    if refused:
        raise RemovalRefused("remove_hosts", "the provider driver will not delete %s: %s not "
                             "allowed to go (dialog.provision checks removals first; "
                             "dialog.scale removes such hosts)" % (
                                 ", ".join(refused),
                                 "it is a stateful host" if len(refused) == 1
                                 else "they are stateful hosts"))
