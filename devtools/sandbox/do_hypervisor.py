"""Boot a sandbox host for every droplet the fake DigitalOcean API runs.

    with FakeDigitalOcean(public_network=..., vpc_ip_range=...) as fake, \\
            SandboxHosts(workdir, cidr=...) as hosts:
        hypervisor = DoHypervisor(fake, hosts, devices=BlockDevices(workdir))
        hypervisor.start()
        ...                         # POST /v2/droplets: a host boots once the droplet is active
        hypervisor.stop()

It reads the fake's state directly (FakeDigitalOcean.snapshot()), as DigitalOcean's own
hypervisors are not API clients: polling over HTTP would spend the account's rate limit (5000
requests an hour) that the pack's calls need. Every `interval` seconds:

* a droplet tagged for a deployment (a tag starting with `tag_prefix`, default ``dialog:``) that
  is active gets a host (once), named after the droplet, with its public address on eth0 and
  its VPC address on eth1, as on DigitalOcean ("Traditional Droplet: eth0 Public IPv4, eth1
  Private IPv4", DigitalOcean docs, Private Droplets). Root logs in (DigitalOcean's images
  install the droplet's SSH keys for root, so login_user="root" whatever the sandbox's default
  is). With `require_key` (default), a host boots only when the droplet was created with the
  sandbox's public key among its ssh_keys: a droplet without it could not be logged in to, so
  its host is left unbooted and the reason kept in ``errors``. Every droplet has egress (its
  public address is its own);
* a reserved IP assigned to a booted droplet reaches its host (hosts.set_public_address: like
  DigitalOcean's anchor IP, it is translated to the droplet's own address, not put on eth0);
  unassigned or deleted, it stops;
* a droplet that is gone (destroyed) loses its host;
* volumes attached to a booted droplet become block devices on its host at
  /dev/disk/by-id/scsi-0DO_Volume_<volume name> (through `devices`, a BlockDevices); a volume
  detached is detached there, a volume deleted is deleted.

Errors are logged once per droplet and kept in ``errors``; the loop keeps running.
"""

import logging
import re

from .hosts import FAILED, TERMINATED, SandboxError
from .hypervisor import Poller

LOG = logging.getLogger(__name__)

BY_ID_PREFIX = "scsi-0DO_Volume_"


