"""A local AWS for the AWS driver: moto's server on 127.0.0.1, reached over real HTTP.

    with AwsEmulator() as aws:
        driver = Driver(aws.profile(), "us-east-1")
        driver.reconcile(plan)
        print(aws.resource_counts("dialog"))

The driver talks to it exactly as to AWS (boto3, signing, retries, paginators, waiters); only
the profile's endpoint_url differs. Its image catalog holds two Debian 12 AMIs under Debian's
owner id, so the driver's own image lookup runs. Throttler injects throttling errors in front
of it. Used by the tests, the benchmark and the local sandbox, so it has no pytest dependency.
"""

import json
import logging
import os
import random
import shutil
import tempfile
import urllib.request

import boto3
from botocore.awsrequest import AWSResponse

REGION = "us-east-1"
DEPLOYMENT_TAG = "dialog:deployment"
LIVE_STATES = ["pending", "running", "stopping", "stopped"]
DEBIAN_OWNER = "136693071363"
# The newest of the two images below: what the driver should pick.
DEBIAN_IMAGE = "ami-0d12b00c0ffee1202"
# A Linux AMI of moto's built-in catalog, used when another moto user already loaded it.
MOTO_IMAGE = "ami-04681a1dbd79675a5"


def _debian_ami(ami_id, date):
    name = "debian-12-amd64-%s" % date.replace("-", "")[:8]
    return {"ami_id": ami_id, "name": name, "description": "Debian 12 (%s)" % date,
            "owner_id": DEBIAN_OWNER, "image_location": "amazon/" + name, "state": "available",
            "public": True, "architecture": "x86_64", "platform": None,
            "root_device_type": "ebs", "root_device_name": "/dev/xvda", "image_type": "machine",
            "virtualization_type": "hvm", "hypervisor": "xen", "sriov": "simple",
            "creation_date": date + "T18:11:00.000Z"}


IMAGES = [_debian_ami("ami-0d12b00c0ffee1201", "2024-06-01"),
          _debian_ami(DEBIAN_IMAGE, "2024-07-17")]


class _Body:
    """Just enough of a urllib3 response for botocore to read an injected reply."""

    def __init__(self, data):
        self._data = data

    def stream(self, **_):
        yield self._data


def error_response(code, message, status=400):
    """An EC2 error reply, for a botocore before-send handler to return instead of sending."""
    body = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>%s</Code>"
            "<Message>%s</Message></Error></Errors><RequestID>emulated</RequestID></Response>"
            % (code, message)).encode()
    return AWSResponse("http://emulated", status, {"Content-Type": "text/xml"}, _Body(body))


def _s3_error(code, message, status):
    body = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>%s</Code><Message>%s"
            "</Message><RequestId>emulated</RequestId></Error>" % (code, message)).encode()
    return AWSResponse("http://emulated", status, {"Content-Type": "application/xml"},
                       _Body(body))


def _query_error(code, message, status):
    body = ("<ErrorResponse><Error><Type>Sender</Type><Code>%s</Code><Message>%s</Message>"
            "</Error><RequestId>emulated</RequestId></ErrorResponse>" % (code, message)).encode()
    return AWSResponse("http://emulated", status, {"Content-Type": "text/xml"}, _Body(body))


class Throttler:
    """Makes a seeded fraction of requests fail with a throttling error before they are sent.

    Pass install as the driver's client_hook: Driver(profile, region, client_hook=t.install).
    Each HTTP attempt draws anew, so botocore's retries are throttled at the same rate.
    """

    def __init__(self, rate=0.2, seed=0, code="RequestLimitExceeded"):
        self.rate = rate
        self.code = code
        self.random = random.Random(seed)
        self.throttled = 0
        self.sent = 0

    def install(self, client):
        client.meta.events.register("before-send", self._before_send)

    def _before_send(self, event_name="", **_):
        if self.random.random() < self.rate:
            self.throttled += 1
            service = event_name.split(".")[1] if event_name.count(".") >= 2 else "ec2"
            if service == "s3":
                # S3 throttles with 503 SlowDown in its own error format (S3 API Reference,
                # "Error responses").
                return _s3_error("SlowDown", "Please reduce your request rate.", 503)
            if service in ("iam", "sts"):
                return _query_error("Throttling", "Rate exceeded", 400)
            return error_response(self.code, "Request limit exceeded.")
        self.sent += 1
        return None


