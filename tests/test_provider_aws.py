"""The AWS driver against a local AWS: real boto3 talking HTTP to moto's server on 127.0.0.1
(devtools/aws_emulator.py). Only the error-mapping tests put a fake in front of it, at the
narrowest boundary: a botocore before-send handler standing in for AWS's error replies.
"""

import collections
import ipaddress
import time

import pytest
from botocore.exceptions import EndpointConnectionError

from aws_emulator import DEBIAN_IMAGE, DEBIAN_OWNER, Throttler, error_response
from lib.errors import CredentialsError, InputError, ProviderError, QuotaError, ResourceFailed
from lib.planner import build_plan
from lib.providers import aws, open_provider
from lib.providers.base import TAG_DEPLOYMENT, CallLog

ADMIN = ["203.0.113.0/24", "2001:db8::/32"]
WORLD = {"0.0.0.0/0", "::/0"}
TIERS = [("mini", False), ("small", False), ("small", True), ("small-failover", False),
         ("small-failover", True), ("production", False), ("production", True)]


def make_driver(emu, calls=None, profile=None, **kwargs):
    kwargs.setdefault("wait_delay", 0.01)
    kwargs.setdefault("wait_attempts", 20)
    return aws.Driver(profile or emu.profile(), "us-east-1", calls=calls, **kwargs)


def plan_for(tier="small-failover", with_storage=False, **kwargs):
    kwargs.setdefault("admin_networks", ADMIN)
    return build_plan(tier, "aws", with_storage=with_storage, **kwargs)


def expected_counts(plan):
    """A network of its own: a public and a private subnet in each zone a host goes to (one
    route table per side), one NAT gateway whose Elastic IP and network interface come on top
    of the hosts' ones; mini, whose only host holds Elastic IPs, has one public subnet only."""
    roles = {r for h in plan["hosts"] for r in h["roles"]}
    nat = int(any(h["public_ips"] == 0 for h in plan["hosts"]) and plan["tier"] != "mini")
    zones = len({h["zone_slot"] for h in plan["hosts"]})
    return {"instances": len(plan["hosts"]),
            "volumes": sum(len(h["disks"]) for h in plan["hosts"]),
            "addresses": plan["public_ips"] + nat,
            "security_groups": len(roles) + 1,
            "vpcs": 1, "subnets": zones * (1 + nat), "internet_gateways": 1,
            "route_tables": 1 + nat,
            "network_interfaces": len(plan["hosts"]) + nat, "nat_gateways": nat}


ZERO = dict.fromkeys(expected_counts(plan_for("mini")), 0)


# ---- reading moto's state back ------------------------------------------------------------

def security_groups(emu, deployment="dialog"):
    groups = emu.client().describe_security_groups(Filters=[
        {"Name": "tag:" + TAG_DEPLOYMENT, "Values": [deployment]}])["SecurityGroups"]
    return {g["GroupName"]: g for g in groups}


def actual_firewall(emu, deployment="dialog"):
    """moto's ingress rules written back in the plan's terms: one tuple per plan rule."""
    groups = security_groups(emu, deployment)
    hosts_id = groups["%s-hosts" % deployment]["GroupId"]
    rules = set()
    for name, group in groups.items():
        role = name[len(deployment) + 1:]
        role = "*" if role == "hosts" else role
        for perm in group["IpPermissions"]:
            ports = (perm["IpProtocol"], perm["FromPort"], perm["ToPort"])
            pairs = [p["GroupId"] for p in perm["UserIdGroupPairs"]]
            cidrs = sorted([r["CidrIp"] for r in perm["IpRanges"]]
                           + [r["CidrIpv6"] for r in perm["Ipv6Ranges"]])
            assert pairs in ([], [hosts_id]), "internal rules reference only the hosts group"
            assert not (pairs and cidrs), "a rule is either internal or by network"
            if pairs:
                rules.add((role,) + ports + ("internal", ()))
            else:
                rules.add((role,) + ports + ("admin" if role == "*" else "public", tuple(cidrs)))
    return rules


def planned_firewall(plan):
    """The plan's rules; an admin rule without networks means no rule at all."""
    return {(r["role"], r["protocol"], r["from_port"], r["to_port"], r["source"],
             tuple(sorted(r["cidrs"]))) for r in plan["firewall"]
            if r["source"] == "internal" or r["cidrs"]}


