"""Data volumes on a host: found by stable device path, formatted once, mounted by UUID.

The provider's inventory names each volume's stable device path (providers: "device"), render
gives each data volume of a host its mount point (`rendered_volumes`), and `ensure_volumes`
runs scripts/ensure_volumes.sh on the host, as root, before any service starts: wait for the
device, make an ext4 filesystem only on a blank device, add an /etc/fstab line by UUID with
`nofail` (a missing volume must not stop the host from booting), mount it.
"""

import os
import re
import shlex

import paramiko

from lib import health
from lib.errors import ProviderError, ResourceFailed

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts", "ensure_volumes.sh")
# Attach calls return before the device exists on the host (EBS and DO volumes attach
# asynchronously): the script waits this long for each device to appear.
DEVICE_WAIT = 120
# Per volume, beyond the wait: mkfs.ext4 with lazy inode tables takes seconds even on 1 TB.
FORMAT_TIME = 120
DATA_ROOT = "/var/lib/dialog"
# Where each role keeps its data, as the compose file mounts it into its containers.
DATA_DIRS = {
    "postgres": DATA_ROOT + "/postgres",
    "cassandra": DATA_ROOT + "/cassandra",
    "s3-gateway": DATA_ROOT + "/ceph",
    "dialog-server": DATA_ROOT + "/files",
}
# Volumes of other purposes stay raw: Ceph's OSD takes its whole device (ceph-volume lvm).
MOUNTED_PURPOSES = ("data",)
SAFE_PATH = re.compile(r"^/[A-Za-z0-9_.:@+/-]+$")


def data_mount(roles):
    """The directory a host's data volume is mounted at: its role's data directory, or the
    parent of every role's when the host has several roles that keep data."""
    dirs = sorted({DATA_DIRS[role] for role in roles if role in DATA_DIRS})
    return dirs[0] if len(dirs) == 1 else DATA_ROOT


def data_mounts_regex():
    """A regular expression matching every mount point rendered_volumes gives (and no other):
    for Prometheus' node_filesystem_* series of the data volumes."""
    dirs = "|".join(sorted(re.escape(d[len(DATA_ROOT) + 1:]) for d in DATA_DIRS.values()))
    return "%s(/(%s))?(/volume-[0-9]+)?" % (re.escape(DATA_ROOT), dirs)


def rendered_volumes(host):
    """[{"device", "mount", "purpose"}] for the inventory host's data volumes (render_host's
    "volumes"). "device" is None when the inventory does not name one (a record written before
    providers did): ensure_volumes then stops with a message instead of writing to the root
    disk."""
    volumes = [v for v in host.get("volumes") or [] if v.get("purpose") in MOUNTED_PURPOSES]
    mount = data_mount(host.get("roles") or [])
    return [dict({"device": volume.get("device"), "purpose": volume["purpose"],
                  "mount": mount if number == 0 else "%s/volume-%d" % (mount, number)},
                 **({"xen_device": volume["xen_device"]} if volume.get("xen_device") else {}))
            for number, volume in enumerate(volumes)]


def _last_line(text):
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def script_text():
    with open(SCRIPT, encoding="utf-8") as handle:
        return handle.read()


def parse(out):
    """The script's "@volume" lines as the contract's dicts, in order."""
    found = []
    for line in out.splitlines():
        words = line.split()
        if len(words) == 6 and words[0] == "@volume":
            found.append({"device": words[1], "mount": words[2], "uuid": words[3],
                          "formatted": words[4] == "1", "mounted": words[5] == "1"})
    return found


def bound(count, wait=DEVICE_WAIT):
    """Seconds ensure_volumes may take for `count` volumes: each device's wait and format."""
    return (wait + FORMAT_TIME) * count + 30


def ensure_volumes(connection, rendered, progress=None, wait=DEVICE_WAIT):
    """Format (blank devices only) and mount every volume of rendered["volumes"]; one SSH
    command. Returns [{"device", "mount", "uuid", "formatted", "mounted"}] ("formatted" and
    "mounted": done by this run), [] when the host has no volumes."""
    volumes = rendered.get("volumes") or []
    if not volumes:
        return []
    label = rendered.get("host") or connection.host
    args = [str(int(wait))]
    for volume in volumes:
        for key in ("device", "mount"):
            if not SAFE_PATH.match(volume.get(key) or ""):
                raise ResourceFailed("%s: a %s volume's %s is %r, not an absolute path; the "
                                     "provider's inventory names each volume's device (run "
                                     "dialog.deploy again to refresh it)" % (
                                         label, volume.get("purpose"), key, volume.get(key)))
        device = volume["device"]
        if volume.get("xen_device"):
            if not SAFE_PATH.match(volume["xen_device"]):
                raise ResourceFailed("%s: unusable Xen device name %r"
                                     % (label, volume["xen_device"]))
            # Nitro shows the by-id path, Xen the /dev/xvdX name: the script takes either.
            device += "," + volume["xen_device"]
        args += [device, volume["mount"]]
    if progress:
        progress("%s: volumes %s" % (label, ", ".join(
            "%s at %s" % (v["device"], v["mount"]) for v in volumes)))
    command = health.sudo_prefix(connection) + "sh -s -- " + " ".join(
        shlex.quote(a) for a in args)
    timeout = bound(len(volumes), wait)
    try:
        status, out, err = health.remote(connection, command, script_text(), timeout)
    except health.RemoteTimeout as exc:
        raise ResourceFailed("%s: volumes: %s" % (label, exc)) from None
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise ProviderError("%s: volumes: SSH connection lost: %s" % (label, exc)) from None
    if status != 0:
        failed = [line[6:] for line in out.splitlines() if line.startswith("@fail ")]
        detail = failed[-1] if failed else _last_line(err) or "exit status %s" % status
        if "sudo" in err and health.sudo_prefix(connection):
            detail += " (the SSH user needs passwordless sudo)"
        raise ResourceFailed("%s: volumes: %s" % (label, detail))
    result = parse(out)
    if len(result) != len(volumes):
        raise ResourceFailed("%s: volumes: the host reported %d of %d volumes"
                             % (label, len(result), len(volumes)))
    if progress:
        for item in result:
            if item["formatted"] or item["mounted"]:
                progress("%s: %s %s at %s" % (label, item["device"], " and ".join(
                    w for w, done in (("formatted", item["formatted"]),
                                      ("mounted", item["mounted"])) if done), item["mount"]))
    return result
