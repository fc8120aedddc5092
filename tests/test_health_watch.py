"""lib.healing.health_watch: the health events, over fake providers and hosts faked at the
SSH channel (fake_hosts), on a fake clock.

The provider is a FakeDriver whose inventory the tests change (states, hosts gone, API
errors); SSH is lib.bootstrap.connect replaced by FakeNetwork.connect, which refuses hosts
marked dead and, like the real jump (bootstrap.connect with `jump`), fails every host behind a
dead proxy; the probe then runs the host's real rendered checks through lib.health.
"""

import json
import logging

import pytest
from st2common.util import schema as util_schema

from fake_hosts import FakeHosts
from lib import bootstrap
from lib.deployment_record import record_key
from lib.deployment_secrets import datastore_key, ensure_secrets
from lib.errors import ProviderError
from lib.healing import health_watch
from lib.healing.health_watch import STATE_KEY, HealthWatch
from lib.hosts import ssh_path
from lib.operation_lock import lock_key
from lib.planner import build_plan
from test_health_sensor import trigger_schemas

POLL = 10
IMAGES = {name: "registry.example.com/dialog/%s:2" % name
          for name in ("dialog_server", "web_app", "dashboard", "push")}
PROFILES = {"default": {"provider": "aws", "images": IMAGES}}


_SECRETS = []


def secrets_text():
    """One deployment's generated secrets, made once per run (the key pairs take seconds)."""
    if not _SECRETS:
        store = Store()
        ensure_secrets(store, "chat")
        _SECRETS.append(store.values[datastore_key("chat")])
    return _SECRETS[0]


class Store(object):
    """The datastore calls the watch makes (st2's sensor service has the same)."""

    def __init__(self):
        self.values = {}

    def get_value(self, name, local=True, scope="system", decrypt=False):
        return self.values.get(name)

    def set_value(self, name, value, ttl=None, local=True, scope="system", encrypt=False):
        self.values[name] = value
        return True

    def list_values(self, local=True, prefix=None):
        return [type("Item", (), {"name": n}) for n in sorted(self.values)
                if n.startswith(prefix or "")]


def inventory(plan, offset=0):
    """What the AWS driver's inventory reports for a plan, every instance running; the
    proxies hold public (floating) addresses, so the jump goes through them."""
    return [{"name": h["name"], "group": h["group"], "index": h["index"],
             "roles": h["roles"], "provider_id": "i-%d" % (n + offset), "state": "running",
             "private_address": "10.%d.0.%d" % (offset, n),
             "public_addresses": ["198.51.%d.%d" % (offset, n)]
             if h["public"] or "proxy" in h["roles"] else []}
            for n, h in enumerate(plan["hosts"], start=1)]


class FakeDriver(object):
    def __init__(self, hosts):
        self.hosts = hosts
        self.error = None

    def inventory(self, deployment):
        if self.error:
            raise self.error
        return [dict(h) for h in self.hosts if h.get("state") != "gone"]


class FakeNetwork(object):
    """bootstrap.connect over fake hosts; `dead` host names answer nothing."""

    def __init__(self, hosts):
        self.fleet = FakeHosts(hosts)
        self.dead = set()
        self.logins = []

    def connect(self, address, user="root", jump=None, name=None, timeout=30.0, **_):
        self.logins.append((name, jump and jump["name"], timeout))
        where = "%s@%s:22" % (user, address)
        if jump and jump["name"] in self.dead:
            error = getattr(bootstrap, "JumpUnreachable", ProviderError)
            raise error("%s: cannot reach it through the proxy %s: cannot connect: timed out"
                        % (where, jump["name"]))
        if name in self.dead:
            raise ProviderError("%s: cannot connect: timed out" % where)
        return self.fleet.connect(address, user)


class FakeBanner(object):
    """ssh_path.JumpProbe over the fake network: a dead proxy's sshd says nothing."""

    def __init__(self, net):
        self.net = net

    def alive(self, proxy):
        return proxy["name"] not in self.net.dead

    def remember(self, proxy, answer):
        pass


