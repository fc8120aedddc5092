"""dialog.deploy, dialog.status and dialog.destroy end to end in the local sandbox.

Real: the deploy workflow (orquesta's conductor), every action of the pack, the AWS driver
against moto's EC2, S3 and IAM, SSH to one sshd per host (as Debian's `admin` with sudo, through
the proxy: this machine reaches only public addresses), Docker installed from the sandbox's
mirror through the NAT gateway, the registry login, loop-device data volumes, uploads, health
probes over the network, the datastore-backed secrets. Stand-in: the container runtime
(devtools/sandbox/fake_docker.py) and the datastore (in memory). Needs root and `ip netns`, as
CI has; without them the tests fail with the reason.
"""

import json

import pytest

from lib.deployment_secrets import datastore_key
from sandbox.hosts import preflight
from sandbox_deploy import POSTGRES_DATA, changed_anything, holds_service_data, sandbox

# Sandbox hosts: one sandbox per machine, so under pytest-xdist these run in one group, on
# one worker, one test after another (./dialog-local test runs -n 2 --dist loadgroup).
pytestmark = pytest.mark.xdist_group("netns")

DEPLOYMENT = "e2e"
COMPOSE = "sudo -n docker compose -p dialog -f /opt/dialog/docker-compose.yml"


@pytest.fixture(scope="module")
def box():
    problems = preflight()
    if problems:
        pytest.fail("the sandbox needs root and `ip netns` (CI runs as root): "
                    + "; ".join(problems), pytrace=False)
    with sandbox() as running:
        yield running


class Recorder(object):
    """Collects everything a person would see: progress lines and results."""

    def __init__(self):
        self.lines = []

    def __call__(self, line):
        self.lines.append(line)

    def text(self, *results):
        return "\n".join(self.lines) + json.dumps(results, default=str)


def deploy(box, recorder, **params):
    params.setdefault("tier", "small")
    params.setdefault("deployment", DEPLOYMENT)
    ok, result, _ = box.run("dialog.deploy", params, progress=recorder)
    return ok, result


def ssh(box, host, command, hosts):
    """Run a command on a sandbox host as its operator would, from this machine: as `admin`,
    through the first proxy's public address (like `ssh -J`); (status, stdout)."""
    import fabric  # pylint: disable=import-outside-toplevel
    login = {"key_filename": box.hosts.ssh_key_path, "look_for_keys": False,
             "allow_agent": False}
    proxy = [h for h in hosts if "proxy" in h["roles"]][0]
    with fabric.Connection(proxy["public_addresses"][0], user="admin",
                           connect_kwargs=dict(login)) as gateway, \
            fabric.Connection(host["private_address"], user="admin", gateway=gateway,
                              connect_kwargs=dict(login)) as connection:
        out = connection.run(command, hide=True, warn=True, in_stream=False)
        return out.exited, out.stdout


@pytest.fixture(scope="module")
def first_run(box):
    recorder = Recorder()
    ok, result = deploy(box, recorder)
    return ok, result, recorder


def test_deploy_takes_an_empty_account_to_a_healthy_installation(first_run):
    ok, result, recorder = first_run
    assert ok, json.dumps(result, indent=1, default=str)[-3000:]
    output = result["output"]
    assert {h["name"] for h in output["hosts"]} == {
        "e2e-proxy-1", "e2e-proxy-2", "e2e-web-1", "e2e-voice-push-1",
        "e2e-dialog-server-1", "e2e-postgres-1", "e2e-cassandra-1"}
    assert output["health"] and all(h["healthy"] for h in output["health"])
    assert all(c["ok"] for h in output["health"] for c in h["checks"])
    proxy = [h for h in output["hosts"] if h["name"] == "e2e-proxy-1"][0]
    assert output["endpoints"]["web"] == "https://%s/" % proxy["public_addresses"][0]
    assert output["endpoints"]["turn"]
    assert output["admin_credentials"] == datastore_key(DEPLOYMENT)
    # Progress a person can follow: the task, the host and the step.
    text = "\n".join(recorder.lines)
    assert "bootstrap[" in text and "e2e-postgres-1: uploaded" in text
    assert "e2e-proxy-1: healthy" in text
    assert "e2e-dialog-server-1: waiting for e2e-postgres-1, e2e-cassandra-1" in text
    # As on a fresh cloud account: Debian's login user, Docker installed by the deploy (through
    # the NAT gateway for private hosts), Dialog's images pulled after a registry login.
    assert {h["login_user"] for h in output["hosts"]} == {"admin"}
    bootstrapped = {b["host"]: b for b in output["bootstrapped"]}
    assert {b["docker"] for b in bootstrapped.values()} == {"installed"}
    assert bootstrapped["e2e-dialog-server-1"]["registry"] == "logged-in"


def test_every_data_volume_is_formatted_once_and_holds_the_data(box, first_run):
    ok, result, _ = first_run
    assert ok
    planned = {h["name"] for h in result["output"]["hosts"]
               if any(v.get("purpose") == "data" for v in h.get("volumes") or [])}
    assert planned >= {"e2e-postgres-1", "e2e-cassandra-1"}
    volumes = {v["host"]: v for v in box.volumes()}
    for name in planned:
        assert volumes[name]["fs"] == "ext4", volumes.get(name)
        # The service's data is on the volume itself, read from the block device: Postgres'
        # data directory written by the real server (PGDATA is the volume's root), a stand-in's
        # mark for the others.
        if name == "e2e-postgres-1":
            assert POSTGRES_DATA <= set(volumes[name]["files"]), volumes[name]
        assert holds_service_data(volumes[name]["files"]), volumes[name]
        outcome = [b for b in result["output"]["bootstrapped"] if b["host"] == name][0]
        assert [v["formatted"] for v in outcome["volumes"]] == [True]
    postgres = [h for h in result["output"]["hosts"] if h["name"] == "e2e-postgres-1"][0]
    exited, out = ssh(box, postgres, "findmnt -n -o SOURCE,TARGET /var/lib/dialog/postgres; "
                      "grep -c /var/lib/dialog/postgres /etc/fstab", result["output"]["hosts"])
    assert exited == 0 and "/var/lib/dialog/postgres" in out and out.split()[-1] == "1", out