class DoHypervisor(Poller):
    """Keeps SandboxHosts in step with the fake API's droplets. See the module docstring.

    droplets: droplet id -> {"host", "address", "public", "reserved", "booted"}.
    volumes: volume id -> the droplet id it is attached to on a host (None: detached; its
    backing file is kept until the volume is deleted).
    errors: (droplet or volume id, message) pairs, oldest first.
    """

    def __init__(self, fake, hosts, devices=None, interval=0.2, tag_prefix="dialog:",
                 boot_delay=None, require_key=True, egress=True):
        super().__init__("sandbox-do-hypervisor", interval,
                         "reading the fake DigitalOcean API failed")
        self.fake = fake
        self.hosts = hosts
        self.devices = devices
        self.tag_prefix = tag_prefix
        self.boot_delay = boot_delay
        self.require_key = require_key
        self.egress = egress
        self.droplets = {}
        self.volumes = {}

    def poll_once(self):
        """One reconciliation pass (also usable without starting the thread)."""
        state = self.fake.snapshot()
        seen = {d["id"]: d for d in state["droplets"]
                if any(t.startswith(self.tag_prefix) for t in d["tags"])}
        volumes = {v["id"]: v for v in state["volumes"]}
        # Volumes first: a destroyed droplet's volumes are detached before its host goes.
        self._reconcile_volumes(volumes, seen)
        for droplet_id, droplet in sorted(seen.items()):
            record = self.droplets.get(droplet_id)
            if droplet["status"] == "active":
                self._boot(droplet)
            elif droplet["status"] == "off" and record is not None and record["booted"]:
                # power_off: the droplet keeps its disk, addresses and volumes; its host stops
                # and boots again with its files (fresh=False) at power_on.
                self._shut_down(droplet_id, record)
        # A reserved IP reassigned to another droplet leaves the old one in the same action:
        # every host losing or changing its address lets go before any takes one.
        booted = [(seen[i], r) for i, r in sorted(self.droplets.items())
                  if r["booted"] and i in seen]
        for droplet, record in booted:
            if record["reserved"] not in (None, (droplet["reserved_ips"] or [None])[0]):
                self._reserve(droplet, record, release_only=True)
        for droplet, record in booted:
            self._reserve(droplet, record)
        for droplet_id, record in list(self.droplets.items()):
            if droplet_id not in seen and record["booted"]:
                self._shut_down(droplet_id, record)
        self._reconcile_volumes(volumes, seen)
        self.polls += 1

    # ---- droplets -------------------------------------------------------------------------

    def _boot(self, droplet):
        record = self.droplets.get(droplet["id"])
        if record is not None and record["booted"]:
            return
        if not droplet["private"] or not droplet["public"]:
            return
        if self.require_key and \
                self._key_blob(self.hosts.ssh_public_key) not in \
                {self._key_blob(k) for k in droplet["public_keys"]}:
            self._error(droplet["id"], "droplet %s was created without the sandbox's SSH key "
                        "among its ssh_keys: root could not log in, so it gets no host"
                        % droplet["name"])
            return
        name = record["host"] if record is not None else self._host_name(droplet)
        try:
            self.hosts.boot(name, droplet["private"], public_address=droplet["public"],
                            public_on_interface=True, login_user="root", delay=self.boot_delay,
                            fresh=record is None)
            if self.egress and hasattr(self.hosts, "set_egress"):
                self.hosts.set_egress(name, True)
        except SandboxError as exc:
            self._error(droplet["id"], "cannot boot a host for droplet %s at %s / %s: %s"
                        % (droplet["name"], droplet["public"], droplet["private"], exc))
            return
        LOG.info("booting sandbox host %s for droplet %s at %s (public %s)", name,
                 droplet["id"], droplet["private"], droplet["public"])
        self.droplets[droplet["id"]] = {"host": name, "address": droplet["private"],
                                        "public": droplet["public"], "reserved": None,
                                        "booted": True}

    def _reserve(self, droplet, record, release_only=False):
        # DigitalOcean allows one reserved IP per droplet.
        wanted = None if release_only else (droplet["reserved_ips"] or [None])[0]
        if wanted == record["reserved"]:
            return
        try:
            self.hosts.set_public_address(record["host"], wanted)
        except SandboxError as exc:
            self._error(droplet["id"], "cannot route reserved IP %s to %s: %s"
                        % (wanted, record["host"], exc))
            return
        record["reserved"] = wanted

    def _shut_down(self, droplet_id, record):
        LOG.info("removing sandbox host %s (droplet %s is gone)", record["host"], droplet_id)
        try:
            self.hosts.kill(record["host"])
            if record.get("reserved"):
                self.hosts.set_public_address(record["host"], None)
        except SandboxError as exc:
            self._error(droplet_id, "cannot remove host %s: %s" % (record["host"], exc))
        record["booted"], record["reserved"] = False, None

    def _host_name(self, droplet):
        name = re.sub(r"[^A-Za-z0-9_.-]", "-", droplet["name"])[:63].strip("-._")
        existing = self.hosts.hosts.get(name) if name else None
        if not name or (existing is not None and existing.state not in (FAILED, TERMINATED)):
            return "droplet-%s" % droplet["id"]
        return name

    @staticmethod
    def _key_blob(public_key):
        parts = (public_key or "").split()
        return parts[1] if len(parts) > 1 else None

    # ---- volumes --------------------------------------------------------------------------

    def _reconcile_volumes(self, volumes, droplets):
        if self.devices is None:
            return
        for volume_id, droplet_id in list(self.volumes.items()):
            volume = volumes.get(volume_id)
            if droplet_id is not None and (volume is None or droplet_id not in droplets or
                                           droplet_id not in volume["droplet_ids"]):
                self._call("detach", volume_id, "detaching volume %s" % volume_id)
                self.volumes[volume_id] = None
            if volume is None:
                # Deleting a volume deletes its data: the backing file goes too.
                self._call("delete", volume_id, "deleting volume %s" % volume_id)
                del self.volumes[volume_id]
        for volume_id, volume in volumes.items():
            if self.volumes.get(volume_id) is not None:
                continue
            for droplet_id in volume["droplet_ids"]:
                record = self.droplets.get(droplet_id)
                # Only once the host runs: a fresh boot empties its directories, by-id too.
                if record is not None and record["booted"] and droplet_id in droplets and \
                        self.hosts.ready(record["host"]):
                    self._attach(volume, droplet_id, record["host"])

    def _attach(self, volume, droplet_id, host):
        what = "attaching volume %s to %s" % (volume["name"], host)
        if self._call("attach", volume["id"], what, host, BY_ID_PREFIX + volume["name"],
                      volume["size_gigabytes"], key=volume["id"]):
            LOG.info("%s", what)
            self.volumes[volume["id"]] = droplet_id

    def _call(self, verb, volume_id, what, *args, **kwargs):
        try:
            if verb == "attach":
                self.devices.attach(*args, **kwargs)
            else:
                getattr(self.devices, verb)(volume_id)
        except Exception as exc:  # pylint: disable=broad-except
            self._error(volume_id, "%s failed: %s" % (what, exc))
            return False
        return True
