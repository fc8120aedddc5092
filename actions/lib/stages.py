"""Which hosts must run before a host starts its services, from their roles.

Everything slow about a host (boot, SSH, Docker, volumes, registry login, pulls, TLS, uploads)
depends on no other host, so dialog.deploy does it on every host at once. Only starting the
services (compose up and the health checks) waits, and only for what the services really need:

- a dialog server: the Postgres primary (the one it connects to), every planned Cassandra node
  (Dialog's keyspaces get RF = min(3, nodes): the schema is set against the whole ring) and the
  S3 gateways (where it keeps files), when the deployment has them;
- a Cassandra node beyond the seeds: the seeds and the node before it. Nodes join one at a time,
  each once the previous one is UN (two nodes bootstrapping at once can take the same token
  ranges);
- a Postgres standby: the primary (it clones it with pg_basebackup);
- an S3 gateway: the storage servers (radosgw needs the Ceph monitors' quorum);
- a proxy: what nginx routes to (templates/nginx.conf.j2): the dialog servers, the web hosts and,
  in tiers whose proxies carry the push ports, the push hosts;
- voice, push, web, storage, the Postgres primary and the Cassandra seeds: nothing.

A host never waits for itself (mini's one server carries every role).

Rolling restarts: in a run, the hosts of ROLLING_ROLES whose start would take running services
down restart one at a time per role, lowest index first (rolling_after; the turns themselves
are lib.hosts.start_order's). The other roles need no such order: Cassandra and Postgres
change only through dialog.scale, storage and push run one host per role in most tiers.
"""

SEED_COUNT = 2
# Stateless roles with several hosts behind the proxies (or DNS): one of them down at a time
# keeps the service up.
ROLLING_ROLES = ("dialog-server", "proxy", "web")


def by_index(hosts):
    """Hosts in index order; static hosts may have no index and sort after, by name."""
    return sorted(hosts, key=lambda h: (h.get("index") is None, h.get("index") or 0, h["name"]))


def hosts_with(hosts, role):
    return by_index(h for h in hosts if role in h["roles"])


def cassandra_seed_hosts(hosts):
    """The Cassandra seeds: the first two Cassandra hosts by index. Every other node joins
    through them, so a joining node never lists itself and streams its data from the ring."""
    return hosts_with(hosts, "cassandra")[:SEED_COUNT]


def _names(hosts):
    return [h["name"] for h in hosts]


def _postgres_first(hosts, primary):
    """The Postgres hosts, the primary first: the record's (lib.deployment_record), else the
    lowest index. A standby clones from the primary, so the primary must run first."""
    postgres = hosts_with(hosts, "postgres")
    return sorted(postgres, key=lambda h: h["name"] != primary) if primary else postgres


def _role_needs(hosts, proxies_route_push, primary=None):
    """{role: [host names]} for the roles whose needs are the same for every host."""
    postgres = _postgres_first(hosts, primary)
    return {
        "dialog-server": _names(postgres[:1] + hosts_with(hosts, "cassandra")
                                + hosts_with(hosts, "s3-gateway")),
        "s3-gateway": _names(hosts_with(hosts, "storage")),
        "proxy": _names(hosts_with(hosts, "dialog-server") + hosts_with(hosts, "web")
                        + (hosts_with(hosts, "push") if proxies_route_push else [])),
    }


def _own_needs(hosts, host, primary=None):
    """What a host needs for being one of a group in particular: a joiner, a standby."""
    needs = []
    if "cassandra" in host["roles"]:
        ring = hosts_with(hosts, "cassandra")
        position = _names(ring).index(host["name"])
        if position >= SEED_COUNT:
            needs += _names(ring[:SEED_COUNT]) + [ring[position - 1]["name"]]
    if "postgres" in host["roles"]:
        postgres = _postgres_first(hosts, primary)
        if postgres[0]["name"] != host["name"]:
            needs.append(postgres[0]["name"])
    return needs


def dependencies(hosts, proxies_route_push=True, postgres_primary=None):
    """{host name: [names of the hosts it needs running first]}, in inventory order, for every
    host. `proxies_route_push`: whether the tier's proxies forward the push ports (lib.render
    knows from the catalog); when unknown, waiting for push hosts costs little, as they need
    nothing themselves. `postgres_primary`: the record's primary (after a failover, not the
    lowest index), which the other Postgres hosts and the dialog servers wait for."""
    by_role = _role_needs(hosts, proxies_route_push, postgres_primary)
    result = {}
    for host in by_index(hosts):
        needs = _own_needs(hosts, host, postgres_primary)
        for role in host["roles"]:
            needs += by_role.get(role, [])
        seen = {host["name"]}
        result[host["name"]] = [n for n in needs if not (n in seen or seen.add(n))]
    return result


def rolling_after(hosts):
    """{host name: [the hosts before it in each of its rolling groups]} for the hosts of
    ROLLING_ROLES. Every group is ordered by the same key (index, then name), so no two hosts
    can each be before the other: the turns never deadlock."""
    result = {}
    for role in ROLLING_ROLES:
        group = _names(hosts_with(hosts, role))
        for position, name in enumerate(group):
            before = result.setdefault(name, [])
            before += [n for n in group[:position] if n not in before]
    return result


def depths(needs):
    """{host: length of the longest chain of needs below it} (0: it needs nothing).
    ValueError naming a host on a cycle (the role rules above make none)."""
    result, visiting = {}, set()

    def depth(name):
        if name in result:
            return result[name]
        if name in visiting:
            raise ValueError("dependency cycle through %s" % name)
        visiting.add(name)
        result[name] = max((depth(d) + 1 for d in needs.get(name, ())), default=0)
        visiting.discard(name)
        return result[name]

    for name in needs:
        depth(name)
    return result


def start_order(needs):
    """Every host, each after everything it needs (by depth, then inventory order). A runner
    that starts them in this order with fewer workers than hosts still makes progress: a
    waiting host only waits for hosts started before it."""
    level = depths(needs)
    position = {name: number for number, name in enumerate(needs)}
    return sorted(needs, key=lambda name: (level[name], position[name]))