class World(object):
    """Deployments recorded in a datastore, their providers and hosts, a clock."""

    def __init__(self, monkeypatch, names=("chat",), config=None):
        self.store, self.drivers, self.net, self.events = Store(), {}, None, []
        hosts_all = []
        for offset, name in enumerate(names):
            plan = build_plan("small-failover", provider="aws", deployment=name)
            self.store.set_value(record_key(name), json.dumps({
                "deployment": name, "tier": "small-failover", "provider": "aws",
                "region": None, "with_storage": False, "profile": "default",
                "groups": {"dialog-server": 3, "cassandra": 3}}))
            self.store.set_value(datastore_key(name), secrets_text())
            self.drivers[name] = FakeDriver(inventory(plan, offset))
            hosts_all += self.drivers[name].hosts
        self.net = FakeNetwork(hosts_all)
        monkeypatch.setattr(bootstrap, "connect", self.net.connect)
        # The jump fallback's banner check (lib.hosts.ssh_path), answered by the same fakes.
        monkeypatch.setattr(ssh_path, "PROBE", FakeBanner(self.net), raising=False)
        self.now = 1700000000.0
        self.config = dict(config or {"healing": {"down_polls": 3}}, profiles=PROFILES)
        self.watch = HealthWatch(self.store, self.config,
                                 lambda trigger, payload: self.events.append((trigger, payload)),
                                 clock=lambda: self.now, opener=self.opener)

    def opener(self, provider, settings, region, **_):
        return _Selector(self)

    def host(self, name):
        for driver in self.drivers.values():
            for host in driver.hosts:
                if host["name"] == name:
                    return host
        raise KeyError(name)

    def polls(self, count=1):
        """Poll `count` times, POLL seconds apart; the events dispatched, each checked against
        its trigger type's schema the way StackStorm's sensor service checks it."""
        events = []
        for _ in range(count):
            events += self.watch.poll_once()
            self.now += POLL
        schemas = trigger_schemas()
        for trigger, payload in events:
            util_schema.validate(payload, schemas[trigger], cls=util_schema.CustomValidator,
                                 use_default=True, allow_default_none=True)
        return events


class _Selector(object):
    """One opener for every deployment: the driver of the deployment asked for."""

    def __init__(self, world):
        self.world = world

    def inventory(self, deployment):
        return self.world.drivers[deployment].inventory(deployment)


@pytest.fixture
def world(monkeypatch):
    return World(monkeypatch)


def kinds(events):
    return [(trigger, payload["host"], payload.get("source") or payload.get("service"))
            for trigger, payload in events]


def test_a_healthy_deployment_is_quiet_and_every_planned_host_is_probed(world):
    assert world.polls(5) == []
    logged_in = {name for name, _, _ in world.net.logins}
    assert len(logged_in) == 15 and "chat-postgres-2" in logged_in
    # Each login with the watch's short timeout, not bootstrap's 30 s.
    assert {timeout for _, _, timeout in world.net.logins} == {5.0}


def test_unreachable_for_n_minus_1_polls_is_nothing_n_is_one_host_down(world):
    world.net.dead.add("chat-dialog-server-2")
    assert world.polls(2) == []
    started = world.now - 2 * POLL
    [(trigger, payload)] = world.polls(1)
    assert trigger == "dialog.host_down"
    assert payload == {"deployment": "chat", "host": "chat-dialog-server-2",
                       "roles": ["dialog-server"], "group": "dialog-server",
                       "source": "probe", "since": started, "polls": 3,
                       "reason": payload["reason"]}
    assert "timed out" in payload["reason"]
    # Still down: never reported twice.
    assert world.polls(20) == []
    world.net.dead.clear()
    back = world.now
    [(trigger, payload)] = world.polls(1)
    assert trigger == "dialog.recovered"
    assert (payload["host"], payload["service"], payload["down_for"]) == \
        ("chat-dialog-server-2", None, back - started)
    assert world.polls(5) == []


