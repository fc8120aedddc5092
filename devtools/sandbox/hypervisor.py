"""Boot a sandbox host for every instance the AWS emulator runs.

    ec2 = boto3.client("ec2", endpoint_url="http://127.0.0.1:5000", region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    with SandboxHosts(workdir) as hosts:
        hypervisor = Hypervisor(ec2, hosts)
        hypervisor.start()
        ...                                   # RunInstances: a host boots at its private IP
        hypervisor.stop()

Every `interval` seconds the hypervisor lists the instances tagged with `tag_key` (default
``dialog:deployment``, the pack's deployment tag) with the describe_instances paginator, and:

* an instance that is pending or running gets a host (once) at its PrivateIpAddress, which
  must lie in the sandbox's cidr (create the VPC and subnets in it, e.g. 10.80.0.0/16). The
  host is named by the instance's ``Name`` tag; an instance without one is given `name_wait`
  seconds (default 1) for the tag to appear (RunInstances then CreateTags) and is then named
  by its instance id, as is one whose Name another live host already has. A host keeps its
  name; ``instances`` records the current tag;
* an instance that is stopping, stopped, shutting down, terminated, or gone loses its host
  (processes killed, namespace removed). A stopped instance that starts again boots with the
  files it had (fresh=False), like an EBS root volume; a new instance starts empty.

* a booted instance's PublicIpAddress (an Elastic IP, or one assigned at launch) becomes its
  host's public address (SandboxHosts.set_public_address: a 1:1 NAT, as AWS's internet gateway
  does), and its egress is re-evaluated every poll (SandboxHosts.set_egress). AWS's rule: an
  instance reaches the internet when its subnet's route table (the VPC's main route table when
  the subnet has no explicit association) routes 0.0.0.0/0 to an internet gateway attached to
  the VPC and the instance has a public IPv4 address, or routes 0.0.0.0/0 to a NAT gateway that
  is available ("Enable internet access for a VPC using an internet gateway"; "NAT gateways",
  AWS VPC User Guide). One describe_route_tables, describe_internet_gateways and
  describe_nat_gateways call per poll, made only while a host runs.

moto hands out Elastic IPs in 127.0.0.0/8, which this machine could never route to a host;
``use_public_elastic_ips()`` makes an in-process moto draw them from its public range instead.

Errors (an address outside the cidr, an emulator that went away) are logged once per instance
and kept in ``errors``; the loop keeps running.
"""

import logging
import re
import threading
import time

from .hosts import FAILED, TERMINATED, SandboxError
from . import volumes

LOG = logging.getLogger(__name__)

LIVE_STATES = ("pending", "running")
GONE_STATES = ("stopping", "stopped", "shutting-down", "terminated")
DEFAULT_ROUTE = "0.0.0.0/0"


def use_public_elastic_ips():
    """Make moto (in this process) allocate Elastic IPs from its public-looking range
    (54.214.0.0/16, which it uses for auto-assigned addresses) instead of 127.0.0.0/8: AWS's
    Elastic IPs are public addresses, and the sandbox translates them to hosts."""
    # pylint: disable=import-outside-toplevel
    from moto.ec2.models import elastic_ip_addresses
    from moto.ec2.utils import random_public_ip
    elastic_ip_addresses.random_ip = random_public_ip


def egress_by_subnet(route_tables, internet_gateways, nat_gateways):
    """(subnet id or VPC id) -> (default route via an attached internet gateway, default route
    via an available NAT gateway). A VPC id's entry is its main route table's, for subnets
    without an explicit association."""
    attached = {(g["InternetGatewayId"], a["VpcId"]) for g in internet_gateways
                for a in g.get("Attachments") or []
                if a.get("State") in ("available", "attached")}
    available = {n["NatGatewayId"] for n in nat_gateways if n.get("State") == "available"}
    found = {}
    for table in route_tables:
        via_igw = via_nat = False
        for route in table.get("Routes") or []:
            if route.get("DestinationCidrBlock") != DEFAULT_ROUTE or \
                    route.get("State") == "blackhole":
                continue
            via_igw = via_igw or (route.get("GatewayId"), table["VpcId"]) in attached
            via_nat = via_nat or route.get("NatGatewayId") in available
        for association in table.get("Associations") or []:
            key = table["VpcId"] if association.get("Main") else association.get("SubnetId")
            if key:
                found[key] = (via_igw, via_nat)
    return found