def instances(emu, deployment="dialog"):
    reservations = emu.client().describe_instances(Filters=[
        {"Name": "tag:" + TAG_DEPLOYMENT, "Values": [deployment]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])["Reservations"]
    return [dict(i, ReservationId=r["ReservationId"]) for r in reservations
            for i in r["Instances"]]


def host_exposure(emu, deployment="dialog"):
    """Host name -> list of (protocol, from, to, sources) of every group its interface is in."""
    by_id = {g["GroupId"]: g for g in security_groups(emu, deployment).values()}
    exposure = {}
    for instance in instances(emu, deployment):
        name = {t["Key"]: t["Value"] for t in instance["Tags"]}["Name"]
        group_ids = [g["GroupId"] for n in instance["NetworkInterfaces"] for g in n["Groups"]]
        rules = []
        for group_id in group_ids:
            for perm in by_id[group_id]["IpPermissions"]:
                sources = ({r["CidrIp"] for r in perm["IpRanges"]}
                           | {r["CidrIpv6"] for r in perm["Ipv6Ranges"]}
                           | {p["GroupId"] for p in perm["UserIdGroupPairs"]})
                rules.append((perm["IpProtocol"], perm["FromPort"], perm["ToPort"], sources))
        exposure[name] = (group_ids, rules)
    return exposure


def check_exposure(emu, plan, admin):
    """No host opens a port that one of its roles serves internally to the world, and SSH is
    open to the admin networks only."""
    hosts = {h["name"]: h for h in plan["hosts"]}
    groups = security_groups(emu)
    exposure = host_exposure(emu)
    assert sorted(exposure) == sorted(hosts)
    for name, (group_ids, rules) in exposure.items():
        host = hosts[name]
        wanted = {groups["dialog-%s" % k]["GroupId"] for k in ["hosts"] + host["roles"]}
        assert set(group_ids) == wanted, name
        internal = [r for r in plan["firewall"]
                    if r["source"] == "internal" and r["role"] in host["roles"]]
        for protocol, low, high, sources in rules:
            if sources & WORLD:
                for rule in internal:
                    overlap = rule["protocol"] == protocol and not (
                        high < rule["from_port"] or low > rule["to_port"])
                    assert not overlap, "%s opens internal %s to the world" % (name, rule)
            if low <= 22 <= high:
                assert sources <= set(admin) and sources, (name, sources)
        ssh = [s for p, low, high, s in rules if low <= 22 <= high]
        assert (set().union(*ssh) if ssh else set()) == set(admin)


def check_inventory(driver, plan):
    hosts = driver.inventory(plan["deployment"])
    assert [h["name"] for h in hosts] == sorted(h["name"] for h in plan["hosts"])
    planned = {h["name"]: h for h in plan["hosts"]}
    holds = collections.Counter(f["hosts"][0] for f in plan["floating_ips"])
    for host in hosts:
        want = planned[host["name"]]
        assert (host["group"], host["index"], host["roles"], host["size"], host["state"]) == (
            want["group"], want["index"], want["roles"], want["size"], "running")
        assert [(v["size_gb"], v["kind"], v["purpose"]) for v in host["volumes"]] == [
            (d["size_gb"], d["kind"], d["purpose"]) for d in want["disks"]]
        assert len(host["public_addresses"]) == want["public_ips"] + holds[host["name"]]
        assert ipaddress.ip_address(host["private_address"]).is_private
        assert host["provider_id"].startswith("i-")
    return hosts


# ---- provisioning every tier --------------------------------------------------------------

@pytest.mark.parametrize("tier,with_storage", TIERS)
def test_reconcile_creates_exactly_the_plan_and_destroy_removes_it(emu, tier, with_storage):
    plan = plan_for(tier, with_storage)
    driver = make_driver(emu)
    changes = driver.reconcile(plan)

    snapshot = emu.snapshot()
    assert snapshot.counts("dialog") == expected_counts(plan)
    assert snapshot.counts() == expected_counts(plan), "nothing untagged"
    assert snapshot.orphans("dialog") == []
    assert {v["VolumeType"] for v in snapshot.of("dialog")["volumes"]} == {"gp3"}
    assert all(m["Ebs"]["DeleteOnTermination"] for i in snapshot.of("dialog")["instances"]
               for m in i["BlockDeviceMappings"])
    launches = collections.Counter(driver.calls.mutating)["RunInstances"]
    # One launch per group and zone (lib.cloud.zones).
    assert launches == len({(h["group"], h["zone_slot"]) for h in plan["hosts"]})
    assert sorted(c["name"] for c in changes if c["kind"] == "host") == sorted(
        h["name"] for h in plan["hosts"])
    check_inventory(driver, plan)
    assert actual_firewall(emu) == planned_firewall(plan)
    check_exposure(emu, plan, ADMIN)

    again = make_driver(emu)
    assert again.reconcile(plan) == []
    assert again.calls.mutating == []

    gone = make_driver(emu)
    removed = gone.destroy("dialog")
    assert emu.resource_counts("dialog") == ZERO
    assert emu.resource_counts() == ZERO
    assert {c["action"] for c in removed} == {"delete"}
    assert make_driver(emu).destroy("dialog") == []


def test_without_admin_networks_ssh_stays_closed(emu):
    plan = plan_for("mini", admin_networks=[])
    make_driver(emu).reconcile(plan)
    exposure = host_exposure(emu)
    assert not [r for _, rules in exposure.values() for r in rules if r[1] <= 22 <= r[2]]
    assert actual_firewall(emu) == planned_firewall(plan)


def test_mini_host_gets_a_private_address_per_public_address(emu):
    plan = plan_for("mini")
    make_driver(emu, profile=emu.profile(ssh_key_names=["ops", "backup"])).reconcile(plan)
    (instance,) = instances(emu)
    assert instance["KeyName"] == "ops"
    private = instance["NetworkInterfaces"][0]["PrivateIpAddresses"]
    assert len(private) == 3
    addresses = emu.client().describe_addresses()["Addresses"]
    assert len(addresses) == 3
    assert {a["NetworkInterfaceId"] for a in addresses} == {
        instance["NetworkInterfaces"][0]["NetworkInterfaceId"]}


def test_floating_address_is_held_by_the_first_proxy(emu):
    plan = plan_for("small-failover")
    hosts = {h["name"]: h for h in make_driver(emu).inventory("dialog")}
    assert hosts == {}
    make_driver(emu).reconcile(plan)
    hosts = {h["name"]: h for h in make_driver(emu).inventory("dialog")}
    (vip,) = [a for a in emu.client().describe_addresses()["Addresses"]
              if {"Key": "dialog:floating", "Value": "dialog-proxy-vip-1"} in a["Tags"]]
    assert hosts["dialog-proxy-1"]["public_addresses"] == [vip["PublicIp"]]
    assert hosts["dialog-proxy-2"]["public_addresses"] == []


# ---- dry run ------------------------------------------------------------------------------

def test_dry_run_lists_the_changes_and_changes_nothing(emu):
    plan = plan_for("small-failover", True)
    dry = make_driver(emu)
    listed = dry.reconcile(plan, dry_run=True)
    assert dry.calls.mutating == []
    assert emu.resource_counts() == ZERO
    kinds = collections.Counter((c["action"], c["kind"]) for c in listed)
    assert kinds[("create", "host")] == len(plan["hosts"])
    assert kinds[("create", "address")] == plan["public_ips"]
    assert kinds[("create", "vpc")] == 1
    assert kinds[("create", "nat-gateway")] == 1 and kinds[("create", "subnet")] == 4

    real = make_driver(emu)
    assert real.reconcile(plan) == listed, "a dry run lists what the real run does"

    bigger = plan_for("small-failover", True, dialog_servers=5)
    dry = make_driver(emu)
    assert [(c["action"], c["name"]) for c in dry.reconcile(bigger, dry_run=True)] == [
        ("create", "dialog-dialog-server-4"), ("create", "dialog-dialog-server-5")]
    assert dry.calls.mutating == []

    dry = make_driver(emu)
    listed = dry.destroy("dialog", dry_run=True)
    assert dry.calls.mutating == []
    assert emu.resource_counts("dialog") == expected_counts(plan)
    assert collections.Counter(c["kind"] for c in listed)["host"] == len(plan["hosts"])
    real = make_driver(emu)
    assert real.destroy("dialog") == listed


# ---- crashes ------------------------------------------------------------------------------

def names_and_indexes(snapshot):
    tags = [{t["Key"]: t["Value"] for t in i["Tags"]} for i in snapshot.of("dialog")["instances"]]
    return sorted((t.get("Name"), t.get("dialog:index")) for t in tags)


class Crash(Exception):
    """The driver's process dying right after AWS applied a change."""


class CrashAfter(CallLog):
    def __init__(self, k):
        super().__init__()
        self.k = k

    def after_mutation(self, operation):
        if len(self.mutating) == self.k:
            raise Crash("after mutating call %d (%s)" % (self.k, operation))


# Slow by design: one crash and re-run per mutating call (about 60 cycles): 130 s on a
# loaded 2-core machine.
@pytest.mark.timeout(900)
def test_a_crash_after_any_mutating_call_converges_on_the_next_run(emu):
    plan = plan_for("small-failover")
    planned_names = sorted((h["name"], str(h["index"])) for h in plan["hosts"])
    clean = make_driver(emu)
    clean.reconcile(plan)
    total = len(clean.calls.mutating)
    assert emu.resource_counts("dialog") == expected_counts(plan)

    started = time.monotonic()
    for k in range(1, total + 1):
        emu.reset()
        with pytest.raises(Crash):
            make_driver(emu, calls=CrashAfter(k)).reconcile(plan)
        rerun = make_driver(emu)
        rerun.reconcile(plan)
        where = "crash after mutating call %d (%s)" % (k, clean.calls.mutating[k - 1])
        snapshot = emu.snapshot()
        assert snapshot.counts() == expected_counts(plan), where
        assert snapshot.orphans("dialog") == [], where
        assert names_and_indexes(snapshot) == planned_names, where
    print("\ncrash test: N=%d mutating calls, %d crash/re-run cycles in %.1fs"
          % (total, total, time.monotonic() - started))


def crash_after_first(emu, plan, operation, after=None, skip=0):
    """Provision until just after the first `operation` (the first after the operation
    `after`, when given; skip: that many of them later) succeeded, then die."""
    clean = make_driver(emu)
    clean.reconcile(plan)
    start = clean.calls.mutating.index(after) + 1 if after else 0
    k = clean.calls.mutating.index(operation, start) + 1
    for _ in range(skip):
        k = clean.calls.mutating.index(operation, k) + 1
    emu.reset()
    with pytest.raises(Crash):
        make_driver(emu, calls=CrashAfter(k)).reconcile(plan)
    return clean


def test_a_crash_between_allocate_and_associate_never_allocates_twice(emu):
    plan = plan_for("small-failover")
    # The NAT gateway's address comes first; the crash hits the first host address.
    crash_after_first(emu, plan, "AllocateAddress", after="CreateNatGateway")
    (orphan,) = [a for a in emu.client().describe_addresses()["Addresses"]
                 if "AssociationId" not in a]
    rerun = make_driver(emu)
    rerun.reconcile(plan)
    calls = collections.Counter(rerun.calls.mutating)
    assert calls["AllocateAddress"] == plan["public_ips"] - 1
    assert calls["AssociateAddress"] == plan["public_ips"]
    assert orphan["PublicIp"] in {a for h in rerun.inventory("dialog")
                                  for a in h["public_addresses"]}
    assert emu.orphans("dialog") == []


def test_a_crash_before_naming_new_instances_maps_them_by_launch_index(emu):
    plan = plan_for("small-failover")
    # The eighth launch: dialog servers 1 and 3, the first zone's (proxies, web and voice
    # launch one per zone, push one).
    clean = crash_after_first(emu, plan, "RunInstances", skip=7)
    unnamed = [i for i in instances(emu)
               if "dialog:index" not in {t["Key"] for t in i["Tags"]}]
    assert len(unnamed) == 2
    for instance in unnamed:
        tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
        assert (tags["Name"], tags["dialog:batch"]) == ("dialog-dialog-server", "1,3")
        assert "dialog:index" not in tags
    rerun = make_driver(emu)
    rerun.reconcile(plan)
    calls = collections.Counter(rerun.calls.mutating)
    assert calls["RunInstances"] == collections.Counter(clean.calls.mutating)["RunInstances"] - 8
    by_id = {i["InstanceId"]: {t["Key"]: t["Value"] for t in i["Tags"]} for i in instances(emu)}
    for instance in unnamed:
        tags = by_id[instance["InstanceId"]]
        index = (1, 3)[instance["AmiLaunchIndex"]]
        assert tags["Name"] == "dialog-dialog-server-%d" % index
        assert tags["dialog:index"] == str(index)
    assert emu.resource_counts() == expected_counts(plan)


# Slow by design: a crash and re-run per destroy call: 35 s on a loaded 2-core machine.
@pytest.mark.timeout(300)
def test_a_crash_during_destroy_converges_on_the_next_destroy(emu):
    plan = plan_for("mini")
    make_driver(emu).reconcile(plan)
    clean = make_driver(emu)
    clean.destroy("dialog", dry_run=False)
    total = len(clean.calls.mutating)
    for k in range(1, total + 1):
        emu.reset()
        make_driver(emu).reconcile(plan)
        with pytest.raises(Crash):
            make_driver(emu, calls=CrashAfter(k)).destroy("dialog")
        make_driver(emu).destroy("dialog")
        assert emu.resource_counts() == ZERO, "crash after destroy call %d" % k


# ---- throttling ---------------------------------------------------------------------------

# Slow by design: botocore's backoff on every fifth request: 16 s on a loaded 2-core machine.
@pytest.mark.timeout(240)
def test_provision_succeeds_with_a_fifth_of_requests_throttled(emu):
    plan = plan_for("small-failover")
    throttler = Throttler(rate=0.2, seed=7)
    driver = make_driver(emu, client_hook=throttler.install)
    driver.reconcile(plan)
    assert throttler.throttled >= 10, throttler.throttled
    assert emu.resource_counts() == expected_counts(plan)
    assert emu.orphans("dialog") == []
    again = make_driver(emu, client_hook=Throttler(rate=0.2, seed=8).install)
    assert again.reconcile(plan) == []
    assert again.calls.mutating == []


# ---- scaling and drift --------------------------------------------------------------------

def test_scaling_dialog_servers_up_and_down(emu):
    plan = plan_for("small-failover")
    make_driver(emu).reconcile(plan)

    up = make_driver(emu)
    changes = up.reconcile(plan_for("small-failover", dialog_servers=5))
    assert [(c["action"], c["name"]) for c in changes] == [
        ("create", "dialog-dialog-server-4"), ("create", "dialog-dialog-server-5")]
    # 4 goes to the second zone, 5 to the first: one launch each.
    assert collections.Counter(up.calls.mutating)["RunInstances"] == 2
    new = [i for i in instances(emu) if {"Key": "dialog:batch", "Value": "4"} in i["Tags"]
           or {"Key": "dialog:batch", "Value": "5"} in i["Tags"]]
    assert len(new) == 2 and len({i["Placement"]["AvailabilityZone"] for i in new}) == 2
    assert emu.resource_counts()["instances"] == len(plan["hosts"]) + 2

    # The second line of defence (lib.removal_guard): a dialog server goes only when named.
    refused = make_driver(emu)
    with pytest.raises(InputError, match="will not delete dialog-dialog-server-4, "
                                         "dialog-dialog-server-5"):
        refused.reconcile(plan)
    assert refused.calls.mutating == []
    assert emu.resource_counts()["instances"] == len(plan["hosts"]) + 2
    down = make_driver(emu)
    changes = down.reconcile(dict(plan, remove_hosts=["dialog-dialog-server-4",
                                                      "dialog-dialog-server-5"]))
    assert sorted((c["action"], c["kind"], c["name"]) for c in changes) == [
        ("delete", "host", "dialog-dialog-server-4"), ("delete", "host", "dialog-dialog-server-5")]
    assert emu.resource_counts() == expected_counts(plan)
    assert emu.orphans("dialog") == []


def test_scaling_down_releases_the_addresses_of_removed_hosts(emu):
    plan = plan_for("small-failover")
    three = dict(plan, hosts=plan["hosts"] + [
        dict(h, name="dialog-voice-3", index=3) for h in plan["hosts"]
        if h["name"] == "dialog-voice-2"])
    three["public_ips"] = plan["public_ips"] + 1
    make_driver(emu).reconcile(three)
    assert emu.resource_counts() == expected_counts(three)

    down = make_driver(emu)
    changes = down.reconcile(plan)
    assert sorted((c["action"], c["kind"], c["name"]) for c in changes) == [
        ("delete", "address", "dialog-voice-3 address 1"),
        ("delete", "host", "dialog-voice-3")]
    assert emu.resource_counts() == expected_counts(plan)
    assert emu.orphans("dialog") == []


def test_size_drift_is_reported_not_acted_on(emu):
    plan = plan_for("small")
    make_driver(emu).reconcile(plan)
    bigger = dict(plan, hosts=[dict(h, size="t2.2xlarge") if h["group"] == "cassandra" else h
                               for h in plan["hosts"]])
    driver = make_driver(emu)
    (drift,) = driver.reconcile(bigger)
    assert drift["action"] == "update" and drift["name"] == "dialog-cassandra-1"
    assert "t2.xlarge" in drift["detail"] and "replacement" in drift["detail"]
    assert driver.calls.mutating == []


def operator_network(emu, egress="nat"):
    """A VPC and subnet of the operator's: egress "nat" (0.0.0.0/0 to a NAT gateway in a
    public subnet of its own), "igw" (to an internet gateway) or None (no default route)."""
    client = emu.client()
    vpc = client.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = client.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]
    if egress:
        igw = client.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
        client.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
        table = client.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
        client.associate_route_table(RouteTableId=table, SubnetId=subnet)
        target = {"GatewayId": igw}
        if egress == "nat":
            edge = client.create_subnet(VpcId=vpc, CidrBlock="10.9.0.0/24")["Subnet"]["SubnetId"]
            eip = client.allocate_address(Domain="vpc")["AllocationId"]
            target = {"NatGatewayId": client.create_nat_gateway(
                SubnetId=edge, AllocationId=eip)["NatGateway"]["NatGatewayId"]}
        client.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", **target)
    return vpc, subnet


