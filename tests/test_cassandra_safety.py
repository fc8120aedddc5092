"""Cassandra safety in scaling, without a sandbox: one topology change at a time on a ring that
is all UN, a join waited on for hours with progress, the decommission space check, and the
cleanups a join leaves owed finished by the next operation.

The actions run for real (scale_prepare, cassandra_join, cassandra_settle, cassandra_cleanup);
the fakes sit where the pack leaves the process: the provider driver's inventory, the SSH login
(bootstrap.connect) and each remote command (health.remote), answered as the hosts would:
`nodetool status` in its real table layout, POSIX `df -Pk`, the health probe's result line.
A command the fake does not know fails the test instead of passing quietly.
"""

import ast
import json

import pytest
from st2tests.mocks.action import MockActionService, MockActionWrapper

import dialog_action
from cassandra_cleanup import CassandraCleanupAction
from cassandra_join import CassandraJoinAction
from cassandra_settle import CassandraSettleAction
from lib import bootstrap, health, pending_cleanup
from lib.cluster import cassandra_ops
from lib.deployment_record import record_of, save_record
from lib.deployment_secrets import ensure_secrets
from lib.errors import ResourceFailed
from lib.planner import build_plan
from lib.render import render_host
from scale_prepare import ScalePrepareAction

GIB = 1024 ** 3
IMAGES = {name: "registry.example.com/dialog/%s:2" % name
          for name in ("dialog_server", "web_app", "dashboard", "push")}
CONFIG = {"profiles": {"default": {"provider": "aws", "images": IMAGES}}}
RING_HEADER = """Datacenter: dc1
===============
Status=Up/Down
|/ State=Normal/Leaving/Joining/Moving
--  Address      Load        Tokens  Owns (effective)  Host ID                               Rack
"""


def status_text(ring):
    """`nodetool status` as Cassandra 4.1 prints it, for {address: (state, load GiB)}."""
    rows = ["%s  %-11s  %.2f GiB  16      %s  0b9c0c5e-%04d  rack1"
            % (state, address, load, "?" if state[1] == "J" else "75.0%", i)
            for i, (address, (state, load)) in enumerate(sorted(ring.items()))]
    return RING_HEADER + "\n".join(rows) + "\n"


def inventory(plan):
    """What dialog.provision reports for a plan: every host with a private address."""
    return [{"name": host["name"], "group": host["group"], "index": host["index"],
             "roles": host["roles"], "provider_id": "i-%d" % number,
             "private_address": "10.0.0.%d" % number,
             "public_addresses": ["198.51.100.%d" % number] if host["public"] else []}
            for number, host in enumerate(plan["hosts"], start=1)]


# --- the ring's states -------------------------------------------------------------------------

def test_parse_status_keeps_each_nodes_state_and_load():
    nodes = cassandra_ops.parse_status(status_text({
        "10.0.0.1": ("UN", 10.0), "10.0.0.2": ("UJ", 1.5), "10.0.0.3": ("DN", 9.0)}))
    assert [(n["address"], n["state"]) for n in nodes] == [
        ("10.0.0.1", "UN"), ("10.0.0.2", "UJ"), ("10.0.0.3", "DN")]
    assert nodes[1]["load_bytes"] == int(1.5 * GIB)


@pytest.mark.parametrize("state, meaning", [("UJ", "up, joining"), ("UL", "up, leaving"),
                                            ("DN", "down, normal"), ("UM", "up, moving")])
def test_a_ring_with_a_node_not_un_is_refused_naming_the_node_and_its_state(state, meaning):
    nodes = cassandra_ops.parse_status(status_text({"10.0.0.1": ("UN", 1), "10.0.0.2": (
        state, 1)}))
    with pytest.raises(ResourceFailed) as caught:
        cassandra_ops.require_normal(nodes, {"10.0.0.2": "dialog-cassandra-2"},
                                     why="no node joins")
    assert "dialog-cassandra-2 (10.0.0.2) is %s (%s)" % (state, meaning) in str(caught.value)
    assert "no node joins" in str(caught.value)


