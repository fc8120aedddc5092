"""The order hosts are bootstrapped in, from their roles.

Data first (Postgres, the Cassandra seeds, Ceph), then the remaining Cassandra nodes one at a
time, then dialog servers (they need Postgres and Cassandra), then the services around them, and
the proxies last (they route to everything else). A host with several roles (mini's one server,
voice+push) is bootstrapped once, in the earliest stage any of its roles belongs to.
"""

STAGES = ("databases", "cassandra_joiners", "dialog_servers", "services", "proxies")
ROLE_STAGE = {"postgres": "databases", "storage": "databases", "s3-gateway": "databases",
              "dialog-server": "dialog_servers", "push": "services", "voice": "services",
              "web": "services", "proxy": "proxies"}
SEED_COUNT = 2


def by_index(hosts):
    """Hosts in index order; static hosts may have no index and sort after, by name."""
    return sorted(hosts, key=lambda h: (h.get("index") is None, h.get("index") or 0, h["name"]))


def hosts_with(hosts, role):
    return by_index(h for h in hosts if role in h["roles"])


def cassandra_seed_hosts(hosts):
    """The Cassandra seeds: the first two Cassandra hosts by index. Every other node joins
    through them, so a joining node never lists itself and streams its data from the ring."""
    return hosts_with(hosts, "cassandra")[:SEED_COUNT]


def _stage(host, seeds):
    if "cassandra" in host["roles"]:
        cassandra = "databases" if host["name"] in seeds else "cassandra_joiners"
    else:
        cassandra = None
    stages = [ROLE_STAGE[r] for r in host["roles"] if r in ROLE_STAGE] + [cassandra]
    return min((s for s in stages if s), key=STAGES.index)


def bootstrap_stages(hosts):
    """{stage: [host names in index order]} for every stage, empty stages included."""
    seeds = {h["name"] for h in cassandra_seed_hosts(hosts)}
    stages = {name: [] for name in STAGES}
    for host in by_index(hosts):
        stages[_stage(host, seeds)].append(host["name"])
    return stages
