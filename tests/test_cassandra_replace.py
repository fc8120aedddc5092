"""Replacing a dead Cassandra node: dialog.deploy's `replacing`, checked at the plan, rendered
as replace_address_first_boot on that host only, and the ring gate the heal workflow uses."""

import os
import socket
import threading
import time
import uuid

import pytest
import yaml

from lib.cluster.cassandra_ops import replace_gate
from lib.cluster.cassandra_replace import check_replacing
from lib.errors import InputError, ResourceFailed
from lib.planner import build_plan
from lib.render import render_host
from cassandra_settle import CassandraSettleAction
from sandbox import fake_docker
from test_cassandra_safety import address as safety_address, run as safety_run, \
    world  # noqa: F401  pylint: disable=unused-import
from test_render import compose, make_context
from test_workflow_deploy import RealPlan, called, deploy

JVM = "JVM_EXTRA_OPTS"


def ring(*rows):
    return [{"state": state, "address": address, "load_bytes": 1} for state, address in rows]


# ---- replace_gate ------------------------------------------------------------------------------

def test_gate_passes_a_dead_node_on_an_otherwise_normal_ring():
    nodes = ring(("UN", "10.40.16.4"), ("DN", "10.40.16.5"), ("UN", "10.40.16.6"))
    assert replace_gate(nodes, "10.40.16.5") == {"dead": "10.40.16.5",
                                                 "others": ["10.40.16.4", "10.40.16.6"]}


def test_gate_refuses_a_live_node():
    nodes = ring(("UN", "10.40.16.4"), ("UN", "10.40.16.5"), ("UN", "10.40.16.6"))
    with pytest.raises(ResourceFailed) as caught:
        replace_gate(nodes, "10.40.16.5", names={"10.40.16.5": "dialog-cassandra-2"})
    assert "dialog-cassandra-2 (10.40.16.5) is UN (up, normal), not DN" in str(caught.value)


@pytest.mark.parametrize("other", ["DN", "UJ", "UL", "UM"])
def test_gate_refuses_while_another_node_is_not_un_naming_it(other):
    nodes = ring(("UN", "10.40.16.4"), ("DN", "10.40.16.5"), (other, "10.40.16.6"))
    with pytest.raises(ResourceFailed) as caught:
        replace_gate(nodes, "10.40.16.5", names={"10.40.16.6": "dialog-cassandra-3"})
    message = str(caught.value)
    assert "dialog-cassandra-3 (10.40.16.6) is %s" % other in message
    assert "10.40.16.4" not in message


def test_gate_refuses_an_address_not_in_the_ring():
    with pytest.raises(ResourceFailed, match="10.40.16.9 is not in the ring"):
        replace_gate(ring(("UN", "10.40.16.4"), ("UN", "10.40.16.6")), "10.40.16.9")


def test_gate_refuses_when_no_other_node_answers():
    with pytest.raises(ResourceFailed, match="no other node answered"):
        replace_gate(ring(("DN", "10.40.16.5")), "10.40.16.5")


# ---- check_replacing (dialog.plan, before any provider call) -----------------------------------

PLAN = build_plan("small-failover", "aws")


def test_check_accepts_a_cassandra_host_and_a_vpc_address():
    assert check_replacing({"dialog-cassandra-2": " 10.40.16.12"}, PLAN) == {
        "dialog-cassandra-2": "10.40.16.12"}
    assert check_replacing({}, PLAN) == {} and check_replacing(None, PLAN) == {}


@pytest.mark.parametrize("replacing,field,words", [
    ({"dialog-proxy-1": "10.40.16.12"}, "replacing", "not a Cassandra host of this plan; "
     "Cassandra hosts: dialog-cassandra-1, dialog-cassandra-2, dialog-cassandra-3"),
    ({"dialog-cassandra-2": "10.99.0.12"}, "replacing.dialog-cassandra-2",
     "10.99.0.12 is not a private address of the deployment's network; networks: "
     "10.40.0.0/16"),
    ({"dialog-cassandra-2": "203.0.113.5"}, "replacing.dialog-cassandra-2", "203.0.113.5 is "
     "not a private address"),
    ({"dialog-cassandra-2": "cassandra-2"}, "replacing.dialog-cassandra-2", "not an IPv4"),
    ({"dialog-cassandra-1": "10.40.16.11", "dialog-cassandra-2": "10.40.16.12"}, "replacing",
     "one Cassandra node at a time"),
    (["dialog-cassandra-2"], "replacing", "give an object"),
])
def test_check_refuses_naming_the_field(replacing, field, words):
    with pytest.raises(InputError) as caught:
        check_replacing(replacing, PLAN)
    assert caught.value.field == field
    assert words in str(caught.value)