def test_a_ring_missing_a_node_or_empty_is_refused_and_an_all_un_ring_passes():
    nodes = cassandra_ops.parse_status(status_text({"10.0.0.1": ("UN", 1)}))
    with pytest.raises(ResourceFailed, match="10.0.0.2 is not in the ring"):
        cassandra_ops.require_normal(nodes, expected=["10.0.0.1", "10.0.0.2"])
    with pytest.raises(ResourceFailed, match="no node answered"):
        cassandra_ops.require_normal([])
    assert cassandra_ops.require_normal(nodes, expected=["10.0.0.1"]) == nodes


def probe_check(monkeypatch, text, states=None):
    """The probe's cassandra check (the code sent to hosts) against a `nodetool status`."""
    namespace = {}
    exec(compile(health.PROBE_SOURCE, "probe", "exec"), namespace)  # pylint: disable=exec-used
    namespace["run"] = lambda argv, limit: (0, text, "")
    check = {"service": "cassandra", "address": "10.0.0.2"}
    if states:
        check["states"] = states
    return namespace["check_cassandra"](check, 5, {"project": "p", "compose_file": "f"})


def test_the_bootstrap_health_check_passes_un_only_and_uj_only_for_a_joiner(monkeypatch):
    joining = status_text({"10.0.0.1": ("UN", 1), "10.0.0.2": ("UJ", 1)})
    assert probe_check(monkeypatch, joining) == (False, "10.0.0.2 is UJ")
    assert probe_check(monkeypatch, joining, ["UN", "UJ"]) == (True, "10.0.0.2 is UJ")
    normal = status_text({"10.0.0.1": ("UN", 1), "10.0.0.2": ("UN", 1)})
    assert probe_check(monkeypatch, normal) == (True, "10.0.0.2 is UN")


def test_only_the_node_dialog_scale_joins_is_started_at_uj():
    plan = build_plan("production", "aws", cassandra_nodes=4)
    store = MockActionService(MockActionWrapper("dialog", "T"))
    secrets, _ = ensure_secrets(store, "dialog")
    context = {"deployment": "dialog", "tier": "production", "hosts": inventory(plan),
               "secrets": secrets, "images": IMAGES, "joining": ["dialog-cassandra-4"]}

    def states(name):
        return [c["states"] for c in render_host(context, name)["checks"]
                if c["kind"] == "cassandra"]
    assert states("dialog-cassandra-4") == [["UN", "UJ"]]
    assert states("dialog-cassandra-1") == [["UN"]]


# --- decommission: room for the data -------------------------------------------------------

def ring_of(*loads):
    return [{"state": "UN", "address": "10.0.0.%d" % i, "load_bytes": int(load * GIB)}
            for i, load in enumerate(loads, start=1)]


def test_a_decommission_is_refused_when_a_survivor_lacks_room_for_its_share():
    # 4 nodes, the leaver holds 30 GiB: each of 3 survivors takes 30 x 3 / 3 = 30 GiB.
    nodes = ring_of(30, 30, 30, 30)
    free = {"10.0.0.1": 100 * GIB, "10.0.0.2": 100 * GIB, "10.0.0.3": 29 * GIB}
    with pytest.raises(ResourceFailed, match=r"10\.0\.0\.3 lack the free space .*30\.0 GiB"):
        cassandra_ops.check_decommission("10.0.0.4", nodes, free)
    free["10.0.0.3"] = 31 * GIB
    assert cassandra_ops.check_decommission("10.0.0.4", nodes, free)["share_bytes"] == 30 * GIB


def test_a_decommission_is_refused_while_a_node_joins():
    nodes = ring_of(1, 1, 1, 1)
    nodes[1]["state"] = "UJ"
    with pytest.raises(ResourceFailed, match="not UN: 10.0.0.2"):
        cassandra_ops.check_decommission("10.0.0.4", nodes, {n["address"]: GIB * 99
                                                             for n in nodes})


# --- a join waited on for hours --------------------------------------------------------------

