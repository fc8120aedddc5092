"""Tests for lib.bootstrap and lib.health against sandbox hosts (devtools/sandbox).

Real SSH (sshd in network namespaces, fabric/paramiko), real SFTP, real HTTP, TCP and STUN
probes run on the hosts; only Docker is the sandbox's stand-in (fake_docker.py). Needs root and
`ip netns`, like tests/test_sandbox.py. Traffic goes only to the 10.84.0.0/24 hosts created
here (a network of its own, so these tests can run beside test_sandbox.py's).
"""

import json
import os
import stat
import time

import pytest

from lib import bootstrap, health
from lib.errors import ResourceFailed
from sandbox_support import sandbox_hosts

# Sandbox hosts: one sandbox per machine, so under pytest-xdist these run in one group, on
# one worker, one test after another (./dialog-local test runs -n 2 --dist loadgroup).
pytestmark = pytest.mark.xdist_group("netns")

# The first of these networks that no other sandbox on this machine uses (suites may run side
# by side). Hosts get these host numbers in it; "nobody" is never booted.
CIDRS = ["10.84.%d.0/24" % third for third in range(0, 250, 10)]
APP, EDGE, LATE = "dlg-app-1", "dlg-edge-1", "dlg-late-1"
NUMBERS = {APP: 21, EDGE: 22, LATE: 23, "nobody": 99}
COMPOSE_FILE = "/opt/dialog/docker-compose.yml"
SECRET = "pg-pass-3f9c1e7d5b2a"
ADMIN_PASSWORD = "adm-pass-8e1d4c6b0f"

APP_COMPOSE = """
services:
  dialog-server:
    image: registry.example/dialog-server:1
    ports: ["9090:9090"]
    env_file: [/etc/dialog/server.env]
    depends_on: [postgres]
  postgres:
    image: postgres:15
    ports: ["5432:5432"]
    env_file: [/etc/dialog/postgres.env]
  turn:
    image: coturn/coturn:4.6
    ports: ["3478:3478/udp"]
  cassandra:
    image: cassandra:4.1
    ports: ["7000:7000", "9042:9042"]
    environment:
      CASSANDRA_SEEDS: "{address}"
      CASSANDRA_BROADCAST_ADDRESS: "{address}"
"""


def ip(sandbox, name):
    """The address of host `name` in this run's network."""
    return str(sandbox.network.network_address + NUMBERS[name])


def app_rendered(sandbox, log_level="info"):
    name, addr = APP, ip(sandbox, APP)
    return {
        "host": name, "address": addr, "project": "dialog", "compose_file": COMPOSE_FILE,
        "files": [
            {"path": COMPOSE_FILE, "content": APP_COMPOSE.format(address=addr),
             "mode": 0o644, "secret": False},
            {"path": "/etc/dialog/postgres.env", "mode": 0o600, "secret": True,
             "content": "POSTGRES_DB=dialog\nPOSTGRES_USER=dialog\nPOSTGRES_PASSWORD=%s\n"
                        % SECRET},
            {"path": "/etc/dialog/server.env", "content": "LOG_LEVEL=%s\n" % log_level,
             "mode": 0o644, "secret": False},
        ],
        "services": ["dialog-server", "postgres", "turn", "cassandra"],
        "checks": [
            {"name": "dialog-server http", "role": "dialog-server", "service": "dialog-server",
             "kind": "http", "address": addr, "port": 9090, "path": "/v1/status"},
            {"name": "postgres port", "role": "postgres", "service": "postgres",
             "kind": "tcp", "address": addr, "port": 5432},
            {"name": "postgres ready", "role": "postgres", "service": "postgres",
             "kind": "exec", "command": ["pg_isready", "-U", "dialog"]},
            {"name": "turn stun", "role": "voice", "service": "turn", "kind": "stun",
             "address": addr, "port": 3478},
            {"name": "cassandra ring", "role": "cassandra", "service": "cassandra",
             "kind": "cassandra", "address": addr},
        ],
    }


def edge_rendered(sandbox, extra_checks=()):
    name, addr = EDGE, ip(sandbox, EDGE)
    # An image the sandbox has no real server for (nginx:1.25 runs Debian's nginx, which needs
    # a configuration and its own port): these tests are about bootstrap's steps and checks.
    compose = ('services:\n  web:\n    image: registry.example/web:1.25\n'
               '    ports: ["8080:80"]\n')
    return {
        "host": name, "address": addr, "project": "dialog", "compose_file": COMPOSE_FILE,
        "roles": ["proxy"],
        "files": [{"path": COMPOSE_FILE, "content": compose, "mode": 0o644, "secret": False}],
        "services": ["web"],
        "checks": [{"name": "web ready", "role": "proxy", "service": "web", "kind": "http",
                    "address": addr, "port": 8080, "path": "/"}] + list(extra_checks),
    }


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("bootstrap")
    hosts = sandbox_hosts(workdir, CIDRS)
    try:
        for name in (APP, EDGE):
            hosts.boot(name, ip(hosts, name))
        for name in (APP, EDGE):
            hosts.wait_ready(name)
        yield hosts
    finally:
        hosts.close()