def test_given_network_is_used_and_left_in_place(emu):
    client = emu.client()
    vpc, subnet = operator_network(emu, "nat")
    before = emu.resource_counts()
    driver = make_driver(emu, profile=emu.profile(vpc_id=vpc, subnet_id=subnet))
    plan = plan_for("small")
    changes = driver.reconcile(plan)
    assert not [c for c in changes if c["kind"] in ("vpc", "subnet", "route-table")]
    assert {i["SubnetId"] for i in instances(emu)} == {subnet}
    assert emu.resource_counts("dialog")["vpcs"] == 0
    assert emu.resource_counts("dialog")["nat_gateways"] == 0, "the operator's NAT serves"
    driver.destroy("dialog")
    assert emu.resource_counts("dialog") == ZERO
    assert client.describe_subnets(SubnetIds=[subnet])["Subnets"]
    assert emu.resource_counts() == before, "the operator's network is left as it was"


@pytest.mark.parametrize("egress,tier,refused", [
    (None, "mini", "has no default route (0.0.0.0/0)"),
    ("igw", "small", "dialog-cassandra-1, dialog-dialog-server-1"),
    ("igw", "mini", None)])
def test_given_subnet_without_egress_is_refused_before_any_change(emu, egress, tier, refused):
    vpc, subnet = operator_network(emu, egress)
    before = emu.resource_counts()
    driver = make_driver(emu, profile=emu.profile(vpc_id=vpc, subnet_id=subnet))
    if refused is None:     # every mini host holds a public address: the IGW is its way out
        driver.reconcile(plan_for(tier))
        assert emu.resource_counts("dialog")["instances"] == 1
        return
    with pytest.raises(ProviderError) as caught:
        driver.reconcile(plan_for(tier))
    text = str(caught.value)
    assert subnet in text and refused in text and "NAT gateway" in text
    assert driver.calls.mutating == []
    assert emu.resource_counts() == before


