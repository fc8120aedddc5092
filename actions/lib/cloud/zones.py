"""Availability zones: which of a deployment's zones each host goes to, and Cassandra's rack.

Hosts are spread by index, round robin: index 1 in the first zone, 2 in the second, 3 in the
first again. Every redundant pair or group (proxies, web, voice, dialog servers, the Postgres
primary and standby, Cassandra nodes) so has members in both zones, and a single host (push,
a one-node group) lands in the first.
"""

import ipaddress

from lib.errors import InputError

ZONE_COUNT = 2
DEFAULT_RACK = "rack1"


def zone_slot(index, zones=ZONE_COUNT):
    """1-based: which of the deployment's zones host `index` belongs in."""
    return (int(index) - 1) % zones + 1


def zone_of(host, zones):
    """The zone name a planned host goes to, given the deployment's ordered zone names."""
    slot = host.get("zone_slot") or zone_slot(host["index"], len(zones))
    return zones[(slot - 1) % len(zones)]


def check_named_zones(value, field="availability_zones"):
    """The profile's zone list, or None when it names none. Checked before any cloud call."""
    # StackStorm's config loader fills an array the config leaves out with [] (its schema has
    # items: st2common/util/config_loader.py _assign_default_values): [] names none.
    if value is None or (isinstance(value, (list, tuple)) and not value):
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(z, str) and z for z in value):
        raise InputError(field, "give a list of availability zone names such as "
                         "[us-east-1a, us-east-1b]")
    zones = list(dict.fromkeys(value))
    if len(zones) < ZONE_COUNT:
        raise InputError(field, "name at least %d different availability zones (the failover "
                         "tiers spread redundant hosts across them); %r names %d"
                         % (ZONE_COUNT, list(value), len(zones)))
    return zones


def order_zones(named, offered, existing):
    """The deployment's zones, in slot order.

    named: the profile's list (checked against `offered` by the caller), taken as it is.
    existing: zones of subnets the deployment has already, oldest network first: a network made
    before zones existed keeps its one zone as the first, so the hosts it holds stay where
    their index puts them. offered: zones that can take the plan (sorted); they fill up to
    ZONE_COUNT."""
    if named:
        return list(named)
    zones = list(dict.fromkeys(existing))
    for zone in offered:
        if len(zones) >= ZONE_COUNT:
            break
        if zone not in zones:
            zones.append(zone)
    return zones


def free_subnet(vpc_cidr, used, prefix=20):
    """The lowest /prefix block of the VPC that overlaps none of the `used` CIDRs."""
    taken = [ipaddress.ip_network(c) for c in used]
    for block in ipaddress.ip_network(vpc_cidr).subnets(new_prefix=prefix):
        if not any(block.overlaps(t) for t in taken):
            return str(block)
    return None


def cassandra_rack(host):
    """GossipingPropertyFileSnitch's rack for a Cassandra host: the inventory's rack (on AWS
    the zone the node was launched into), else rack1 (DigitalOcean, static servers, and AWS
    nodes that joined before zones: Cassandra refuses to start a node whose rack changed,
    "Cannot start node if snitch's rack (x) differs from previous rack (y)")."""
    return host.get("rack") or DEFAULT_RACK
