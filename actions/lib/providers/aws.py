"""The AWS driver: reconciles EC2 to a plan, finding every resource again by its tags.

Crash safety rests on three rules: a resource is tagged in the call that creates it
(TagSpecifications), every run reads the state back from AWS, and each step does only what
that state lacks. A run that died half-way is finished by the next one; nothing is kept locally.
"""

import contextlib
import hashlib
import ipaddress
import time

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.exceptions import (BotoCoreError, ClientError, ConnectionError as BotoConnectionError,
                                 EndpointConnectionError, HTTPClientError, NoCredentialsError,
                                 PartialCredentialsError, WaiterError)

from lib.catalog import default_catalog
from lib.cloud import object_storage
from lib.cloud.aws_egress import (DEFAULT_ROUTE, default_route, egress_problem,
                                  hosts_needing_public_subnet)
from lib.cloud.login_users import aws_login_users
from lib.cloud.volume_devices import aws_device, xen_device
from lib.cloud.zones import (DEFAULT_RACK, check_named_zones, free_subnet, order_zones,
                             zone_of)
from lib.errors import CredentialsError, InputError, ProviderError, QuotaError, ResourceFailed
from lib.planner import validate_deployment_name
from lib.profiles import SECRET_FIELDS
from lib.providers import base
from lib.providers.base import (MANAGED_BY, TAG_DEPLOYMENT, TAG_GROUP, TAG_INDEX, TAG_MANAGED,
                                TAG_ROLES, change)

DEBIAN_OWNER = "136693071363"
DEBIAN_NAME = "debian-12-amd64-*"
VPC_CIDR = "10.40.0.0/16"
# Each zone has a public subnet (proxies, hosts with EIPs; the first zone's also the NAT
# gateway) and a private one (everything else, out through the NAT gateway), each the lowest
# free /20 of the VPC: the first zone gets 10.40.0.0/20 and 10.40.16.0/20, as networks made
# before zones did.
SUBNET_PREFIX = 20
PUBLIC, PRIVATE = "public", "private"
DATA_DEVICES = "fghijklmnop"
SESSION_NAME = "stackstorm-dialog"

TAG_BATCH = "dialog:batch"        # instance: the host indexes of its RunInstances, e.g. "4,5"
TAG_DISKS = "dialog:disks"        # instance: device=purpose:kind, e.g. "xvda=system:ssd,sdf=..."
TAG_ROLE = "dialog:role"          # security group: its role, or HOSTS for the deployment group
TAG_HOST = "dialog:host"          # elastic IP: the host it belongs to
TAG_SLOT = "dialog:slot"          # elastic IP: which of the host's addresses (1-based)
TAG_FLOATING = "dialog:floating"  # elastic IP: the plan's floating address name
TAG_NET = "dialog:network"        # subnet, route table: public or private (none: public)
TAG_NAT = "dialog:nat"            # elastic IP, NAT gateway: the deployment's egress
TAG_RACK = "dialog:rack"          # instance: the Cassandra rack it joined with (its zone)
HOSTS = "hosts"
NAT_LIVE = ["pending", "available"]

LIVE_STATES = ["pending", "running", "stopping", "stopped"]
READ_PREFIXES = ("Describe", "Get", "List", "Head")
RECORDED_SERVICES = ("ec2", "s3", "iam")
CREDENTIAL_CODES = {"AuthFailure", "UnauthorizedOperation", "InvalidClientTokenId",
                    "SignatureDoesNotMatch", "ExpiredToken", "RequestExpired", "AccessDenied",
                    "InvalidAccessKeyId", "OptInRequired", "UnrecognizedClientException"}
PERMISSION_CODES = {"UnauthorizedOperation", "AccessDenied"}
QUOTA_CODES = {"InsufficientFreeAddressesInSubnet", "MaxSpotInstanceCountExceeded",
               "InsufficientInstanceCapacity"}
THROTTLE_CODES = {"RequestLimitExceeded", "Throttling", "ThrottlingException"}
SIZE_CODES = {"InvalidParameterValue", "Unsupported", "InvalidInstanceType",
              "InvalidParameterCombination"}
IN_USE_CODES = {"DependencyViolation", "InvalidGroup.InUse", "InvalidIPAddress.InUse"}

# botocore's service models are large; one loader parses them once per process for every
# driver (a sensor or a benchmark makes many), instead of once per session.
_LOADER = botocore.loaders.create_loader()


def _new_session(**kwargs):
    core = botocore.session.Session()
    core.register_component("data_loader", _LOADER)
    session = boto3.Session(botocore_session=core, **kwargs)
    # boto3 appends its data directory to the loader's search path on every Session.
    _LOADER.search_paths[:] = list(dict.fromkeys(_LOADER.search_paths))
    return session


def _tags(resource):
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or []}


def _tag_list(tags):
    return [{"Key": k, "Value": str(v)} for k, v in tags.items()]


def _code(exc):
    return exc.response.get("Error", {}).get("Code", "")


def _token(seed, attempt):
    """RunInstances ClientToken: the same for a retry of one launch, so AWS runs it once."""
    return "dialog-" + hashlib.sha256(("%s|%d" % (seed, attempt)).encode()).hexdigest()[:48]


def _host_key(instance):
    """(group, index) of an instance: its index tag, else its place in the batch it came in."""
    tags = _tags(instance)
    group = tags.get(TAG_GROUP)
    try:
        if TAG_INDEX in tags:
            return group, int(tags[TAG_INDEX])
        batch = tags[TAG_BATCH].split(",")
        return group, int(batch[instance["AmiLaunchIndex"]])
    except (KeyError, IndexError, ValueError):
        return group, None


def _record(raw):
    """The parts of a DescribeInstances entry the driver works with."""
    nics = sorted(raw.get("NetworkInterfaces") or [],
                  key=lambda n: (n.get("Attachment") or {}).get("DeviceIndex", 0))
    nic = nics[0] if nics else {}
    ips = sorted(nic.get("PrivateIpAddresses") or [], key=lambda p: not p.get("Primary"))
    group, index = _host_key(raw)
    tags = _tags(raw)
    return {
        "id": raw["InstanceId"], "group": group, "index": index, "tags": tags,
        "zone": (raw.get("Placement") or {}).get("AvailabilityZone"),
        "size": raw.get("InstanceType"), "state": raw["State"]["Name"],
        "eni": nic.get("NetworkInterfaceId"),
        "private_ips": [p["PrivateIpAddress"] for p in ips],
        "launched": str(raw.get("LaunchTime", "")),
        "image": raw.get("ImageId"),
        "devices": {m["DeviceName"]: m["Ebs"]["VolumeId"]
                    for m in raw.get("BlockDeviceMappings") or [] if "Ebs" in m},
        "auto_delete": {m["Ebs"]["VolumeId"] for m in raw.get("BlockDeviceMappings") or []
                        if m.get("Ebs", {}).get("DeleteOnTermination")},
    }


def _flatten(permissions, key_of_group):
    """IpPermissions as a set of (protocol, from, to, kind, value); group ids become role keys."""
    rules = set()
    for perm in permissions:
        proto = {"6": "tcp", "17": "udp"}.get(perm["IpProtocol"], perm["IpProtocol"].lower())
        low, high = perm.get("FromPort"), perm.get("ToPort")
        for item in perm.get("IpRanges") or []:
            rules.add((proto, low, high, "cidr", item["CidrIp"]))
        for item in perm.get("Ipv6Ranges") or []:
            rules.add((proto, low, high, "cidr", item["CidrIpv6"]))
        for item in perm.get("UserIdGroupPairs") or []:
            rules.add((proto, low, high, "group", key_of_group(item["GroupId"])))
    return rules


def _permissions(rules, group_id_of):
    """The inverse of _flatten: one IpPermissions entry per protocol and port range."""
    merged = {}
    for proto, low, high, kind, value in sorted(rules, key=str):
        perm = merged.setdefault((proto, low, high), {"IpProtocol": proto})
        if low is not None:
            perm.update(FromPort=low, ToPort=high)
        if kind == "group":
            perm.setdefault("UserIdGroupPairs", []).append({"GroupId": group_id_of(value)})
        elif ":" in value:
            perm.setdefault("Ipv6Ranges", []).append({"CidrIpv6": value})
        else:
            perm.setdefault("IpRanges", []).append({"CidrIp": value})
    return list(merged.values())


def _describe_rules(rules, group_names):
    by_ports = {}
    for proto, low, high, kind, value in sorted(rules, key=str):
        ports = str(low) if low == high else "%s-%s" % (low, high)
        source = group_names.get(value, value) if kind == "group" else value
        by_ports.setdefault("%s %s" % (proto, ports), []).append(source)
    return ["%s from %s" % (ports, ", ".join(sources)) for ports, sources in by_ports.items()]


def _private_ips_needed(plan, host):
    """A host needs one private address per Elastic IP it holds (floating ones included)."""
    floating = sum(1 for f in plan["floating_ips"] if f["hosts"] and f["hosts"][0] == host["name"])
    return max(1, host["public_ips"] + floating)