@pytest.fixture(scope="module")
def app(sandbox):
    # Host keys pinned from the sandbox's known_hosts (unknown keys refused).
    conn = bootstrap.connect(ip(sandbox, APP), "root", key_file=sandbox.ssh_key_path,
                             known_hosts=sandbox.known_hosts_path, timeout=10)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def edge(sandbox):
    # The default policy: a new host's key is accepted; the key is given as text.
    with open(sandbox.ssh_key_path, encoding="ascii") as handle:
        conn = bootstrap.connect(ip(sandbox, EDGE), "root", private_key_text=handle.read(),
                                 timeout=10)
    yield conn
    conn.close()


@pytest.fixture
def commands(monkeypatch):
    """Every SSH command bootstrap and health run (one entry per exec round trip)."""
    seen = []
    real = health.remote

    def counting(connection, command, stdin=None, timeout=60.0):
        seen.append(command)
        return real(connection, command, stdin, timeout)

    monkeypatch.setattr(health, "remote", counting)
    return seen


def pids(sandbox, name):
    path = os.path.join(sandbox.host_root(name), "var/lib/dialog/fake-docker/state.json")
    with open(path, encoding="utf-8") as handle:
        return {n: c["pid"] for n, c in json.load(handle)["containers"].items()}


def host_mode(sandbox, name, path):
    return stat.S_IMODE(os.stat(os.path.join(sandbox.host_root(name), path.lstrip("/"))).st_mode)


def test_bootstrap_rerun_and_change(sandbox, app, commands):
    lines = []
    rendered = app_rendered(sandbox)
    first = bootstrap.bootstrap_host(app, rendered, progress=lines.append, health_timeout=30)
    assert first["host"] == APP and first["docker"] == "present"
    assert sorted(first["uploaded"]) == sorted(f["path"] for f in rendered["files"])
    assert first["unchanged"] == [] and first["compose"] == "started" and first["changed"]
    assert [c["name"] for c in first["checks"]] == [c["name"] for c in rendered["checks"]]
    assert all(c["ok"] for c in first["checks"]), first["checks"]
    assert "%s: uploaded 3 files" % APP in lines
    assert "%s: healthy (5 checks)" % APP in lines
    # Docker, TLS + file states, compose + health (uploads go over SFTP)
    assert len(commands) == 3
    assert host_mode(sandbox, APP, "/etc/dialog/postgres.env") == 0o600
    assert host_mode(sandbox, APP, COMPOSE_FILE) == 0o644
    with open(os.path.join(sandbox.host_root(APP), "etc/dialog/postgres.env"),
              encoding="utf-8") as handle:
        assert SECRET in handle.read()
    before = pids(sandbox, APP)
    assert len(before) == 4

    del commands[:]
    again = bootstrap.bootstrap_host(app, app_rendered(sandbox), progress=lines.append,
                                     health_timeout=30)
    assert again["uploaded"] == [] and len(again["unchanged"]) == 3
    assert again["compose"] == "unchanged" and again["changed"] is False
    assert len(commands) == 3
    assert pids(sandbox, APP) == before
    assert "%s: 3 files unchanged" % APP in lines

    changed = bootstrap.bootstrap_host(app, app_rendered(sandbox, log_level="debug"),
                                       progress=lines.append, health_timeout=30)
    assert changed["uploaded"] == ["/etc/dialog/server.env"]
    assert changed["compose"] == "updated" and changed["changed"] is True
    after = pids(sandbox, APP)
    assert after["dialog-dialog-server-1"] != before["dialog-dialog-server-1"]
    assert {k: v for k, v in after.items() if k != "dialog-dialog-server-1"} == \
        {k: v for k, v in before.items() if k != "dialog-dialog-server-1"}
    assert "%s: uploaded 1 file" % APP in lines

    # The secret is in no progress line and no result.
    assert SECRET not in "\n".join(lines)
    assert SECRET not in json.dumps([first, again, changed])

    # The same checks alone: one round trip, all passing. A detail that would quote a secret
    # has it replaced: here the real pg_isready, sent to a host named like the secret (which
    # does not resolve), fails naming that host, the detail a failure message would carry.
    del commands[:]
    rendered = app_rendered(sandbox)
    rendered["checks"].append({"name": "quoting", "role": "postgres", "service": "postgres",
                               "kind": "exec", "command": ["pg_isready", "-h", SECRET]})
    results = health.run_checks(app, rendered)
    assert [r["ok"] for r in results] == [True] * 5 + [False] and len(commands) == 1
    ring = [r for r in results if r["name"] == "cassandra ring"][0]
    assert ring["detail"] == "%s is UN" % ip(sandbox, APP)
    assert SECRET not in json.dumps(results)
    assert results[-1]["detail"] == "exit 2: ***:5432 - no response", results[-1]