def strict_elastic_ips():
    """Make moto's AssociateAddress (in this process) behave as EC2's reference says:

    * an Elastic IP associated already is refused with Resource.AlreadyAssociated unless
      AllowReassociation is true ("AllowReassociation: ... If false, the address is not
      reassociated if it is already associated"; for VPC addresses it defaults to false).
      moto lets an InstanceId request take an address that was associated through a network
      interface;
    * the previous holder loses the address: its network interface no longer answers it
      (moto keeps showing it as that instance's PublicIpAddress too).

    Idempotent; moto's own checks stay in place."""
    # pylint: disable=import-outside-toplevel
    from moto.ec2.exceptions import ResourceAlreadyAssociatedError
    from moto.ec2.models.elastic_ip_addresses import ElasticAddressBackend
    original = ElasticAddressBackend.associate_address
    if getattr(original, "dialog_strict", False):
        return

    def associate_address(self, instance=None, eni=None, address=None, allocation_id=None,
                          reassociate=False):
        eips = self.address_by_ip([address]) if address else \
            self.address_by_allocation([allocation_id])
        eip = eips[0]
        target = eni or (instance.nics[0] if instance else None)
        old = eip.eni
        if old is not None and target is not None and old.id != target.id and not reassociate:
            raise ResourceAlreadyAssociatedError(eip.public_ip)
        result = original(self, instance=instance, eni=eni, address=address,
                          allocation_id=allocation_id, reassociate=True)
        if old is not None and old is not result.eni and old.public_ip == eip.public_ip:
            old.public_ip = None
        return result

    associate_address.dialog_strict = True
    ElasticAddressBackend.associate_address = associate_address