class Clock(object):
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_a_join_of_hours_is_waited_with_a_progress_line_every_30s():
    clock, lines = Clock(), []
    # Three hours streaming (far past the 600 s health timeout), then UN.
    polls = int(3 * 3600 / cassandra_ops.JOIN_POLL)

    def read_ring():
        done = len(clock.sleeps)
        state = "UN" if done >= polls else "UJ"
        return ring_of(50, 50, 50) + [{"state": state, "address": "10.0.0.4",
                                       "load_bytes": int(done * 0.1 * GIB)}]
    joined = cassandra_ops.wait_joined(read_ring, "10.0.0.4", "dialog-cassandra-4",
                                       lines.append, clock=clock, sleep=clock.sleep)
    assert joined["state"] == "UN" and joined["seconds"] == 3 * 3600
    assert set(clock.sleeps) == {cassandra_ops.JOIN_POLL}
    assert cassandra_ops.JOIN_TIMEOUT >= 6 * 3600
    assert lines[1] == ("dialog-cassandra-4 (10.0.0.4): UJ (up, joining), 0.1 GiB streamed so "
                        "far, 30s since the join started")
    assert lines[-1].startswith("dialog-cassandra-4 (10.0.0.4): UN, joined after 10800s")


def test_a_join_past_its_bound_or_a_joiner_down_too_long_fails_naming_it():
    clock = Clock()
    with pytest.raises(ResourceFailed, match=r"dialog-cassandra-4 \(10.0.0.4\) still UJ after "
                                             r"3600s"):
        cassandra_ops.wait_joined(lambda: [{"state": "UJ", "address": "10.0.0.4",
                                            "load_bytes": 0}], "10.0.0.4", "dialog-cassandra-4",
                                  timeout=3600, clock=clock, sleep=clock.sleep)
    clock = Clock()
    rings = iter([ring_of(1, 1, 1)] + [None] * 3 + [ring_of(1, 1, 1, 1)])
    joined = cassandra_ops.wait_joined(lambda: next(rings), "10.0.0.4", "c-4", clock=clock,
                                       sleep=clock.sleep)
    assert joined["seconds"] == 4 * cassandra_ops.JOIN_POLL  # an unread ring is not the end
    clock = Clock()
    down = ring_of(1, 1, 1) + [{"state": "DN", "address": "10.0.0.4", "load_bytes": 0}]
    with pytest.raises(ResourceFailed, match=r"is DN \(down, normal\) for 600s while joining"):
        cassandra_ops.wait_joined(lambda: down, "10.0.0.4", "c-4", clock=clock,
                                  sleep=clock.sleep)


def test_the_join_actions_bound_is_the_long_one():
    meta = dialog_action_meta("cassandra_join")
    assert meta["parameters"]["join_timeout"]["default"] == cassandra_ops.JOIN_TIMEOUT
    assert meta["parameters"]["timeout"]["default"] > cassandra_ops.JOIN_TIMEOUT


def dialog_action_meta(name):
    import local_runner
    return local_runner.load_action_metadata("dialog." + name)


# --- the real actions, faked at the provider and SSH boundaries --------------------------------

