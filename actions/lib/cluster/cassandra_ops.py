"""Cassandra topology operations over SSH: ring status, cleanup, decommission.

Each runs `nodetool` inside the host's cassandra service (docker compose exec), the way an
operator would. Parsing follows `nodetool status`'s table: status/state, address, load.
"""

import re
import shlex
import time

from lib import health
from lib.errors import ResourceFailed
from lib.scaling import REPLICATION_FACTOR
from lib.hosts.volumes import DATA_DIRS

UNITS = {"B": 1, "bytes": 1, "KiB": 1024, "KB": 1024, "MiB": 1024 ** 2, "MB": 1024 ** 2,
         "GiB": 1024 ** 3, "GB": 1024 ** 3, "TiB": 1024 ** 4, "TB": 1024 ** 4}
ROW = re.compile(r"^([UD][NLJM])\s+(\S+)\s+([\d.]+)\s*(\S+)")
NODETOOL_TIMEOUT = 3600.0  # cleanup and decommission stream data
CASSANDRA_DATA = DATA_DIRS["cassandra"]


def _last_line(text):
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def _nodetool(connection, rendered, args, timeout):
    command = health.sudo_prefix(connection) + "docker compose -p %s -f %s exec -T cassandra " \
        "nodetool %s" % (shlex.quote(rendered["project"]), shlex.quote(rendered["compose_file"]),
                         " ".join(shlex.quote(a) for a in args))
    status, out, err = health.remote(connection, command, timeout=timeout)
    if status != 0:
        raise ResourceFailed("%s (cassandra): nodetool %s failed: %s" % (
            rendered["host"], args[0], _last_line(err) or _last_line(out)
            or "exit %s" % status))
    return out


def parse_status(text):
    """[{"state": "UN", "address", "load_bytes"}] from `nodetool status` output."""
    nodes = []
    for line in text.splitlines():
        match = ROW.match(line.strip())
        if match:
            state, address, number, unit = match.groups()
            nodes.append({"state": state, "address": address,
                          "load_bytes": int(float(number) * UNITS.get(unit, 1))})
    return nodes


def ring(connection, rendered):
    return parse_status(_nodetool(connection, rendered, ["status"], 120))


# `nodetool status`'s two letters: status (Up/Down) and state (Normal/Leaving/Joining/Moving).
STATUS = {"U": "up", "D": "down"}
STATE = {"N": "normal", "L": "leaving", "J": "joining", "M": "moving"}


def describe_state(state):
    """'UJ (up, joining)': a node's two letters and what they mean."""
    return "%s (%s, %s)" % (state, STATUS.get(state[:1], "?"), STATE.get(state[1:2], "?"))


def require_normal(nodes, names=None, expected=(), why="no topology change"):
    """Raise ResourceFailed unless every node of the ring reads UN and every address of
    `expected` is in it. A second node joining while one still streams (UJ), or while one is
    down (DN) or leaving (UL), can take the wrong token ranges or lose replicas; Cassandra's own
    guidance is one topology change at a time on a healthy ring. names: {address: host name}
    for the message."""
    names = names or {}

    def label(address):
        return "%s (%s)" % (names[address], address) if address in names else address

    wrong = ["%s is %s" % (label(n["address"]), describe_state(n["state"]))
             for n in nodes if n["state"] != "UN"]
    listed = {n["address"] for n in nodes}
    wrong += ["%s is not in the ring" % label(a) for a in expected if a not in listed]
    if wrong or not nodes:
        raise ResourceFailed("cassandra ring not ready: %s; %s until every node is UN (up, "
                             "normal): `st2 run dialog.status` shows the ring, a join or "
                             "decommission still streaming finishes on its own"
                             % ("; ".join(wrong) or "no node answered", why))
    return nodes


# A join streams the joiner's share of the data: at Cassandra's default outbound stream
# throughput (24 MiB/s per node, stream_throughput_outbound) a terabyte takes about 12 hours.
JOIN_TIMEOUT = 12 * 3600.0
JOIN_POLL = 30.0
# A joiner not yet gossiping, or marked down by one missed heartbeat, is given this long.
JOIN_LOST_AFTER = 600.0


