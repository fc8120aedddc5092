"""How private hosts on AWS reach the internet, and the check of a subnet the operator names.

Every host installs Docker from its apt repository and pulls images, so every host needs a way
out. Two ways are offered:

- A network the pack creates (no subnet_id in the profile) gets one NAT gateway: a public
  subnet holds the NAT gateway (with its own Elastic IP) and the hosts that hold Elastic IPs
  (proxies, and the hosts the seed gives public addresses); every other host sits in a private
  subnet whose route table sends 0.0.0.0/0 to the NAT gateway. A NAT gateway costs about
  USD 0.045 an hour plus 0.045 per GB in us-east-1 (about USD 33 a month), which is the price
  of keeping the databases, Cassandra and the dialog servers unreachable from the internet.
  The alternative, a public address on every host, costs USD 0.005 an hour per address (ten
  private hosts: USD 0.05 an hour, the same order) but puts Postgres, Cassandra and the dialog
  servers on the internet, behind nothing but a security group: one wrong rule away from
  exposure. Internal hosts stay internal (design principle 9), so the NAT gateway is the default.
- A subnet the operator names (profile subnet_id) is used as it is; the pack never changes its
  routing. It is checked before any mutating call: its route table (the VPC's main table when
  the subnet has no association of its own) must send 0.0.0.0/0 to a NAT gateway or a NAT
  instance, or to an internet gateway when every planned host gets a public address (AWS routes
  a host through an internet gateway only when it has one).
"""

DEFAULT_ROUTE = "0.0.0.0/0"


def hosts_needing_public_subnet(plan):
    """Names of the hosts that hold Elastic IPs (their own, or a floating one they may take)."""
    floating = {name for f in plan.get("floating_ips") or [] for name in f["hosts"]}
    return {h["name"] for h in plan["hosts"] if h["public_ips"] > 0 or h["name"] in floating}


def route_table_of(subnet, tables):
    """The table AWS routes the subnet with: its explicit association, else the main table."""
    for table in tables:
        if any(a.get("SubnetId") == subnet["SubnetId"] for a in table.get("Associations") or []):
            return table
    for table in tables:
        if table.get("VpcId") == subnet["VpcId"] and any(
                a.get("Main") for a in table.get("Associations") or []):
            return table
    return None


def default_route(table):
    for route in (table or {}).get("Routes") or []:
        if route.get("DestinationCidrBlock") == DEFAULT_ROUTE:
            return route
    return None


def egress_problem(subnet, tables, nat_gateways, plan):
    """None when every planned host in the subnet has a way out, else what is wrong, as a
    sentence that names the subnet and what to change. nat_gateways: DescribeNatGateways
    entries of the VPC (to tell an available NAT gateway from a deleted one)."""
    name = subnet["SubnetId"]
    fix = ("name a subnet whose route table sends 0.0.0.0/0 to a NAT gateway, or leave "
           "subnet_id and vpc_id out so that the pack creates a network with one")
    table = route_table_of(subnet, tables)
    route = default_route(table)
    if route is None:
        return ("subnet %s has no default route (0.0.0.0/0) in %s: the hosts could not reach "
                "Docker's package repository or the image registry; %s"
                % (name, table["RouteTableId"] if table else "any route table", fix))
    if route.get("State", "active") != "active":
        return ("subnet %s: the default route of %s is %s (its target is gone); %s"
                % (name, table["RouteTableId"], route.get("State"), fix))
    if route.get("NatGatewayId"):
        states = {n["NatGatewayId"]: n.get("State") for n in nat_gateways}
        state = states.get(route["NatGatewayId"], "missing")
        if state != "available":
            return ("subnet %s routes 0.0.0.0/0 to NAT gateway %s, which is %s; %s"
                    % (name, route["NatGatewayId"], state, fix))
        return None
    if route.get("InstanceId") or route.get("NetworkInterfaceId"):
        return None     # a NAT instance: the operator runs it
    gateway = route.get("GatewayId") or ""
    if gateway.startswith("igw-"):
        private = sorted(h["name"] for h in plan["hosts"]
                         if h["name"] not in hosts_needing_public_subnet(plan))
        if not private:
            return None
        return ("subnet %s routes 0.0.0.0/0 to internet gateway %s, but %s would have no "
                "public address there and so no way out; %s"
                % (name, gateway, ", ".join(private), fix))
    target = gateway or route.get("TransitGatewayId") or route.get("VpcPeeringConnectionId") \
        or "an unknown target"
    return ("subnet %s routes 0.0.0.0/0 to %s, which the pack cannot check for internet "
            "access; %s" % (name, target, fix))
