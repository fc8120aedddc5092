"""Data volumes end to end on sandbox hosts: lib.hosts.volumes over real SSH against loop
devices that devtools/sandbox/volumes.py attaches at the provider's /dev/disk/by-id path.

What a user checks: the volume is formatted once and mounted at the role's data directory,
what the service writes there lands on the volume (not on the root disk), a re-run changes
nothing, and a device that already holds something is never formatted. Needs root, `ip netns`
and loop devices, like tests/test_sandbox.py. Hosts live in 10.86.x.0/24.
"""

import os
import struct
import subprocess

import pytest

from lib import bootstrap, health
from lib.cluster import cassandra_ops
from lib.errors import ResourceFailed
from lib.hosts import volumes
from aws_emulator import AwsEmulator
from sandbox_support import sandbox_hosts
from sandbox.hypervisor import Hypervisor
from sandbox.volumes import BlockDevices, aws_by_id_name, digitalocean_by_id_name, loops

pytestmark = pytest.mark.xdist_group("netns")

CIDRS = ["10.86.%d.0/24" % third for third in range(0, 250, 10)]
HOST = "vol-db-1"
MOUNT = "/var/lib/dialog/cassandra"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("volumes")
    hosts = sandbox_hosts(workdir / "hosts", CIDRS)
    devices = BlockDevices(workdir, hosts)
    try:
        hosts.boot(HOST, str(hosts.network.network_address + 31))
        hosts.wait_ready(HOST)
        yield hosts, devices
    finally:
        devices.close()
        hosts.close()


@pytest.fixture(scope="module")
def connection(sandbox):
    hosts, _ = sandbox
    conn = bootstrap.connect(hosts.info(HOST).address, "root", key_file=hosts.ssh_key_path,
                             known_hosts=hosts.known_hosts_path, timeout=10)
    yield conn
    conn.close()


def sh(connection, command):
    status, out, err = health.remote(connection, command, timeout=30)
    assert status == 0, err
    return out.strip()


def rendered(*pairs):
    return {"host": HOST, "volumes": [{"device": "/dev/disk/by-id/" + name, "mount": mount,
                                       "purpose": "data"} for name, mount in pairs]}


def fstab_lines(connection, mount):
    return [line for line in sh(connection, "cat /etc/fstab").splitlines()
            if not line.startswith("#") and line.split()[1:2] == [mount]]


def test_blank_volume_is_formatted_once_mounted_by_uuid_and_holds_the_data(sandbox, connection):
    hosts, devices = sandbox
    name = aws_by_id_name("vol-0123456789abcdef0")
    record = devices.attach(HOST, name, 20, key="vol-0123456789abcdef0")
    assert os.path.getsize(record["file"]) == 20 * 1024 * 1024       # 1 MiB per GB
    # Blank, like a new EBS volume, and only this host sees it.
    assert sh(connection, "readlink /dev/disk/by-id/%s" % name) == record["loop"]
    assert subprocess.run(["blkid", "-p", record["loop"]], check=False).returncode == 2

    first = volumes.ensure_volumes(connection, rendered((name, MOUNT)))
    assert len(first) == 1
    assert first[0]["formatted"] is True and first[0]["mounted"] is True
    assert first[0]["mount"] == MOUNT and first[0]["device"] == "/dev/disk/by-id/" + name
    uuid = first[0]["uuid"]
    assert sh(connection, "findmnt -n -o SOURCE,FSTYPE --mountpoint %s" % MOUNT).split() == \
        [record["loop"], "ext4"]
    assert fstab_lines(connection, MOUNT) == ["UUID=%s %s ext4 defaults,nofail 0 2"
                                              % (uuid, MOUNT)]
    # What a service writes under the data directory is on the volume, not on the root disk.
    sh(connection, "echo ring-data > %s/marker && sync" % MOUNT)
    assert not os.path.exists(os.path.join(hosts.host_root(HOST), MOUNT.lstrip("/"), "marker"))
    on_device = subprocess.run(["debugfs", "-R", "cat /marker", record["loop"]],
                               capture_output=True, text=True, check=True).stdout
    assert on_device.strip() == "ring-data"

    # The decommission check measures this 20 MiB volume, not the root disk.
    assert cassandra_ops.free_bytes(connection) < 20 * 1024 * 1024

    second = volumes.ensure_volumes(connection, rendered((name, MOUNT)))
    assert second == [dict(first[0], formatted=False, mounted=False)]
    assert sh(connection, "cat %s/marker" % MOUNT) == "ring-data"
    assert len(fstab_lines(connection, MOUNT)) == 1


