"""Availability zones on AWS (issue 14): subnets in two zones, redundant hosts spread over them
by index, Cassandra's rack = the zone, volumes in their instance's zone, the floating Elastic IP
moving across zones, and a deployment from before zones re-deployed without moving a host.
Against the AWS emulator (moto)."""

import importlib.util
import os
import subprocess
import sys

import pytest
import yaml

from lib.cloud.failover import move_addresses
from lib.errors import InputError
from lib.planner import build_plan
from lib.providers import aws
from lib.render import COMPOSE_FILE, render_host

ADMIN = ["203.0.113.0/24"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The AWS driver as it was before zones (one public and one private subnet, in one zone).
BEFORE_ZONES = "1469a9393c4f299b1994565a2bf3951aae21a7ea"
SPREAD = ("proxy", "postgres", "dialog-server", "cassandra", "web", "voice")
SECRETS = {k: "zone-test-%s-secret" % k for k in (
    "postgres_password", "replication_password", "turn_username", "turn_password",
    "server_secret", "server_key_public", "server_key_private", "admin_login",
    "admin_password", "s3_access_key", "s3_secret_key")}
IMAGES = {"dialog_server": "registry.example.com/dialog/server:2.5",
          "web_app": "registry.example.com/dialog/web-app:2.5",
          "dashboard": "registry.example.com/dialog/dashboard:2.5",
          "push": "registry.example.com/dialog/push:2.5"}


def driver_for(emu, module=aws, **profile):
    return module.Driver(emu.profile(**profile), "us-east-1", wait_delay=0.01,
                         wait_attempts=50)


def first_two_zones(emu):
    zones = sorted(z["ZoneName"] for z in emu.client().describe_availability_zones(
        Filters=[{"Name": "state", "Values": ["available"]}])["AvailabilityZones"])
    return zones[:2]


def by_name(driver):
    return {h["name"]: h for h in driver.inventory("dialog")}


def mutations(changes):
    return [c for c in changes if c["action"] != "none"]


def subnets(emu):
    found = emu.client().describe_subnets(Filters=[
        {"Name": "tag:dialog:deployment", "Values": ["dialog"]}])["Subnets"]
    return {(t["Value"], s["AvailabilityZone"]): s for s in found for t in s["Tags"]
            if t["Key"] == "dialog:network"}


@pytest.mark.parametrize("tier", ["small-failover", "production"])
def test_redundant_hosts_alternate_between_two_zones_by_index(emu, tier):
    driver = driver_for(emu)
    plan = build_plan(tier, "aws", admin_networks=ADMIN)
    driver.reconcile(plan)
    hosts = by_name(driver)
    zones = first_two_zones(emu)
    for host in hosts.values():
        assert host["zone"] == zones[(host["index"] - 1) % 2], host["name"]
    for group in SPREAD:
        members = [h for h in hosts.values() if h["group"] == group]
        if len(members) > 1:
            assert {h["zone"] for h in members} == set(zones), group
    spread = {g for g in SPREAD if sum(h["group"] == g for h in hosts.values()) > 1}
    assert {"proxy", "cassandra"} <= spread     # production has one Postgres, one web
    # A public and a private subnet per zone; one route table per side serves both zones.
    assert sorted(subnets(emu)) == sorted((side, z) for z in zones
                                          for side in ("public", "private"))
    tables = emu.client().describe_route_tables(Filters=[
        {"Name": "tag:dialog:deployment", "Values": ["dialog"]}])["RouteTables"]
    for table in tables:
        side = {t["Key"]: t["Value"] for t in table["Tags"]}["dialog:network"]
        associated = {a["SubnetId"] for a in table["Associations"] if not a.get("Main")}
        assert associated == {subnets(emu)[(side, z)]["SubnetId"] for z in zones}
    # One NAT gateway, in the first zone's public subnet: the single point for egress only.
    nats = emu.client().describe_nat_gateways()["NatGateways"]
    live = [n for n in nats if n["State"] in ("pending", "available")]
    assert [n["SubnetId"] for n in live] == [subnets(emu)[("public", zones[0])]["SubnetId"]]


def test_a_second_run_changes_nothing(emu):
    driver = driver_for(emu)
    plan = build_plan("small-failover", "aws", admin_networks=ADMIN)
    driver.reconcile(plan)
    before = emu.resource_counts("dialog")
    again = driver_for(emu)
    assert mutations(again.reconcile(plan)) == []
    assert emu.resource_counts("dialog") == before


def test_volumes_are_in_their_instances_zone(emu):
    driver = driver_for(emu)
    driver.reconcile(build_plan("small-failover", "aws", admin_networks=ADMIN))
    hosts = by_name(driver)
    ec2 = emu.client()
    checked = 0
    for host in hosts.values():
        for volume in host["volumes"]:
            found = ec2.describe_volumes(VolumeIds=[volume["id"]])["Volumes"][0]
            assert found["AvailabilityZone"] == host["zone"], (host["name"], volume)
            checked += 1
    assert len({h["zone"] for h in hosts.values()}) == 2 and checked > len(hosts)


def test_the_floating_address_moves_to_the_standby_proxy_in_the_other_zone(emu):
    driver = driver_for(emu)
    plan = build_plan("small-failover", "aws", admin_networks=ADMIN)
    driver.reconcile(plan)
    hosts = by_name(driver)
    first, standby = hosts["dialog-proxy-1"], hosts["dialog-proxy-2"]
    assert first["zone"] != standby["zone"]
    result = move_addresses(driver, "dialog", "dialog-proxy-1", list(hosts.values()),
                            lambda h: h["name"] != "dialog-proxy-1")
    assert [m["to"] for m in result["moved"]] == ["dialog-proxy-2"]
    after = by_name(driver)
    moved = result["moved"][0]["address"]
    assert moved in after["dialog-proxy-2"]["public_addresses"]
    assert moved not in after["dialog-proxy-1"]["public_addresses"]


def compose_of(hosts, name):
    context = {"deployment": "dialog", "tier": "small-failover", "provider": "aws",
               "hosts": list(hosts.values()), "secrets": dict(SECRETS), "images": dict(IMAGES)}
    result = render_host(context, name)
    text = [f for f in result["files"] if f["path"] == COMPOSE_FILE][0]["content"]
    return yaml.safe_load(text)


def test_cassandra_racks_are_the_zones(emu):
    driver = driver_for(emu)
    driver.reconcile(build_plan("small-failover", "aws", admin_networks=ADMIN))
    hosts = by_name(driver)
    nodes = [h for h in hosts.values() if "cassandra" in h["roles"]]
    assert len({h["zone"] for h in nodes}) == 2
    for node in nodes:
        env = compose_of(hosts, node["name"])["services"]["cassandra"]["environment"]
        assert env["CASSANDRA_RACK"] == node["zone"]
        assert env["CASSANDRA_DC"] == "dialog-dialog"
        assert env["CASSANDRA_ENDPOINT_SNITCH"] == "GossipingPropertyFileSnitch"


def test_hosts_without_a_zone_rack_stay_rack1():
    """DigitalOcean and static servers: one datacenter, one rack."""
    plan = build_plan("small-failover", "digitalocean", admin_networks=ADMIN)
    hosts = {}
    for number, host in enumerate(plan["hosts"], 1):
        hosts[host["name"]] = {"name": host["name"], "group": host["group"],
                               "index": host["index"], "roles": host["roles"],
                               "private_address": "10.80.0.%d" % number,
                               "public_addresses": ["203.0.113.%d" % number]}
    node = [n for n, h in hosts.items() if "cassandra" in h["roles"]][0]
    env = compose_of(hosts, node)["services"]["cassandra"]["environment"]
    assert env["CASSANDRA_RACK"] == "rack1"


def test_the_profile_names_the_zones(emu):
    driver = driver_for(emu, availability_zones=["us-east-1d", "us-east-1c"])
    driver.reconcile(build_plan("small-failover", "aws", admin_networks=ADMIN))
    hosts = by_name(driver)
    assert hosts["dialog-proxy-1"]["zone"] == "us-east-1d"
    assert hosts["dialog-proxy-2"]["zone"] == "us-east-1c"


@pytest.mark.parametrize("zones, says", [
    (["us-east-1a"], "at least 2 different"),
    (["us-east-1a", "us-east-1a"], "at least 2 different"),
    ("us-east-1a", "a list of availability zone names"),
    (["us-east-1a", "mars-1z"], "mars-1z is not an available zone of us-east-1"),
])
def test_bad_zone_lists_are_refused_before_anything_is_made(emu, zones, says):
    driver = driver_for(emu, availability_zones=zones)
    with pytest.raises(InputError, match="availability_zones") as caught:
        driver.reconcile(build_plan("small-failover", "aws", admin_networks=ADMIN))
    assert says in str(caught.value)
    assert emu.resource_counts("dialog").get("instances", 0) == 0
    assert emu.resource_counts("dialog").get("vpcs", 0) == 0


def old_driver_module():
    """actions/lib/providers/aws.py as of BEFORE_ZONES, loaded beside the current one."""
    try:
        source = subprocess.run(["git", "show", "%s:actions/lib/providers/aws.py" % BEFORE_ZONES],
                                cwd=ROOT, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs the repository's history (git show %s)" % BEFORE_ZONES[:7])
    spec = importlib.util.spec_from_loader("aws_before_zones", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, "aws_before_zones.py", "exec"), module.__dict__)  # noqa: S102
    sys.modules.setdefault("aws_before_zones", module)
    return module


def instances(emu):
    found = {}
    for reservation in emu.client().describe_instances()["Reservations"]:
        for raw in reservation["Instances"]:
            found[raw["InstanceId"]] = raw["State"]["Name"]
    return found


def test_a_deployment_from_before_zones_redeploys_without_moving_a_host(emu):
    old = driver_for(emu, module=old_driver_module())
    plan = build_plan("small-failover", "aws", admin_networks=ADMIN)
    old.reconcile(plan)
    before = by_name(driver_for(emu))
    assert len({h["zone"] for h in before.values()}) == 1
    first = next(iter(before.values()))["zone"]
    ids = instances(emu)

    driver = driver_for(emu)
    changes = mutations(driver.reconcile(plan))
    assert not [c for c in changes if c["kind"] == "host"], changes
    assert sorted(c["name"] for c in changes if c["kind"] == "subnet") == sorted(
        "dialog-%s-%s" % (side, zone) for side in ("public", "private")
        for zone in first_two_zones(emu) if zone != first)
    assert instances(emu) == ids        # nothing terminated, nothing launched
    after = by_name(driver)
    assert {n: h["zone"] for n, h in after.items()} == {n: h["zone"] for n, h in before.items()}
    # Cassandra keeps the rack its nodes joined with (it refuses to start on a changed rack).
    nodes = [h for h in after.values() if "cassandra" in h["roles"]]
    for node in nodes:
        env = compose_of(after, node["name"])["services"]["cassandra"]["environment"]
        assert env["CASSANDRA_RACK"] == "rack1"
    assert mutations(driver_for(emu).reconcile(plan)) == []

    # New hosts go by index: dialog server 4 to the second zone; Cassandra stays one rack.
    bigger = build_plan("small-failover", "aws", admin_networks=ADMIN,
                        dialog_servers=5, cassandra_nodes=4)
    driver_for(emu).reconcile(bigger)
    grown = by_name(driver_for(emu))
    second = [z for z in first_two_zones(emu) if z != first][0]
    assert grown["dialog-dialog-server-4"]["zone"] == second
    assert grown["dialog-cassandra-4"]["zone"] == second
    assert grown["dialog-cassandra-4"]["rack"] == "rack1"
    assert {n: h["zone"] for n, h in grown.items() if n in before} == \
        {n: h["zone"] for n, h in before.items()}
    assert all(instances(emu)[i] == "running" for i in ids)