def _gib(count):
    return "%.1f GiB" % (count / 1024.0 ** 3)


def wait_joined(read_ring, address, name, progress=None, timeout=JOIN_TIMEOUT,
                interval=JOIN_POLL, lost_after=JOIN_LOST_AFTER, clock=None, sleep=None):
    """Wait until node `address` reads UN in the ring that read_ring() returns (a node other
    than the joiner: its own view is not trusted; None when it could not be read), with a
    progress line per poll: its state and the load it holds so far (nodetool's Load column grows
    as it streams). ResourceFailed when the bound runs out, or when the node is down or absent,
    or the ring unreadable, for longer than `lost_after`.
    Returns {"host", "address", "state", "load_bytes", "seconds"}."""
    say = progress or (lambda line: None)
    clock, sleep = clock or time.monotonic, sleep or time.sleep
    start = clock()
    lost_since = None
    while True:
        now = clock()
        nodes = read_ring()
        node = next((n for n in nodes or () if n["address"] == address), None)
        elapsed = now - start
        if node is not None and node["state"] == "UN":
            say("%s (%s): UN, joined after %ds, %s" % (name, address, elapsed,
                                                       _gib(node["load_bytes"])))
            return {"host": name, "address": address, "state": "UN",
                    "load_bytes": node["load_bytes"], "seconds": round(elapsed, 1)}
        if node is None or node["state"].startswith("D"):
            lost_since = now if lost_since is None else lost_since
            what = describe_state(node["state"]) if node is not None else \
                "not in the ring" if nodes is not None else "unknown (the ring could not be read)"
            if now - lost_since >= lost_after:
                raise ResourceFailed("%s (%s) is %s for %ds while joining; see its cassandra "
                                     "log (docker compose logs cassandra) before retrying"
                                     % (name, address, what, now - lost_since))
            say("%s (%s): %s, %ds since the join started" % (name, address, what, elapsed))
        else:
            lost_since = None
            say("%s (%s): %s, %s streamed so far, %ds since the join started"
                % (name, address, describe_state(node["state"]), _gib(node["load_bytes"]),
                   elapsed))
        if elapsed >= timeout:
            raise ResourceFailed("%s (%s) still %s after %ds; the join keeps streaming: wait for "
                                 "UN (st2 run dialog.status), then run the scale again"
                                 % (name, address, node["state"] if node else "absent",
                                    elapsed))
        sleep(min(interval, timeout - elapsed))


def cleanup(connection, rendered):
    _nodetool(connection, rendered, ["cleanup"], NODETOOL_TIMEOUT)


def free_bytes(connection, path=CASSANDRA_DATA):
    """Free space of the filesystem holding `path` on the host (POSIX df, 1K blocks). The
    default, Cassandra's data directory, is its data volume's mount point where it has one
    (lib.hosts.volumes), so this measures the volume, not the root disk."""
    status, out, _ = health.remote(connection, "df -Pk %s | tail -n 1" % shlex.quote(path),
                                   timeout=60)
    if status != 0 or len(out.split()) < 4:
        raise ResourceFailed("cannot read the free space of %s" % path)
    return int(out.split()[3]) * 1024


def check_decommission(leaver_address, nodes, free):
    """Refuse a decommission that would break the ring: every node up and normal, survivors at
    least the replication factor, and each survivor with room for its share of the leaver's
    data (load x RF / survivors, as the leaver's replicas spread over them).
    free: {address: free bytes}."""
    down = [n["address"] for n in nodes if n["state"] != "UN"]
    if down:
        raise ResourceFailed("cassandra ring not healthy (not UN: %s); no decommission while a "
                             "node is down or moving" % ", ".join(down))
    leaver = [n for n in nodes if n["address"] == leaver_address]
    if not leaver:
        raise ResourceFailed("cassandra node %s is not in the ring" % leaver_address)
    survivors = [n for n in nodes if n["address"] != leaver_address]
    if len(survivors) < REPLICATION_FACTOR:
        raise ResourceFailed("decommissioning %s would leave %d cassandra nodes, fewer than the "
                             "replication factor %d" % (leaver_address, len(survivors),
                                                        REPLICATION_FACTOR))
    share = leaver[0]["load_bytes"] * REPLICATION_FACTOR / float(len(survivors))
    short = [n["address"] for n in survivors if free.get(n["address"], 0) < share]
    if short:
        raise ResourceFailed("cassandra nodes %s lack the free space for their share of %s's "
                             "data (%.1f GiB each)"
                             % (", ".join(short), leaver_address, share / 1024 ** 3))
    return {"leaver": leaver_address, "share_bytes": int(share), "survivors": len(survivors)}


