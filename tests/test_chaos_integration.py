"""Issue 14 integration: what the sandbox chaos run found wrong between the parts."""

import os

import local_runner
from aws_emulator import AwsEmulator
from lib.planner import build_plan
from lib.providers import aws

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "dialog.yaml.example")
ADMIN = ["203.0.113.0/24"]


def test_a_profile_without_zones_deploys_in_two_zones_as_stackstorm_loads_it():
    # StackStorm fills an array the config leaves out with [] (it has items): a profile that
    # names no zones arrives with availability_zones == [], which must mean "choose them".
    config = local_runner.load_config(ROOT, EXAMPLE, local_runner.MemoryDatastore())
    assert config["profiles"]["aws-eu"]["availability_zones"] == []
    with AwsEmulator() as emu:
        # moto's accounts live as long as the process: a test run earlier in this worker may
        # have left its own 'dialog' deployment there (a production plan's hosts, which this
        # plan would remove). This test's account starts empty, as a new AWS account does.
        emu.reset()
        driver = aws.Driver(emu.profile(availability_zones=[]), "us-east-1", wait_delay=0.01,
                            wait_attempts=50)
        driver.reconcile(build_plan("small-failover", "aws", admin_networks=ADMIN))
        zones = {h.get("zone") for h in driver.inventory("dialog")}
    assert len(zones) == 2


def test_a_fenced_primary_is_not_tried_over_ssh_by_promote_or_repoint(monkeypatch):
    # dialog.fence leaves the former primary stopped at the provider: the inventory says so,
    # and promote/repoint must not wait out an SSH login to it while writes are down.
    from lib.healing import postgres_failover  # pylint: disable=import-outside-toplevel
    from test_postgres_failover import STANDBY_STATE, FakePair, pair_context
    fake = FakePair(monkeypatch, states={"dialog-postgres-2": STANDBY_STATE})
    tried = []
    session = fake.session

    def tracking(host, ssh, **kwargs):
        tried.append(host["name"])
        return session(host, ssh, **kwargs)

    monkeypatch.setattr(postgres_failover.operations, "session", tracking)
    context = pair_context()
    for host in context["hosts"]:
        if host["name"] == "dialog-postgres-1":
            host["state"] = "stopped"
    result = postgres_failover.promote(context, {}, "dialog-postgres-2", {}, [].append)
    assert result["primary"] == "dialog-postgres-2"
    context["postgres_primary"] = "dialog-postgres-2"
    repointed = postgres_failover.repoint(context, {})
    assert repointed["skipped"] == {"dialog-postgres-1": "stopped at the provider"}
    assert "dialog-postgres-1" not in tried


def test_a_fresh_boot_clears_the_old_files_while_a_volume_link_appears(tmp_path, monkeypatch):
    # Seen in the chaos run: the hypervisor linked the new instance's volume into by-id while
    # the fresh boot of the host (same name) removed the old files; rmtree failed ENOTEMPTY
    # and the replacement host never booted.
    import errno  # pylint: disable=import-outside-toplevel
    import shutil  # pylint: disable=import-outside-toplevel
    from sandbox import hosts  # pylint: disable=import-outside-toplevel
    root = tmp_path / "chaos-postgres-1"
    (root / ".sandbox" / "by-id").mkdir(parents=True)
    (root / "etc").mkdir()
    real, calls = shutil.rmtree, []

    def racing(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 1:
            (root / ".sandbox" / "by-id" / "nvme-Amazon_Elastic_Block_Store_vol1").touch()
            raise OSError(errno.ENOTEMPTY, "Directory not empty", str(root / ".sandbox"))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(hosts.shutil, "rmtree", racing)
    hosts.remove_tree(str(root))
    assert not root.exists() and len(calls) == 2