class _State:
    """What exists for one deployment, read from AWS at the start of a run."""

    def __init__(self, deployment):
        self.deployment = deployment
        self.vpc = self.gateway = None
        self.vpc_id = None
        self.subnets = {}       # (PUBLIC/PRIVATE, zone) -> subnet (the operator's for both)
        self.zones = []         # the deployment's zones in slot order (lib.cloud.zones)
        self.route_tables = {}  # PUBLIC/PRIVATE -> route table the pack made
        self.nat = None         # the deployment's NAT gateway (pending or available)
        self.nat_addresses = []     # Elastic IPs tagged for the NAT gateway
        self.own_network = True
        self.groups = {}        # role key -> security group
        self.instances = []     # _record() of every live instance
        self.addresses = []
        self.image = None
        self.created = set()    # host keys launched in this run

    def subnet_id(self, side, zone=None):
        """The side's subnet in `zone`; zone None: in the first zone."""
        if zone is None and self.zones:
            zone = self.zones[0]
        subnet = self.subnets.get((side, zone))
        return subnet["SubnetId"] if subnet else None

    def side_subnets(self, side):
        return [s for (sd, _), s in sorted(self.subnets.items()) if sd == side]

    def group_key(self, group_id):
        for key, group in self.groups.items():
            if group["GroupId"] == group_id:
                return key
        return group_id

    def group_id(self, key):
        return self.groups[key]["GroupId"] if key in self.groups else key