def test_new_network_sends_private_hosts_out_through_one_nat_gateway(emu):
    plan = plan_for("small-failover")
    dry = make_driver(emu)
    listed = dry.reconcile(plan, dry_run=True)
    assert [(c["action"], c["name"]) for c in listed if c["kind"] == "nat-gateway"] == [
        ("create", "dialog-nat")]
    driver = make_driver(emu)
    assert driver.reconcile(plan) == listed
    assert collections.Counter(driver.calls.mutating)["CreateNatGateway"] == 1
    client = emu.client()
    (nat,) = [n for n in client.describe_nat_gateways()["NatGateways"]
              if n["State"] == "available"]
    assert {"Key": TAG_DEPLOYMENT, "Value": "dialog"} in nat["Tags"]
    subnets = {s["SubnetId"]: {t["Key"]: t["Value"] for t in s["Tags"]}["dialog:network"]
               for s in client.describe_subnets(Filters=[
                   {"Name": "tag:" + TAG_DEPLOYMENT, "Values": ["dialog"]}])["Subnets"]}
    assert subnets[nat["SubnetId"]] == "public"
    routes = {}
    for table in client.describe_route_tables(Filters=[
            {"Name": "tag:" + TAG_DEPLOYMENT, "Values": ["dialog"]}])["RouteTables"]:
        (default,) = [r for r in table["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0"]
        for association in table["Associations"]:
            routes[association["SubnetId"]] = default
    private = [s for s, side in subnets.items() if side == "private"]
    assert len(private) == 2     # one per zone, both out through the one NAT gateway
    assert all(routes[s]["NatGatewayId"] == nat["NatGatewayId"] for s in private)
    assert routes[nat["SubnetId"]]["GatewayId"].startswith("igw-")
    where = {{t["Key"]: t["Value"] for t in i["Tags"]}["Name"]: subnets[i["SubnetId"]]
             for i in instances(emu)}
    assert {n for n, side in where.items() if side == "public"} == {
        "dialog-proxy-1", "dialog-proxy-2", "dialog-voice-1", "dialog-voice-2"}

    again = make_driver(emu)
    assert again.reconcile(plan) == [] and again.calls.mutating == []
    gone = make_driver(emu)
    removed = gone.destroy("dialog")
    assert ("delete", "nat-gateway") in {(c["action"], c["kind"]) for c in removed}
    mutating = gone.calls.mutating
    assert mutating.index("DeleteNatGateway") < mutating.index("DeleteSubnet")
    assert emu.resource_counts() == ZERO
    assert emu.orphans() == []


def test_role_is_assumed_first_when_the_profile_names_one(emu):
    driver = make_driver(emu, profile=emu.profile(
        aws_role_arn="arn:aws:iam::123456789012:role/dialog-deployer"))
    assert driver.inventory("dialog") == []
    assert driver.calls.calls[0] == ("AssumeRole", False)


def test_open_provider_gives_the_aws_driver(emu):
    driver = open_provider("aws", emu.profile(), "us-east-1")
    assert isinstance(driver, aws.Driver) and driver.name == "aws"


# ---- errors a person can act on -----------------------------------------------------------

SECRET = "wJalrXUtnFEMI-this-secret-must-never-be-printed"
KEY_ID = "AKIAEXAMPLEKEYID0001"


def failing(code, message="refused", status=400, operation=None, only_if=None):
    """A stand-in for AWS answering with an error: a before-send handler on the driver's
    clients. operation/only_if limit it to requests whose body contains those strings."""
    def hook(client):
        def before_send(request, **_):
            body = request.body.decode() if isinstance(request.body, bytes) else str(
                request.body or "")
            if operation and "Action=%s&" % operation not in body + "&":
                return None
            if only_if and only_if not in body:
                return None
            return error_response(code, message, status)
        client.meta.events.register("before-send", before_send)
    return hook


@pytest.mark.parametrize("code", ["AuthFailure", "SignatureDoesNotMatch", "ExpiredToken",
                                  "UnauthorizedOperation", "InvalidClientTokenId"])
@pytest.mark.parametrize("operation", ["reconcile", "inventory", "destroy"])
def test_refused_credentials_name_profile_and_provider_but_no_secret(emu, code, operation):
    profile = emu.profile(name="prod", aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                          aws_session_token=SECRET + "-token")
    driver = make_driver(emu, profile=profile, client_hook=failing(
        code, "the key %s or secret %s is wrong" % (KEY_ID, SECRET), 401))
    call = {"reconcile": lambda: driver.reconcile(plan_for("small")),
            "inventory": lambda: driver.inventory("dialog"),
            "destroy": lambda: driver.destroy("dialog")}[operation]
    with pytest.raises(CredentialsError) as caught:
        call()
    text = str(caught.value)
    assert text.startswith("profile 'prod' (aws, us-east-1): the credentials were refused (%s)"
                           % code)
    assert SECRET not in text and KEY_ID not in text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize("code", ["InstanceLimitExceeded", "VcpuLimitExceeded"])
def test_instance_quota_says_what_was_asked(emu, code):
    driver = make_driver(emu, client_hook=failing(
        code, "You have requested more vCPU capacity than your current limit allows",
        operation="RunInstances", only_if="InstanceType=t2.xlarge"))
    with pytest.raises(QuotaError) as caught:
        driver.reconcile(plan_for("small-failover"))
    text = str(caught.value)
    assert "2 t2.xlarge instances for group dialog-server" in text   # the first zone's
    assert code in text and "current limit" in text
    # Once the limit is raised, the next run finishes the job.
    make_driver(emu).reconcile(plan_for("small-failover"))
    assert emu.resource_counts() == expected_counts(plan_for("small-failover"))


def test_address_quota_says_what_was_asked(emu):
    driver = make_driver(emu, client_hook=failing(
        "AddressLimitExceeded", "The maximum number of addresses has been reached.",
        operation="AllocateAddress"))
    with pytest.raises(QuotaError) as caught:
        driver.reconcile(plan_for("small"))
    # The NAT gateway's address is the first the network needs.
    assert "Elastic IP address for NAT gateway dialog-nat" in str(caught.value)


def test_refused_instance_type_is_named(emu):
    driver = make_driver(emu, client_hook=failing(
        "InvalidParameterValue", "Invalid value 't2.medium' for InstanceType.",
        operation="RunInstances"))
    with pytest.raises(ProviderError) as caught:
        driver.reconcile(plan_for("small"))
    assert "instance type t2.medium" in str(caught.value)
    assert "us-east-1" in str(caught.value)


def test_unknown_region_names_the_region(emu):
    def unreachable(client):
        # Stand-in for DNS failing on the endpoint boto3 derives from a region AWS lacks.
        def before_send(request, **_):
            raise EndpointConnectionError(endpoint_url=request.url)
        client.meta.events.register("before-send", before_send)

    profile = emu.profile(endpoint_url=None)
    driver = aws.Driver(profile, "xx-nowhere-1", client_hook=unreachable, max_attempts=1)
    with pytest.raises(ProviderError) as caught:
        driver.inventory("dialog")
    text = str(caught.value)
    assert "'xx-nowhere-1'" in text and "https://ec2.xx-nowhere-1.amazonaws.com" in text


@pytest.mark.parametrize("fate,state", [("terminate_instances", "terminated"),
                                        ("stop_instances", "stopped")])
def test_an_instance_that_fails_to_start_is_named(emu, fate, state):
    def on_launch(client):
        # Stand-in for AWS ending a launch (capacity, a bad image) or one that never runs.
        def after_call(parsed, **_):
            ids = [i["InstanceId"] for i in parsed.get("Instances", [])]
            if ids and "cassandra" in str(parsed):
                getattr(emu.client(), fate)(InstanceIds=ids)
        client.meta.events.register("after-call.ec2.RunInstances", after_call)
    driver = make_driver(emu, client_hook=on_launch, wait_attempts=5)
    with pytest.raises(ResourceFailed) as caught:
        driver.reconcile(plan_for("small"))
    assert "dialog-cassandra-1 (%s) did not become running" % state in str(caught.value)


def test_the_newest_debian_12_image_is_used_when_the_profile_names_none(emu):
    assert "image" not in emu.profile()
    make_driver(emu).reconcile(plan_for("mini"))
    assert {i["ImageId"] for i in instances(emu)} == {DEBIAN_IMAGE}


def test_missing_debian_image_asks_for_one(emu):
    client = emu.client()
    for image in client.describe_images(Owners=[DEBIAN_OWNER])["Images"]:
        client.deregister_image(ImageId=image["ImageId"])
    with pytest.raises(ProviderError) as caught:
        make_driver(emu).reconcile(plan_for("mini"))
    assert "Debian 12" in str(caught.value) and "image" in str(caught.value)
    assert emu.resource_counts() == ZERO


def test_unknown_image_is_named(emu):
    with pytest.raises(ProviderError) as caught:
        make_driver(emu, profile=emu.profile(image="ami-00000000000000000")).reconcile(
            plan_for("mini"))
    assert "ami-00000000000000000" in str(caught.value)


def test_other_aws_errors_never_echo_a_secret(emu):
    profile = emu.profile(aws_secret_access_key=SECRET)
    driver = make_driver(emu, profile=profile, client_hook=failing(
        "OperationNotPermitted", "something about %s" % SECRET, 400,
        operation="DescribeInstances"))
    with pytest.raises(ProviderError) as caught:
        driver.inventory("dialog")
    assert SECRET not in str(caught.value) and "OperationNotPermitted" in str(caught.value)


# ---- monitoring reach ---------------------------------------------------------------------

MONITORING = ["198.51.100.7/32"]


@pytest.mark.parametrize("tier", ["small", "small-failover"])
def test_monitoring_networks_reach_prometheus_on_the_web_hosts_only(emu, tier):
    prometheus = 9091      # the catalog's web/prometheus port, as a user would check it
    plan = plan_for(tier, monitoring_networks=MONITORING)
    make_driver(emu).reconcile(plan)
    roles = {h["name"]: h["roles"] for h in plan["hosts"]}
    for name, (_, rules) in host_exposure(emu).items():
        opened = {s for _, low, high, sources in rules if low <= prometheus <= high
                  for s in sources if "." in s}
        assert opened == (set(MONITORING) if "web" in roles[name] else set()), name
    again = make_driver(emu)
    assert again.reconcile(plan) == [] and again.calls.mutating == []
    # Taken out of the profile, the rule goes.
    closed = make_driver(emu)
    assert [(c["action"], c["kind"]) for c in closed.reconcile(plan_for(tier))] == [
        ("delete", "firewall-rule")]


def test_monitoring_networks_refuse_the_whole_internet():
    with pytest.raises(InputError) as caught:
        plan_for("small", monitoring_networks=["0.0.0.0/0"])
    assert caught.value.field == "monitoring_networks"


# ---- shared files -------------------------------------------------------------------------

def buckets(emu):
    return [b["Name"] for b in emu.client("s3").list_buckets()["Buckets"]]


def test_multi_server_tier_gets_a_private_tagged_bucket_kept_unless_data_goes(emu):
    plan = plan_for("small-failover")
    assert buckets(emu) == []
    make_driver(emu).reconcile(plan)
    (name,) = buckets(emu)
    assert name.startswith("dialog-dialog-")
    s3 = emu.client("s3")
    tags = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=name)["TagSet"]}
    assert tags[TAG_DEPLOYMENT] == "dialog"
    blocked = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
    assert all(blocked.values()) and len(blocked) == 4
    assert "Status" not in s3.get_bucket_versioning(Bucket=name)
    again = make_driver(emu)
    assert again.reconcile(plan) == [] and again.calls.mutating == []
    settings = again.object_storage_settings("dialog")
    assert settings["bucket"] == name and settings["region"] == "us-east-1"
    s3.put_object(Bucket=name, Key="files/1", Body=b"an upload")

    keep = make_driver(emu)
    removed = keep.destroy("dialog")
    assert "bucket" not in {c["kind"] for c in removed}
    assert buckets(emu) == [name] and name in keep.kept[0]
    assert emu.resource_counts() == ZERO

    gone = make_driver(emu)
    assert [(c["action"], c["kind"]) for c in gone.destroy("dialog", delete_data=True)] == [
        ("delete", "bucket")]
    assert buckets(emu) == [] and gone.kept == []


def test_mini_and_operator_storage_make_no_bucket(emu):
    make_driver(emu).reconcile(plan_for("mini"))
    assert buckets(emu) == []
    given = {"endpoint": "https://s3.example.net", "bucket": "ops-files",
             "access_key_id": "AKIAOPS", "secret_access_key": SECRET}
    driver = make_driver(emu, profile=emu.profile(object_storage=given))
    driver.reconcile(plan_for("small", deployment="other"))
    assert buckets(emu) == []
    settings = driver.object_storage_settings("other")
    assert (settings["endpoint"], settings["bucket"]) == ("https://s3.example.net", "ops-files")