def decommission(connection, rendered, observer=None, observer_rendered=None, timeout=3600.0,
                 interval=5.0):
    """`nodetool decommission` on the leaver, then wait until another node's ring no longer
    lists it (the leaver's own answer is not trusted once it has left)."""
    _nodetool(connection, rendered, ["decommission"], NODETOOL_TIMEOUT)
    if observer is None:
        return
    deadline = time.monotonic() + timeout
    while True:
        addresses = [n["address"] for n in ring(observer, observer_rendered)]
        if rendered["address"] not in addresses:
            return
        if time.monotonic() > deadline:
            raise ResourceFailed("%s still in the cassandra ring %gs after decommission"
                                 % (rendered["host"], timeout))
        time.sleep(interval)


# ---- replication ------------------------------------------------------------------------------
# Dialog names no keyspaces (its server creates them at its first start, through the
# akka-persistence journal and snapshot settings), so every keyspace that is not Cassandra's
# own is Dialog's. Each gets NetworkTopologyStrategy with RF = min(3, nodes) in the ring's
# datacenter (CASSANDRA_DC in the compose file, read back from `nodetool status`).

SYSTEM_KEYSPACES = ("system", "system_auth", "system_distributed", "system_schema",
                    "system_traces", "system_views", "system_virtual_schema")
NTS = "NetworkTopologyStrategy"
DATACENTER = re.compile(r"^Datacenter:\s*(\S+)", re.M)
REPLICATION_LINE = re.compile(r"^\s*(\{.*\})\s*$", re.M)
CQL_TIMEOUT = 120.0


def wanted_rf(nodes):
    return max(1, min(REPLICATION_FACTOR, int(nodes)))


def _cqlsh(connection, rendered, statement, timeout=CQL_TIMEOUT):
    command = health.sudo_prefix(connection) + "docker compose -p %s -f %s exec -T cassandra " \
        "cqlsh %s -e %s" % (shlex.quote(rendered["project"]), shlex.quote(rendered["compose_file"]),
                            shlex.quote(rendered["address"]), shlex.quote(statement))
    status, out, err = health.remote(connection, command, timeout=timeout)
    if status != 0:
        raise ResourceFailed("%s (cassandra): cqlsh %r failed: %s" % (
            rendered["host"], statement.split(" WITH ")[0], _last_line(err) or _last_line(out)
            or "exit %s" % status))
    return out


def datacenters(status_text):
    """The datacenter names of `nodetool status` output, in order."""
    return DATACENTER.findall(status_text)


def dialog_keyspaces(connection, rendered):
    """Every keyspace but Cassandra's own (DESCRIBE KEYSPACES)."""
    names = _cqlsh(connection, rendered, "DESCRIBE KEYSPACES").split()
    return sorted(n for n in names if n not in SYSTEM_KEYSPACES)


def replication_of(connection, rendered, keyspace):
    """The keyspace's replication map from system_schema ({'class': ..., dc or
    'replication_factor': 'N'})."""
    out = _cqlsh(connection, rendered, "SELECT replication FROM system_schema.keyspaces WHERE "
                 "keyspace_name = '%s'" % keyspace)
    found = REPLICATION_LINE.search(out)
    if not found:
        raise ResourceFailed("%s (cassandra): keyspace %s has no replication settings"
                             % (rendered["host"], keyspace))
    return dict(re.findall(r"'([^']*)':\s*'([^']*)'", found.group(1)))


def current_rf(replication, dc):
    """The copies a replication map keeps in `dc` (SimpleStrategy: its replication_factor)."""
    if replication.get("class", "").endswith(NTS):
        return int(replication.get(dc) or 0)
    return int(replication.get("replication_factor") or 0)


