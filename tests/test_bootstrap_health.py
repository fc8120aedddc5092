"""The bootstrap never reports a host started while a health check of it fails.

lib.bootstrap.start_host and lib.health.wait_healthy run the real probe round trip against a
host faked at the SSH boundary (tests/fake_hosts.py): the probe's answer says which checks
failed, and the code must raise naming the host, its role and the check. The same paths run
against real services in the sandbox tests (test_bootstrap.py); this one needs none.
"""

import pytest
from st2tests.mocks.action import MockActionService, MockActionWrapper

from fake_hosts import FakeHosts
from lib import bootstrap, health
from lib.deployment_secrets import ensure_secrets
from lib.errors import ResourceFailed
from lib.render import render_host
from lib.planner import build_plan
from test_workflow_deploy import inventory

SERVER = "dialog-dialog-server-1"
# Dialog's images come from the operator's registry (the profile's images).
IMAGES = {"dialog_server": "registry.example.com/dialog/server:2.1",
          "web_app": "registry.example.com/dialog/web-app:2.1",
          "dashboard": "registry.example.com/dialog/dashboard:2.1",
          "push": "registry.example.com/dialog/push:2.1"}
PREPARED = {"host": SERVER, "docker": "present", "volumes": [], "registry": None,
            "images": {}, "uploaded": [], "unchanged": []}


@pytest.fixture(scope="module")
def rendered():
    hosts = inventory(build_plan("small-failover", "aws"))
    service = MockActionService(MockActionWrapper("dialog", "BootstrapHealthTest"))
    context = {"deployment": "dialog", "tier": "small-failover", "provider": "aws",
               "with_storage": False, "hosts": hosts,
               "secrets": ensure_secrets(service, "dialog")[0], "images": IMAGES,
               "registry": None, "docker_apt_repository": None, "object_storage": None}
    return hosts, render_host(context, SERVER)


def _connection(hosts, failing):
    fake = FakeHosts(hosts)
    fake[SERVER].failing = failing
    address = next(h["private_address"] for h in hosts if h["name"] == SERVER)
    return fake.connect(address, user="admin")


def test_a_failed_check_fails_the_start_naming_host_role_and_check(rendered):
    hosts, server = rendered
    first = server["checks"][0]["name"]
    with pytest.raises(ResourceFailed) as caught:
        bootstrap.start_host(_connection(hosts, {first}), server, dict(PREPARED),
                             health_timeout=600)
    assert str(caught.value).startswith(
        "%s (%s): check '%s' failed after 600s: connection refused"
        % (SERVER, server["checks"][0]["role"], first))


def test_every_failed_check_is_named(rendered):
    hosts, server = rendered
    assert len(server["checks"]) > 1, "a dialog server has several checks"
    with pytest.raises(ResourceFailed) as caught:
        bootstrap.start_host(_connection(hosts, True), server, dict(PREPARED))
    assert all("'%s'" % c["name"] in str(caught.value) for c in server["checks"])


def test_a_healthy_host_starts_with_every_check_passed(rendered):
    hosts, server = rendered
    outcome = bootstrap.start_host(_connection(hosts, ()), server, dict(PREPARED))
    assert [c["name"] for c in outcome["checks"]] == [c["name"] for c in server["checks"]]
    assert all(c["ok"] for c in outcome["checks"]) and outcome["compose"] == "unchanged"


def test_wait_healthy_raises_on_a_failed_check(rendered):
    hosts, server = rendered
    last = server["checks"][-1]["name"]
    with pytest.raises(ResourceFailed) as caught:
        health.wait_healthy(_connection(hosts, {last}), server, timeout=30)
    assert "check '%s' failed after 30s" % last in str(caught.value)
    assert health.wait_healthy(_connection(hosts, ()), server, timeout=30)


def test_a_secret_file_value_the_open_files_also_show_is_not_masked():
    """A secret file's password is masked wherever a host's output quotes it; a value the
    host's open files show too (the compose service name "postgres" in a secret file's host
    line) is no secret, and masking it made "dialog-postgres-1" read "dialog-***-1"."""
    from lib import health
    files = [{"path": "/etc/dialog/pgbouncer.env", "secret": True,
              "content": "DB_HOST=postgres\nDB_PASSWORD=Zq8-s3cret-Value\n"},
             {"path": "/opt/dialog/docker-compose.yml", "secret": False,
              "content": "services:\n  postgres:\n    image: postgres:15\n"}]
    redact = health.redactor(files)
    assert redact("container dialog-postgres-1 said Zq8-s3cret-Value") == \
        "container dialog-postgres-1 said ***"
