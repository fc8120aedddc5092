"""dialog.deploy's `replacing`: a new Cassandra node takes a dead node's place in the ring.

`replacing` is {host name: the dead node's private address}. The named host's cassandra service
starts with `-Dcassandra.replace_address_first_boot=<address>` in JVM_EXTRA_OPTS (the official
image's cassandra-env.sh ends with `JVM_OPTS="$JVM_OPTS $JVM_EXTRA_OPTS"`), so it takes the
dead node's tokens and streams its ranges instead of joining as a new node ("Replacing a dead
node", Apache Cassandra 4.1 docs). The flag is first-boot only: Cassandra ignores it once the
node's data directory holds a bootstrapped node ("Replace address on first boot requested;
this node is already bootstrapped"), so a later deploy without `replacing` dropping it changes
nothing but the compose file.
"""

import ipaddress

from lib.errors import InputError

FIELD = "replacing"
# DigitalOcean VPC ranges must lie in the RFC 1918 blocks ("VPC networks", DigitalOcean docs:
# "the IP range must be ... within 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"); static
# servers name no network, so their private side is taken to be RFC 1918 as well.
RFC1918 = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")


def deployment_networks(provider):
    """The private networks a deployment's hosts take their addresses from, known before any
    cloud call: on AWS the VPC the pack creates, elsewhere RFC 1918."""
    if provider == "aws":
        from lib.providers.aws import VPC_CIDR  # pylint: disable=import-outside-toplevel
        return [VPC_CIDR]
    return list(RFC1918)


def check_replacing(replacing, plan):
    """The validated {host: address} of `replacing` against the plan (its Cassandra hosts and
    provider), or {} when empty. InputError naming the field otherwise."""
    if replacing in (None, {}, ""):
        return {}
    if not isinstance(replacing, dict):
        raise InputError(FIELD, "give an object {cassandra host: the dead node's private "
                         "address}, e.g. {\"cassandra-2\": \"10.40.16.12\"}")
    cassandra = sorted((h["name"] for h in plan["hosts"] if "cassandra" in h["roles"]),
                       key=lambda name: int(name.rsplit("-", 1)[1]))
    networks = [ipaddress.ip_network(n) for n in deployment_networks(plan.get("provider"))]
    if len(cassandra) < 2:
        raise InputError(FIELD, "a replacement streams the dead node's data from the other "
                         "Cassandra nodes; this plan has %d: restore from a backup instead"
                         % len(cassandra))
    checked = {}
    for host, address in sorted(replacing.items()):
        if host not in cassandra:
            raise InputError(FIELD, "%r is not a Cassandra host of this plan" % host, cassandra,
                             listed="Cassandra hosts")
        try:
            parsed = ipaddress.IPv4Address(str(address).strip())
        except ValueError:
            raise InputError("%s.%s" % (FIELD, host), "%r is not an IPv4 address; give the "
                             "dead node's private address as `nodetool status` lists it"
                             % (address,)) from None
        if not any(parsed in network for network in networks):
            raise InputError("%s.%s" % (FIELD, host), "%s is not a private address of the "
                             "deployment's network" % parsed,
                             [str(n) for n in networks], listed="networks")
        checked[host] = str(parsed)
    if len(checked) > 1:
        raise InputError(FIELD, "one Cassandra node at a time (Cassandra's guidance: one "
                         "topology change at a time); given %s" % ", ".join(sorted(checked)))
    return checked


def replace_address(replacing, host, hosts):
    """The dead address `host` (a rendered host) replaces, or None. InputError when that address
    is another live host's of the deployment: Cassandra would refuse to replace a live node,
    and a wrong address must not get as far as a container start."""
    address = (replacing or {}).get(host["name"])
    if not address:
        return None
    for other in hosts:
        if other["name"] != host["name"] and other.get("private_address") == address:
            raise InputError("%s.%s" % (FIELD, host["name"]), "%s is %s's address, a host of "
                             "the deployment: only a dead node's address may be replaced"
                             % (address, other["name"]))
    return address