def test_a_flapping_host_never_dispatches(world):
    for _ in range(10):
        world.net.dead.add("chat-web-2")
        assert world.polls(1) == []
        world.net.dead.clear()
        assert world.polls(1) == []
    for _ in range(10):    # two polls down, one up: still never three in a row
        world.net.dead.add("chat-web-2")
        assert world.polls(2) == []
        world.net.dead.clear()
        assert world.polls(1) == []


def test_stopped_at_the_provider_is_down_at_once_source_provider(world):
    world.host("chat-postgres-1")["state"] = "stopped"
    [(trigger, payload)] = world.polls(1)
    assert (trigger, payload["host"], payload["source"], payload["polls"], payload["group"]) \
        == ("dialog.host_down", "chat-postgres-1", "provider", 1, "postgres")
    assert payload["reason"] == "stopped at the provider"


def test_a_host_gone_then_recreated_is_one_outage(world):
    host = world.host("chat-dialog-server-3")
    host["state"] = "gone"          # terminated: AWS no longer lists it
    [(trigger, payload)] = world.polls(1)
    assert (trigger, payload["source"]) == ("dialog.host_down", "provider")
    assert "not found at the provider" in payload["reason"]
    # The repair re-creates it: pending, then running but not answering SSH, then running
    # with its services still starting, then healthy. One outage, one recovery.
    host["state"] = "pending"
    assert world.polls(3) == []
    host["state"] = "running"
    world.net.dead.add("chat-dialog-server-3")
    assert world.polls(3) == []
    world.net.dead.clear()
    world.net.fleet["chat-dialog-server-3"].failing = True
    assert world.polls(5) == [], "a half-bootstrapped host is the same outage"
    world.net.fleet["chat-dialog-server-3"].failing = ()
    assert kinds(world.polls(3)) == [("dialog.recovered", "chat-dialog-server-3", None)]


def test_a_provider_error_is_no_event_and_no_raise(world, caplog):
    world.drivers["chat"].error = ProviderError("ec2 DescribeInstances: RequestLimitExceeded")
    with caplog.at_level(logging.WARNING):
        assert world.polls(10) == []
    assert world.watch.errors >= 10
    assert "RequestLimitExceeded" in caplog.text
    # The probes still ran, at the addresses read before (none yet here: nothing learned).
    world.drivers["chat"].error = None
    assert world.polls(2) == []
    world.drivers["chat"].error = ProviderError("ec2: throttled")
    world.net.dead.add("chat-push-1")
    assert kinds(world.polls(3)) == [("dialog.host_down", "chat-push-1", "probe")]


def test_anything_raising_inside_a_poll_is_logged_never_raised(world, monkeypatch):
    monkeypatch.setattr(health_watch, "planned_hosts", lambda record: 1 / 0)
    assert world.watch.poll_once() == []
    assert world.watch.errors == 1


def test_a_failing_check_is_one_service_unhealthy_then_recovered(world):
    world.net.fleet["chat-postgres-2"].failing = ("pgbouncer tcp",)
    assert world.polls(2) == []
    [(trigger, payload)] = world.polls(1)
    assert trigger == "dialog.service_unhealthy"
    assert (payload["host"], payload["service"], payload["check"], payload["polls"],
            payload["reason"]) == ("chat-postgres-2", "pgbouncer", "pgbouncer tcp", 3,
                                   "connection refused")
    assert world.polls(4) == []
    world.net.fleet["chat-postgres-2"].failing = ()
    assert kinds(world.polls(2)) == [("dialog.recovered", "chat-postgres-2", "pgbouncer")]


def test_one_dead_jump_proxy_does_not_take_the_hosts_behind_it_down(world):
    world.net.dead.add("chat-proxy-1")
    events = world.polls(4)
    assert kinds(events) == [("dialog.host_down", "chat-proxy-1", "probe")]
    del world.net.logins[:]
    assert world.polls(1) == []
    behind = {jump for name, jump, _ in world.net.logins if "proxy" not in name}
    assert behind == {"chat-proxy-2"}, "the hosts behind the proxies are reached via proxy-2"


