"""Which host waits for which (lib.stages) and the wait itself (lib.hosts.start_order), over a
datastore stand-in that keeps what StackStorm's keeps: strings by key, None when absent."""

import pytest

from lib.errors import ResourceFailed
from lib.hosts.start_order import (MARKER_TTL, DependencyFailed, RunGate, marker_key,
                                   wait_for)
from lib.planner import build_plan
from lib.stages import dependencies, depths, start_order


def inventory(tier, **options):
    plan = build_plan(tier, provider="aws", **options)
    return [{"name": h["name"], "index": h["index"], "roles": h["roles"],
             "private_address": "10.0.0.%d" % number}
            for number, h in enumerate(plan["hosts"], start=1)]


class Store(object):
    """get(key) / set(key, value, ttl) as the action binds them to the datastore."""

    def __init__(self):
        self.values, self.ttls = {}, {}

    def get(self, key):
        return self.values.get(key)

    def set(self, key, value, ttl):
        assert isinstance(value, str) and isinstance(ttl, int)
        self.values[key], self.ttls[key] = value, ttl


class Clock(object):
    """A clock that moves only when the wait sleeps; `on_sleep` lets others act meanwhile."""

    def __init__(self, on_sleep=None):
        self.now, self.on_sleep = 0.0, on_sleep

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds
        if self.on_sleep:
            self.on_sleep(self.now)


def gate(store, host, needs, timeout=60, clock=None, run_id="run1"):
    clock = clock or Clock()
    return RunGate(store.get, store.set, "dialog", run_id, host, needs, timeout,
                   clock=clock), clock


def test_a_dialog_server_needs_postgres_and_every_cassandra_node():
    hosts = inventory("production", cassandra_nodes=5)
    needs = dependencies(hosts)
    cassandra = ["dialog-cassandra-%d" % n for n in range(1, 6)]
    for server in (h["name"] for h in hosts if "dialog-server" in h["roles"]):
        assert set(needs[server]) == {"dialog-postgres-1"} | set(cassandra)


def test_after_a_failover_the_recorded_primary_starts_first():
    """The standby clones from the primary: after a failover the primary is postgres-2, so a
    deploy (the one that rebuilds postgres-1) starts postgres-2 first and never makes the
    running primary wait for its new standby."""
    hosts = inventory("small-failover")
    assert dependencies(hosts)["dialog-postgres-2"] == ["dialog-postgres-1"]
    needs = dependencies(hosts, postgres_primary="dialog-postgres-2")
    assert needs["dialog-postgres-2"] == []
    assert needs["dialog-postgres-1"] == ["dialog-postgres-2"]
    for server in (h["name"] for h in hosts if "dialog-server" in h["roles"]):
        assert "dialog-postgres-2" in needs[server] and "dialog-postgres-1" not in needs[server]
    order = start_order(needs)
    assert order.index("dialog-postgres-2") < order.index("dialog-postgres-1")


def test_a_dialog_server_starts_only_once_postgres_and_all_cassandra_markers_say_ready():
    store = Store()
    ready = ["dialog-postgres-1", "dialog-cassandra-1", "dialog-cassandra-2",
             "dialog-cassandra-3"]
    arrivals = {5.0: ready[0], 10.0: ready[1], 20.0: ready[2], 30.0: ready[3]}

    def arrive(now):
        for moment, host in list(arrivals.items()):
            if now >= moment:
                store.set(marker_key("dialog", "run1", host), "ready", MARKER_TTL)
                del arrivals[moment]

    lines = []
    server, clock = gate(store, "dialog-dialog-server-1", ready, clock=Clock(arrive))
    server.progress = lines.append
    waited = server.wait(interval=1.0, sleep=clock.sleep)
    assert 30.0 <= waited <= 31.0, "it waits for the last Cassandra node"
    assert lines[0] == ("dialog-dialog-server-1: waiting for dialog-postgres-1, "
                        "dialog-cassandra-1, dialog-cassandra-2, dialog-cassandra-3 before "
                        "starting")