def has_egress(instance, egress):
    """AWS's rule (see the module docstring) for one described instance."""
    via_igw, via_nat = egress.get(instance.get("SubnetId")) or \
        egress.get(instance.get("VpcId")) or (False, False)
    return bool(via_nat or (via_igw and instance.get("PublicIpAddress")))


class Poller(threading.Thread):
    """A hypervisor's loop: poll_once() every `interval` seconds until stop(). A failed poll
    is logged once per message and kept in ``errors`` ((key, message) pairs, oldest first);
    the loop keeps running. ``polls`` counts the polls that completed."""

    def __init__(self, name, interval, failure):
        super().__init__(name=name, daemon=True)
        self.interval = interval
        self.errors = []
        self.polls = 0
        self._failure = failure
        self._halt = threading.Event()
        self._reported = set()

    def poll_once(self):
        raise NotImplementedError

    def run(self):
        while not self._halt.is_set():
            try:
                self.poll_once()
            except Exception as exc:  # pylint: disable=broad-except
                self._error("", "%s: %s" % (self._failure, exc))
            self._halt.wait(self.interval)

    def stop(self, timeout=10.0):
        """Stop polling (hosts keep running; SandboxHosts.close() removes them)."""
        self._halt.set()
        if self.is_alive():
            self.join(timeout)

    def _error(self, key, message):
        if (key, message) in self._reported:
            return
        self._reported.add((key, message))
        LOG.warning("%s", message)
        self.errors.append((key, message))