def ensure_replication(connection, rendered, nodes, peers=(), progress=None):
    """Set RF = min(3, nodes) with NetworkTopologyStrategy on every Dialog keyspace, over
    `connection` to one Cassandra node; never lowers an RF. Where the RF rises, `nodetool repair
    -full KEYSPACE` follows, on this node and on `peers` ([(connection, rendered)] of the other
    nodes) when the ring is larger than the new RF (a node repairs only the ranges it holds).
    Returns [{"keyspace", "before", "after", "repaired"}] for every Dialog keyspace."""
    say = progress or (lambda line: None)
    dcs = datacenters(_nodetool(connection, rendered, ["status"], 120))
    if len(dcs) != 1:
        raise ResourceFailed("%s (cassandra): expected one datacenter in `nodetool status`, "
                             "found %s" % (rendered["host"], ", ".join(dcs) or "none"))
    dc, rf = dcs[0], wanted_rf(nodes)
    results = []
    for keyspace in dialog_keyspaces(connection, rendered):
        replication = replication_of(connection, rendered, keyspace)
        before = current_rf(replication, dc)
        entry = {"keyspace": keyspace, "before": before, "after": before, "repaired": False}
        results.append(entry)
        if replication.get("class", "").endswith(NTS) and before >= rf:
            continue
        after = max(rf, before)
        _cqlsh(connection, rendered, "ALTER KEYSPACE \"%s\" WITH replication = {'class': '%s', "
               "'%s': %d}" % (keyspace, NTS, dc, after))
        entry["after"] = after
        say("%s: keyspace %s replication %s, RF %d -> %d in %s" % (
            rendered["host"], keyspace, NTS, before, after, dc))
        if after > before:
            targets = [(connection, rendered)] + (list(peers) if nodes > after else [])
            for target, target_rendered in targets:
                _nodetool(target, target_rendered, ["repair", "-full", keyspace],
                          NODETOOL_TIMEOUT)
            entry["repaired"] = True
            say("%s: nodetool repair -full %s done on %d node(s)" % (
                rendered["host"], keyspace, len(targets)))
    return results


# ---- replacing a dead node --------------------------------------------------------------------
# Cassandra's "Replacing a dead node" (Apache Cassandra 4.1 docs, Operating > Adding, replacing,
# moving and removing nodes): the node to replace must be down, and a replacement streams its
# ranges from the live replicas. A second node down or still streaming during it can leave a
# range with no live replica to stream from, or two topology changes overlapping: one change at
# a time, on an otherwise healthy ring.

def replace_gate(nodes, dead_address, names=None):
    """Refuse (ResourceFailed naming every offender) unless `dead_address` reads DN in `nodes`
    (parse_status rows, read from a node other than the dead one) and every other node reads
    UN. names: {address: host name} for the message. Returns {"dead", "others"} when the ring
    may be touched: the dead address and the UN addresses that will stream to the replacement."""
    names = names or {}

    def label(address):
        return "%s (%s)" % (names[address], address) if address in names else address

    dead = [n for n in nodes if n["address"] == dead_address]
    others = [n for n in nodes if n["address"] != dead_address]
    wrong = []
    if not dead:
        wrong.append("%s is not in the ring (nothing to replace: a node that never joined, or "
                     "one already replaced or removed)" % label(dead_address))
    elif dead[0]["state"] != "DN":
        wrong.append("%s is %s, not DN (down, normal): Cassandra refuses to replace a live "
                     "node" % (label(dead_address), describe_state(dead[0]["state"])))
    wrong += ["%s is %s" % (label(n["address"]), describe_state(n["state"]))
              for n in others if n["state"] != "UN"]
    if not others:
        wrong.append("no other node answered: a replacement streams from live replicas")
    if wrong:
        raise ResourceFailed("cassandra replacement of %s refused: %s; a replacement needs the "
                             "dead node DN and every other node UN (one topology change at a "
                             "time): `st2 run dialog.status` shows the ring"
                             % (label(dead_address), "; ".join(wrong)))
    return {"dead": dead_address, "others": sorted(n["address"] for n in others)}
