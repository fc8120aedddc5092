"""Which peer addresses coturn may relay to: the denied-peer-ip and allowed-peer-ip lines of
turnserver.conf, each with the reason it is there.

Every caller holds the TURN credential (the dialog servers hand it to each client), so an
address the relay may reach is an address every user may reach from the voice host: its own
services, the private network, the cloud's metadata service (169.254.169.254 and fd00:ec2::254
hand out instance credentials on AWS). Media peers are callers on public addresses, so every
range that is not globally routable is denied, IPv4 and IPv6.

coturn's rules (src/server/ns_turn_server.c, good_peer_addr(); 4.5.2 and later): a peer is
refused when it is multicast (with no-multicast-peers), loopback (unless allow-loopback-peers;
the old no-loopback-peers is deprecated, refusing is the default), the unspecified address,
else accepted when an allowed-peer-ip range holds it, else refused when a denied-peer-ip range
holds it. A CreatePermission or ChannelBind toward a refused peer gets "403 Forbidden IP".
The ranges are written as "first-last" (coturn's turnserver.conf: "IP or IP range", no CIDR).

No range starts at the unspecified address (0.0.0.0 or ::). coturn's range check
(ioa_addr_in_range()) skips its address-family test when a range's first address is the "any"
address, so a line "denied-peer-ip=::-::1" refuses every IPv4 peer too: a real coturn 4.6.1 given
that line answers 403 to a permission toward 8.8.8.8. The unspecified address itself is refused by
coturn before any list (CVE-2020-26262), so such a range starts one address later.
"""

import ipaddress

# (network, why it is denied)
DENIED_NETWORKS = (
    ("0.0.0.0/8", "'this network': 0.0.0.0 reached the relay host's own services "
                  "(CVE-2020-26262)"),
    ("10.0.0.0/8", "RFC 1918 private: VPCs, droplets' private network"),
    ("100.64.0.0/10", "shared address space (RFC 6598, carrier-grade NAT): provider-internal"),
    ("127.0.0.0/8", "loopback: the relay host's own services"),
    ("169.254.0.0/16", "link-local, holds the instance metadata service 169.254.169.254 "
                       "(cloud credentials)"),
    ("172.16.0.0/12", "RFC 1918 private: VPCs, Docker's bridge networks (172.17.0.0/16...)"),
    ("192.0.0.0/24", "IETF protocol assignments (RFC 6890), not routed"),
    ("192.0.2.0/24", "documentation (RFC 5737), not routed"),
    ("192.88.99.0/24", "6to4 relay anycast (deprecated by RFC 7526)"),
    ("192.168.0.0/16", "RFC 1918 private"),
    ("198.18.0.0/15", "benchmarking (RFC 2544), not routed"),
    ("198.51.100.0/24", "documentation (RFC 5737), not routed"),
    ("203.0.113.0/24", "documentation (RFC 5737), not routed"),
    ("224.0.0.0/4", "multicast (no-multicast-peers refuses it too)"),
    ("240.0.0.0/4", "reserved, and the broadcast address 255.255.255.255"),
    ("::/127", "loopback ::1 (coturn refuses the unspecified :: itself)"),
    ("::ffff:0:0/96", "IPv4-mapped: would reach every IPv4 address above past the IPv4 rules"),
    ("64:ff9b::/96", "NAT64 well-known prefix (RFC 6052): translated into any IPv4 address, "
                     "private ones included, by a NAT64 gateway"),
    ("64:ff9b:1::/48", "NAT64 local-use prefix (RFC 8215)"),
    ("100::/64", "discard-only (RFC 6666)"),
    ("2001::/23", "IETF protocol assignments, Teredo 2001::/32 included (embeds IPv4)"),
    ("2001:db8::/32", "documentation (RFC 3849), not routed"),
    ("2002::/16", "6to4: embeds any IPv4 address, private ones included"),
    ("fc00::/7", "unique local (private IPv6), holds AWS's metadata service fd00:ec2::254"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated, still private)"),
    ("ff00::/8", "multicast (no-multicast-peers refuses it too)"),
)


def as_range(network):
    """coturn's form of a network: "first-last" (one address alone when it is a single one),
    never starting at the unspecified address (see above)."""
    net = ipaddress.ip_network(network)
    first, last = net[0], net[-1]
    if first.is_unspecified:
        first += 1
    return str(first) if first == last else "%s-%s" % (first, last)


def _covered(address):
    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(net) for net, _ in DENIED_NETWORKS)


def _addresses(host):
    return [host["private_address"]] + list(host.get("public_addresses") or [])


def peer_rules(hosts):
    """{"denied": [(range, why)], "allowed": [(address, why)]} for a deployment's inventory.

    Besides the ranges: each of the deployment's own addresses not already in one (a static
    host's "private" address may be public) is denied, because the other hosts' firewalls let
    the voice host in to their internal ports. The voice hosts' public addresses are allowed:
    when both callers relay through this deployment, each one's peer is the other's relayed
    address, which is a voice host's public address (RFC 8656, section 2: the peer of a TURN
    client may itself be a TURN relay). coturn checks allowed-peer-ip before denied-peer-ip,
    and never lets an allowed address past the loopback, multicast and unspecified checks."""
    denied = [(as_range(net), why) for net, why in DENIED_NETWORKS]
    allowed, seen = [], set()
    for host in hosts:
        for address in _addresses(host):
            if address in seen:
                continue
            seen.add(address)
            public_voice = "voice" in host.get("roles", ()) and \
                address in (host.get("public_addresses") or [])
            if public_voice:
                allowed.append((address, "%s's relay address: callers who both relay through "
                                "this deployment exchange media between relay addresses"
                                % host["name"]))
            elif not _covered(address):
                denied.append((address, "%s, a host of this deployment (its firewall lets the "
                               "voice hosts in)" % host["name"]))
    return {"denied": denied, "allowed": allowed}