def test_a_device_holding_a_filesystem_is_mounted_never_formatted(sandbox, connection,
                                                                  tmp_path):
    _, devices = sandbox
    content = tmp_path / "content"
    content.mkdir()
    (content / "keep.txt").write_text("old data\n")
    path = devices.path("old-ext4")
    with open(path, "wb") as handle:
        handle.truncate(16 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(content), path], check=True)
    uuid = subprocess.run(["blkid", "-p", "-s", "UUID", "-o", "value", path],
                          capture_output=True, text=True, check=True).stdout.strip()
    name = digitalocean_by_id_name("db-1-data")
    devices.attach(HOST, name, 16, key="old-ext4")

    result = volumes.ensure_volumes(connection, rendered((name, "/var/lib/dialog/postgres")))
    assert result[0]["formatted"] is False and result[0]["mounted"] is True
    assert result[0]["uuid"] == uuid
    assert sh(connection, "cat /var/lib/dialog/postgres/keep.txt") == "old data"


def _swap_signature(path):
    subprocess.run(["mkswap", path], check=True, capture_output=True)


def _dos_partition_table(path):
    entry = struct.pack("<B3sB3sII", 0, b"\0\0\0", 0x83, b"\0\0\0", 2048, 8192)
    with open(path, "r+b") as handle:
        handle.seek(446)
        handle.write(entry)
        handle.seek(510)
        handle.write(b"\x55\xaa")


@pytest.mark.parametrize("write, what", [(_swap_signature, "swap"),
                                         (_dos_partition_table, "dos partition table")])
def test_a_device_holding_anything_else_is_refused_untouched(sandbox, connection, write, what):
    _, devices = sandbox
    key = "other-%s" % what.split()[0]
    path = devices.path(key)
    with open(path, "wb") as handle:
        handle.truncate(16 * 1024 * 1024)
    write(path)
    before = open(path, "rb").read()
    name = digitalocean_by_id_name("db-1-%s" % key)
    devices.attach(HOST, name, 16, key=key)
    mount = "/var/lib/dialog/ceph"
    with pytest.raises(ResourceFailed) as failed:
        volumes.ensure_volumes(connection, rendered((name, mount)))
    assert what in str(failed.value) and name in str(failed.value)
    devices.detach(key)
    assert open(path, "rb").read() == before
    assert fstab_lines(connection, mount) == []
    assert sh(connection, "findmnt -n --mountpoint %s || true" % mount) == ""


def test_a_device_that_never_appears_fails_after_the_wait(connection):
    with pytest.raises(ResourceFailed) as failed:
        volumes.ensure_volumes(connection, rendered(("nvme-Amazon_Elastic_Block_Store_vol0",
                                                     "/var/lib/dialog/files")), wait=2)
    assert "no such block device after 2s" in str(failed.value)


def test_a_blank_volume_is_not_mounted_over_files_on_the_root_disk(sandbox, connection):
    hosts, devices = sandbox
    old = os.path.join(hosts.host_root(HOST), "var/lib/dialog/files")
    os.makedirs(old, exist_ok=True)
    with open(os.path.join(old, "upload.bin"), "w", encoding="ascii") as handle:
        handle.write("x")
    name = aws_by_id_name("vol-0feedfeedfeedfeed")
    record = devices.attach(HOST, name, 8, key="vol-0feedfeedfeedfeed")
    with pytest.raises(ResourceFailed, match="already holds files on the root disk"):
        volumes.ensure_volumes(connection, rendered((name, "/var/lib/dialog/files")))
    assert subprocess.run(["blkid", "-p", record["loop"]], check=False).returncode == 2