class Hypervisor(Poller):
    """Keeps SandboxHosts in step with the emulator's EC2 instances. See the module docstring.

    instances: instance id -> {"host", "address", "state", "name_tag", "booted", "public",
    "egress"}.
    errors: (instance id or "", message) pairs, oldest first.
    """

    def __init__(self, ec2, hosts, interval=0.5, tag_key="dialog:deployment", boot_delay=None,
                 name_wait=1.0, block_devices=None):
        super().__init__("sandbox-hypervisor", interval, "describe_instances failed")
        self.ec2 = ec2
        self.hosts = hosts
        self.tag_key = tag_key
        self.boot_delay = boot_delay
        self.name_wait = name_wait
        # A sandbox.volumes.BlockDevices for the instances' EBS volumes
        self.block_devices = block_devices
        self.instances = {}
        self._first_seen = {}

    def poll_once(self):
        """One reconciliation pass (also usable without starting the thread)."""
        seen = {}
        paginator = self.ec2.get_paginator("describe_instances")
        for page in paginator.paginate(Filters=[{"Name": "tag-key", "Values": [self.tag_key]}]):
            for reservation in page.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    seen[instance["InstanceId"]] = instance
        for instance_id, instance in seen.items():
            self._reconcile(instance_id, instance)
        for instance_id, record in list(self.instances.items()):
            if instance_id not in seen and record["booted"]:
                self._shut_down(instance_id, record, "gone")
        booted = [(i, seen[i]) for i, r in self.instances.items() if r["booted"] and i in seen]
        if booted:
            egress = egress_by_subnet(self._all("describe_route_tables", "RouteTables"),
                                      self._all("describe_internet_gateways",
                                                "InternetGateways"),
                                      self._all("describe_nat_gateways", "NatGateways"))
            # An Elastic IP that moved between instances (AssociateAddress with
            # AllowReassociation) leaves its old holder in the same EC2 call that gives it to
            # the new one: every host that loses or changes its address lets go first, then
            # the new holders take theirs, whatever order the instances are listed in.
            publics = {i: instance.get("PublicIpAddress") for i, instance in booted}
            for instance_id, _ in booted:
                if self.instances[instance_id].get("public") not in (None, publics[instance_id]):
                    self._set_public(instance_id, None)
            for instance_id, instance in booted:
                self._reach(instance_id, instance, egress)
        self._sync_volumes(seen)
        self.polls += 1

    def _sync_volumes(self, seen):
        """Data volumes as block devices on their hosts."""
        if self.block_devices is not None:
            try:
                volumes.sync_aws_volumes(self.ec2, self.block_devices, self.instances, seen,
                                         self.tag_key)
            except SandboxError as exc:
                self._error("", "volumes: %s" % exc)

    def _all(self, operation, key):
        return [item for page in self.ec2.get_paginator(operation).paginate()
                for item in page.get(key) or []]

    def _reach(self, instance_id, instance, egress):
        """Keep the host's public address and egress as AWS has them now."""
        record = self.instances[instance_id]
        public = instance.get("PublicIpAddress")
        allowed = has_egress(instance, egress)
        if record.get("public") != public and not self._set_public(instance_id, public):
            return
        try:
            if record.get("egress") != allowed:
                self.hosts.set_egress(record["host"], allowed)
                record["egress"] = allowed
        except SandboxError as exc:
            self._error(instance_id, "cannot give host %s public address %s / egress %s: %s"
                        % (record["host"], public, allowed, exc))

    def _set_public(self, instance_id, public):
        record = self.instances[instance_id]
        try:
            self.hosts.set_public_address(record["host"], public)
        except SandboxError as exc:
            self._error(instance_id, "cannot give host %s public address %s: %s"
                        % (record["host"], public, exc))
            return False
        record["public"] = public
        return True

    def _reconcile(self, instance_id, instance):
        state = instance["State"]["Name"]
        tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
        record = self.instances.get(instance_id)
        if record is not None:
            record["state"] = state
            record["name_tag"] = tags.get("Name")
        if state in LIVE_STATES:
            if record is not None and record["booted"]:
                return
            address = instance.get("PrivateIpAddress")
            if not address:
                return
            first_seen = self._first_seen.setdefault(instance_id, time.monotonic())
            if record is None and not tags.get("Name") and \
                    time.monotonic() - first_seen < self.name_wait:
                return
            name = record["host"] if record is not None else self._host_name(instance_id, tags)
            try:
                self.hosts.boot(name, address, delay=self.boot_delay, fresh=record is None)
            except SandboxError as exc:
                self._error(instance_id, "cannot boot a host for %s at %s: %s"
                            % (instance_id, address, exc))
                return
            LOG.info("booting sandbox host %s for %s at %s", name, instance_id, address)
            self.instances[instance_id] = {"host": name, "address": address, "state": state,
                                           "name_tag": tags.get("Name"), "booted": True,
                                           "public": None, "egress": False}
        elif state in GONE_STATES and record is not None and record["booted"]:
            self._shut_down(instance_id, record, state)

    def _shut_down(self, instance_id, record, state):
        LOG.info("removing sandbox host %s (%s is %s)", record["host"], instance_id, state)
        try:
            self.hosts.kill(record["host"])
            # A stopped instance keeps an Elastic IP but is unreachable; the next boot of the
            # host gets its address and egress again from the next poll.
            if record.get("public") is not None:
                self.hosts.set_public_address(record["host"], None)
            if record.get("egress"):
                self.hosts.set_egress(record["host"], False)
            record["public"], record["egress"] = None, False
        except SandboxError as exc:
            self._error(instance_id, "cannot remove host %s: %s" % (record["host"], exc))
        record["booted"] = False
        record["state"] = state

    def _host_name(self, instance_id, tags):
        name = re.sub(r"[^A-Za-z0-9_.-]", "-", tags.get("Name") or "")[:63].strip("-._")
        if not name:
            return instance_id
        existing = self.hosts.hosts.get(name)
        if existing is not None and existing.state not in (FAILED, TERMINATED):
            return instance_id
        return name