class Fleet(object):
    """The hosts' side: every Cassandra node sees the same ring; `sick` hosts fail a check;
    `free_gib` per address; `fail_cleanup` names hosts whose nodetool cleanup exits 1."""

    def __init__(self, hosts):
        self.hosts = hosts
        self.by_address = {h["private_address"]: h for h in hosts}
        self.ring = {h["private_address"]: ("UN", 20.0) for h in hosts
                     if "cassandra" in h["roles"]}
        self.free_gib = {}
        self.sick = set()
        self.fail_cleanup = set()
        self.commands = []

    def connect(self, address, **_):
        return FakeConnection(address)

    def remote(self, connection, command, stdin=None, timeout=60.0):
        host = self.by_address[connection.address]["name"]
        self.commands.append((host, command))
        if command.endswith("nodetool status"):
            return 0, status_text(self.ring), ""
        if command.startswith("df -Pk"):
            free = int(self.free_gib.get(connection.address, 500) * 1024 ** 2)
            return 0, "/dev/nvme1n1 999999999 1 %d 1%% /var/lib/dialog\n" % free, ""
        if command.endswith("nodetool cleanup"):
            if host in self.fail_cleanup:
                self.fail_cleanup.discard(host)
                return 1, "", "error: cleanup interrupted\n"
            return 0, "", ""
        if "cqlsh" in command and "DESCRIBE KEYSPACES" in command:
            return 0, "system  system_auth  system_schema\n", ""
        if command.endswith("python3 -"):
            literal = stdin.rsplit("REQUEST = json.loads(", 1)[1].rsplit(")\nmain()", 1)[0]
            request = json.loads(ast.literal_eval(literal))
            results = [{"name": c["name"], "role": c["role"], "ok": host not in self.sick,
                        "detail": "200" if host not in self.sick else "connection refused"}
                       for c in request["checks"]]
            return 0, health.RESULT_MARK + json.dumps({"health": {"results": results}}), ""
        raise AssertionError("a command the fake hosts do not know: %s" % command)


class FakeConnection(object):
    user = "root"

    def __init__(self, address):
        self.address = address

    def close(self):
        pass


class FakeDriver(object):
    def __init__(self, hosts):
        self.hosts = hosts

    def inventory(self, deployment):
        return list(self.hosts)


@pytest.fixture
def world(monkeypatch):
    """A production deployment of 4 Cassandra nodes on AWS, recorded and with secrets."""
    plan = build_plan("production", "aws", cassandra_nodes=4, dialog_servers=3)
    hosts = inventory(plan)
    fleet = Fleet(hosts)
    store = MockActionService(MockActionWrapper("dialog", "T"))
    save_record(store, record_of(plan, "default"))
    ensure_secrets(store, "dialog")
    monkeypatch.setattr(dialog_action, "open_provider",
                        lambda provider, settings, region, progress=None: FakeDriver(hosts))
    monkeypatch.setattr(bootstrap, "connect", fleet.connect)
    monkeypatch.setattr(health, "remote", fleet.remote)
    fleet.store = store
    return fleet


def run(cls, fleet, **params):
    """(ok, result) as the python runner gets them from the action."""
    ok, result = cls(config=CONFIG, action_service=fleet.store).run(**params)
    return ok, dict(result)


def test_scale_prepare_refuses_cassandra_out_while_a_node_is_joining(world):
    world.ring["10.0.0.%d" % cassandra_index(world, "dialog-cassandra-3")] = ("UJ", 4.0)
    ok, result = run(ScalePrepareAction, world, deployment="dialog", role="cassandra", delta=1,
                     dry_run=True)
    assert not ok
    assert "dialog-cassandra-3 (%s) is UJ (up, joining)" % address(
        world, "dialog-cassandra-3") in result["error"]
    world.ring[address(world, "dialog-cassandra-3")] = ("UN", 20.0)
    ok, result = run(ScalePrepareAction, world, deployment="dialog", role="cassandra", delta=1,
                     dry_run=True)
    assert ok, result
    assert result["joining"] == ["dialog-cassandra-5"]


def test_scale_prepare_refuses_cassandra_out_while_a_node_is_down(world):
    world.ring[address(world, "dialog-cassandra-1")] = ("DN", 20.0)
    ok, result = run(ScalePrepareAction, world, deployment="dialog", role="cassandra", delta=1,
                     dry_run=True)
    assert not ok and "dialog-cassandra-1 (%s) is DN (down, normal)" % address(
        world, "dialog-cassandra-1") in result["error"]


def test_scale_prepare_refuses_dialog_server_in_while_one_is_unhealthy(world):
    world.sick.add("dialog-dialog-server-2")
    ok, result = run(ScalePrepareAction, world, deployment="dialog", role="dialog-server",
                     delta=-2, dry_run=True)
    assert not ok
    assert "no scale-in while a dialog server is unhealthy: dialog-dialog-server-2: " \
        "dialog-server http" in result["error"]
    world.sick.clear()
    ok, result = run(ScalePrepareAction, world, deployment="dialog", role="dialog-server",
                     delta=-2, dry_run=True)
    assert ok, result