def test_secrets_are_generated_once_stored_encrypted_and_never_shown(box, first_run):
    ok, result, recorder = first_run
    assert ok
    key = datastore_key(DEPLOYMENT)
    assert key in box.datastore.encrypted
    secrets = json.loads(box.datastore.get(key, decrypt=True))
    seen = recorder.text(result)
    leaked = [name for name, value in secrets.items()
              if len(value) >= 8 and value in seen]
    assert not leaked, "secret values in results or progress: %s" % leaked


def test_a_second_deploy_changes_nothing(box, first_run):
    assert first_run[0]
    before = dict(box.datastore.items)
    volumes = box.volumes()
    ok, result = deploy(box, Recorder())
    assert ok, result.get("errors")
    assert not changed_anything(result["output"]), result["output"]["bootstrapped"]
    assert not any(v["formatted"] or v["mounted"] for b in result["output"]["bootstrapped"]
                   for v in b["volumes"])
    assert box.volumes() == volumes, "no volume is reformatted"
    # Secrets are reused, not regenerated (the run's start markers are the only new keys).
    assert {k: v for k, v in box.datastore.items.items() if ".run." not in k} == \
        {k: v for k, v in before.items() if ".run." not in k}


def test_status_reports_a_broken_service_and_a_redeploy_heals_it(box, first_run, capsys):
    assert first_run[0]
    ok, status, _ = box.run("dialog.status", {"deployment": DEPLOYMENT})
    assert ok and status["healthy"], status
    web = [h for h in status["hosts"] if h["name"] == "e2e-web-1"][0]
    exited, _ = ssh(box, web, COMPOSE + " down", first_run[1]["output"]["hosts"])
    assert exited == 0

    capsys.readouterr()
    ok, status, _ = box.run("dialog.status", {"deployment": DEPLOYMENT})
    table = capsys.readouterr().out
    assert ok and not status["healthy"]
    broken = {h["name"] for h in status["hosts"] if not h["healthy"]}
    assert broken == {"e2e-web-1"}
    assert "NOT healthy" in table and "e2e-web-1" in table and "UNHEALTHY" in table
    ok, failed, _ = box.run("dialog.status",
                            {"deployment": DEPLOYMENT, "fail_when_unhealthy": True})
    assert not ok and "e2e-web-1" in failed["error"] and failed["hosts"]

    ok, result = deploy(box, Recorder())
    assert ok, result.get("errors")
    changed = {b["host"]: b for b in result["output"]["bootstrapped"] if b["changed"]}
    assert set(changed) == {"e2e-web-1"} and changed["e2e-web-1"]["compose"] == "started"
    ok, status, _ = box.run("dialog.status", {"deployment": DEPLOYMENT})
    assert ok and status["healthy"]


def test_a_failed_bootstrap_names_host_and_reason_and_a_rerun_finishes(box, first_run):
    assert first_run[0]
    server = [h for h in first_run[1]["output"]["hosts"]
              if h["name"] == "e2e-dialog-server-1"][0]
    # Make the next `compose up` on the dialog server fail: its port 9090 is taken.
    hosts = first_run[1]["output"]["hosts"]
    exited, _ = ssh(box, server, COMPOSE + " down && "
                    "(nohup python3 -m http.server 9090 >/dev/null 2>&1 &) && sleep 0.5", hosts)
    assert exited == 0
    ok, result = deploy(box, Recorder(), health_timeout=5)
    assert not ok
    failure = result["output"]["failure"]
    assert "e2e-dialog-server-1" in failure and "9090" in failure, failure
    assert not any(b["host"].startswith("e2e-proxy") for b in result["output"]["bootstrapped"])

    exited, _ = ssh(box, server, "pkill -f 'http.server 9090'; true", hosts)
    ok, result = deploy(box, Recorder())
    assert ok, result.get("errors")
    assert [b["host"] for b in result["output"]["bootstrapped"] if b["changed"]] == [
        "e2e-dialog-server-1"]


def test_destroy_removes_everything(box, first_run):
    assert first_run[0]
    ok, result, _ = box.run("dialog.destroy", {"deployment": DEPLOYMENT, "confirm": "nope"})
    assert not ok and "confirm" in result["error"]
    ok, result, _ = box.run("dialog.destroy", {"deployment": DEPLOYMENT, "confirm": DEPLOYMENT,
                                               "delete_data": True})
    assert ok, result
    assert {c["kind"] for c in result["changes"]} >= {"host", "address", "security-group",
                                                      "nat-gateway", "bucket"}
    assert set(result["forgotten"]) == {"dialog.e2e.deployment", "dialog.e2e.secrets",
                                        "dialog.e2e.files_key", "dialog.e2e.host_keys"}
    assert not [k for k in box.datastore.items
                if k.startswith("dialog.e2e.") and ".run." not in k]
    assert box.leftovers(DEPLOYMENT) == {}
    ok, inventory, _ = box.run("dialog.inventory", {"deployment": DEPLOYMENT})
    assert ok and inventory["hosts"] == []
    # Destroy is idempotent too: a second one finds nothing to do.
    ok, again, _ = box.run("dialog.destroy",
                           {"deployment": DEPLOYMENT, "confirm": DEPLOYMENT, "provider": "aws"})
    assert ok and again["changes"] == [] and again["forgotten"] == []