def test_check_on_digitalocean_takes_rfc1918_and_refuses_a_single_node_ring():
    plan = build_plan("small-failover", "digitalocean")
    assert check_replacing({"dialog-cassandra-3": "10.118.0.7"}, plan) == {
        "dialog-cassandra-3": "10.118.0.7"}
    with pytest.raises(InputError, match="not a private address"):
        check_replacing({"dialog-cassandra-3": "100.64.0.7"}, plan)
    with pytest.raises(InputError, match="this plan has 1: restore from a backup"):
        check_replacing({"dialog-cassandra-1": "10.40.16.3"}, build_plan("small", "aws"))


def test_deploy_refuses_a_bad_replacing_at_the_plan_before_any_provider_call():
    actions = RealPlan()
    result = deploy(actions, tier="small-failover", provider="aws",
                    replacing={"dialog-cassandra-2": "192.168.7.7"})
    assert result.status == "failed"
    assert result.output["failure"].startswith(
        "replacing.dialog-cassandra-2: 192.168.7.7 is not a private address")
    assert [ref for ref, _ in actions.calls] == ["dialog.plan", "dialog.explain_failure"]


def test_deploy_hands_replacing_to_every_bootstrap():
    actions = RealPlan()
    replacing = {"dialog-cassandra-2": "10.40.16.12"}
    result = deploy(actions, tier="small-failover", provider="aws", replacing=replacing)
    assert result.status == "succeeded", result.output["failure"]
    assert called(actions, "dialog.plan")[0]["replacing"] == replacing
    boots = called(actions, "dialog.bootstrap_host")
    assert boots and all(b["replacing"] == replacing for b in boots)


def test_deploy_without_replacing_passes_none():
    actions = RealPlan()
    assert deploy(actions, tier="small-failover", provider="aws").status == "succeeded"
    assert "replacing" not in {k for k, v in called(actions, "dialog.plan")[0].items()
                               if v is not None}
    assert all(b["replacing"] == {} for b in called(actions, "dialog.bootstrap_host"))


# ---- the render ----------------------------------------------------------------------------

def context_replacing(replacing):
    context = make_context("small-failover")
    context["replacing"] = replacing
    return context


def cassandra_env(context, name):
    return compose(render_host(context, name))["services"]["cassandra"]["environment"]


def test_only_the_replacement_starts_with_replace_address_first_boot():
    context = context_replacing({"dialog-cassandra-2": "10.40.16.99"})
    cassandra = [h for h in context["hosts"] if "cassandra" in h["roles"]]
    envs = {h["name"]: cassandra_env(context, h["name"]) for h in cassandra}
    assert envs["dialog-cassandra-2"][JVM] == \
        "-Dcassandra.replace_address_first_boot=10.40.16.99"
    assert [n for n, env in envs.items() if JVM in env] == ["dialog-cassandra-2"]


def test_a_replacement_never_lists_itself_as_a_seed():
    context = context_replacing({"dialog-cassandra-1": "10.40.16.99"})
    by_name = {h["name"]: h for h in context["hosts"]}
    env = cassandra_env(context, "dialog-cassandra-1")
    assert env["CASSANDRA_SEEDS"] == by_name["dialog-cassandra-2"]["private_address"]
    # The other nodes keep the seed list as it is (the replacement's new address is a seed).
    others = cassandra_env(context, "dialog-cassandra-3")["CASSANDRA_SEEDS"].split(",")
    assert others == [by_name["dialog-cassandra-%d" % i]["private_address"] for i in (1, 2)]


def test_the_replacement_passes_its_start_while_streaming():
    context = context_replacing({"dialog-cassandra-3": "10.40.16.99"})
    checks = {c["name"]: c for c in render_host(context, "dialog-cassandra-3")["checks"]}
    assert checks["cassandra ring"]["states"] == ["UN", "UJ"]
    others = {c["name"]: c for c in render_host(context, "dialog-cassandra-2")["checks"]}
    assert others["cassandra ring"]["states"] == ["UN"]