def test_ensure_docker_and_create_admin(sandbox, app):
    assert bootstrap.ensure_docker(app) == "present"
    rendered = app_rendered(sandbox)
    bootstrap.bootstrap_host(app, rendered, health_timeout=30)  # no-op when run after the above
    first = bootstrap.create_admin(app, rendered, "admin", ADMIN_PASSWORD)
    second = bootstrap.create_admin(app, rendered, "admin", ADMIN_PASSWORD)
    assert first == {"host": APP, "login": "admin", "created": True, "admin": True}
    assert second == dict(first, created=False)
    path = os.path.join(sandbox.host_root(APP), "var/lib/dialog/fake-docker/state.json")
    with open(path, encoding="utf-8") as handle:
        assert json.load(handle)["users"]["dialog"]["admin"]["admin"] is True


def test_check_that_never_passes_fails_in_time(sandbox, edge):
    dead = {"name": "admin port", "role": "proxy", "service": "web", "kind": "tcp",
            "address": ip(sandbox, EDGE), "port": 9999}
    started = time.monotonic()
    with pytest.raises(ResourceFailed) as failure:
        bootstrap.bootstrap_host(edge, edge_rendered(sandbox, [dead]), health_timeout=2,
                                 health_interval=0.5)
    elapsed = time.monotonic() - started
    assert str(failure.value).startswith(
        "%s (proxy): check 'admin port' failed after 2s: connection refused" % EDGE)
    # Bounded by the 2 s given, not the 300 s default (the margin is for SSH on a busy machine).
    assert elapsed < 30, elapsed
    # The rest of the host was done: the proxy's certificate exists, its key private.
    assert host_mode(sandbox, EDGE, "/etc/dialog/tls/key.pem") == 0o600
    assert host_mode(sandbox, EDGE, "/etc/dialog/tls/cert.pem") == 0o644
    assert bootstrap.ensure_tls(edge) == "present"
    ok = bootstrap.bootstrap_host(edge, edge_rendered(sandbox), health_timeout=10)
    assert ok["tls"] == "present" and ok["compose"] == "unchanged" and ok["changed"] is False
    with pytest.raises(ResourceFailed, match=r"check 'admin port' failed after 1\.5s"):
        health.wait_healthy(edge, edge_rendered(sandbox, [dead]), timeout=1.5, interval=0.5)
    # An invalid compose file fails at `config -q`, before anything is started.
    bad = edge_rendered(sandbox)
    bad["files"][0]["content"] = bad["files"][0]["content"].replace("8080:80", "80:80:80")
    with pytest.raises(ResourceFailed, match=r"^%s \(proxy\): compose config failed: "
                       r".*services\.web\.ports\.0" % EDGE):
        bootstrap.bootstrap_host(edge, bad, health_timeout=5)


def test_wait_for_ssh(sandbox):
    sandbox.boot(LATE, ip(sandbox, LATE), delay=1)
    waited = bootstrap.wait_for_ssh(ip(sandbox, LATE), "root",
                                    key_file=sandbox.ssh_key_path, timeout=20, interval=0.2,
                                    name=LATE)
    assert 0.8 < waited < 20
    started = time.monotonic()
    with pytest.raises(ResourceFailed) as failure:
        bootstrap.wait_for_ssh(ip(sandbox, "nobody"), "root", key_file=sandbox.ssh_key_path,
                               timeout=2, interval=0.5, name="dlg-ghost-1")
    assert time.monotonic() - started < 30  # bounded by the 2 s given, with room for a busy CI
    message = str(failure.value)
    assert message.startswith("dlg-ghost-1 (%s): SSH not ready after 2s: "
                              % ip(sandbox, "nobody")), message


def test_prepare_starts_nothing_and_start_runs_what_it_prepared(sandbox):
    """dialog.deploy prepares every host at once and starts each only when the hosts it needs
    run: everything slow is done by prepare_host, and no service runs before start_host."""
    if not os.path.isdir(sandbox.host_root(LATE)):  # test_wait_for_ssh boots it
        sandbox.boot(LATE, ip(sandbox, LATE))
    sandbox.wait_ready(LATE)
    rendered = edge_rendered(sandbox)
    address = ip(sandbox, LATE)
    rendered.update(host=LATE, address=address)
    rendered["checks"] = [dict(c, address=address) for c in rendered["checks"]]
    connection = bootstrap.connect(address, "root", key_file=sandbox.ssh_key_path, timeout=10)
    try:
        prepared = bootstrap.prepare_host(connection, rendered)
        assert prepared["tls"] == "created" and prepared["uploaded"] == [COMPOSE_FILE]
        assert prepared["docker"] in ("present", "installed")
        state = os.path.join(sandbox.host_root(LATE), "var/lib/dialog/fake-docker/state.json")
        assert not os.path.exists(state) or pids(sandbox, LATE) == {}, "nothing started"
        started = bootstrap.start_host(connection, rendered, prepared, health_timeout=30)
        assert started["compose"] == "started" and started["changed"] is True
        assert [c["ok"] for c in started["checks"]] == [True]
        assert set(pids(sandbox, LATE)) == {"dialog-web-1"}
    finally:
        connection.close()
