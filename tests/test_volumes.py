"""Data volumes without hosts: what render asks each host to mount, the device paths providers
report, and that the disk metric and the decommission free-space check look at the data mount.
(tests/test_volumes_sandbox.py runs the host side over SSH against real loop devices.)"""

import re

import pytest

from lib import health, prometheus
from lib.cloud.volume_devices import aws_device, digitalocean_device, xen_device
from lib.cluster import cassandra_ops
from lib.errors import ResourceFailed
from lib.hosts import volumes
from lib.planner import build_plan
from lib.render import render_host
from test_render import IMAGES, SECRETS

NOT_DATA = ["/", "/var", "/var/lib", "/var/lib/docker", "/var/lib/cassandra",
            "/var/lib/postgresql/data", "/var/lib/dialog/fake-docker", "/var/lib/dialogue",
            "/var/lib/dialog/cassandra/data", "/boot/efi"]


def context_with_volumes(tier, provider="aws"):
    """An inventory as the provider reports it: every planned volume with its device path."""
    plan = build_plan(tier, provider, with_storage=tier != "mini")
    hosts = []
    for number, host in enumerate(plan["hosts"], 1):
        disks = [d for d in host["disks"] if d["source"] == "volume"]
        hosts.append({
            "name": host["name"], "group": host["group"], "index": host["index"],
            "roles": list(host["roles"]), "private_address": "10.80.0.%d" % number,
            "public_addresses": [],
            "volumes": [{"id": "vol-%04d%d" % (number, n), "size_gb": d["size_gb"],
                         "kind": d["kind"], "purpose": d["purpose"],
                         "device": aws_device("vol-%04d%d" % (number, n))}
                        for n, d in enumerate(disks)]})
    return {"deployment": "dialog", "tier": tier, "provider": provider,
            "with_storage": tier != "mini",
            "hosts": hosts, "secrets": dict(SECRETS, s3_access_key="a" * 20,
                                            s3_secret_key="b" * 40),
            "images": dict(IMAGES)}


@pytest.mark.parametrize("tier", ["small", "small-failover", "production"])
def test_each_data_volume_is_mounted_at_its_roles_data_directory(tier):
    context = context_with_volumes(tier)
    seen = set()
    for host in context["hosts"]:
        rendered = render_host(context, host["name"])["volumes"]
        data = [v for v in host["volumes"] if v["purpose"] == "data"]
        assert [v["device"] for v in rendered] == [v["device"] for v in data]
        for volume in rendered:
            (role,) = host["roles"]
            assert volume["mount"] == volumes.DATA_DIRS[role]
            assert volume["purpose"] == "data"
            seen.add(role)
        if "storage" in host["roles"]:
            assert rendered == []       # the OSD takes its raw device
    assert {"postgres", "cassandra", "s3-gateway"} <= seen


def test_the_compose_file_keeps_each_role_data_under_its_mount():
    context = context_with_volumes("small")
    for host in context["hosts"]:
        result = render_host(context, host["name"])
        compose = result["files"][0]["content"]
        for volume in result["volumes"]:
            if volume["mount"] == volumes.DATA_DIRS["dialog-server"]:
                continue    # with_storage: uploads go to the S3 gateway, the volume idles
            assert volume["mount"] + ":" in compose, (host["name"], volume["mount"])


def test_hosts_without_volumes_mount_nothing():
    context = context_with_volumes("mini")
    assert all(render_host(context, h["name"])["volumes"] == [] for h in context["hosts"])
    assert volumes.ensure_volumes(None, {"host": "x", "volumes": []}) == []


def test_a_volume_without_a_device_stops_before_any_ssh():
    with pytest.raises(ResourceFailed, match="device is None"):
        volumes.ensure_volumes(None, {"host": "db-1", "volumes": [
            {"device": None, "mount": "/var/lib/dialog/postgres", "purpose": "data"}]})


def test_device_paths_are_the_providers_stable_names():
    assert aws_device("vol-0123456789abcdef0") == \
        "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0"
    assert digitalocean_device("dialog-cassandra-1-data") == \
        "/dev/disk/by-id/scsi-0DO_Volume_dialog-cassandra-1-data"


def test_the_disk_query_selects_the_data_mounts_and_nothing_else():
    promql = prometheus.queries()["disk"]
    selectors = re.findall(r'mountpoint=~"([^"]*)"', promql)
    assert len(selectors) == 2 and len(set(selectors)) == 1
    pattern = re.compile(selectors[0])          # PromQL anchors =~ at both ends: fullmatch
    mounts = {v["mount"] for tier in ("small", "production")
              for h in context_with_volumes(tier)["hosts"]
              for v in render_host(context_with_volumes(tier), h["name"])["volumes"]}
    assert mounts and all(pattern.fullmatch(m) for m in mounts), mounts
    assert pattern.fullmatch(volumes.DATA_ROOT)
    assert [m for m in NOT_DATA if pattern.fullmatch(m)] == []


def test_free_space_is_measured_on_the_cassandra_data_mount(monkeypatch):
    commands = []

    def remote(connection, command, stdin=None, timeout=60.0):
        commands.append(command)
        return 0, "/dev/nvme1n1 262144000 1024 262142976 1% /var/lib/dialog/cassandra\n", ""

    monkeypatch.setattr(health, "remote", remote)
    assert cassandra_ops.free_bytes(object()) == 262142976 * 1024
    assert commands == ["df -Pk /var/lib/dialog/cassandra | tail -n 1"]


def test_an_ebs_volume_is_looked_for_at_its_nitro_and_its_xen_name():
    assert xen_device("/dev/sdf") == "/dev/xvdf" and xen_device("xvdg") == "/dev/xvdg"
    assert xen_device("/dev/nvme1n1") is None
    host = {"roles": ["cassandra"], "volumes": [
        {"purpose": "data", "device": "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol1",
         "xen_device": "/dev/xvdf"}]}
    assert volumes.rendered_volumes(host) == [{
        "device": "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol1", "purpose": "data",
        "mount": "/var/lib/dialog/cassandra", "xen_device": "/dev/xvdf"}]