def test_a_later_deploy_without_replacing_drops_the_flag():
    replaced = render_host(context_replacing({"dialog-cassandra-2": "10.40.16.99"}),
                           "dialog-cassandra-2")
    later = render_host(context_replacing({}), "dialog-cassandra-2")
    assert JVM not in compose(later)["services"]["cassandra"]["environment"]
    assert JVM in compose(replaced)["services"]["cassandra"]["environment"]


def test_a_live_hosts_address_is_refused_at_the_render():
    context = context_replacing({})
    by_name = {h["name"]: h for h in context["hosts"]}
    live = by_name["dialog-cassandra-3"]["private_address"]
    context["replacing"] = {"dialog-cassandra-2": live}
    with pytest.raises(InputError, match="is dialog-cassandra-3's address"):
        render_host(context, "dialog-cassandra-2")
    # The same address again (a replacement that got the dead node's IP) is fine.
    own = by_name["dialog-cassandra-2"]["private_address"]
    context["replacing"] = {"dialog-cassandra-2": own}
    assert cassandra_env(context, "dialog-cassandra-2")[JVM].endswith("=" + own)


def test_deploy_metadata_declares_replacing_as_an_object():
    with open("actions/deploy.yaml", encoding="utf-8") as handle:
        meta = yaml.safe_load(handle)
    assert meta["parameters"]["replacing"]["type"] == "object"


# ---- the sandbox's Cassandra stand-in: replacement as strict as Cassandra 4 --------------------
# In-process ring members on loopback addresses, gossiping over HTTP like on sandbox hosts.

