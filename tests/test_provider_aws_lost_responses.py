"""AWS network creation under lost responses: EC2 carried out a create, its answer never
arrived (a read timeout), and whoever repeats the call must not make a second network.

The stand-in: a botocore before-send handler that sends the request to moto itself (so moto
applies it) and then raises ReadTimeoutError, as a dropped answer does. botocore's standard
retry mode repeats requests after a ReadTimeoutError; CreateVpc, CreateSubnet,
CreateInternetGateway and AllocateAddress take no ClientToken, so AWS would apply each repeat.
"""

import collections

import pytest
from botocore.exceptions import ReadTimeoutError
from botocore.httpsession import URLLib3Session

from lib.planner import build_plan
from lib.providers import aws
from lib.providers.base import CallLog

ADMIN = ["203.0.113.0/24"]


def answer_lost(operation, times=1):
    """A client hook: the first `times` requests of `operation` reach moto, and their answer is
    lost on the way back."""
    state = {"left": times, "applied": 0}
    http = URLLib3Session()

    def hook(client):
        def before_send(request, **_):
            body = request.body.decode() if isinstance(request.body, bytes) else str(
                request.body or "")
            if "Action=%s&" % operation not in body + "&" or state["left"] <= 0:
                return None
            state["left"] -= 1
            reply = http.send(request)
            assert reply.status_code < 300, reply.content[:300]
            state["applied"] += 1
            raise ReadTimeoutError(endpoint_url=request.url)
        client.meta.events.register("before-send", before_send)
    return hook, state


def counts(emu):
    client = emu.client()
    mine = [{"Name": "tag:dialog:deployment", "Values": ["dialog"]}]
    return {
        "vpcs": len(client.describe_vpcs(Filters=mine)["Vpcs"]),
        "subnets": len(client.describe_subnets(Filters=mine)["Subnets"]),
        "internet_gateways": len(client.describe_internet_gateways(
            Filters=mine)["InternetGateways"]),
        "route_tables": len(client.describe_route_tables(Filters=mine)["RouteTables"]),
        "addresses": len(client.describe_addresses(Filters=mine)["Addresses"]),
    }


@pytest.mark.parametrize("operation", ["CreateVpc", "CreateSubnet", "CreateInternetGateway",
                                       "CreateRouteTable", "AllocateAddress"])
def test_a_create_whose_answer_is_lost_makes_one_resource(emu, operation):
    plan = build_plan("small", "aws", admin_networks=ADMIN)
    hook, state = answer_lost(operation)
    progress = []
    driver = aws.Driver(emu.profile(), "us-east-1", wait_delay=0.01, wait_attempts=20,
                        client_hook=hook, progress=progress.append)
    driver.reconcile(plan)
    assert state["applied"] == 1
    # small: a public and a private subnet in each of two zones, a route table per side, one
    # NAT gateway whose Elastic IP comes on top of the public hosts' ones.
    assert counts(emu) == {"vpcs": 1, "subnets": 4, "internet_gateways": 1, "route_tables": 2,
                           "addresses": plan["public_ips"] + 1}
    assert any("found it by its tags" in line for line in progress)
    again = aws.Driver(emu.profile(), "us-east-1", wait_delay=0.01, wait_attempts=20,
                       calls=CallLog())
    assert again.reconcile(plan) == [] and again.calls.mutating == []
    assert emu.orphans() == []


def test_route_tables_carry_a_client_token_stable_across_runs(emu):
    """A run that died after CreateRouteTable was applied repeats it with the same token."""
    tokens = collections.defaultdict(list)

    def hook(client):
        def before_build(params, **_):
            tokens[params.get("VpcId")].append(params.get("ClientToken"))
        client.meta.events.register("before-parameter-build.ec2.CreateRouteTable",
                                    before_build)

    plan = build_plan("small", "aws", admin_networks=ADMIN)
    aws.Driver(emu.profile(), "us-east-1", wait_delay=0.01, client_hook=hook).reconcile(plan)
    ((vpc, made),) = tokens.items()
    assert len(made) == 2 and len(set(made)) == 2 and all(made)
    assert made[0] == aws._token("dialog|%s|public" % vpc, 0)  # pylint: disable=protected-access