class AwsEmulator:
    """moto's server in a thread of this process, on a free loopback port."""

    def __init__(self, port=0):
        self.port = port
        self.endpoint_url = None
        self.image = None
        self._server = None
        self._clients = {}
        self._dir = None

    def start(self):
        # moto reads MOTO_AMIS_PATH when it first loads its EC2 models, hence the late import.
        self._dir = tempfile.mkdtemp(prefix="aws-emulator-")
        images = os.path.join(self._dir, "amis.json")
        with open(images, "w", encoding="utf-8") as handle:
            json.dump(IMAGES, handle)
        os.environ.setdefault("MOTO_AMIS_PATH", images)
        from moto.server import ThreadedMotoServer
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        strict_elastic_ips()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = "http://%s:%d" % (host, port)
        # moto's backends are global to the process and outlive a server: without this, an
        # emulator started after another (a later test on the same worker) would open an
        # account holding the earlier one's instances. Each emulator is a new, empty account.
        self.reset()
        found = self.client().describe_images(Owners=[DEBIAN_OWNER])["Images"]
        self.image = None if found else MOTO_IMAGE
        return self

    def stop(self):
        if self._server:
            self._server.stop()
            self._server = None
            self._clients = {}
        # moto keeps reading MOTO_AMIS_PATH's presence; the file goes once nothing names it.
        if self._dir and not os.environ.get("MOTO_AMIS_PATH", "").startswith(self._dir):
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def reset(self):
        """Forget every resource (moto's /moto-api/reset); the image catalog comes back."""
        request = urllib.request.Request(self.endpoint_url + "/moto-api/reset", data=b"",
                                         method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()

    def profile(self, **overrides):
        """A pack profile that points the AWS driver at this emulator. It names no image, so
        the driver looks up Debian 12 as it does on AWS (unless moto lacks the images)."""
        profile = {"name": "emulator", "provider": "aws", "region": REGION,
                   "endpoint_url": self.endpoint_url, "aws_access_key_id": "testing",
                   "aws_secret_access_key": "testing", "admin_networks": [],
                   "ssh_key_names": []}
        if self.image:
            profile["image"] = self.image
        profile.update(overrides)
        return profile

    def client(self, service="ec2"):
        """A plain boto3 client on the emulator, for looking at its state (not recorded)."""
        if service not in self._clients:
            self._clients[service] = boto3.client(
                service, region_name=REGION, endpoint_url=self.endpoint_url,
                aws_access_key_id="testing", aws_secret_access_key="testing")
        return self._clients[service]

    def snapshot(self):
        """Everything the region holds now, read once; count and audit it without re-reading."""
        return Snapshot(self.client())

    def resource_counts(self, deployment=None):
        """See Snapshot.counts."""
        return self.snapshot().counts(deployment)

    def orphans(self, deployment=None):
        """See Snapshot.orphans."""
        return self.snapshot().orphans(deployment)


def _pages(client, operation, key):
    if client.can_paginate(operation):
        return [x for page in client.get_paginator(operation).paginate()
                for x in page.get(key) or []]
    return getattr(client, operation)().get(key) or []


def _tag(item, key):
    return {t["Key"]: t["Value"] for t in item.get("Tags") or []}.get(key)


KINDS = [  # counted kind, describe operation, result key, id key
    ("instances", "describe_instances", "Reservations", "InstanceId"),
    ("volumes", "describe_volumes", "Volumes", "VolumeId"),
    ("addresses", "describe_addresses", "Addresses", "AllocationId"),
    ("security_groups", "describe_security_groups", "SecurityGroups", "GroupId"),
    ("vpcs", "describe_vpcs", "Vpcs", "VpcId"),
    ("subnets", "describe_subnets", "Subnets", "SubnetId"),
    ("internet_gateways", "describe_internet_gateways", "InternetGateways",
     "InternetGatewayId"),
    ("route_tables", "describe_route_tables", "RouteTables", "RouteTableId"),
    ("network_interfaces", "describe_network_interfaces", "NetworkInterfaces",
     "NetworkInterfaceId"),
    ("nat_gateways", "describe_nat_gateways", "NatGateways", "NatGatewayId"),
]


class Snapshot:
    """The emulator's resources, minus the region's defaults (default VPC and what is in it,
    main route tables, default security groups) and terminated instances."""

    def __init__(self, client):
        found = {kind: _pages(client, op, key) for kind, op, key, _ in KINDS}
        found["instances"] = [i for r in found["instances"] for i in r["Instances"]
                              if i["State"]["Name"] in LIVE_STATES]
        default = {v["VpcId"] for v in found["vpcs"] if v.get("IsDefault")}
        found["vpcs"] = [v for v in found["vpcs"] if v["VpcId"] not in default]
        # AWS lists a deleted NAT gateway for about an hour; it costs and holds nothing.
        found["nat_gateways"] = [n for n in found["nat_gateways"]
                                 if n["State"] not in ("deleted", "failed")]
        found["subnets"] = [s for s in found["subnets"] if s["VpcId"] not in default]
        found["security_groups"] = [g for g in found["security_groups"]
                                    if g["GroupName"] != "default"]
        found["internet_gateways"] = [
            g for g in found["internet_gateways"]
            if not {a["VpcId"] for a in g.get("Attachments") or []} & default]
        found["route_tables"] = [t for t in found["route_tables"]
                                 if t["VpcId"] not in default and not any(
                                     a.get("Main") for a in t.get("Associations") or [])]
        self.resources = found

    def of(self, deployment=None):
        """Kind -> resources, all of them or those tagged with the deployment. moto does not
        tag network interfaces: those in the deployment's VPCs or instances count as its."""
        if deployment is None:
            return self.resources
        mine = {kind: [r for r in items if _tag(r, DEPLOYMENT_TAG) == deployment]
                for kind, items in self.resources.items()}
        vpcs = {v["VpcId"] for v in mine["vpcs"]}
        instances = {i["InstanceId"] for i in mine["instances"]}
        mine["network_interfaces"] = [
            n for n in self.resources["network_interfaces"]
            if n.get("VpcId") in vpcs or (n.get("Attachment") or {}).get("InstanceId") in instances]
        return mine

    def counts(self, deployment=None):
        """Kind -> how many: everything but the defaults, or what the deployment's tags cover."""
        return {kind: len(items) for kind, items in self.of(deployment).items()}

    def orphans(self, deployment=None):
        """What nothing uses (detached volumes, unassociated addresses, loose interfaces) and,
        with a deployment, every resource of the region its tags miss."""
        mine = self.of(deployment)
        interfaces = {n["NetworkInterfaceId"] for n in self.resources["network_interfaces"]}
        found = ["volume %s is %s" % (v["VolumeId"], v["State"]) for v in mine["volumes"]
                 if v["State"] != "in-use"]
        found += ["address %s is not associated" % a["PublicIp"] for a in mine["addresses"]
                  if a.get("NetworkInterfaceId") not in interfaces]
        # moto reports a NAT gateway's interface as available; AWS has it in use by the gateway.
        nat = {a.get("NetworkInterfaceId") for g in self.resources["nat_gateways"]
               for a in g.get("NatGatewayAddresses") or []}
        found += ["network interface %s is %s" % (n["NetworkInterfaceId"], n.get("Status"))
                  for n in mine["network_interfaces"]
                  if n.get("Status") != "in-use" and n["NetworkInterfaceId"] not in nat]
        if deployment is not None:
            for kind, _, _, id_key in KINDS:
                ids = {r[id_key] for r in mine[kind]}
                found += ["untagged %s %s" % (kind, r[id_key]) for r in self.resources[kind]
                          if r[id_key] not in ids]
        return found