class Driver(base.Driver):
    """EC2 instances, EBS volumes, Elastic IPs, security groups and (unless the profile names
    one) a VPC of its own, all tagged with the deployment."""

    name = "aws"
    WAIT_DELAY = 5          # seconds between polls of instance state
    WAIT_ATTEMPTS = 120     # polls before giving up (10 minutes)
    MAX_ATTEMPTS = 8        # botocore attempts per request, retries of throttling included
    CONNECT_TIMEOUT = 10
    READ_TIMEOUT = 60

    def __init__(self, profile, region, calls=None, progress=None, wait_delay=None,
                 wait_attempts=None, max_attempts=None, client_hook=None, catalog=None):
        """client_hook: callable(client) run on every boto3 client the driver makes, e.g. to
        register botocore event handlers (the AWS emulator's throttling uses it)."""
        super().__init__(profile, region, calls=calls, progress=progress)
        self.wait_delay = self.WAIT_DELAY if wait_delay is None else wait_delay
        self.wait_attempts = self.WAIT_ATTEMPTS if wait_attempts is None else wait_attempts
        self.max_attempts = max_attempts or self.MAX_ATTEMPTS
        self.client_hook = client_hook
        self.catalog = catalog or default_catalog()
        self._ec2 = None
        self._ec2_once = None
        self._clients = {}
        self.kept = []      # what the last destroy left in place on purpose (the files bucket)
        self._where = "profile %r (aws, %s)" % (str(profile.get("name") or "default"), region)

    # ---- sessions and clients ----------------------------------------------------------------

    @property
    def ec2(self):
        if self._ec2 is None:
            with self._errors():
                self._ec2 = self._client(self._session(), "ec2")
        return self._ec2

    @property
    def ec2_once(self):
        """EC2 without botocore's retries, for the creates that take no ClientToken (see
        _create_once): a retry after a lost response would make a second resource."""
        if self._ec2_once is None:
            with self._errors():
                self._ec2_once = self._client(self._session(), "ec2", retry=False)
        return self._ec2_once

    def _other_client(self, service):
        if service not in self._clients:
            with self._errors():
                self._clients[service] = self._client(self._session(), service)
        return self._clients[service]

    def _session(self):
        keys = {k: self.profile[k] for k in
                ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")
                if self.profile.get(k)}
        if ("aws_access_key_id" in keys) != ("aws_secret_access_key" in keys):
            raise PartialCredentialsError(provider="profile", cred_var="aws_secret_access_key")
        session = _new_session(region_name=self.region, **keys)
        role = self.profile.get("aws_role_arn")
        if not role:
            return session
        sts = self._client(session, "sts")
        creds = sts.assume_role(RoleArn=role, RoleSessionName=SESSION_NAME)["Credentials"]
        return _new_session(region_name=self.region, aws_access_key_id=creds["AccessKeyId"],
                            aws_secret_access_key=creds["SecretAccessKey"],
                            aws_session_token=creds["SessionToken"])

    def _client(self, session, service, retry=True):
        # botocore's retries "max_attempts" counts the retries; total_max_attempts 1: none.
        retries = {"mode": "standard", "max_attempts": self.max_attempts} if retry else \
            {"mode": "standard", "total_max_attempts": 1}
        config = Config(region_name=self.region, connect_timeout=self.CONNECT_TIMEOUT,
                        read_timeout=self.READ_TIMEOUT, user_agent_extra=SESSION_NAME,
                        retries=retries)
        # endpoint_url=None leaves boto3's own AWS_ENDPOINT_URL* variables in charge.
        client = session.client(service, region_name=self.region, config=config,
                                endpoint_url=self.profile.get("endpoint_url") or None)
        client.meta.events.register("after-call", self._after_call)
        if self.client_hook:
            self.client_hook(client)
        return client

    def _after_call(self, http_response, model, **_):
        # after-call fires once per API call, after botocore's retries, and for failed calls
        # too: only calls AWS carried out are recorded.
        if http_response is None or http_response.status_code >= 300:
            return
        service = model.service_model.service_name
        self.calls.record(model.name, service in RECORDED_SERVICES
                          and not model.name.startswith(READ_PREFIXES))

    # ---- errors ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, asking=None, size=None):
        """Turn botocore failures into errors that say what to change, without secrets."""
        try:
            yield
        except ClientError as exc:
            raise self._translate(exc, asking, size) from None
        except EndpointConnectionError as exc:
            endpoint = self._scrub(str(exc.kwargs.get("endpoint_url", "")))
            raise ProviderError("%s: cannot reach the EC2 endpoint %s; check that %r is an AWS "
                                "region and, if set, the profile's endpoint_url"
                                % (self._where, endpoint, self.region)) from None
        except (NoCredentialsError, PartialCredentialsError):
            raise CredentialsError("%s: no usable credentials: set aws_access_key_id and "
                                   "aws_secret_access_key, or run where an instance role is "
                                   "available" % self._where) from None
        except BotoConnectionError as exc:
            raise ProviderError("%s: the connection to EC2 failed (%s)"
                                % (self._where, type(exc).__name__)) from None
        except BotoCoreError as exc:
            raise ProviderError("%s: %s" % (self._where, self._scrub(str(exc)))) from None

    def _translate(self, exc, asking, size):
        code = _code(exc)
        message = self._scrub(exc.response.get("Error", {}).get("Message", ""))
        operation = exc.operation_name
        if code in CREDENTIAL_CODES:
            text = "%s: the credentials were refused (%s)" % (self._where, code)
            if code in PERMISSION_CODES:
                text += " calling %s; the IAM policy must allow it" % operation
            return CredentialsError(text)
        if code in QUOTA_CODES or (code.endswith("LimitExceeded") and code not in THROTTLE_CODES):
            return QuotaError("%s: the account's limits do not allow %s (AWS said %s: %s)"
                              % (self._where, asking or operation, code, message))
        if size and code in SIZE_CODES:
            return ProviderError("%s: AWS refused instance type %s for %s; check that %s is "
                                 "offered in %s (%s: %s)"
                                 % (self._where, size, asking, size, self.region, code, message))
        if code in THROTTLE_CODES:
            return ProviderError("%s: AWS kept throttling %s after %d attempts; try again later"
                                 % (self._where, operation, self.max_attempts))
        return ProviderError("%s: %s failed (%s: %s)" % (self._where, operation, code, message))

    def _scrub(self, text):
        for field in SECRET_FIELDS:
            secret = self.profile.get(field)
            if secret and len(str(secret)) >= 4:
                text = text.replace(str(secret), "********")
        return text

    # ---- reading -----------------------------------------------------------------------------

    def _describe(self, operation, key, **params):
        """Every page of a Describe call (one call where EC2 has no paginator)."""
        if self.ec2.can_paginate(operation):
            items = []
            for page in self.ec2.get_paginator(operation).paginate(**params):
                items.extend(page.get(key) or [])
            return items
        return getattr(self.ec2, operation)(**params).get(key) or []

    @staticmethod
    def _ours(deployment, *extra):
        return [{"Name": "tag:" + TAG_DEPLOYMENT, "Values": [deployment]},
                {"Name": "tag:" + TAG_MANAGED, "Values": [MANAGED_BY]}] + list(extra)

    def _instances(self, deployment):
        reservations = self._describe("describe_instances", "Reservations", Filters=self._ours(
            deployment, {"Name": "instance-state-name", "Values": LIVE_STATES}))
        found = [_record(i) for r in reservations for i in r["Instances"]]
        return sorted(found, key=lambda i: (i["launched"], i["id"]))

    def _addresses(self, deployment):
        """The hosts' Elastic IPs (the NAT gateway's one is not a host's)."""
        found = self._describe("describe_addresses", "Addresses", Filters=self._ours(deployment))
        return [a for a in found if TAG_NAT not in _tags(a)]

    def _read(self, deployment):
        state = _State(deployment)
        self._read_network(state)
        extra = [{"Name": "vpc-id", "Values": [state.vpc_id]}] if state.vpc_id else []
        for group in self._describe("describe_security_groups", "SecurityGroups",
                                    Filters=self._ours(deployment, *extra)):
            state.groups.setdefault(_tags(group).get(TAG_ROLE), group)
        state.instances = self._instances(deployment)
        everything = self._describe("describe_addresses", "Addresses",
                                    Filters=self._ours(deployment))
        state.addresses = [a for a in everything if TAG_NAT not in _tags(a)]
        state.nat_addresses = [a for a in everything if TAG_NAT in _tags(a)]
        return state

    def _read_network(self, state):
        subnet_id, vpc_id = self.profile.get("subnet_id"), self.profile.get("vpc_id")
        if subnet_id:
            subnet = self._describe("describe_subnets", "Subnets", SubnetIds=[subnet_id])[0]
            if vpc_id and subnet["VpcId"] != vpc_id:
                raise ProviderError("%s: subnet %s is not in VPC %s"
                                    % (self._where, subnet_id, vpc_id))
            state.own_network = False
            state.vpc_id = subnet["VpcId"]
            zone = subnet.get("AvailabilityZone")
            state.subnets = {(PUBLIC, zone): subnet, (PRIVATE, zone): subnet}
            state.zones = [zone]
            return
        if vpc_id:
            raise ProviderError("%s: vpc_id needs subnet_id: name the subnet to deploy into"
                                % self._where)
        ours = self._ours(state.deployment)
        vpcs = sorted(self._describe("describe_vpcs", "Vpcs", Filters=ours),
                      key=lambda v: v["VpcId"])
        if not vpcs:
            return
        state.vpc = vpcs[0]
        state.vpc_id = state.vpc["VpcId"]
        in_vpc = {"Name": "vpc-id", "Values": [state.vpc_id]}
        # Networks made before the private subnet existed have one untagged subnet and route
        # table: the public ones.
        for subnet in sorted(self._describe("describe_subnets", "Subnets",
                                            Filters=self._ours(state.deployment, in_vpc)),
                             key=lambda x: x["SubnetId"]):
            state.subnets.setdefault((_tags(subnet).get(TAG_NET, PUBLIC),
                                      subnet.get("AvailabilityZone")), subnet)
        gateways = self._describe("describe_internet_gateways", "InternetGateways", Filters=ours)
        state.gateway = gateways[0] if gateways else None
        for table in sorted(self._describe("describe_route_tables", "RouteTables",
                                           Filters=self._ours(state.deployment, in_vpc)),
                            key=lambda x: x["RouteTableId"]):
            state.route_tables.setdefault(_tags(table).get(TAG_NET, PUBLIC), table)
        nats = self._describe("describe_nat_gateways", "NatGateways", Filter=self._ours(
            state.deployment, in_vpc, {"Name": "state", "Values": NAT_LIVE}))
        state.nat = min(nats, key=lambda n: n["NatGatewayId"]) if nats else None

    def _tagged(self, deployment, resource_type, name, **extra):
        tags = {"Name": name, TAG_DEPLOYMENT: deployment, TAG_MANAGED: MANAGED_BY}
        tags.update(extra)
        return [{"ResourceType": resource_type, "Tags": _tag_list(tags)}]

    # ---- inventory ---------------------------------------------------------------------------

    def inventory(self, deployment):
        validate_deployment_name(deployment)
        with self._errors():
            instances = self._instances(deployment)
            addresses = self._addresses(deployment)
            volumes = {}
            ids = [i["id"] for i in instances]
            for start in range(0, len(ids), 100):     # EC2 takes at most 200 filter values
                for volume in self._describe("describe_volumes", "Volumes", Filters=[{
                        "Name": "attachment.instance-id", "Values": ids[start:start + 100]}]):
                    volumes[volume["VolumeId"]] = volume
            users = aws_login_users(lambda **p: self._describe("describe_images", "Images", **p),
                                    [i["image"] for i in instances])
        hosts = [self._host(deployment, i, addresses, volumes) for i in instances]
        for host, instance in zip(hosts, instances):    # the image's SSH user (ssh_path)
            host.update(image=instance["image"], login_user=users.get(instance["image"]))
        return sorted(hosts, key=lambda h: h["name"])

    def _host(self, deployment, instance, addresses, volumes):
        held = [a for a in addresses if a.get("NetworkInterfaceId") == instance["eni"]
                and instance["eni"]]
        held.sort(key=lambda a: (TAG_FLOATING in _tags(a), _tags(a).get(TAG_SLOT, ""),
                                 a["PublicIp"]))
        tags = instance["tags"]
        return {
            "name": "%s-%s-%s" % (deployment, instance["group"], instance["index"]),
            "group": instance["group"],
            "index": instance["index"],
            "roles": [r for r in tags.get(TAG_ROLES, "").split(",") if r],
            "provider_id": instance["id"],
            "size": instance["size"],
            "state": instance["state"],
            "zone": instance["zone"],
            # Cassandra's rack (lib.cloud.zones.cassandra_rack): the zone the instance was
            # launched with, rack1 for an instance from before zones.
            "rack": tags.get(TAG_RACK) or DEFAULT_RACK,
            "private_address": instance["private_ips"][0] if instance["private_ips"] else None,
            "public_addresses": [a["PublicIp"] for a in held],
            "volumes": self._volumes(instance, volumes),
        }

    @staticmethod
    def _volumes(instance, volumes):
        """The instance's volumes in launch order, described by its disks tag."""
        layout = {}
        for item in instance["tags"].get(TAG_DISKS, "").split(","):
            device, _, what = item.partition("=")
            purpose, _, kind = what.partition(":")
            layout[device] = (purpose or None, kind or None)
        order = list(layout)

        def position(device):
            name = device.rsplit("/", 1)[-1]
            return (order.index(name) if name in order else len(order), name)

        found = []
        for device in sorted(instance["devices"], key=position):
            volume_id = instance["devices"][device]
            purpose, kind = layout.get(device.rsplit("/", 1)[-1], (None, None))
            found.append({"id": volume_id, "size_gb": volumes.get(volume_id, {}).get("Size"),
                          "kind": kind, "purpose": purpose,
                          "device": aws_device(volume_id),
                          "xen_device": xen_device(device)})
        return found

    # ---- reconcile ---------------------------------------------------------------------------

    def reconcile(self, plan, dry_run=False):
        if plan.get("provider") != "aws" or plan.get("region") != self.region:
            raise ProviderError("%s: this plan is for %s in %s" % (
                self._where, plan.get("provider"), plan.get("region")))
        zones = check_named_zones(self.profile.get("availability_zones"))
        if zones and self.profile.get("subnet_id"):
            raise InputError("availability_zones", "goes with a network the pack creates; "
                             "with subnet_id every host sits in that subnet's zone")
        changes = []
        with self._errors():
            state = self._read(plan["deployment"])
            if not state.own_network:
                self._check_operator_subnet(state, plan)
            else:   # before anything is made: a zone the profile names may not exist
                state.zones = self._zones(state, plan)
            kept, extra = self._planned_instances(state, plan)
            base.check_deletions(plan, [("%s-%s-%s" % (state.deployment, i["group"], i["index"]),
                                         i["tags"].get(TAG_ROLES, "").split(",")) for i in extra])
            if len(kept) < len(plan["hosts"]):
                self._image(state)      # a bad image fails the run before anything is made
            for step in (self._ensure_network, self._ensure_groups, self._ensure_hosts,
                         self._ensure_private_ips, self._ensure_addresses, self._ensure_egress,
                         self._ensure_bucket,
                         self._remove_extra_hosts, self._remove_extra_groups):
                step(state, plan, dry_run, changes)
        return changes

    # network

    def _ensure_network(self, state, plan, dry_run, changes):
        """VPC, a public and a private subnet, the internet gateway, the public route table
        and the NAT gateway (see lib.cloud.aws_egress for why). The private subnet's route
        to the NAT gateway comes last (_ensure_egress): the gateway provisions while the
        instances boot."""
        if not state.own_network:
            return
        deployment = state.deployment
        if state.vpc is None:
            changes.append(change("create", "vpc", deployment, VPC_CIDR))
            if not dry_run:
                self.progress("creating the network for %s" % deployment)
                with self._errors("a VPC for %s" % deployment):
                    state.vpc = self._create_once(
                        "VPC %s" % deployment,
                        lambda: self._find_tagged("describe_vpcs", "Vpcs", deployment),
                        lambda ec2: ec2.create_vpc(CidrBlock=VPC_CIDR, TagSpecifications=(
                            self._tagged(deployment, "vpc", deployment)))["Vpc"])
                state.vpc_id = state.vpc["VpcId"]
        sides = [PUBLIC, PRIVATE] if self._needs_nat(plan) else [PUBLIC]
        used = [s["CidrBlock"] for s in state.subnets.values()]
        # The first zone always (the NAT gateway's), the others once a host goes there: mini's
        # one host needs one subnet.
        placed = {self._zone_for(state, h) for h in plan["hosts"]}
        for zone in [z for n, z in enumerate(state.zones) if n == 0 or z in placed]:
            for side in sides:
                if (side, zone) in state.subnets:
                    continue
                cidr = free_subnet(VPC_CIDR, used, SUBNET_PREFIX)
                if cidr is None:
                    raise ProviderError("%s: VPC %s has no free /%d left for a %s subnet in %s"
                                        % (self._where, VPC_CIDR, SUBNET_PREFIX, side, zone))
                used.append(cidr)
                name = self._net_name(state, side, zone)
                changes.append(change("create", "subnet", name, "%s in %s" % (cidr, zone)))
                if not dry_run:
                    self._create_subnet(state, side, zone, cidr)
        self._ensure_gateway(state, dry_run, changes)
        self._ensure_route_table(state, PUBLIC, dry_run, changes)
        if self._needs_nat(plan):
            self._ensure_nat(state, dry_run, changes)

    @staticmethod
    def _needs_nat(plan):
        """A plan whose every host holds an Elastic IP (mini) needs no NAT gateway. One made
        for an earlier plan stays until destroy: hosts may still sit in the private subnet."""
        public = hosts_needing_public_subnet(plan)
        return any(h["name"] not in public for h in plan["hosts"])

    @staticmethod
    def _net_name(state, side, zone=None):
        """Subnets made before zones are called <deployment>-<side>; later ones name their
        zone too."""
        return "%s-%s" % (state.deployment, side) + ("-%s" % zone if zone else "")

    def _create_subnet(self, state, side, zone, cidr):
        name = self._net_name(state, side, zone)
        params = {"VpcId": state.vpc_id, "CidrBlock": cidr, "AvailabilityZone": zone,
                  "TagSpecifications": self._tagged(state.deployment, "subnet", name,
                                                    **{TAG_NET: side})}
        state.subnets[(side, zone)] = self._create_once(
            "subnet %s" % name,
            lambda: self._find_tagged("describe_subnets", "Subnets", state.deployment,
                                      ("vpc-id", state.vpc_id), ("tag:" + TAG_NET, side),
                                      ("availability-zone", zone)),
            lambda ec2: ec2.create_subnet(**params)["Subnet"])

    def _zones(self, state, plan):
        """The deployment's zones in slot order (lib.cloud.zones.order_zones): the profile's
        availability_zones, else the zones its subnets are in (oldest subnet first) filled up
        from the region's available zones that offer every instance type of the plan (not
        all zones do), sorted."""
        named = check_named_zones(self.profile.get("availability_zones"))
        available = sorted(
            z["ZoneName"] for z in self._describe(
                "describe_availability_zones", "AvailabilityZones",
                Filters=[{"Name": "state", "Values": ["available"]}])
            # Local Zones and Wavelength Zones are listed once opted in; they are no AZ.
            if z.get("ZoneType", "availability-zone") == "availability-zone")
        if named:
            unknown = [z for z in named if z not in available]
            if unknown:
                raise InputError("availability_zones", "%s %s not an available zone of %s"
                                 % (", ".join(unknown), "is" if len(unknown) == 1 else "are",
                                    self.region), available)
        sizes = {h["size"] for h in plan["hosts"]}
        offers = self._describe("describe_instance_type_offerings", "InstanceTypeOfferings",
                                LocationType="availability-zone",
                                Filters=[{"Name": "instance-type", "Values": sorted(sizes)}])
        types = {}
        for offer in offers:
            types.setdefault(offer["Location"], set()).add(offer["InstanceType"])
        offered = [z for z in available if types.get(z, set()) >= sizes]
        existing = [s["AvailabilityZone"] for s in sorted(
            state.subnets.values(), key=lambda s: ipaddress.ip_network(s["CidrBlock"]))]
        zones = order_zones(named, offered, existing)
        if not zones:
            raise ProviderError("%s: no available zone of %s offers %s" % (
                self._where, self.region, ", ".join(sorted(sizes))))
        return zones

    def _ensure_gateway(self, state, dry_run, changes):
        created = state.gateway is None
        if created:
            changes.append(change("create", "internet-gateway", state.deployment))
            if dry_run:
                return
            state.gateway = self._create_once(
                "internet gateway %s" % state.deployment,
                lambda: self._find_tagged("describe_internet_gateways", "InternetGateways",
                                          state.deployment),
                lambda ec2: ec2.create_internet_gateway(TagSpecifications=self._tagged(
                    state.deployment, "internet-gateway", state.deployment))["InternetGateway"])
        attached = [a["VpcId"] for a in state.gateway.get("Attachments") or []]
        if state.vpc_id not in attached:
            if not created:
                changes.append(change("update", "internet-gateway", state.deployment,
                                      "attach to %s" % state.vpc_id))
            if not dry_run:
                self.ec2.attach_internet_gateway(
                    InternetGatewayId=state.gateway["InternetGatewayId"], VpcId=state.vpc_id)

    def _default_target(self, state, side):
        """The default route the side's table needs: {target key: id}, id None if not made."""
        if side == PUBLIC:
            return "GatewayId", (state.gateway or {}).get("InternetGatewayId")
        return "NatGatewayId", (state.nat or {}).get("NatGatewayId")

    def _ensure_route_table(self, state, side, dry_run, changes):
        name = self._net_name(state, side)
        table = state.route_tables.get(side)
        created = table is None
        if created:
            changes.append(change("create", "route-table", name))
            if dry_run:
                return
            # CreateRouteTable takes a ClientToken: the same one for this VPC and side, so a
            # repeat that reaches EC2 returns the table the first one made.
            table = state.route_tables[side] = self._create_once(
                "route table %s" % name,
                lambda: self._find_tagged("describe_route_tables", "RouteTables",
                                          state.deployment, ("vpc-id", state.vpc_id),
                                          ("tag:" + TAG_NET, side)),
                lambda ec2: ec2.create_route_table(
                    VpcId=state.vpc_id, ClientToken=_token("%s|%s|%s" % (
                        state.deployment, state.vpc_id, side), 0),
                    TagSpecifications=self._tagged(state.deployment, "route-table", name,
                                                   **{TAG_NET: side}))["RouteTable"])
        table_id = table["RouteTableId"]
        key, target = self._default_target(state, side)
        route = default_route(table)
        if route is None or route.get(key) != target or route.get("State") == "blackhole":
            if not created:
                changes.append(change("update", "route-table", name, "default route via %s"
                                      % ("the internet gateway" if side == PUBLIC
                                         else "the NAT gateway")))
            if not dry_run:
                call = self.ec2.create_route if route is None else self.ec2.replace_route
                self._fresh(call, RouteTableId=table_id, DestinationCidrBlock=DEFAULT_ROUTE,
                            **{key: target})
        # One table per side serves every zone's subnet of that side.
        associated = {a.get("SubnetId") for a in table.get("Associations") or []}
        for subnet in state.side_subnets(side):
            if subnet["SubnetId"] in associated:
                continue
            if not created:
                changes.append(change("update", "route-table", name,
                                      "associate with %s" % subnet["SubnetId"]))
            if not dry_run:
                self.ec2.associate_route_table(RouteTableId=table_id,
                                               SubnetId=subnet["SubnetId"])

    # egress

    def _ensure_nat(self, state, dry_run, changes):
        """One NAT gateway with its own Elastic IP, both tagged: a crash after either call
        is finished by the next run, which finds them by their tags."""
        used = {a.get("AllocationId") for a in (state.nat or {}).get("NatGatewayAddresses") or []}
        spare = [a for a in state.nat_addresses if a["AllocationId"] not in used]
        name = "%s-nat" % state.deployment
        if state.nat is None:
            address = spare.pop(0) if spare else None
            changes.append(change("create", "nat-gateway", name, "in %s, with %s" % (
                self._net_name(state, PUBLIC),
                address["PublicIp"] if address else "a new Elastic IP")))
            if not dry_run:
                self.progress("creating NAT gateway %s" % name)
                if address is None:
                    with self._errors("an Elastic IP address for NAT gateway %s" % name):
                        address = self._create_once(
                            "Elastic IP %s" % name,
                            lambda: self._find_tagged("describe_addresses", "Addresses",
                                                      state.deployment, ("tag:" + TAG_NAT, name)),
                            lambda ec2: ec2.allocate_address(
                                Domain="vpc", TagSpecifications=self._tagged(
                                    state.deployment, "elastic-ip", name, **{TAG_NAT: name})))
                    state.nat_addresses.append(address)
                subnet_id = state.subnet_id(PUBLIC)
                with self._errors("NAT gateway %s" % name):
                    state.nat = self._fresh(
                        self.ec2.create_nat_gateway, SubnetId=subnet_id,
                        AllocationId=address["AllocationId"],
                        ClientToken=_token("%s|%s|%s" % (state.deployment, subnet_id,
                                                         address["AllocationId"]), 0),
                        TagSpecifications=self._tagged(state.deployment, "natgateway", name,
                                                       **{TAG_NAT: name}))["NatGateway"]
        for address in spare:
            changes.append(change("delete", "address", "%s (unused)" % name,
                                  address.get("PublicIp", "")))
            if not dry_run:
                self._release(address)
                state.nat_addresses.remove(address)

    def _ensure_egress(self, state, plan, dry_run, changes):
        """The private subnet's route table, its default route to the NAT gateway once the
        gateway is available."""
        if not state.own_network or not self._needs_nat(plan):
            return
        if not dry_run and state.nat and state.nat.get("State") != "available":
            self._wait_nat(state, "available")
        self._ensure_route_table(state, PRIVATE, dry_run, changes)

    def _nat_state(self, nat_id):
        found = self._describe("describe_nat_gateways", "NatGateways", NatGatewayIds=[nat_id])
        return found[0] if found else {"NatGatewayId": nat_id, "State": "deleted"}

    def _wait_nat(self, state, target):
        nat_id = state.nat["NatGatewayId"]
        self.progress("waiting for NAT gateway %s to be %s" % (nat_id, target))
        seen = {}

        def check():
            seen["nat"] = self._nat_state(nat_id)
            if seen["nat"]["State"] == "failed" and target == "available":
                raise ResourceFailed("%s: NAT gateway %s failed (%s): %s" % (
                    self._where, nat_id, seen["nat"].get("FailureCode", ""),
                    seen["nat"].get("FailureMessage", "")))
            return seen["nat"]["State"] == target
        timeout = self.wait_delay * self.wait_attempts
        try:
            base.wait_until(check, timeout=timeout, interval=self.wait_delay,
                            what="NAT gateway %s" % nat_id)
        except TimeoutError:
            raise ResourceFailed("%s: NAT gateway %s is still %s after %ss" % (
                self._where, nat_id, seen.get("nat", {}).get("State"), timeout)) from None
        state.nat = seen["nat"]

    def _check_operator_subnet(self, state, plan):
        """Refuse, before any mutating call, a given subnet whose hosts would have no way out."""
        subnet = state.side_subnets(PUBLIC)[0]
        in_vpc = [{"Name": "vpc-id", "Values": [state.vpc_id]}]
        tables = self._describe("describe_route_tables", "RouteTables", Filters=in_vpc)
        nats = self._describe("describe_nat_gateways", "NatGateways", Filter=in_vpc)
        problem = egress_problem(subnet, tables, nats, plan)
        if problem:
            raise ProviderError("%s: %s" % (self._where, problem))

    # security groups

    @staticmethod
    def _wanted_rules(plan):
        """Role key -> set of rules. Internal sources are the hosts group, never a CIDR."""
        wanted = {HOSTS: set()}
        for host in plan["hosts"]:
            for role in host["roles"]:
                wanted.setdefault(role, set())
        for rule in plan["firewall"]:
            key = HOSTS if rule["role"] == "*" else rule["role"]
            if key not in wanted:
                continue
            sources = ([("group", HOSTS)] if rule["source"] == "internal"
                       else [("cidr", cidr) for cidr in rule["cidrs"]])
            for kind, value in sources:
                wanted[key].add((rule["protocol"], rule["from_port"], rule["to_port"], kind,
                                 value))
        return wanted

    def _group_name(self, state, key):
        return "%s-%s" % (state.deployment, key)

    def _ensure_groups(self, state, plan, dry_run, changes):
        wanted = self._wanted_rules(plan)
        keys = [HOSTS] + [k for k in wanted if k != HOSTS]
        for key in keys:
            if key not in state.groups:
                changes.append(change("create", "security-group", self._group_name(state, key)))
                if not dry_run:
                    self._create_group(state, key)
        names = {k: self._group_name(state, k) for k in keys}
        for key in keys:
            group = state.groups.get(key)
            current = _flatten(group["IpPermissions"], state.group_key) if group else set()
            missing, extra = wanted[key] - current, current - wanted[key]
            name = names[key]
            for text in _describe_rules(missing, names):
                changes.append(change("create", "firewall-rule", name, text))
            for text in _describe_rules(extra, names):
                changes.append(change("delete", "firewall-rule", name, text))
            if dry_run:
                continue
            if missing:
                with self._errors("%d more rules on security group %s" % (len(missing), name)):
                    self._authorize(group, _permissions(missing, state.group_id))
            if extra:
                self.ec2.revoke_security_group_ingress(
                    GroupId=group["GroupId"], IpPermissions=_permissions(extra, state.group_id))

    def _create_group(self, state, key):
        name = self._group_name(state, key)
        self.progress("creating security group %s" % name)
        try:
            group_id = self.ec2.create_security_group(
                GroupName=name, VpcId=state.vpc_id,
                Description="Dialog %s: %s" % (state.deployment, key),
                TagSpecifications=self._tagged(state.deployment, "security-group", name,
                                               **{TAG_ROLE: key}))["GroupId"]
        except ClientError as exc:
            if _code(exc) != "InvalidGroup.Duplicate":
                raise self._translate(exc, "security group %s" % name, None) from None
            # A retried create whose first attempt went through: use it if it is ours.
            found = self._describe("describe_security_groups", "SecurityGroups", Filters=[
                {"Name": "group-name", "Values": [name]},
                {"Name": "vpc-id", "Values": [state.vpc_id]}])
            if not found or _tags(found[0]).get(TAG_DEPLOYMENT) != state.deployment:
                raise ProviderError("%s: a security group named %s exists in %s but was not "
                                    "created by this pack; rename or delete it"
                                    % (self._where, name, state.vpc_id)) from None
            state.groups[key] = found[0]
            return
        state.groups[key] = {"GroupId": group_id, "GroupName": name, "IpPermissions": []}

    def _authorize(self, group, permissions):
        try:
            self._fresh(self.ec2.authorize_security_group_ingress, GroupId=group["GroupId"],
                        IpPermissions=permissions)
        except ClientError as exc:
            if _code(exc) != "InvalidPermission.Duplicate":
                raise
            # Part of it exists already (a retried call went through): add the rest one by one.
            for permission in permissions:
                try:
                    self.ec2.authorize_security_group_ingress(GroupId=group["GroupId"],
                                                              IpPermissions=[permission])
                except ClientError as again:
                    if _code(again) != "InvalidPermission.Duplicate":
                        raise

    LOST = (HTTPClientError, BotoConnectionError)

    def _create_once(self, what, find, create):
        """create(ec2_once)'s result, made once even when a response is lost.

        CreateVpc, CreateSubnet, CreateInternetGateway and AllocateAddress take no ClientToken,
        and EC2 may have carried out a request whose answer never arrived (a read timeout, a
        dropped connection): botocore's own retry would then make a second one. So these go
        through a client that does not retry, and after a lost answer find() looks for the
        resource by its tags (it is tagged in the call that creates it) before asking again.
        Throttling is waited out here, as botocore would: a throttled request was not applied.
        """
        last = None
        for attempt in range(self.max_attempts):
            try:
                return create(self.ec2_once)
            except ClientError as exc:
                if _code(exc) not in THROTTLE_CODES:
                    raise
                last = exc
            except EndpointConnectionError as exc:
                last = exc      # never reached EC2: nothing was made
            except self.LOST as exc:
                last = exc
                for look in range(3):   # EC2 is eventually consistent: a new id may lag
                    found = find()
                    if found:
                        self.progress("%s: the answer was lost, found it by its tags" % what)
                        return found
                    if look < 2:
                        time.sleep(self.wait_delay)
            time.sleep(min(20.0, self.wait_delay * 2 ** attempt))
        raise last

    def _find_tagged(self, operation, key, deployment, *extra):
        """The oldest resource of the deployment that the filters (name, value) match."""
        filters = self._ours(deployment, *[{"Name": n, "Values": [v]} for n, v in extra])
        found = self._describe(operation, key, Filters=filters)
        return found[0] if found else None

    def _fresh(self, call, **params):
        """Call right after creating a resource; EC2 may not know the new id yet."""
        def attempt():
            try:
                return call(**params) or True
            except ClientError as exc:
                if _code(exc).endswith(".NotFound"):
                    return None
                raise
        timeout = max(30, self.wait_delay * 6)
        try:
            return base.wait_until(attempt, timeout=timeout, interval=min(1, self.wait_delay),
                                   what="a new EC2 resource")
        except TimeoutError:
            raise ProviderError("%s: %s still answers NotFound after %ss"
                                % (self._where, call.__name__, timeout)) from None

    # hosts

    @staticmethod
    def _plan_groups(plan):
        groups = {}
        for host in plan["hosts"]:
            groups.setdefault(host["group"], []).append(host)
        return groups

    @staticmethod
    def _planned_instances(state, plan):
        """(host key -> the instance kept for it, instances not in the plan)."""
        wanted = {(h["group"], h["index"]) for h in plan["hosts"]}
        kept, extra = {}, []
        for instance in state.instances:
            key = (instance["group"], instance["index"])
            if key in wanted and key not in kept:
                kept[key] = instance
            else:
                extra.append(instance)
        return kept, extra

    def _ensure_hosts(self, state, plan, dry_run, changes):
        kept, _ = self._planned_instances(state, plan)
        for group, hosts in self._plan_groups(plan).items():
            missing = [h for h in hosts if (group, h["index"]) not in kept]
            for host in missing:
                changes.append(change("create", "host", host["name"], self._describe_host(host)))
            if missing and not dry_run:
                # One RunInstances per subnet: a launch puts all its instances in one.
                batches = {}
                for host in missing:
                    batches.setdefault(self._subnet_for(state, plan, [host]), []).append(host)
                for batch in batches.values():
                    self._launch(state, plan, group, batch)
            for host in hosts:
                instance = kept.get((group, host["index"]))
                if instance:
                    self._check_host(instance, host, dry_run, changes)
        if dry_run:
            return
        kept, _ = self._planned_instances(state, plan)
        pending = [(i, "%s-%s-%s" % (state.deployment, i["group"], i["index"]))
                   for i in kept.values() if i["state"] == "pending"]
        if pending:
            self._wait(pending, "running")
            for instance, _ in pending:
                instance["state"] = "running"

    @staticmethod
    def _describe_host(host):
        disks = ", ".join("%s %d GB %s" % (d["purpose"], d["size_gb"], d["kind"])
                          for d in host["disks"])
        return "%s; %s" % (host["size"], disks)

    def _check_host(self, instance, host, dry_run, changes):
        if instance["size"] != host["size"]:
            changes.append(change("update", "host", host["name"], "is %s, the plan says %s: "
                                  "needs a replacement (not changed)"
                                  % (instance["size"], host["size"])))
        tags = instance["tags"]
        if tags.get("Name") != host["name"] or tags.get(TAG_INDEX) != str(host["index"]):
            changes.append(change("update", "host", host["name"], "name and index tags"))
            if not dry_run:
                self._name_instance(instance["id"], host)

    def _name_instance(self, instance_id, host):
        self._fresh(self.ec2.create_tags, Resources=[instance_id], Tags=_tag_list(
            {"Name": host["name"], TAG_INDEX: host["index"]}))

    def _launch(self, state, plan, group, hosts):
        size, count = hosts[0]["size"], len(hosts)
        asking = "%d %s instance%s for group %s" % (count, size, "s" * (count > 1), group)
        self.progress("creating %d %s instance%s" % (count, group, "s" * (count > 1)))
        with self._errors(asking, size):
            reservation = self._run_instances(self._launch_params(state, plan, group, hosts),
                                              "%s|%s|%s|%s" % (
                                                  state.deployment, group,
                                                  ",".join(str(h["index"]) for h in hosts),
                                                  self._subnet_for(state, plan, hosts)))
        for raw in sorted(reservation["Instances"], key=lambda i: i["AmiLaunchIndex"]):
            host = hosts[raw["AmiLaunchIndex"]]
            self._name_instance(raw["InstanceId"], host)
            record = _record(raw)
            record.update(group=group, index=host["index"])
            state.instances.append(record)
            state.created.add((group, host["index"]))

    @staticmethod
    def _zone_for(state, host):
        return zone_of(host, state.zones) if state.zones else None

    def _subnet_for(self, state, plan, hosts):
        """Hosts that hold Elastic IPs go in the public subnet of their zone, all others in
        the private one (one subnet for both when the operator names it). Only hosts about to
        be launched are placed: an instance is never moved to another zone (that would mean
        terminating it)."""
        public = hosts_needing_public_subnet(plan)
        side = PUBLIC if any(h["name"] in public for h in hosts) else PRIVATE
        return state.subnet_id(side, self._zone_for(state, hosts[0]))

    def _rack_for(self, state, group, zone):
        """The Cassandra rack a new instance joins with: its zone, unless the deployment has
        a Cassandra node from before zones (rack1, which Cassandra never lets a node change):
        then rack1 for every node, so that the ring stays one rack and no node takes a copy
        of every range for a rack of its own."""
        legacy = any(i["group"] == group and TAG_RACK not in i["tags"]
                     and (i["group"], i["index"]) not in state.created
                     for i in state.instances)
        return DEFAULT_RACK if legacy or not zone else zone

    def _run_instances(self, params, seed):
        for attempt in range(3):
            try:
                result = self.ec2.run_instances(ClientToken=_token(seed, attempt), **params)
            except ClientError as exc:
                if _code(exc) != "IdempotentParameterMismatch":
                    raise
                continue
            # A token reused within AWS's idempotency window answers with the old launch.
            if any(i["State"]["Name"] not in ("shutting-down", "terminated")
                   for i in result["Instances"]):
                return result
        raise ProviderError("%s: RunInstances keeps answering with an earlier launch's "
                            "instances; run again in a few minutes" % self._where)

    def _launch_params(self, state, plan, group, hosts):
        first = hosts[0]
        image = self._image(state)
        kinds = self.catalog.provider("aws")["volume_types"]
        mappings, layout = [], []
        volumes = [d for d in first["disks"] if d["source"] == "volume"]
        root = [d for d in first["disks"] if d["source"] == "root"]
        devices = [(image["root_device"], root[0])] if root else []
        devices += [("/dev/sd" + DATA_DEVICES[n], disk) for n, disk in enumerate(volumes)]
        for device, disk in devices:
            mappings.append({"DeviceName": device, "Ebs": {
                "VolumeSize": disk["size_gb"], "VolumeType": kinds[disk["kind"]],
                "DeleteOnTermination": True, "Encrypted": True}})
            layout.append("%s=%s:%s" % (device.rsplit("/", 1)[-1], disk["purpose"], disk["kind"]))
        common = {TAG_GROUP: group, TAG_ROLES: ",".join(first["roles"]),
                  TAG_BATCH: ",".join(str(h["index"]) for h in hosts)}
        name = "%s-%s" % (state.deployment, group)
        own = {TAG_DISKS: ",".join(layout),
               TAG_RACK: self._rack_for(state, group, self._zone_for(state, first))}
        tags = self._tagged(state.deployment, "instance", name, **dict(common, **own))
        for resource_type in ("volume", "network-interface"):
            tags += self._tagged(state.deployment, resource_type, name, **common)
        secondary = max(_private_ips_needed(plan, h) for h in hosts) - 1
        nic = {"DeviceIndex": 0, "SubnetId": self._subnet_for(state, plan, hosts),
               "DeleteOnTermination": True,
               "AssociatePublicIpAddress": self._needs_own_way_out(plan, hosts),
               "Groups": [state.group_id(HOSTS)] + [state.group_id(r) for r in first["roles"]]}
        if secondary:
            nic["SecondaryPrivateIpAddressCount"] = secondary
        params = {"ImageId": image["id"], "InstanceType": first["size"], "MinCount": len(hosts),
                  "MaxCount": len(hosts), "NetworkInterfaces": [nic],
                  "BlockDeviceMappings": mappings, "TagSpecifications": tags,
                  "MetadataOptions": {"HttpTokens": "required"}}
        keys = self.profile.get("ssh_key_names") or []
        if keys:
            params["KeyName"] = keys[0]
        return params

    @staticmethod
    def _needs_own_way_out(plan, hosts):
        """A standby that may take a floating Elastic IP sits in the public subnet, whose
        default route is the internet gateway; without an address of its own it could not
        reach Docker's repository or the registry (AWS routes a host through an internet
        gateway only when it has a public address). It gets an auto-assigned one, which AWS
        replaces with the Elastic IP while it holds it and gives back when it is released."""
        floating = {name for f in plan.get("floating_ips") or [] for name in f["hosts"]}
        return any(h["name"] in floating and not h["public_ips"] for h in hosts)

    def _image(self, state):
        if state.image:
            return state.image
        image_id = self.profile.get("image")
        if image_id:
            try:
                images = self._describe("describe_images", "Images", ImageIds=[image_id])
            except ClientError as exc:
                if not _code(exc).startswith("InvalidAMIID"):
                    raise
                images = []
            if not images:
                raise ProviderError("%s: image %s does not exist in %s; set the profile's "
                                    "image to an AMI id of that region"
                                    % (self._where, image_id, self.region))
        else:
            images = self._describe("describe_images", "Images", Owners=[DEBIAN_OWNER], Filters=[
                {"Name": "name", "Values": [DEBIAN_NAME]},
                {"Name": "architecture", "Values": ["x86_64"]},
                {"Name": "state", "Values": ["available"]}])
            if not images:
                raise ProviderError("%s: found no Debian 12 AMI (owner %s, %s) in %s; set the "
                                    "profile's image to an AMI id"
                                    % (self._where, DEBIAN_OWNER, DEBIAN_NAME, self.region))
        image = max(images, key=lambda i: (i.get("CreationDate", ""), i["ImageId"]))
        state.image = {"id": image["ImageId"],
                       "root_device": image.get("RootDeviceName") or "/dev/xvda"}
        return state.image

    def _wait(self, instances, target):
        """Wait (bounded) until every (instance, host name) is in the target state."""
        if not instances:
            return
        self.progress("waiting for %d instance%s to be %s"
                      % (len(instances), "s" * (len(instances) > 1), target))
        ids = [i["id"] for i, _ in instances]
        try:
            self.ec2.get_waiter("instance_" + target).wait(InstanceIds=ids, WaiterConfig={
                "Delay": self.wait_delay, "MaxAttempts": self.wait_attempts})
        except WaiterError:
            now = {}
            for reservation in self._describe("describe_instances", "Reservations",
                                              InstanceIds=ids):
                for raw in reservation["Instances"]:
                    now[raw["InstanceId"]] = raw["State"]["Name"]
            late = ["%s (%s)" % (name, now.get(i["id"], "gone")) for i, name in instances
                    if now.get(i["id"]) != target]
            raise ResourceFailed("%s: %s did not become %s within %ss" % (
                self._where, ", ".join(late) or "some instances", target,
                self.wait_delay * self.wait_attempts)) from None

    def _ensure_private_ips(self, state, plan, dry_run, changes):
        kept, _ = self._planned_instances(state, plan)
        for host in plan["hosts"]:
            key = (host["group"], host["index"])
            instance = kept.get(key)
            short = _private_ips_needed(plan, host) - len(instance["private_ips"]) \
                if instance else 0
            if short <= 0:
                continue
            # Launches ask for them; this catches hosts that did not get them then.
            if key not in state.created:
                changes.append(change("update", "host", host["name"],
                                      "%d more private addresses" % short))
            if not dry_run:
                result = self.ec2.assign_private_ip_addresses(
                    NetworkInterfaceId=instance["eni"], SecondaryPrivateIpAddressCount=short)
                instance["private_ips"] += [a["PrivateIpAddress"] for a in
                                            result.get("AssignedPrivateIpAddresses") or []]

    # addresses

    @staticmethod
    def _address_key(address):
        tags = _tags(address)
        if TAG_FLOATING in tags:
            return ("floating", tags[TAG_FLOATING])
        return ("host", tags.get(TAG_HOST), tags.get(TAG_SLOT))

    def _ensure_addresses(self, state, plan, dry_run, changes):
        kept, _ = self._planned_instances(state, plan)
        by_name = {h["name"]: kept.get((h["group"], h["index"])) for h in plan["hosts"]}
        wanted = {}
        for host in plan["hosts"]:
            for slot in range(1, host["public_ips"] + 1):
                wanted[("host", host["name"], str(slot))] = [host["name"]]
        for floating in plan["floating_ips"]:
            wanted[("floating", floating["name"])] = list(floating["hosts"])
        current, extra = {}, []
        for address in sorted(state.addresses, key=lambda a: not a.get("AssociationId")):
            key = self._address_key(address)
            if key in wanted and key not in current:
                current[key] = address
            else:
                extra.append(address)
        used = {a.get("PrivateIpAddress") for a in state.addresses if a.get("AssociationId")}
        for key, holders in wanted.items():
            label = self._address_label(key)
            address = current.get(key)
            enis = {by_name[n]["eni"] for n in holders if by_name.get(n)}
            if address and address.get("NetworkInterfaceId") in enis:
                continue
            target = by_name.get(holders[0]) if holders else None
            if address is None:
                changes.append(change("create", "address", label, "for %s" % holders[0]))
            else:
                changes.append(change("update", "address", label,
                                      "associate with %s" % holders[0]))
            if dry_run:
                continue
            if address is None:
                address = self._allocate(state, key, label, holders[0])
            self._associate(address, target, holders[0], used)
        for address in extra:
            changes.append(change("delete", "address", self._address_label(
                self._address_key(address)), address.get("PublicIp", "")))
            if not dry_run:
                self._release(address)

    @staticmethod
    def _address_label(key):
        return key[1] if key[0] == "floating" else "%s address %s" % (key[1], key[2])

    def _allocate(self, state, key, label, host):
        self.progress("allocating %s for %s" % (label, host) if key[0] == "floating"
                      else "allocating %s" % label)
        extra = ({TAG_FLOATING: key[1]} if key[0] == "floating"
                 else {TAG_HOST: key[1], TAG_SLOT: key[2]})
        with self._errors("an Elastic IP address for %s" % label):
            return self._create_once(
                "Elastic IP %s" % label,
                lambda: self._find_tagged("describe_addresses", "Addresses", state.deployment,
                                          *[("tag:" + k, v) for k, v in extra.items()]),
                lambda ec2: ec2.allocate_address(Domain="vpc", TagSpecifications=self._tagged(
                    state.deployment, "elastic-ip", label, **extra)))

    def _associate(self, address, instance, host, used):
        if instance is None:
            raise ResourceFailed("%s: host %s has no instance to hold %s"
                                 % (self._where, host, address.get("PublicIp")))
        free = [ip for ip in instance["private_ips"] if ip not in used] or instance["private_ips"]
        used.add(free[0])
        self._fresh(self.ec2.associate_address, AllocationId=address["AllocationId"],
                    NetworkInterfaceId=instance["eni"], PrivateIpAddress=free[0],
                    AllowReassociation=bool(address.get("AssociationId")))

    def _release(self, address):
        if address.get("AssociationId"):
            try:
                self.ec2.disassociate_address(AssociationId=address["AssociationId"])
            except ClientError as exc:
                if not _code(exc).endswith(".NotFound"):    # gone with its instance
                    raise
        self._until_free("address %s" % address["PublicIp"], self.ec2.release_address,
                         AllocationId=address["AllocationId"])

    # removals

    def _remove_extra_hosts(self, state, plan, dry_run, changes):
        _, extra = self._planned_instances(state, plan)
        self._terminate(state, extra, dry_run, changes, "not in the plan")

    def _terminate(self, state, instances, dry_run, changes, why):
        named = [(i, "%s-%s-%s" % (state.deployment, i["group"], i["index"])) for i in instances]
        for _, name in named:
            changes.append(change("delete", "host", name, why))
        if dry_run or not named:
            return
        self.progress("terminating %d instance%s" % (len(named), "s" * (len(named) > 1)))
        self.ec2.terminate_instances(InstanceIds=[i["id"] for i, _ in named])
        self._wait(named, "terminated")

    def _remove_extra_groups(self, state, plan, dry_run, changes):
        wanted = self._wanted_rules(plan)
        for key, group in sorted(state.groups.items(), key=lambda kv: str(kv[0])):
            if key in wanted:
                continue
            changes.append(change("delete", "security-group", group["GroupName"]))
            if not dry_run:
                self._until_free("security group %s" % group["GroupName"],
                                 self.ec2.delete_security_group, GroupId=group["GroupId"])

    def _until_free(self, what, call, **params):
        """Deletes fail while something still uses the resource (ENIs outlive instances)."""
        def attempt():
            try:
                call(**params)
                return True
            except ClientError as exc:
                if _code(exc) in IN_USE_CODES:
                    return False
                raise
        timeout = self.wait_delay * self.wait_attempts
        try:
            base.wait_until(attempt, timeout=timeout, interval=self.wait_delay, what=what)
        except TimeoutError:
            raise ResourceFailed("%s: %s is still in use after %ss"
                                 % (self._where, what, timeout)) from None

    # ---- failover primitives -----------------------------------------------------------------

    def floating_addresses(self, deployment, known=()):
        validate_deployment_name(deployment)
        with self._errors():
            instances = self._instances(deployment)
            found = self._describe("describe_addresses", "Addresses", Filters=self._ours(
                deployment, {"Name": "tag-key", "Values": [TAG_FLOATING]}))
        by_eni = {i["eni"]: i for i in instances if i["eni"]}
        entries = []
        for address in found:
            holder = by_eni.get(address.get("NetworkInterfaceId")) \
                if address.get("AssociationId") else None
            name = _tags(address)[TAG_FLOATING]
            entries.append({"address": address["PublicIp"], "name": name,
                            "group": base.floating_group(deployment, name),
                            "holder": self._host_name(deployment, holder) if holder else None,
                            "id": address["AllocationId"]})
        return sorted(entries, key=lambda e: e["name"])

    @staticmethod
    def _host_name(deployment, instance):
        return "%s-%s-%s" % (deployment, instance["group"], instance["index"])

    def _instance_named(self, deployment, host):
        """The live instance of host name `host`, or None."""
        try:
            key = base.host_key(deployment, host)
        except ValueError:
            raise ProviderError("%s: %r is not a host name of deployment %s"
                                % (self._where, host, deployment)) from None
        found = [i for i in self._instances(deployment) if (i["group"], i["index"]) == key]
        return found[0] if found else None

    def assign_floating(self, deployment, entry, host):
        """AssociateAddress to a private address of the target that holds no Elastic IP (a
        standby proxy's primary one: AWS then replaces its auto-assigned public address with
        the Elastic IP). AllowReassociation: the move happens in one call even while the lost
        host still holds the address (AWS refuses it with Resource.AlreadyAssociated
        otherwise)."""
        with self._errors("moving %s to %s" % (entry["address"], host["name"])):
            instance = self._instance_named(deployment, host["name"])
            if instance is None or instance["state"] != "running":
                raise ResourceFailed("%s: %s has no running instance to take %s"
                                     % (self._where, host["name"], entry["address"]))
            held = {a.get("PrivateIpAddress") for a in self._addresses(deployment)
                    if a.get("NetworkInterfaceId") == instance["eni"]
                    and a["AllocationId"] != entry["id"]}
            free = [ip for ip in instance["private_ips"] if ip not in held]
            if not free:
                raise ResourceFailed("%s: every private address of %s holds an Elastic IP "
                                     "already; none is spare for %s" % (
                                         self._where, host["name"], entry["address"]))
            self.progress("moving %s to %s (%s)" % (entry["address"], host["name"], free[0]))
            self.ec2.associate_address(AllocationId=entry["id"],
                                       NetworkInterfaceId=instance["eni"],
                                       PrivateIpAddress=free[0], AllowReassociation=True)

    def fence(self, deployment, host):
        """StopInstances with Force (no graceful OS shutdown that could hang while the host
        still serves), then wait until EC2 says stopped. A stopped instance keeps its
        volumes and addresses, so the host can be examined or started again by hand."""
        with self._errors("stopping %s" % host):
            instance = self._instance_named(deployment, host)
            if instance is None:
                return {"host": host, "method": "already gone (no live instance)",
                        "instance": None}
            if instance["state"] != "stopped":
                self.progress("stopping %s (%s) with Force" % (host, instance["id"]))
                self.ec2.stop_instances(InstanceIds=[instance["id"]], Force=True)
                self._wait([(instance, host)], "stopped")
        return {"host": host, "method": "StopInstances(Force=True), now stopped",
                "instance": instance["id"]}

    def retire(self, deployment, host):
        """Terminate the instance; its data volumes outlive it (DeleteOnTermination turned
        off first), detached, tagged dialog:retired with the time. Nothing matches a volume
        to a host but its attachment, so the next deploy launches the host (same group and
        index, hence name) with new empty volumes."""
        with self._errors("retiring %s" % host):
            instance = self._instance_named(deployment, host)
            if instance is None:
                return {"host": host, "instance": None, "volumes_kept": []}
            raw = self._describe("describe_instances", "Reservations",
                                 InstanceIds=[instance["id"]])[0]["Instances"][0]
            root = raw.get("RootDeviceName")
            data = {device: volume for device, volume in instance["devices"].items()
                    if device != root}
            if data:
                self.ec2.modify_instance_attribute(
                    InstanceId=instance["id"], BlockDeviceMappings=[
                        {"DeviceName": device, "Ebs": {"DeleteOnTermination": False}}
                        for device in sorted(data)])
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                self.ec2.create_tags(Resources=sorted(data.values()), Tags=_tag_list(
                    {base.TAG_RETIRED: stamp, "Name": "%s-retired" % host}))
            self.progress("terminating %s (%s)" % (host, instance["id"]))
            self.ec2.terminate_instances(InstanceIds=[instance["id"]])
            self._wait([(instance, host)], "terminated")
        return {"host": host, "instance": instance["id"],
                "volumes_kept": [data[d] for d in sorted(data)]}

    # ---- destroy -----------------------------------------------------------------------------

    def destroy(self, deployment, dry_run=False, delete_data=False):
        validate_deployment_name(deployment)
        changes = []
        with self._errors():
            bucket = self._files_bucket(deployment)
            gone, self.kept = bucket.destroy(delete_data, dry_run) if bucket else ([], [])
            changes += gone
            if bucket:
                changes += self._files_user(deployment, bucket).destroy(dry_run)
            state = self._read(deployment)
            if state.nat:
                # Deleting a NAT gateway takes a minute or more: start it first.
                changes.append(change("delete", "nat-gateway", "%s-nat" % deployment,
                                      state.nat["NatGatewayId"]))
                if not dry_run:
                    self.ec2.delete_nat_gateway(NatGatewayId=state.nat["NatGatewayId"])
            for address in state.addresses:
                changes.append(change("delete", "address", self._address_label(
                    self._address_key(address)), address.get("PublicIp", "")))
                if not dry_run:
                    self._release(address)
            self._terminate(state, state.instances, dry_run, changes, "destroy")
            self._delete_volumes(state, dry_run, changes)
            self._delete_groups(state, dry_run, changes)
            self._delete_network(state, dry_run, changes)
        return changes

    # shared files

    def _files_bucket(self, deployment):
        """The pack's bucket for the deployment's uploaded files; None when the profile names
        the operator's own (object_storage)."""
        if object_storage.operator_storage(self.profile):
            return None
        account = self._other_client("sts").get_caller_identity()["Account"]
        return object_storage.Bucket(
            self._other_client("s3"), object_storage.bucket_name(deployment, account,
                                                                 self.region),
            self.region, deployment, aws=True, where=self._where)

    def _ensure_bucket(self, state, plan, dry_run, changes):
        """The files bucket and the IAM user whose keys the dialog servers use for it (its
        policy allows that bucket only: the deployer's own keys never reach a host)."""
        if not object_storage.needs_shared_files(plan):
            return
        bucket = self._files_bucket(state.deployment)
        if bucket:
            changes.extend(bucket.ensure(dry_run))
            changes.extend(self._files_user(state.deployment, bucket).ensure(dry_run))

    def _files_user(self, deployment, bucket):
        return object_storage.BucketUser(self._other_client("iam"), deployment, bucket.name,
                                         tags=_tag_list({TAG_DEPLOYMENT: deployment,
                                                         TAG_MANAGED: MANAGED_BY}))

    def object_storage_settings(self, deployment, stored=None, create=True):
        """Where the dialog servers keep uploaded files: endpoint, bucket, region,
        path_style and keys. stored: the key pair kept from an earlier run ({access_key_id,
        secret_access_key}); when AWS no longer has it a new pair is made and the result
        says new_credentials=True (the caller keeps it: AWS shows a secret key once)."""
        given = object_storage.operator_storage(self.profile)
        if given:
            return dict(given, path_style=bool(given.get("path_style", True)))
        with self._errors():
            bucket = self._files_bucket(deployment)
            keys, new = self._files_user(deployment, bucket).credentials(stored, create)
        endpoint = self.profile.get("endpoint_url") or \
            "https://s3.%s.amazonaws.com" % self.region
        return dict(keys, endpoint=endpoint, bucket=bucket.name, region=self.region,
                    path_style=bool(self.profile.get("endpoint_url")), new_credentials=new)

    def _delete_volumes(self, state, dry_run, changes):
        """Volumes that termination does not take along (detached, or DeleteOnTermination off)."""
        volumes = self._describe("describe_volumes", "Volumes", Filters=self._ours(
            state.deployment))
        if dry_run:
            going = set().union(*[i["auto_delete"] for i in state.instances])
            leftover = [v for v in volumes if v["VolumeId"] not in going]
        else:
            leftover = [v for v in volumes if v["State"] == "available"]
        for volume in leftover:
            changes.append(change("delete", "volume", volume["VolumeId"],
                                  "%s GB" % volume.get("Size")))
            if not dry_run:
                self._until_free("volume %s" % volume["VolumeId"], self._delete_volume,
                                 VolumeId=volume["VolumeId"])

    def _delete_volume(self, **params):
        try:
            self.ec2.delete_volume(**params)
        except ClientError as exc:
            if _code(exc) != "InvalidVolume.NotFound":   # deleted along with its instance
                raise

    def _delete_groups(self, state, dry_run, changes):
        groups = sorted(state.groups.values(), key=lambda g: g["GroupName"])
        for group in groups:
            changes.append(change("delete", "security-group", group["GroupName"]))
        if dry_run:
            return
        for group in groups:
            pairs = [p for p in group.get("IpPermissions") or [] if p.get("UserIdGroupPairs")]
            if pairs:
                self.ec2.revoke_security_group_ingress(GroupId=group["GroupId"],
                                                       IpPermissions=pairs)
        for group in groups:
            self._until_free("security group %s" % group["GroupName"],
                             self.ec2.delete_security_group, GroupId=group["GroupId"])

    def _delete_network(self, state, dry_run, changes):
        self._release_nat(state, dry_run, changes)
        if not state.own_network:
            return
        for side in (PRIVATE, PUBLIC):
            table = state.route_tables.get(side)
            if not table:
                continue
            changes.append(change("delete", "route-table", self._net_name(state, side)))
            if not dry_run:
                for association in table.get("Associations") or []:
                    if not association.get("Main"):
                        self.ec2.disassociate_route_table(
                            AssociationId=association["RouteTableAssociationId"])
                self.ec2.delete_route_table(RouteTableId=table["RouteTableId"])
        gateway = state.gateway
        if gateway:
            changes.append(change("delete", "internet-gateway", state.deployment))
            if not dry_run:
                for attachment in gateway.get("Attachments") or []:
                    self.ec2.detach_internet_gateway(
                        InternetGatewayId=gateway["InternetGatewayId"],
                        VpcId=attachment["VpcId"])
                self.ec2.delete_internet_gateway(InternetGatewayId=gateway["InternetGatewayId"])
        resources = [("subnet", _tags(subnet).get("Name") or subnet["SubnetId"], subnet,
                      self.ec2.delete_subnet, "SubnetId")
                     for side in (PRIVATE, PUBLIC) for subnet in state.side_subnets(side)]
        if state.vpc:
            resources.append(("vpc", state.deployment, state.vpc, self.ec2.delete_vpc, "VpcId"))
        for kind, name, resource, call, key in resources:
            changes.append(change("delete", kind, name, resource[key]))
            if not dry_run:
                self._until_free("%s %s" % (kind, resource[key]), call, **{key: resource[key]})

    def _release_nat(self, state, dry_run, changes):
        """Wait until the NAT gateway is deleted (its address is in use until then), then
        release its Elastic IP."""
        if state.nat and not dry_run:
            self._wait_nat(state, "deleted")
            # AWS removes the gateway's network interface itself; moto keeps it, detached.
            for item in state.nat.get("NatGatewayAddresses") or []:
                if item.get("NetworkInterfaceId"):
                    self._delete_leftover_interface(item["NetworkInterfaceId"])
        for address in state.nat_addresses:
            changes.append(change("delete", "address", "%s-nat" % state.deployment,
                                  address.get("PublicIp", "")))
            if not dry_run:
                self._release(address)

    def _delete_leftover_interface(self, eni):
        try:
            found = self._describe("describe_network_interfaces", "NetworkInterfaces",
                                   NetworkInterfaceIds=[eni])
        except ClientError as exc:
            if _code(exc).endswith(".NotFound"):
                return
            raise
        if found and found[0].get("Status") == "available":
            self.ec2.delete_network_interface(NetworkInterfaceId=eni)
