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

UNITS = {"B": 1, "bytes": 1, "KiB": 1024, "KB": 1024, "MiB": 1024 ** 2, "MB": 1024 ** 2,
         "GiB": 1024 ** 3, "GB": 1024 ** 3, "TiB": 1024 ** 4, "TB": 1024 ** 4}
ROW = re.compile(r"^([UD][NLJM])\s+(\S+)\s+([\d.]+)\s*(\S+)")
NODETOOL_TIMEOUT = 3600.0  # cleanup and decommission stream data


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


def cleanup(connection, rendered):
    _nodetool(connection, rendered, ["cleanup"], NODETOOL_TIMEOUT)


def free_bytes(connection, path="/var/lib/dialog"):
    """Free space of the filesystem holding `path` on the host (POSIX df, 1K blocks)."""
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
