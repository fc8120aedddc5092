"""Block devices for sandbox hosts: a cloud volume is a loop device backed by a sparse file.

    devices = BlockDevices(workdir, hosts)                 # hosts: the SandboxHosts
    devices.attach("db-1", aws_by_id_name("vol-0abc"), 500, key="vol-0abc")
    # inside db-1: /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0abc -> /dev/loopN
    devices.detach("vol-0abc")      # instance stopped: the loop goes, the file (the data) stays
    devices.delete("vol-0abc")      # volume deleted: the file goes too
    devices.close()

Scale: 1 MiB of backing file per GB of the volume (a 500 GB volume is a 500 MiB sparse file),
so a tier's volumes fit on this machine; blocks are allocated only when written.

A new volume is blank (all zeros, no filesystem, no partition table), as a new EBS volume or
DigitalOcean volume is: formatting is the deploy's job. The device appears under the stable
name the provider gives it, in the host's /dev/disk/by-id only (the directory
`hosts.by_id_dir(name)` is bind-mounted there inside each host):

* AWS Nitro instances expose EBS volumes as NVMe devices whose serial is the volume id without
  its dash; udev names them /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0
  (AWS docs, "Amazon EBS and NVMe": "the EBS volume ID is set as the serial number").
* DigitalOcean volumes appear as /dev/disk/by-id/scsi-0DO_Volume_<volume name> (DigitalOcean
  docs, "How to Mount Volumes").

Loop devices are this machine's (the hosts share /dev): their backing files are named after the
owning process (``dsb<token>-<key>.img``) so that `sweep_stale()` detaches the loops of sandboxes
whose process died.
"""

import contextlib
import logging
import os
import re
import subprocess
import threading

from .hosts import PREFIX, SandboxError, _stale

LOG = logging.getLogger(__name__)

MIB_PER_GB = 1
KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,254}$")
_SEQUENCE = iter(range(1 << 30))
_SEQUENCE_LOCK = threading.Lock()


def aws_by_id_name(volume_id):
    """The by-id name of an EBS volume on a Nitro instance (see the module docstring)."""
    return "nvme-Amazon_Elastic_Block_Store_" + volume_id.replace("-", "")


def digitalocean_by_id_name(volume_name):
    """The by-id name of a DigitalOcean volume (see the module docstring)."""
    return "scsi-0DO_Volume_" + volume_name


def by_id_dir(hosts, name):
    """The directory bind-mounted at /dev/disk/by-id inside host `name`."""
    if hasattr(hosts, "by_id_dir"):
        return hosts.by_id_dir(name)
    return os.path.join(hosts.host_root(name), ".sandbox", "by-id")


def _losetup(*args):
    result = subprocess.run(["losetup"] + list(args), capture_output=True, text=True,
                            check=False, timeout=30)
    if result.returncode != 0:
        raise SandboxError("losetup %s failed: %s" % (" ".join(args), result.stderr.strip()))
    return result.stdout.strip()


def loops():
    """{loop device: backing file} of this machine (a deleted file keeps its old path)."""
    out = subprocess.run(["losetup", "--list", "--noheadings", "--raw", "--output",
                          "NAME,BACK-FILE"], capture_output=True, text=True, check=False,
                         timeout=30).stdout
    found = {}
    for line in out.splitlines():
        name, _, back = line.partition(" ")
        back = back.strip()
        if back.endswith(" (deleted)"):
            back = back[:-len(" (deleted)")]
        # losetup --raw escapes spaces and other bytes in paths as \xHH.
        found[name] = re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), back)
    return found


def sweep_stale():
    """Detach loop devices backed by files of sandboxes whose process died."""
    for loop, back in loops().items():
        if _stale(os.path.basename(back)):
            LOG.warning("detaching stale sandbox loop device %s (%s)", loop, back)
            with contextlib.suppress(SandboxError):
                _losetup("-d", loop)