class Node:
    """One fake Cassandra node (devtools/sandbox/fake_docker.Ring) serving its storage port."""

    def __init__(self, tmp_path, address, seeds, replace=None, bootstrapped=False, **knobs):
        probe = socket.socket()
        probe.bind((address, 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.address = address
        seeds = [(address, self.port)] if seeds is None else seeds  # None: its own seed
        settings = {"address": address, "persisted": str(tmp_path / ("%s.json" % address)),
                    "host_id": str(uuid.uuid4()), "seeds": [list(s) for s in seeds],
                    "cluster": "dialog-test", "dc": "dialog-test", "rack": "rack1",
                    "tokens": 16, "join_seconds": 1.0, "down_seconds": 1.0,
                    "bootstrapped": bootstrapped, "replace": replace, "ring_delay": 1.5,
                    "reachable": True}
        settings.update(knobs)
        self.ring = fake_docker.Ring(settings)
        self.server = fake_docker._TCPServer(  # pylint: disable=protected-access
            (address, self.port), fake_docker._Handler)  # pylint: disable=protected-access
        self.server.ctx = {"spec": {"name": address, "service": "cassandra",
                                    "image": "cassandra:4.1"}, "ring": self.ring,
                           "ring_port": True}
        self.stop = threading.Event()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        threading.Thread(target=self.ring.gossip_forever, args=(self.stop,), daemon=True).start()

    @property
    def seed(self):
        return (self.address, self.port)

    def status(self):
        """{address: "UN"...} as this node's `nodetool status` lists it."""
        return {row["address"]: row["status"] for row in self.ring.view()["rows"]}

    def kill(self):
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


def wait_until(check, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.1)


@pytest.fixture
def ring3(tmp_path):
    """Three UN nodes (two seeds) on 127.0.1.x; killed at the end."""
    nodes = []
    first = Node(tmp_path, "127.0.1.1", None)
    nodes.append(first)
    second = Node(tmp_path, "127.0.1.2", [first.seed], bootstrapped=True)
    nodes.append(second)
    seeds = [first.seed, second.seed]
    nodes.append(Node(tmp_path, "127.0.1.3", seeds))
    wait_until(lambda: first.status() == {n.address: "UN" for n in nodes}, "3 UN")
    yield nodes, seeds
    for node in nodes:
        if not node.stop.is_set():
            node.kill()


def dead_in_ring(nodes, dead):
    dead.kill()
    wait_until(lambda: all(n.status().get(dead.address) == "DN" for n in nodes
                           if n is not dead), dead.address + " DN")


def test_standin_a_replacement_takes_the_dead_nodes_place(ring3, tmp_path):
    nodes, seeds = ring3
    first, dead = nodes[0], nodes[2]
    dead_id = dead.ring.me["host_id"]
    dead_in_ring(nodes, dead)
    new = Node(tmp_path, "127.0.1.4", seeds,
               replace={"address": dead.address, "first_boot": True})
    nodes.append(new)
    wait_until(lambda: first.status().get(new.address) == "UJ", "UJ while streaming")
    assert first.status()[dead.address] == "DN"
    wait_until(lambda: first.status() == {"127.0.1.1": "UN", "127.0.1.2": "UN",
                                          "127.0.1.4": "UN"}, "3 UN, the dead address gone")
    wait_until(lambda: dead.address not in nodes[1].status(), "gone on every node")
    assert new.ring.me["host_id"] == dead_id  # its host id and tokens, not new ones


def test_standin_the_same_address_may_be_reused(ring3, tmp_path):
    nodes, seeds = ring3
    first, dead = nodes[0], nodes[2]
    dead_id = dead.ring.me["host_id"]
    dead_in_ring(nodes, dead)
    new = Node(tmp_path / "new", dead.address, seeds,
               replace={"address": dead.address, "first_boot": True},
               persisted=str(tmp_path / "fresh.json"))
    nodes[2] = new
    wait_until(lambda: first.status() == {n.address: "UN" for n in nodes}, "3 UN")
    assert new.ring.me["host_id"] == dead_id


def test_standin_refuses_to_replace_a_live_node(ring3, tmp_path):
    nodes, seeds = ring3
    new = Node(tmp_path, "127.0.1.5", seeds,
               replace={"address": nodes[2].address, "first_boot": True})
    wait_until(new.stop.is_set, "the replacement's start to fail")
    assert new.ring.failed == ("java.lang.UnsupportedOperationException: Cannot replace a live "
                               "node /127.0.1.3. Endpoint still alive")
    assert "127.0.1.5" not in nodes[0].status()
    new.kill()


def test_standin_a_bootstrapped_replacement_starts_as_itself(ring3, tmp_path):
    """replace_address_first_boot acts on an empty data directory only."""
    nodes, seeds = ring3
    dead = nodes[2]
    dead_in_ring(nodes, dead)
    new = Node(tmp_path, "127.0.1.6", seeds, bootstrapped=True,
               replace={"address": dead.address, "first_boot": True})
    nodes.append(new)
    wait_until(lambda: nodes[0].status().get(new.address) == "UN", "UN as itself")
    assert new.ring.me["host_id"] != dead.ring.me["host_id"]
    assert nodes[0].status()[dead.address] == "DN"  # not replaced: still in the ring


@pytest.mark.parametrize("case,message", [
    ("no seed answers", "java.lang.RuntimeException: Unable to gossip with any peers"),
    ("address unknown", "Cannot replace_address /127.0.1.99 because it doesn't exist in gossip"),
    ("replacement is a seed", fake_docker.UNSAFE_REPLACE),
    ("plain replace_address, bootstrapped",
     "Cannot replace address with a node that is already bootstrapped"),
])
def test_standin_a_replacement_that_cannot_start(ring3, tmp_path, case, message):
    nodes, seeds = ring3
    dead = nodes[2]
    dead_in_ring(nodes, dead)
    replace = {"address": "127.0.1.99" if case == "address unknown" else dead.address,
               "first_boot": case != "plain replace_address, bootstrapped"}
    seeds = {"no seed answers": [dead.seed], "replacement is a seed":
             seeds + [("127.0.1.7", 7000)]}.get(case, seeds)
    new = Node(tmp_path, "127.0.1.7", seeds, replace=replace,
               bootstrapped=case.endswith("bootstrapped"))
    wait_until(new.stop.is_set, "the start to fail", timeout=10)
    assert new.ring.failed == message
    assert "127.0.1.7" not in nodes[0].status()
    new.kill()


def test_standin_reads_the_flag_and_keeps_identity_in_the_data_directory(tmp_path):
    assert fake_docker.replace_option("-Xmx1G -Dcassandra.replace_address_first_boot=10.0.0.5") \
        == {"address": "10.0.0.5", "first_boot": True}
    assert fake_docker.replace_option("-Dcassandra.replace_address=/10.0.0.5") == {
        "address": "10.0.0.5", "first_boot": False}
    assert fake_docker.replace_option("") is None
    data = tmp_path / "cassandra"
    svc = {"environment": {"CASSANDRA_BROADCAST_ADDRESS": "10.0.0.6",
                           "JVM_EXTRA_OPTS": "-Dcassandra.replace_address_first_boot=10.0.0.5"},
           "network_mode": "host", "ports": [],
           "raw": {"volumes": ["%s:/var/lib/cassandra" % data]}}
    settings = fake_docker.cassandra_settings({"name": "p", "services": {"cassandra": svc}},
                                              "cassandra", svc)
    assert settings["replace"] == {"address": "10.0.0.5", "first_boot": True}
    assert settings["persisted"] == str(data / "fake-cassandra-system.json")
    assert os.path.exists(settings["persisted"]) and not settings["bootstrapped"]


def test_standin_refuses_a_bootstrapped_node_whose_rack_changed(tmp_path):
    """Cassandra keeps a node's rack in its system keyspace and will not start it in another
    (StartupChecks.checkRack), so a zone change of a running node must fail in the sandbox."""
    data = tmp_path / "cassandra"

    def settings(rack):
        svc = {"environment": {"CASSANDRA_BROADCAST_ADDRESS": "10.0.0.6",
                               "CASSANDRA_RACK": rack},
               "network_mode": "host", "ports": [],
               "raw": {"volumes": ["%s:/var/lib/cassandra" % data]}}
        return fake_docker.cassandra_settings({"name": "p", "services": {"cassandra": svc}},
                                              "cassandra", svc)

    assert fake_docker.Ring(settings("eu-west-1a")).failed is None
    assert fake_docker.Ring(settings("eu-west-1a")).failed is None
    moved = fake_docker.Ring(settings("eu-west-1b"))
    assert moved.failed.startswith(
        "Cannot start node if snitch's rack(eu-west-1b) differs from previous rack(eu-west-1a)")


# ---- dialog.cassandra_settle: a deploy bringing a retired host back as a replacement ----------

def test_settle_lets_a_replacement_in_only_with_the_dead_node_dn_and_the_others_un(
        world):  # noqa: F811  (the fixture of test_cassandra_safety)
    plan = build_plan("production", "aws", cassandra_nodes=4, dialog_servers=3)
    dead = safety_address(world, "dialog-cassandra-4")
    world.hosts[:] = [h for h in world.hosts if h["name"] != "dialog-cassandra-4"]
    replacing = {"dialog-cassandra-4": dead}
    world.ring[dead] = ("UN", 3.0)  # not dead yet: refused
    ok, result = safety_run(CassandraSettleAction, world, deployment="dialog", plan=plan,
                            replacing=replacing)
    assert not ok and "is UN (up, normal), not DN" in result["error"]
    world.ring[dead] = ("DN", 3.0)
    other = safety_address(world, "dialog-cassandra-2")
    world.ring[other] = ("UJ", 3.0)  # another node streaming: refused, named
    ok, result = safety_run(CassandraSettleAction, world, deployment="dialog", plan=plan,
                            replacing=replacing)
    assert not ok and "dialog-cassandra-2 (%s) is UJ" % other in result["error"]
    world.ring[other] = ("UN", 3.0)
    ok, result = safety_run(CassandraSettleAction, world, deployment="dialog", plan=plan,
                            replacing=replacing)
    assert ok, result
    assert result["ring"] == "3 other nodes UN, replacing dialog-cassandra-4 (%s)" % dead
    # Without replacing, the same deploy is a count change on a ring with a DN node: refused.
    ok, result = safety_run(CassandraSettleAction, world, deployment="dialog", plan=plan)
    assert not ok and "is DN" in result["error"]
    # A replacement never rides along with a join.
    grown = build_plan("production", "aws", cassandra_nodes=5, dialog_servers=3)
    ok, result = safety_run(CassandraSettleAction, world, deployment="dialog", plan=grown,
                            replacing=replacing)
    assert not ok and result["error"].startswith("replacing: a replacement only brings back")