def test_a_marker_of_another_run_does_not_count():
    store = Store()
    store.set(marker_key("dialog", "run0", "dialog-postgres-1"), "ready", MARKER_TTL)
    server, clock = gate(store, "dialog-dialog-server-1", ["dialog-postgres-1"], timeout=5)
    with pytest.raises(ResourceFailed) as error:
        server.wait(sleep=clock.sleep)
    assert str(error.value) == ("dialog-dialog-server-1: not started: still waiting for "
                                "dialog-postgres-1 after 5s (its dependency_timeout)")


def test_a_failed_dependency_fails_the_host_at_once_naming_it():
    store = Store()
    store.set(marker_key("dialog", "run1", "dialog-cassandra-1"), "ready", MARKER_TTL)
    failing, _ = gate(store, "dialog-cassandra-2", [])
    failing.failed("dialog-cassandra-2 (cassandra): check 'cassandra ring' failed after 600s")
    server, clock = gate(store, "dialog-dialog-server-1",
                         ["dialog-postgres-1", "dialog-cassandra-1", "dialog-cassandra-2"],
                         timeout=3600)
    with pytest.raises(DependencyFailed) as error:
        server.wait(sleep=clock.sleep)
    assert clock.now == 0.0, "no waiting"
    assert str(error.value) == ("dialog-dialog-server-1: not started: dialog-cassandra-2, "
                                "which it needs, failed")
    assert store.values[marker_key("dialog", "run1", "dialog-cassandra-2")].startswith(
        "failed: dialog-cassandra-2 (cassandra): check 'cassandra ring' failed")
    assert store.ttls[marker_key("dialog", "run1", "dialog-cassandra-2")] == MARKER_TTL


def test_cassandra_joiners_wait_for_the_node_before_them_and_the_seeds():
    hosts = inventory("production", cassandra_nodes=5)
    needs = dependencies(hosts)
    assert needs["dialog-cassandra-1"] == needs["dialog-cassandra-2"] == []
    assert needs["dialog-cassandra-3"] == ["dialog-cassandra-1", "dialog-cassandra-2"]
    assert needs["dialog-cassandra-4"] == ["dialog-cassandra-1", "dialog-cassandra-2",
                                           "dialog-cassandra-3"]
    assert needs["dialog-cassandra-5"][-1] == "dialog-cassandra-4"
    order = start_order(needs)
    assert [h for h in order if "cassandra" in h] == ["dialog-cassandra-%d" % n
                                                      for n in range(1, 6)]


def test_a_joiner_starts_only_after_the_previous_node_is_up():
    store = Store()
    for seed in ("dialog-cassandra-1", "dialog-cassandra-2", "dialog-cassandra-3"):
        store.set(marker_key("dialog", "run1", seed), "ready", MARKER_TTL)

    def previous_up(now):
        if now >= 12:
            store.set(marker_key("dialog", "run1", "dialog-cassandra-4"), "ready", MARKER_TTL)

    joiner, clock = gate(store, "dialog-cassandra-5", dependencies(inventory(
        "production", cassandra_nodes=5))["dialog-cassandra-5"], clock=Clock(previous_up))
    assert 12.0 <= joiner.wait(sleep=clock.sleep) <= 13.0


def test_the_bound_counts_from_the_start_of_the_bootstrap():
    """dialog.bootstrap_order sizes the wait from the bootstrap's start: time spent preparing
    is taken from it."""
    store = Store()
    clock = Clock()
    server, _ = gate(store, "dialog-proxy-1", ["dialog-web-1"], timeout=100, clock=clock)
    clock.now = 80.0  # preparing
    with pytest.raises(ResourceFailed):
        server.wait(sleep=clock.sleep)
    assert clock.now == pytest.approx(100.0)


def test_nothing_to_wait_for_returns_at_once():
    assert wait_for(Store().get, "dialog", "run1", "dialog-web-1", [], 10) == 0.0


@pytest.mark.parametrize("tier", ["mini", "small", "small-failover", "production"])
def test_every_tier_has_an_order_with_needs_first(tier):
    needs = dependencies(inventory(tier, with_storage=tier != "mini"))
    order = start_order(needs)
    assert sorted(order) == sorted(needs)
    for host, needed in needs.items():
        assert host not in needed
        assert all(order.index(d) < order.index(host) for d in needed)
    assert max(depths(needs).values()) <= 4
