"""Hosts faked at the SSH boundary, for fast tests of the real actions and lib code.

`FakeHosts.connect` stands in for lib.bootstrap.connect: it returns a connection whose channel
(the paramiko calls lib.health.remote makes) hands each command to the host named by the
address, which answers like the real one would:

- `python3 -` with the health probe on stdin (health.run_probe): the results of the checks the
  probe was sent, each failing when the host lists its name in `failing` (or fails them all);
  with a compose step (bootstrap.start_host's prelude), "unchanged" for it;
- `nodetool status` (cassandra_ops.ring): the ring's table in nodetool's layout;
- `df -Pk PATH` (cassandra_ops.free_bytes): the host's free bytes in POSIX df's layout.

Anything else fails with exit 127 and the command on stderr, so that a test never passes on a
command nobody taught the fake. Every command a host ran is kept in `commands`.
"""

import ast
import json
import re
import threading

from lib import health

REQUEST_LINE = re.compile(r"^REQUEST = json\.loads\((.*)\)$", re.M)


class FakeHost(object):
    def __init__(self, name, address, failing=(), free_bytes=500 * 1024 ** 3):
        self.name, self.address = name, address
        self.failing = failing  # check names, or True: every check fails
        self.free_bytes = free_bytes
        self.commands = []

    def fails(self, check):
        return self.failing is True or check.get("name") in self.failing


class FakeHosts(object):
    """The hosts of an inventory ([{"name", "private_address", "public_addresses"}, ...]),
    reachable at any of their addresses. ring: [{"state", "address", "load_bytes"}], the
    Cassandra ring as every node sees it (default: every cassandra host UN, 10 GiB each)."""

    def __init__(self, inventory, ring=None):
        self.hosts, self.by_address = {}, {}
        for item in inventory:
            host = FakeHost(item["name"], item.get("private_address"))
            self.hosts[item["name"]] = host
            addresses = [item.get("private_address")] + list(item.get("public_addresses") or [])
            for address in addresses:
                if address:
                    self.by_address[address] = host
        self.ring = ring if ring is not None else [
            {"state": "UN", "address": item["private_address"], "load_bytes": 10 * 1024 ** 3}
            for item in inventory if "cassandra" in item["roles"]]
        self.lock = threading.Lock()

    def __getitem__(self, name):
        return self.hosts[name]

    def connect(self, address, user="root", **_):
        return FakeConnection(self, self.by_address[address], user or "root")

    def answer(self, host, command, stdin):
        with self.lock:
            host.commands.append(command)
        if command.endswith("python3 -"):
            return self._probe(host, stdin.decode("utf-8"))
        if "nodetool status" in command:
            return 0, nodetool_status(self.ring), ""
        if command.startswith("df -Pk "):
            free_kb = host.free_bytes // 1024
            return 0, "/dev/xvdf 1048576000 0 %d 0%% /var/lib/cassandra\n" % free_kb, ""
        return 127, "", "fake host %s: no answer for %r" % (host.name, command)

    @staticmethod
    def _probe(host, script):
        request = json.loads(ast.literal_eval(REQUEST_LINE.search(script).group(1)))
        out = {}
        if request.get("compose") is not None:
            out["before"] = {"status": "unchanged", "running": []}
        out["health"] = {"results": [
            {"name": c.get("name"), "role": c.get("role"), "ok": not host.fails(c),
             "detail": "connection refused" if host.fails(c) else "200"}
            for c in request.get("checks") or []], "seconds": 0.0, "rounds": 1}
        return 0, health.RESULT_MARK + json.dumps(out) + "\n", ""


def nodetool_status(ring):
    """`nodetool status` as Cassandra 4 prints it (the columns cassandra_ops.ROW reads)."""
    lines = ["Datacenter: dc1", "===============", "Status=Up/Down",
             "|/ State=Normal/Leaving/Joining/Moving",
             "--  Address    Load       Tokens  Owns (effective)  Host ID  Rack"]
    for node in ring:
        lines.append("%s  %s  %.2f GiB  16  75.0%%  00000000-0000  rack1" % (
            node["state"], node["address"], node["load_bytes"] / 1024.0 ** 3))
    return "\n".join(lines) + "\n"


class FakeConnection(object):
    """What lib.health.remote uses of a fabric Connection."""

    def __init__(self, hosts, host, user):
        self.hosts, self.host, self.user = hosts, host, user
        self.client = self

    def open(self):
        return None

    def close(self):
        return None

    def get_transport(self):
        return self

    def open_session(self, timeout=None):
        return FakeChannel(self)


class FakeChannel(object):
    def __init__(self, connection):
        self.connection = connection
        self.command, self.stdin = None, b""
        self.out, self.err = [], []
        self.status_event = threading.Event()
        self.exit_status = -1

    def exec_command(self, command):
        self.command = command

    def sendall(self, data):
        self.stdin += data

    def shutdown_write(self):
        status, out, err = self.connection.hosts.answer(self.connection.host, self.command,
                                                        self.stdin)
        self.out, self.err = [out.encode("utf-8")], [err.encode("utf-8")]
        self.exit_status = status
        self.status_event.set()

    def settimeout(self, _seconds):
        return None

    def recv(self, _size):
        return self.out.pop(0) if self.out else b""

    def recv_stderr(self, _size):
        return self.err.pop(0) if self.err else b""

    def close(self):
        return None