def test_with_every_jump_proxy_dead_the_hosts_behind_are_not_called_down(world):
    world.net.dead.update({"chat-proxy-1", "chat-proxy-2"})
    events = world.polls(5)
    assert sorted(kinds(events)) == [("dialog.host_down", "chat-proxy-1", "probe"),
                                     ("dialog.host_down", "chat-proxy-2", "probe")]


def test_two_deployments_are_independent(monkeypatch):
    both = World(monkeypatch, names=("chat", "talk"))
    both.net.dead.update({"talk-cassandra-1", "chat-web-1"})
    both.host("chat-web-1")["state"] = "stopped"
    events = both.polls(3)
    assert sorted(kinds(events)) == [("dialog.host_down", "chat-web-1", "provider"),
                                     ("dialog.host_down", "talk-cassandra-1", "probe")]
    assert {p["deployment"] for _, p in events} == {"chat", "talk"}
    # chat's provider fails (its stopped host stays an outage); talk's host is back.
    both.drivers["chat"].error = ProviderError("down")
    both.net.dead.discard("talk-cassandra-1")
    assert kinds(both.polls(1)) == [("dialog.recovered", "talk-cassandra-1", None)]


def test_deploy_or_scale_holding_the_lock_holds_new_outages_back_not_a_repair(world):
    world.store.set_value(lock_key("chat"), json.dumps({"owner": "e1", "operation": "scale"}))
    world.host("chat-dialog-server-3")["state"] = "gone"     # scale-in, say
    world.net.fleet["chat-web-1"].failing = ("dashboard http",)   # a rolling restart
    assert world.polls(6) == []
    # Released, the fault still there: reported at once.
    world.store.values.pop(lock_key("chat"))
    assert sorted(kinds(world.polls(1))) == [
        ("dialog.host_down", "chat-dialog-server-3", "provider"),
        ("dialog.service_unhealthy", "chat-web-1", "dashboard")]
    # A repair's lock holds nothing back: the fault of another host is reported.
    world.store.set_value(lock_key("chat"), json.dumps({"owner": "e2",
                                                        "operation": "repair"}))
    world.host("chat-push-1")["state"] = "stopped"
    assert kinds(world.polls(1)) == [("dialog.host_down", "chat-push-1", "provider")]


def test_an_open_outage_survives_a_restart_of_the_sensor(world):
    world.host("chat-proxy-2")["state"] = "terminated"
    assert len(world.polls(1)) == 1
    assert json.loads(world.store.values[STATE_KEY % "chat"])["hosts"]["chat-proxy-2"][
        "reported"]
    world.watch = HealthWatch(world.store, dict(world.config, healing={}), world.events.append,
                              clock=lambda: world.now, opener=world.opener)
    assert world.polls(5) == []


def test_prometheus_up_zero_is_evidence_only_where_ssh_has_none(monkeypatch):
    world = World(monkeypatch, config={"healing": {"prometheus_url": "http://p:9091"}})

    class Up(object):
        down = set()

        def query(self, promql):
            assert promql == health_watch.UP_QUERY
            return [{"metric": {"host": h["name"], "instance": "%s:9100" % h[
                "private_address"]}, "value": [0, "0" if h["name"] in self.down else "1"]}
                for h in world.drivers["chat"].hosts]

    up = Up()
    world.watch.prometheus["http://p:9091"] = up
    up.down = {"chat-web-1"}           # exporter down, host reachable: not a host outage
    assert world.polls(4) == []
    world.net.dead.update({"chat-proxy-1", "chat-proxy-2"})
    up.down = {"chat-postgres-1"}
    assert sorted(kinds(world.polls(3))) == [
        ("dialog.host_down", "chat-postgres-1", "prometheus"),
        ("dialog.host_down", "chat-proxy-1", "probe"),
        ("dialog.host_down", "chat-proxy-2", "probe")]