def test_detach_keeps_the_data_delete_removes_it(sandbox, connection):
    _, devices = sandbox
    name = aws_by_id_name("vol-0abcabcabcabcabc0")
    record = devices.attach(HOST, name, 4, key="vol-0abcabcabcabcabc0")
    assert record["loop"] in loops()
    devices.detach("vol-0abcabcabcabcabc0")
    assert sh(connection, "ls /dev/disk/by-id") .split().count(name) == 0
    assert os.path.exists(record["file"]) and record["loop"] not in loops()
    devices.delete("vol-0abcabcabcabcabc0")
    assert not os.path.exists(record["file"])


class RecordingHosts:
    """Stands in for SandboxHosts in the hypervisor: hosts are directories, boots recorded."""

    def __init__(self, root):
        self.root, self.booted, self.hosts = root, {}, {}

    def host_root(self, name):
        return os.path.join(self.root, name)

    def boot(self, name, address, **_):
        self.booted[name] = address

    def kill(self, name):
        self.booted.pop(name, None)

    def set_public_address(self, name, address):
        pass

    def set_egress(self, name, allowed):
        pass


def test_the_aws_hypervisor_follows_ebs_attachments(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with AwsEmulator() as emulator:
        ec2 = emulator.client("ec2")
        vpc = ec2.create_vpc(CidrBlock="10.87.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.87.1.0/24")["Subnet"]["SubnetId"]
        tags = [{"Key": "Name", "Value": "db"}, {"Key": "dialog:deployment", "Value": "x"}]
        image = ec2.describe_images()["Images"][0]
        instance = ec2.run_instances(
            ImageId=image["ImageId"], MinCount=1, MaxCount=1, SubnetId=subnet,
            BlockDeviceMappings=[
                {"DeviceName": image["RootDeviceName"], "Ebs": {"VolumeSize": 8}},
                {"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 50,
                                                   "DeleteOnTermination": True}}],
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags},
                               {"ResourceType": "volume", "Tags": tags}],
        )["Instances"][0]
        data = next(m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"]
                    if m["DeviceName"] == "/dev/sdf")
        hosts = RecordingHosts(str(tmp_path / "hosts"))
        with BlockDevices(tmp_path, hosts) as devices:
            hypervisor = Hypervisor(ec2, hosts, name_wait=0, block_devices=devices)
            hypervisor.poll_once()
            # Only the data volume: the root volume is the host's own filesystem.
            assert list(devices.attached) == [data]
            link = os.path.join(hosts.host_root("db"), ".sandbox", "by-id",
                                "nvme-Amazon_Elastic_Block_Store_" + data.replace("-", ""))
            assert os.readlink(link) == devices.attached[data]["loop"]
            backing = devices.path(data)
            assert os.path.getsize(backing) == 50 * 1024 * 1024

            ec2.stop_instances(InstanceIds=[instance["InstanceId"]])
            hypervisor.poll_once()
            assert devices.attached == {} and os.path.exists(backing)   # EBS keeps the data
            assert not os.path.lexists(link)

            ec2.start_instances(InstanceIds=[instance["InstanceId"]])
            hypervisor.poll_once()
            assert list(devices.attached) == [data] and os.path.lexists(link)

            ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
            hypervisor.poll_once()
            assert devices.attached == {} and not os.path.exists(backing)
            assert hypervisor.errors == []


def test_a_xen_instance_finds_its_volume_under_the_second_name(sandbox, connection):
    # t2 instances (the seed's sizes) are Xen: no NVMe by-id link, the volume mapped as sdf is
    # /dev/xvdf. Hosts here share this machine's /dev, so the second name is a by-id link too.
    _, devices = sandbox
    nitro = aws_by_id_name("vol-0feedfacefeedface")
    devices.attach(HOST, "xen-xvdg", 8, key="xen-volume")
    volume = {"device": "/dev/disk/by-id/" + nitro, "mount": "/var/lib/dialog/ceph",
              "purpose": "data", "xen_device": "/dev/disk/by-id/xen-xvdg"}
    [result] = volumes.ensure_volumes(connection, {"host": HOST, "volumes": [volume]}, wait=2)
    assert result["formatted"] is True and result["mounted"] is True
    assert result["device"] == "/dev/disk/by-id/" + nitro  # reported under the stable name
    assert sh(connection, "findmnt -n -o TARGET /dev/disk/by-id/xen-xvdg") == \
        "/var/lib/dialog/ceph"
