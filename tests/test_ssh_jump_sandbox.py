"""SSH through the deployment's proxy, as a runner outside the VPC does it, on sandbox hosts.

The runner reaches hosts only at public addresses (SandboxHosts(runner_outside=True)), and the
hosts let in only Debian's image user `admin`, with passwordless sudo (login_user="admin"), as
on AWS. A proxy has a public (NAT) address; the database host has none.
"""

import os
import sys
import threading

import pytest

from lib import bootstrap, health, operations
from lib.errors import ProviderError, ResourceFailed
from lib.hosts import gateways
from sandbox_support import sandbox_hosts

pytestmark = pytest.mark.xdist_group("netns")

CIDRS = ["10.85.%d.0/24" % third for third in range(0, 250, 10)]
PROXY, DB, LATE_PROXY, LATE_DB = "jmp-proxy-1", "jmp-db-1", "jmp-proxy-2", "jmp-db-2"
NUMBERS = {PROXY: 21, DB: 22, LATE_PROXY: 23, LATE_DB: 24}
# The postgres image's entrypoint refuses to initialise a database without a superuser
# password: it comes from the root-only env file, which compose reads under sudo.
COMPOSE = ('services:\n  db:\n    image: postgres:16\n    ports: ["5432:5432"]\n'
           '    env_file: [/etc/dialog/postgres.env]\n'
           '  dialog-server:\n    image: registry.example/dialog-server:1\n')


def host_python():
    """An interpreter the hosts can run: each host has its own /root, which hides one that
    lives in this machine's home directory (pyenv's)."""
    home = os.path.realpath(os.path.expanduser("~")) + os.sep
    return "/usr/bin/python3" if os.path.realpath(sys.executable).startswith(home) else None


def ip(sandbox, name):
    return str(sandbox.network.network_address + NUMBERS[name])


def public(name):
    return "198.18.85.%d" % NUMBERS[name]


def record(sandbox, name, roles, with_public):
    return {"name": name, "roles": roles, "private_address": ip(sandbox, name),
            "public_addresses": [public(name)] if with_public else [], "login_user": "admin"}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("jump")
    hosts = sandbox_hosts(workdir, CIDRS, runner_outside=True, login_user="admin",
                          python=host_python())
    try:
        hosts.boot(PROXY, ip(hosts, PROXY), public_address=public(PROXY))
        hosts.boot(DB, ip(hosts, DB))
        for name in (PROXY, DB):
            hosts.wait_ready(name)
        yield hosts
    finally:
        hosts.close()


@pytest.fixture()
def inventory(sandbox):
    return [record(sandbox, PROXY, ["proxy"], True), record(sandbox, DB, ["postgres"], False)]


def ssh(sandbox, via="jump"):
    return {"user": None, "key_file": sandbox.ssh_key_path, "via": via}


def test_the_runner_outside_cannot_reach_a_private_address(sandbox, inventory):
    with pytest.raises(ProviderError, match=ip(sandbox, DB)):
        with operations.session(inventory[1], ssh(sandbox, "private"), hosts=inventory):
            pass


def test_jump_reaches_a_private_only_host_through_the_proxy_as_admin(sandbox, inventory):
    with operations.session(inventory[1], ssh(sandbox), hosts=inventory) as connection:
        status, out, _ = health.remote(connection, "hostname; id -un; sudo -n id -un")
    assert (status, out.split()) == (0, [DB, "admin", "root"])
    # The proxy itself is reached directly at its public address.
    with operations.session(inventory[0], ssh(sandbox), hosts=inventory) as connection:
        assert connection.host == public(PROXY)
        assert health.remote(connection, "hostname")[1].strip() == PROXY


def test_sessions_at_once_share_one_connection_to_the_proxy(sandbox, inventory):
    # 8 sessions at once: below the target sshd's MaxStartups (10), which is not under test.
    together, users, errors = threading.Barrier(8, timeout=60), [], []

    def work():
        try:
            with operations.session(inventory[1], ssh(sandbox), hosts=inventory) as connection:
                together.wait()
                users.append([[entry[1] for entry in entries]
                              for entries in gateways._OPEN.values()])
                together.wait()
                assert health.remote(connection, "hostname")[1].strip() == DB
        except Exception as exc:  # pylint: disable=broad-except
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    # One proxy connection, used by all eight (gateways.CHANNELS_PER_CONNECTION).
    assert users == [[[8]]] * 8
    assert not gateways._OPEN     # closed with its last session


def test_bootstrap_through_the_proxy_runs_privileged_steps_with_sudo(sandbox, inventory):
    rendered = {"host": DB, "address": ip(sandbox, DB), "project": "dialog",
                "compose_file": "/opt/dialog/docker-compose.yml", "roles": ["postgres"],
                "files": [{"path": "/opt/dialog/docker-compose.yml", "content": COMPOSE,
                           "mode": 0o644, "secret": False},
                          {"path": "/etc/dialog/postgres.env", "mode": 0o600, "secret": True,
                           "content": "POSTGRES_PASSWORD=secret-value\n"}],
                "services": ["db", "dialog-server"],
                "checks": [{"name": "db port", "role": "postgres", "service": "db",
                            "kind": "tcp", "port": 5432}]}
    with operations.session(inventory[1], ssh(sandbox), hosts=inventory) as connection:
        assert connection.user == "admin"
        outcome = bootstrap.bootstrap_host(connection, rendered, health_timeout=30)
        again = bootstrap.bootstrap_host(connection, rendered, health_timeout=30)
        _, owner, _ = health.remote(connection, "sudo -n stat -c '%U %a' /etc/dialog/postgres.env")
        admin = bootstrap.create_admin(connection, rendered, "first.admin", "pw-0123456789",
                                       service="dialog-server")
    assert outcome["compose"] == "started" and all(c["ok"] for c in outcome["checks"])
    assert again["changed"] is False
    assert owner.split() == ["root", "600"]
    assert admin == {"host": DB, "login": "first.admin", "created": True, "admin": True}


def test_waiting_for_ssh_retries_both_hops(sandbox):
    """The proxy gets its public address and the host boots only after the wait began."""
    inventory = [record(sandbox, LATE_PROXY, ["proxy"], True),
                 record(sandbox, LATE_DB, ["postgres"], False)]
    sandbox.boot(LATE_PROXY, ip(sandbox, LATE_PROXY))
    timers = [threading.Timer(3.0, sandbox.set_public_address, (LATE_PROXY, public(LATE_PROXY))),
              threading.Timer(5.0, sandbox.boot, (LATE_DB, ip(sandbox, LATE_DB)))]
    lines = []
    for timer in timers:
        timer.start()
    try:
        with operations.session(inventory[1], ssh(sandbox), wait=90, progress=lines.append,
                                hosts=inventory) as connection:
            assert health.remote(connection, "hostname")[1].strip() == LATE_DB
    finally:
        for timer in timers:
            timer.join()
    assert lines[0] == "%s: waiting for SSH at %s through %s" % (LATE_DB, ip(sandbox, LATE_DB),
                                                                 LATE_PROXY)


def test_an_unreachable_proxy_is_named_with_its_address(sandbox, inventory):
    gone = dict(inventory[0], public_addresses=["198.18.85.99"])
    with pytest.raises(ResourceFailed) as caught:
        with operations.session(inventory[1], ssh(sandbox), wait=4, hosts=[gone, inventory[1]]):
            pass
    assert "proxy %s (admin@198.18.85.99)" % PROXY in str(caught.value)
