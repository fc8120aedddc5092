"""Rolling restarts in a dialog.deploy run: the real bootstrap_one, RunGate and lib.stages
order over a shared marker store, with the SSH steps replaced by timed stand-ins. A Cassandra
scale-out changes every dialog server's contact points: the servers already running must
restart one at a time, lowest index first, each healthy before the next, while new hosts start
at once. And the compose step on a host: an nginx.conf-only change reloads nginx."""

import contextlib
import json
import threading
import time

import pytest

from lib import bootstrap, health, operations
from lib.hosts.start_order import RunGate, turn_key
from lib.planner import build_plan
from lib.render import render_host
from lib.stages import dependencies, rolling_after

START_SECONDS = 0.2


def inventory(tier, **options):
    plan = build_plan(tier, provider="aws", **options)
    return [{"name": h["name"], "index": h["index"], "roles": h["roles"],
             "private_address": "10.0.0.%d" % number}
            for number, h in enumerate(plan["hosts"], start=1)]


class Run(object):
    """One deploy run over stand-in hosts: `running` hosts have services up (their start is a
    restart), the others are new. Records who is down when."""

    def __init__(self, hosts, running):
        self.hosts, self.running = hosts, set(running)
        self.markers, self.lock = {}, threading.Lock()
        self.down, self.most_down, self.restarted, self.started = set(), {}, [], {}

    def set(self, key, value, ttl):
        self.markers[key] = value

    def start_host(self, name, roles):
        with self.lock:
            self.started[name] = time.monotonic()
            if name in self.running:
                self.down.add(name)
                for role in roles:
                    now = sum(1 for h in self.hosts if h["name"] in self.down
                              and role in h["roles"])
                    self.most_down[role] = max(self.most_down.get(role, 0), now)
        time.sleep(START_SECONDS)
        with self.lock:
            if name in self.running:
                self.down.discard(name)
                self.restarted.append(name)

    def patch(self, monkeypatch):
        by_name = {h["name"]: h for h in self.hosts}
        monkeypatch.setattr(operations, "render_host", lambda context, name: {
            "host": name, "roles": by_name[name]["roles"]})
        monkeypatch.setattr(operations, "session", lambda *a, **k: contextlib.nullcontext())
        monkeypatch.setattr(bootstrap, "prepare_host", lambda connection, rendered, *a: {
            "host": rendered["host"], "uploaded": ["/etc/dialog/server.conf"]})
        # Not in the code before rolling restarts: raising=False keeps this test runnable there.
        monkeypatch.setattr(bootstrap, "restart_plan", lambda connection, rendered, prepared: {
            "takes_down": rendered["host"] in self.running,
            "running": ["dialog-server"] if rendered["host"] in self.running else []},
            raising=False)

        def start_host(connection, rendered, prepared, *args, **kwargs):
            self.start_host(rendered["host"], rendered["roles"])
            return {"host": rendered["host"], "compose": "updated", "checks": []}

        monkeypatch.setattr(bootstrap, "start_host", start_host)

    def bootstrap_all(self, names):
        needs, after = dependencies(self.hosts), rolling_after(self.hosts)
        errors = []

        def one(name):
            gate = RunGate(self.markers.get, self.set, "dialog", "run1", name, [], 30,
                           after=after.get(name), rolls=name in after)
            try:
                operations.bootstrap_one({"hosts": self.hosts}, name, {}, gate=gate)
            except Exception as exc:  # pylint: disable=broad-except
                errors.append((name, exc))

        assert needs  # the real order module knows these hosts
        threads = [threading.Thread(target=one, args=(name,)) for name in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors, errors


def test_a_config_change_restarts_one_dialog_server_at_a_time_and_new_ones_at_once(
        monkeypatch):
    hosts = inventory("production", cassandra_nodes=4, dialog_servers=5)
    servers = [h["name"] for h in hosts if "dialog-server" in h["roles"]]
    run = Run(hosts, running=servers[:3])  # the fourth and fifth are new in this run
    run.patch(monkeypatch)
    run.bootstrap_all(servers)
    assert run.most_down["dialog-server"] == 1, "never two dialog servers down at once"
    assert run.restarted == servers[:3], "lowest index first"
    first_back = run.started[servers[0]] + START_SECONDS
    assert run.started[servers[3]] < first_back, "the new server did not wait for the others"
    for name in servers[:3]:
        assert run.markers[turn_key("dialog", "run1", name)] == "restarted"
    assert run.markers[turn_key("dialog", "run1", servers[3])] == "passed"


def test_proxies_and_web_hosts_roll_too_and_an_unchanged_host_holds_no_one_back(monkeypatch):
    hosts = inventory("production", cassandra_nodes=3, dialog_servers=3)
    group = [h["name"] for h in hosts if set(h["roles"]) & {"proxy", "web"}]
    proxies = [h["name"] for h in hosts if "proxy" in h["roles"]]
    assert len(proxies) >= 2
    # The first proxy is unchanged (nothing to take down): the others restart in turn.
    run = Run(hosts, running=[n for n in group if n != proxies[0]])
    run.patch(monkeypatch)
    run.bootstrap_all(group)
    assert run.most_down.get("proxy", 0) <= 1 and run.most_down.get("web", 0) <= 1
    assert run.started[proxies[1]] - min(run.started.values()) < START_SECONDS


def test_a_restart_that_fails_stops_the_next_one():
    markers = {}
    put = lambda key, value, ttl: markers.__setitem__(key, value)  # noqa: E731
    first = RunGate(markers.get, put, "dialog", "run1", "dialog-dialog-server-1", [], 5,
                    rolls=True)
    first.failed("dialog-dialog-server-1 (dialog-server): check failed")
    second = RunGate(markers.get, put, "dialog", "run1", "dialog-dialog-server-2", [], 5,
                     after=["dialog-dialog-server-1"])
    with pytest.raises(Exception) as error:
        second.wait_turn()
    assert str(error.value) == ("dialog-dialog-server-2: not started: dialog-dialog-server-1, "
                                "which it restarts after, failed")


# --- the compose step on the host: nginx.conf only -> reload, no recreate ---------------------

def proxy_rendered():
    hosts = inventory("production", cassandra_nodes=3, dialog_servers=3)
    context = {"deployment": "dialog", "tier": "production", "hosts": hosts,
               "secrets": {}, "images": {}}
    proxy = [h["name"] for h in hosts if "proxy" in h["roles"]][0]
    return render_host(context, proxy), hosts, context, proxy


def run_prelude(request, answers, tmp_path, monkeypatch):
    """The host's compose step (COMPOSE_PRELUDE's before()) run here, `docker` stubbed: the
    commands it ran and its result."""
    namespace = {}
    exec(compile(health.PROBE_SOURCE + bootstrap.COMPOSE_PRELUDE, "probe", "exec"),  # noqa
         namespace)
    commands = []

    def run(argv, timeout):
        commands.append(argv[6:])
        return answers(argv[6:])

    namespace["run"] = run
    # The prelude's `time` is the process's own module: patched for this test only.
    monkeypatch.setattr(namespace["time"], "sleep", lambda seconds: None)
    return namespace["before"](request), commands


def test_only_nginx_conf_changed_reloads_nginx_and_recreates_nothing(tmp_path, monkeypatch):
    rendered, _, _, _ = proxy_rendered()
    nginx_conf = [f["path"] for f in rendered["files"] if f["path"].endswith("nginx.conf")]
    assert nginx_conf and nginx_conf[0] in rendered["reload"]["nginx"]["paths"]
    checked = bootstrap._checked_files(rendered["files"])  # pylint: disable=protected-access
    request = health.probe_request(rendered)
    request["compose"] = bootstrap._compose_request(  # pylint: disable=protected-access
        rendered, checked, [])
    marker = tmp_path / "applied"
    request["compose"]["marker"] = str(marker)
    running = "\n".join(json.dumps({"Service": s, "State": "running"})
                        for s in rendered["services"])

    def answers(argv):
        return 0, running if argv[:1] == ["ps"] else "", ""

    # The state a first deploy leaves: everything applied.
    marker.write_text("%s\n%s\n" % (request["compose"]["digest"],
                                    request["compose"]["reload_digest"]))
    # The upstreams changed: a new nginx.conf was uploaded, nothing else.
    for item in checked:
        if item["path"] == nginx_conf[0]:
            item["sha256"] = "0" * 64
    request["compose"] = dict(bootstrap._compose_request(  # pylint: disable=protected-access
        rendered, checked, nginx_conf), marker=str(marker))
    result, commands = run_prelude(request, answers, tmp_path, monkeypatch)
    assert result["status"] == "reloaded", result
    assert not [c for c in commands if c[:1] == ["up"]], "nothing recreated"
    assert ["exec", "-T", "nginx", "nginx", "-t", "-q", "-c", nginx_conf[0]] in commands
    assert ["exec", "-T", "nginx", "nginx", "-s", "reload", "-c", nginx_conf[0]] in commands
    plan, _ = run_prelude(dict(request, compose=dict(request["compose"], mode="plan")),
                          answers, tmp_path, monkeypatch)
    assert plan["takes_down"] is False and plan["reload"] == ["nginx"]


def test_new_upstreams_leave_the_proxys_compose_file_as_it_was():
    """Compose recreates a service whose definition changed: nginx.conf must not be in it, and
    nginx must see the directory (a single-file bind keeps the old inode after a rename)."""
    rendered, hosts, context, proxy = proxy_rendered()
    hosts.append({"name": "dialog-dialog-server-9", "index": 9, "roles": ["dialog-server"],
                  "private_address": "10.0.0.99"})
    after = render_host(dict(context, hosts=hosts), proxy)

    def file_of(result, suffix):
        return [f["content"] for f in result["files"] if f["path"].endswith(suffix)][0]

    assert file_of(after, "nginx.conf") != file_of(rendered, "nginx.conf")
    assert file_of(after, "docker-compose.yml") == file_of(rendered, "docker-compose.yml")
    assert "- /etc/dialog/nginx:/etc/dialog/nginx:ro" in file_of(after, "docker-compose.yml")
