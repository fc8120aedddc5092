"""Docker install and registry login against the sandbox's mirror (devtools/sandbox/mirror.py).

Hosts boot without Docker (docker_preinstalled=False) and with their own /etc/apt and the
sandbox's apt-get; the mirror sits at the sandbox's internet address, which only hosts given
egress reach. Real SSH, real HTTP from each host's network namespace. Needs root and
`ip netns`, like tests/test_sandbox.py.
"""

import io
import json
import os

import pytest

from lib import bootstrap
from lib.errors import ResourceFailed
from lib.hosts import registry
from sandbox_support import sandbox_hosts
from sandbox.mirror import Mirror

pytestmark = pytest.mark.xdist_group("netns")

CIDRS = ["10.86.%d.0/24" % third for third in range(0, 250, 10)]
OPEN, CLOSED = "sup-open-1", "sup-closed-1"
NUMBERS = {OPEN: 31, CLOSED: 32}
PASSWORD = "reg-Pass-7c41e09b2d"
WRONG = "not-the-Pass-3e8f1a"
COMPOSE_FILE = "/opt/dialog/docker-compose.yml"


def ip(hosts, name):
    return str(hosts.network.network_address + NUMBERS[name])


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("registry")
    hosts = sandbox_hosts(workdir, CIDRS, internet=True, docker_preinstalled=False)
    try:
        mirror = Mirror(hosts.internet_address, username="dialog-ci", password=PASSWORD)
        try:
            for name in NUMBERS:
                hosts.boot(name, ip(hosts, name))
            hosts.set_egress(OPEN, True)
            for name in NUMBERS:
                hosts.wait_ready(name)
            yield hosts, mirror
        finally:
            mirror.close()
    finally:
        hosts.close()


def connect(hosts, name):
    return bootstrap.connect(ip(hosts, name), "root", key_file=hosts.ssh_key_path,
                             known_hosts=hosts.known_hosts_path, timeout=10)


@pytest.fixture(scope="module")
def open_host(sandbox):
    hosts, _ = sandbox
    conn = connect(hosts, OPEN)
    yield conn
    conn.close()


def rendered(mirror, name, images):
    return {"host": name, "roles": ["dialog-server"], "files": [], "images": images,
            "docker_apt_repository": mirror.apt_repository}


def run(conn, command, stdin=None):
    result = conn.run(command, hide=True, warn=True,
                      in_stream=False if stdin is None else io.StringIO(stdin))
    return result.exited, result.stdout, result.stderr


def test_hosts_have_no_docker_and_a_host_without_egress_cannot_install_it(sandbox):
    hosts, mirror = sandbox
    conn = connect(hosts, CLOSED)
    try:
        status, _, _ = run(conn, "command -v docker")
        assert status != 0
        with pytest.raises(ResourceFailed) as failure:
            bootstrap.ensure_docker(conn, mirror.apt_repository)
    finally:
        conn.close()
    message = str(failure.value)
    assert message.startswith(ip(hosts, CLOSED))
    assert "cannot reach the Docker apt repository %s" % mirror.apt_repository in message
    assert "NAT gateway" in message
    assert not [r for r in mirror.served("apt") if r["path"].endswith(".deb")]


def test_docker_installs_from_the_mirror_once(sandbox, open_host):
    hosts, mirror = sandbox
    assert bootstrap.ensure_docker(open_host, mirror.apt_repository) == "installed"
    assert bootstrap.ensure_docker(open_host, mirror.apt_repository) == "present"
    status, out, _ = run(open_host, "docker compose version")
    assert status == 0 and "Docker Compose version" in out
    sources = open(os.path.join(hosts.host_root(OPEN), "etc/apt/sources.list.d/docker.list"),
                   encoding="utf-8").read()
    assert sources.startswith("deb [arch=") and mirror.apt_repository + "/debian " in sources
    debs = [r["path"] for r in mirror.served("apt", 200) if r["path"].endswith(".deb")]
    assert len([p for p in debs if "/docker-ce_" in p]) == 1
    # The other host still has none: each host has its own /usr/local/bin.
    assert not os.path.exists(os.path.join(hosts.host_root(CLOSED), "usr/local/bin/docker"))


def test_registry_refuses_a_pull_without_login(sandbox, open_host):
    hosts, mirror = sandbox
    bootstrap.ensure_docker(open_host, mirror.apt_repository)
    image = mirror.dialog_images["dialog_server"]
    status, _, err = run(open_host, "docker pull %s" % image)
    assert status == 1 and "no basic auth credentials" in err
    with pytest.raises(ResourceFailed) as failure:
        registry.pull_images(open_host, rendered(mirror, OPEN, [image, "postgres:16"]))
    message = str(failure.value)
    assert message.startswith("%s (dialog-server): image pull failed: %s from %s"
                              % (OPEN, image, mirror.registry))
    assert "registry_username and registry_password" in message
    # compose up pulls what is missing itself, and fails the same way.
    compose = "services:\n  dialog-server:\n    image: %s\n" % image
    status, _, err = run(open_host, "mkdir -p /opt/dialog && cat >%s && docker compose -f %s up "
                                    "-d" % (COMPOSE_FILE, COMPOSE_FILE), compose)
    assert status == 1 and "no basic auth credentials" in err


def test_a_wrong_password_fails_without_showing_it(sandbox, open_host):
    hosts, mirror = sandbox
    bootstrap.ensure_docker(open_host, mirror.apt_repository)
    credentials = {"server": mirror.registry, "username": "dialog-ci", "password": WRONG}
    with pytest.raises(ResourceFailed) as failure:
        registry.ensure_login(open_host, rendered(mirror, OPEN, []), credentials)
    message = str(failure.value)
    assert message.startswith("%s (dialog-server): registry login to %s as dialog-ci failed"
                              % (OPEN, mirror.registry))
    assert "401 Unauthorized" in message and "registry_password" in message
    assert WRONG not in message and WRONG not in repr(failure.value.args)
    _, out, _ = run(open_host, "cat ~/.docker/config.json")
    assert mirror.registry not in out


def test_login_then_pull_then_nothing_to_do(sandbox, open_host):
    hosts, mirror = sandbox
    bootstrap.ensure_docker(open_host, mirror.apt_repository)
    credentials = {"server": mirror.registry, "username": "dialog-ci", "password": PASSWORD}
    images = [mirror.dialog_images["dialog_server"], "cassandra:4.1"]
    lines = []
    assert registry.ensure_login(open_host, rendered(mirror, OPEN, images), credentials,
                                 lines.append) == "logged-in"
    assert registry.ensure_login(open_host, rendered(mirror, OPEN, images), credentials) \
        == "present"
    assert registry.ensure_login(open_host, rendered(mirror, OPEN, images), None) == "none"
    pulled = registry.pull_images(open_host, rendered(mirror, OPEN, images), lines.append)
    assert sorted(pulled["pulled"]) == sorted(images) and pulled["present"] == []
    again = registry.pull_images(open_host, rendered(mirror, OPEN, images))
    assert again == {"pulled": [], "present": images}
    assert all(PASSWORD not in line for line in lines)
    # Docker's own file, on the host: root's ~/.docker/config.json holds the login.
    status, out, _ = run(open_host, "cat ~/.docker/config.json")
    assert status == 0 and mirror.registry in json.loads(out)["auths"]
    compose = "services:\n  dialog-server:\n    image: %s\n" % images[0]
    status, _, err = run(open_host, "cat >%s && docker compose -f %s up -d"
                         % (COMPOSE_FILE, COMPOSE_FILE), compose)
    assert status == 0, err