def test_scale_prepare_refuses_cassandra_in_without_room_on_a_survivor(world):
    world.free_gib[address(world, "dialog-cassandra-2")] = 10  # share: 20 x 3 / 3 = 20 GiB
    ok, result = run(ScalePrepareAction, world, deployment="dialog", role="cassandra", delta=-1,
                     dry_run=True)
    assert not ok and "lack the free space" in result["error"]
    world.free_gib.clear()
    ok, result = run(ScalePrepareAction, world, deployment="dialog", role="cassandra", delta=-1,
                     dry_run=True)
    assert ok, result


def address(fleet, name):
    return next(h["private_address"] for h in fleet.hosts if h["name"] == name)


def cassandra_index(fleet, name):
    return int(address(fleet, name).rsplit(".", 1)[1])


def owed(fleet):
    return pending_cleanup.pending(fleet.store, "dialog")


def test_a_join_records_the_older_nodes_cleanup_once_the_joiner_is_un(world, monkeypatch):
    joiner = dict(world.hosts[-1], name="dialog-cassandra-5", private_address="10.0.0.99",
                  index=5, provider_id="i-99")
    older = [h["name"] for h in world.hosts if "cassandra" in h["roles"]]
    world.hosts.append(joiner)  # provision made it: the provider lists it
    hosts = list(world.hosts)
    world.by_address["10.0.0.99"] = joiner
    world.ring["10.0.0.99"] = ("UJ", 0.5)

    def sleep(seconds):
        world.ring["10.0.0.99"] = ("UN", 15.0)
        assert owed(world) == []  # not owed before the node has joined
    monkeypatch.setattr(cassandra_ops.time, "sleep", sleep)
    ok, result = run(CassandraJoinAction, world, deployment="dialog", host="dialog-cassandra-5",
                     hosts=hosts, older=older + ["dialog-cassandra-5"])
    assert ok, result
    assert result["state"] == "UN" and owed(world) == older


def test_owed_cleanups_are_finished_by_the_next_operation_even_after_a_failure(world):
    older = [h["name"] for h in world.hosts if "cassandra" in h["roles"]]
    pending_cleanup.record(world.store, "dialog", older)
    # The scale's own cleanup of the first node succeeds, then its workflow dies.
    ok, result = run(CassandraCleanupAction, world, deployment="dialog", host=older[0],
                     hosts=world.hosts)
    assert ok, result
    assert owed(world) == older[1:]
    # The next operation's settle: one cleanup fails, the rest stays owed.
    world.fail_cleanup.add(older[2])
    ok, result = run(CassandraSettleAction, world, deployment="dialog")
    assert not ok and "cleanup interrupted" in result["error"]
    assert owed(world) == older[2:]
    ok, result = run(CassandraSettleAction, world, deployment="dialog")
    assert ok, result
    assert result["cleaned"] == older[2:] and owed(world) == []
    cleaned = [h for h, c in world.commands if c.endswith("nodetool cleanup")]
    assert cleaned == [older[0], older[1], older[2], older[2], older[3]]


def test_settle_with_nothing_owed_touches_no_host_and_a_deploy_changing_the_ring_needs_un(world):
    ok, result = run(CassandraSettleAction, world, deployment="dialog")
    assert ok and result["cleaned"] == [] and world.commands == []
    world.ring[address(world, "dialog-cassandra-4")] = ("UJ", 3.0)
    same = build_plan("production", "aws", cassandra_nodes=4, dialog_servers=3)
    ok, result = run(CassandraSettleAction, world, deployment="dialog", plan=same)
    assert ok, result
    grown = build_plan("production", "aws", cassandra_nodes=5, dialog_servers=3)
    ok, result = run(CassandraSettleAction, world, deployment="dialog", plan=grown)
    assert not ok and "dialog-cassandra-4 (%s) is UJ" % address(
        world, "dialog-cassandra-4") in result["error"]
