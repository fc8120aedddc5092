"""Cassandra replication of Dialog's keyspaces: RF = min(3, nodes) with NetworkTopologyStrategy
at deploy, raised with a full repair when the ring grows (cassandra_ops.ensure_replication), on
sandbox hosts whose fake Cassandra emulates cqlsh's schema statements and nodetool repair."""

import pytest

from lib import bootstrap, health
from lib.cluster import cassandra_ops
from lib.errors import ResourceFailed
from sandbox_support import sandbox_hosts
from test_ssh_jump_sandbox import host_python

pytestmark = pytest.mark.xdist_group("netns")

CIDRS = ["10.86.%d.0/24" % third for third in range(0, 250, 10)]
NODES = ["rf-cassandra-1", "rf-cassandra-2", "rf-cassandra-3"]
DC = "dialog-rf"
COMPOSE = """
services:
  cassandra:
    image: cassandra:4.1
    ports: ["7000:7000", "9042:9042"]
    environment:
      CASSANDRA_SEEDS: "{seed}"
      CASSANDRA_BROADCAST_ADDRESS: "{address}"
      CASSANDRA_CLUSTER_NAME: dialog-rf
      CASSANDRA_DC: {dc}
      FAKE_CASSANDRA_JOIN_SECONDS: "0.5"
"""
SIMPLE_1 = "{'class': 'SimpleStrategy', 'replication_factor': 1}"


def ip(sandbox, name):
    return str(sandbox.network.network_address + 21 + NODES.index(name))


def rendered(sandbox, name):
    address = ip(sandbox, name)
    return {"host": name, "address": address, "project": "dialog", "roles": ["cassandra"],
            "compose_file": "/opt/dialog/docker-compose.yml", "services": ["cassandra"],
            "files": [{"path": "/opt/dialog/docker-compose.yml", "mode": 0o644,
                       "secret": False, "content": COMPOSE.format(
                           seed=ip(sandbox, NODES[0]), address=address, dc=DC)}],
            "checks": [{"name": "ring", "role": "cassandra", "service": "cassandra",
                        "kind": "cassandra", "address": address}]}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("replication")
    hosts = sandbox_hosts(workdir, CIDRS, python=host_python())
    try:
        for name in NODES:
            hosts.boot(name, ip(hosts, name))
        for name in NODES:
            hosts.wait_ready(name)
        yield hosts
    finally:
        hosts.close()


def connect(sandbox, name):
    return bootstrap.connect(ip(sandbox, name), "root", key_file=sandbox.ssh_key_path,
                             timeout=10)


def start(sandbox, name):
    connection = connect(sandbox, name)
    bootstrap.bootstrap_host(connection, rendered(sandbox, name), health_timeout=60)
    return connection


def test_rf_follows_the_ring_and_rises_with_a_repair(sandbox):
    first, second = start(sandbox, NODES[0]), start(sandbox, NODES[1])
    try:
        r1 = rendered(sandbox, NODES[0])
        # What Dialog's server does at its first start: keyspaces with its own replication.
        for keyspace in ("dialog_journal", "dialog_snapshot"):
            cassandra_ops._cqlsh(first, r1, "CREATE KEYSPACE IF NOT EXISTS %s WITH replication"
                                 " = %s" % (keyspace, SIMPLE_1))
        assert cassandra_ops.dialog_keyspaces(first, r1) == ["dialog_journal",
                                                             "dialog_snapshot"]

        lines = []
        done = cassandra_ops.ensure_replication(first, r1, 2, progress=lines.append)
        assert [(d["keyspace"], d["before"], d["after"], d["repaired"]) for d in done] == [
            ("dialog_journal", 1, 2, True), ("dialog_snapshot", 1, 2, True)]
        # The schema is the ring's: the second node sees the change.
        r2 = rendered(sandbox, NODES[1])
        assert cassandra_ops.replication_of(second, r2, "dialog_journal") == {
            "class": "org.apache.cassandra.locator.NetworkTopologyStrategy", DC: "2"}
        again = cassandra_ops.ensure_replication(first, r1, 2)
        assert [d["repaired"] or d["after"] != d["before"] for d in again] == [False, False]

        third = start(sandbox, NODES[2])
        try:
            grown = cassandra_ops.ensure_replication(
                first, r1, 3, peers=[(second, r2), (third, rendered(sandbox, NODES[2]))])
            assert [(d["before"], d["after"], d["repaired"]) for d in grown] == [(2, 3, True)] * 2
            assert cassandra_ops.replication_of(third, rendered(sandbox, NODES[2]),
                                                "dialog_snapshot")[DC] == "3"
            # Never above 3, however large the ring.
            assert cassandra_ops.wanted_rf(5) == 3 and cassandra_ops.wanted_rf(1) == 1
        finally:
            third.close()
        # Each rise was followed by a full repair of that keyspace (recorded by the fake).
        _, out, _ = health.remote(first, "cat /var/lib/dialog/fake-docker/cassandra/"
                                  "dialog-cassandra-schema.json")
        assert '"full": true' in out and out.count('"keyspace": "dialog_journal"') == 2
    finally:
        first.close()
        second.close()


def test_a_datacenter_the_ring_does_not_have_is_refused_like_cassandra(sandbox):
    connection = start(sandbox, NODES[0])
    try:
        with pytest.raises(ResourceFailed, match="Unrecognized strategy option {elsewhere}"):
            cassandra_ops._cqlsh(connection, rendered(sandbox, NODES[0]),
                                 "CREATE KEYSPACE other WITH replication = {'class': "
                                 "'NetworkTopologyStrategy', 'elsewhere': 3}")
    finally:
        connection.close()
