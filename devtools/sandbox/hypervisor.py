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

Errors (an address outside the cidr, an emulator that went away) are logged once per instance
and kept in ``errors``; the loop keeps running.
"""

import logging
import re
import threading
import time

from .hosts import FAILED, TERMINATED, SandboxError

LOG = logging.getLogger(__name__)

LIVE_STATES = ("pending", "running")
GONE_STATES = ("stopping", "stopped", "shutting-down", "terminated")


class Hypervisor(threading.Thread):
    """Keeps SandboxHosts in step with the emulator's EC2 instances. See the module docstring.

    instances: instance id -> {"host", "address", "state", "name_tag", "booted"}.
    errors: (instance id or "", message) pairs, oldest first.
    """

    def __init__(self, ec2, hosts, interval=0.2, tag_key="dialog:deployment", boot_delay=None,
                 name_wait=1.0):
        super().__init__(name="sandbox-hypervisor", daemon=True)
        self.ec2 = ec2
        self.hosts = hosts
        self.interval = interval
        self.tag_key = tag_key
        self.boot_delay = boot_delay
        self.name_wait = name_wait
        self.instances = {}
        self.errors = []
        self.polls = 0
        self._halt = threading.Event()
        self._reported = set()
        self._first_seen = {}

    def run(self):
        while not self._halt.is_set():
            try:
                self.poll_once()
            except Exception as exc:  # pylint: disable=broad-except
                self._error("", "describe_instances failed: %s" % exc)
            self._halt.wait(self.interval)

    def stop(self, timeout=10.0):
        """Stop polling (hosts keep running; SandboxHosts.close() removes them)."""
        self._halt.set()
        if self.is_alive():
            self.join(timeout)

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
        self.polls += 1

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
                                           "name_tag": tags.get("Name"), "booted": True}
        elif state in GONE_STATES and record is not None and record["booted"]:
            self._shut_down(instance_id, record, state)

    def _shut_down(self, instance_id, record, state):
        LOG.info("removing sandbox host %s (%s is %s)", record["host"], instance_id, state)
        try:
            self.hosts.kill(record["host"])
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

    def _error(self, key, message):
        if (key, message) in self._reported:
            return
        self._reported.add((key, message))
        LOG.warning("%s", message)
        self.errors.append((key, message))