class BlockDevices(object):
    """Cloud volumes as loop devices on sandbox hosts. See the module docstring.

    attached: key -> {"host", "name", "loop", "file", "size_gb"} for every attached volume.
    """

    def __init__(self, workdir, hosts=None):
        self.workdir = os.path.join(os.path.abspath(str(workdir)), "volumes")
        self.hosts = hosts
        with _SEQUENCE_LOCK:
            self.token = "%06x%02x" % (os.getpid() & 0xFFFFFF, next(_SEQUENCE) % 256)
        self.attached = {}
        self._lock = threading.RLock()
        sweep_stale()
        os.makedirs(self.workdir, exist_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def path(self, key):
        """The backing file of volume `key` (it persists across detach, as EBS data does)."""
        return os.path.join(self.workdir, "%s%s-%s.img" % (PREFIX, self.token, key))

    def attach(self, host, by_id_name, size_gb, key):
        """Attach volume `key` (size_gb GB, blank when new) to `host` as
        /dev/disk/by-id/<by_id_name>. Repeating the same attach only restores a missing link;
        a volume attached elsewhere must be detached first (EBS and DO refuse it too)."""
        if not KEY_RE.match(str(key)):
            raise SandboxError("volume key %r: use letters, digits, '.', '_' and '-'" % (key,))
        if not NAME_RE.match(by_id_name or ""):
            raise SandboxError("unusable by-id name %r" % (by_id_name,))
        if not isinstance(size_gb, int) or isinstance(size_gb, bool) or size_gb < 1:
            raise SandboxError("volume %s: size_gb must be a positive integer, not %r"
                               % (key, size_gb))
        with self._lock:
            current = self.attached.get(key)
            if current is not None and (current["host"], current["name"]) != (host, by_id_name):
                raise SandboxError("volume %s is attached to %s; detach it first"
                                   % (key, current["host"]))
            if current is None:
                current = self._new_loop(host, by_id_name, size_gb, key)
            self._link(current)
            return dict(current)

    def detach(self, key):
        """Remove the host's link and the loop device; the data stays in the file."""
        with self._lock:
            current = self.attached.pop(key, None)
            if current is None:
                return False
            with contextlib.suppress(FileNotFoundError):
                os.unlink(current["link"])
            # A filesystem still mounted in a live host keeps the loop until it is unmounted
            # (losetup -d then only sets autoclear), as a forced detach would on a cloud.
            with contextlib.suppress(SandboxError):
                _losetup("-d", current["loop"])
            return True

    def delete(self, key):
        """Detach (if attached) and remove the volume's data."""
        with self._lock:
            self.detach(key)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path(key))

    def known(self):
        """Keys of every volume with data on this machine (attached or not)."""
        prefix = "%s%s-" % (PREFIX, self.token)
        with contextlib.suppress(FileNotFoundError):
            return sorted(n[len(prefix):-4] for n in os.listdir(self.workdir)
                          if n.startswith(prefix) and n.endswith(".img"))
        return []

    def close(self):
        """Detach every loop device (the files stay in workdir for inspection)."""
        with self._lock:
            for key in list(self.attached):
                self.detach(key)

    def _new_loop(self, host, by_id_name, size_gb, key):
        path = self.path(key)
        if not os.path.exists(path):
            with open(path, "wb") as handle:
                handle.truncate(size_gb * MIB_PER_GB * 1024 * 1024)
        loop = _losetup("--find", "--show", path)
        record = {"host": host, "name": by_id_name, "loop": loop, "file": path,
                  "size_gb": size_gb, "link": os.path.join(self._by_id_dir(host), by_id_name)}
        self.attached[key] = record
        return record

    def _link(self, record):
        directory = os.path.dirname(record["link"])
        os.makedirs(directory, exist_ok=True)
        if os.path.islink(record["link"]) and os.readlink(record["link"]) == record["loop"]:
            return
        temporary = record["link"] + ".new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        os.symlink(record["loop"], temporary)
        os.replace(temporary, record["link"])

    def _by_id_dir(self, host):
        if self.hosts is None:
            raise SandboxError("BlockDevices needs the SandboxHosts to find %s's "
                               "/dev/disk/by-id" % host)
        return by_id_dir(self.hosts, host)


def sync_aws_volumes(ec2, devices, instances, seen, tag_key="dialog:deployment"):
    """Make `devices` match the emulator's EBS attachments (the AWS hypervisor calls it each poll).

    instances: the hypervisor's records (instance id -> {"host", "booted", ...}); seen: this
    poll's DescribeInstances entries by id. Every data volume attached to an instance whose host
    is booted gets a loop device at its Nitro by-id name; the root volume is the host's own
    filesystem and is skipped. A volume no longer attached to a booted host is detached (its
    data kept, like EBS across a stop); a volume the emulator no longer has is deleted.
    """
    wanted, existing = {}, set()
    paginator = ec2.get_paginator("describe_volumes")
    for page in paginator.paginate(Filters=[{"Name": "tag-key", "Values": [tag_key]}]):
        for volume in page.get("Volumes") or []:
            existing.add(volume["VolumeId"])
            for attachment in volume.get("Attachments") or []:
                record = instances.get(attachment.get("InstanceId"))
                instance = seen.get(attachment.get("InstanceId")) or {}
                if attachment.get("State") not in ("attaching", "attached") or record is None \
                        or not record.get("booted") \
                        or attachment.get("Device") == instance.get("RootDeviceName"):
                    continue
                wanted[volume["VolumeId"]] = (record["host"], volume["Size"])
    for key in list(devices.attached):
        if key not in wanted or devices.attached[key]["host"] != wanted[key][0]:
            devices.detach(key)
    for key, (host, size_gb) in sorted(wanted.items()):
        devices.attach(host, aws_by_id_name(key), int(size_gb), key=key)
    for key in devices.known():
        if key not in existing and key not in devices.attached:
            devices.delete(key)
