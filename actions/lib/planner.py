"""Turn (tier, provider, options) into a concrete deployment plan: the desired state.

The plan is plain JSON-ready data. Everything it says about sizes, counts and ports comes from
the catalog; this module only selects, expands and names.
"""

import ipaddress
import re

from lib.catalog import (DROPLET_CLASSES, PROVIDERS, count_is_allowed, default_catalog,
                         describe_counts, parse_port_range)
from lib.cloud.aws_egress import hosts_needing_public_subnet
from lib.cloud.zones import ZONE_COUNT, zone_slot
from lib.errors import InputError
from lib.hosts.ssh_path import firewall_rules

# Host names are "<deployment>-<server group>-<index>"; the longest group name is
# "dialog-server" and indexes stay below 100, so 40 characters keep names within one DNS label.
MAX_GROUP_SIZE = 99
DEPLOYMENT_PATTERN = re.compile(r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$")
PUBLIC_CIDRS = ["0.0.0.0/0", "::/0"]
SSH_PORT = 22


def choose(field, value, allowed):
    if value not in allowed:
        raise InputError(field, "unknown value %r" % (value,), allowed)
    return value


def validate_deployment_name(deployment):
    if not isinstance(deployment, str) or not DEPLOYMENT_PATTERN.match(deployment):
        raise InputError(
            "deployment",
            "%r is not a valid name: use 1-40 lowercase letters, digits and hyphens, "
            "starting with a letter and not ending with a hyphen (it becomes part of host "
            "names, DNS labels and tags)" % (deployment,))
    return deployment


def validate_region(catalog, provider, region):
    spec = catalog.provider(provider)
    if not region:
        return spec["default_region"]
    if provider == "aws" and not re.match(spec["region_pattern"], region):
        raise InputError("region", "%r is not an AWS region name (e.g. us-east-1, eu-west-2)"
                         % (region,))
    if provider == "digitalocean" and region not in spec["regions"]:
        raise InputError("region", "unknown DigitalOcean region %r" % (region,), spec["regions"])
    return region


def _validate_networks(admin_networks, field="admin_networks", what="SSH",
                       who="operators connect"):
    if admin_networks is not None and not isinstance(admin_networks, (list, tuple)):
        raise InputError(field, "give a list of CIDR networks such as [203.0.113.0/24]")
    networks = []
    for text in admin_networks or []:
        try:
            network = ipaddress.ip_network(text, strict=False)
        except (TypeError, ValueError):
            raise InputError(field, "%r is not a CIDR network such as 203.0.113.0/24"
                             % (text,)) from None
        if network.prefixlen == 0:
            raise InputError(field, "%s would open %s to the whole internet; name the networks "
                             "%s from" % (network, what, who))
        networks.append(str(network))
    return networks


def _servers_for(tier_name, tier, with_storage):
    if with_storage and not any(s.get("optional") == "storage" for s in tier["servers"]):
        raise InputError("with_storage", "the %s tier has no self-hosted S3 storage" % tier_name)
    return [s for s in tier["servers"] if not s.get("optional") or with_storage]


def _resolve_counts(tier_name, servers, with_storage, requested):
    """Count per server group: the tier's default unless the caller asked for another."""
    by_role = {}
    for server in servers:
        for role in server["roles"]:
            by_role.setdefault(role, server)
    counts = {s["name"]: s["count"]["default"] for s in servers}
    for field, role, value in requested:
        if value is None:
            continue
        if role == "storage" and not with_storage:
            raise InputError(field, "needs with_storage=true")
        server = by_role.get(role)
        if server is None:
            raise InputError(field, "the %s tier has no %s servers" % (tier_name, role))
        if len(server["roles"]) > 1:
            raise InputError(field, "in the %s tier %s shares its server with %s; its count "
                             "is fixed" % (tier_name, role,
                                           ", ".join(r for r in server["roles"] if r != role)))
        if isinstance(value, bool) or not isinstance(value, int) or value > MAX_GROUP_SIZE \
                or not count_is_allowed(server["count"], value):
            raise InputError(field, "%r is not a count the %s tier allows for %s"
                             % (value, tier_name, role), describe_counts(server["count"]))
        counts[server["name"]] = value
    return counts


def _disks(catalog, provider, server, droplet_class):
    """The disks a host will have on this provider: its own disk first, then volumes."""
    hardware = server["hardware"]["disks"]
    if provider == "static":
        return [dict(d, source="host") for d in hardware]
    if provider == "aws":
        spec = server["aws"]
        system = [d["size_gb"] for d in hardware if d["purpose"] == "system"]
        root = spec.get("root_gb") or max(system + [catalog.provider("aws")["default_root_gb"]])
        disks = [{"size_gb": root, "kind": "ssd", "purpose": "system", "source": "root"}]
        volumes = spec["volumes"]
    else:
        spec = server["digitalocean"][droplet_class]
        local = catalog.droplet_size(spec["size"])["disk_gb"]
        disks = [{"size_gb": local, "kind": "ssd", "purpose": "system", "source": "droplet"}]
        volumes = spec["volumes"]
    return disks + [dict(v, source="volume") for v in volumes]


def _size(catalog, provider, server, droplet_class):
    if provider == "aws":
        name = server["aws"]["instance_type"]
        return name, dict(catalog.instance_type(name))
    if provider == "digitalocean":
        slug = server["digitalocean"][droplet_class]["size"]
        size = catalog.droplet_size(slug)
        return slug, {"vcpus": size["vcpus"], "memory_gb": size["memory_gb"]}
    return None, None


def _firewall(catalog, servers, admin_networks, monitoring_networks=()):
    rules, seen = [], set()

    def add(role, protocol, text, source, cidrs):
        low, high = parse_port_range(text)
        key = (role, protocol, low, high, source)
        if key not in seen:
            seen.add(key)
            rules.append({"role": role, "protocol": protocol, "from_port": low,
                          "to_port": high, "source": source, "cidrs": list(cidrs)})

    roles_present = set()
    for server in servers:
        roles_present.update(server["roles"])
        for rule in server["ports"]:
            public = rule["exposure"] == "external"
            for text in rule["ports"]:
                add(rule["role"], rule["protocol"], text,
                    "public" if public else "internal", PUBLIC_CIDRS if public else [])
    for extra in catalog.extra_ports:
        if extra["role"] in roles_present or extra["role"] == "*":
            for text in extra["ports"]:
                add(extra["role"], extra["protocol"], text, "internal", [])
    # Bootstrap needs SSH; it is open only to the networks the operator names.
    add("*", "tcp", str(SSH_PORT), "admin", admin_networks)
    if monitoring_networks and "web" in roles_present:
        # The autoscaling sensor on the StackStorm host queries the deployment's Prometheus.
        add("web", "tcp", str(catalog.port("web", "prometheus")), "monitoring",
            monitoring_networks)
    return rules


def build_plan(tier, provider="aws", region=None, deployment="dialog", with_storage=False,
               cassandra_nodes=None, storage_nodes=None, droplet_class="standard",
               admin_networks=None, dialog_servers=None, catalog=None, ssh_address=None,
               monitoring_networks=None):
    """Validate every input, then expand the tier into hosts, addresses and firewall rules.
    ssh_address "jump" opens SSH from admin_networks on the proxies only (hosts.ssh_path)."""
    catalog = catalog or default_catalog()
    tier = choose("tier", tier, catalog.tier_names)
    provider = choose("provider", provider, list(PROVIDERS))
    droplet_class = choose("droplet_class", droplet_class or "standard", list(DROPLET_CLASSES))
    deployment = validate_deployment_name(deployment)
    region = validate_region(catalog, provider, region)
    networks = _validate_networks(admin_networks)
    monitoring = _validate_networks(monitoring_networks, "monitoring_networks", "Prometheus",
                                    "the StackStorm host queries it")
    spec = catalog.tier(tier)
    servers = _servers_for(tier, spec, bool(with_storage))
    counts = _resolve_counts(tier, servers, bool(with_storage), [
        ("cassandra_nodes", "cassandra", cassandra_nodes),
        ("storage_nodes", "storage", storage_nodes),
        ("dialog_servers", "dialog-server", dialog_servers),
    ])

    hosts, floating = [], []
    for server in servers:
        size, instance = _size(catalog, provider, server, droplet_class)
        group = []
        for index in range(1, counts[server["name"]] + 1):
            host = {
                "name": "%s-%s-%d" % (deployment, server["name"], index),
                "group": server["name"],
                "index": index,
                "roles": list(server["roles"]),
                "size": size,
                "cpus": server["hardware"]["cpus"],
                "memory_gb": server["hardware"]["memory_gb"],
                "disks": _disks(catalog, provider, server, droplet_class),
                "public": server["public_ips"] > 0,
                "public_ips": server["public_ips"],
            }
            if instance:
                host["instance"] = instance
            if provider == "aws":
                # Which of the deployment's availability zones (1 or 2) the host goes to.
                host["zone_slot"] = zone_slot(index)
            group.append(host["name"])
            hosts.append(host)
        for index in range(1, server.get("shared_public_ips", 0) + 1):
            floating.append({"name": "%s-%s-vip-%d" % (deployment, server["name"], index),
                             "group": server["name"], "hosts": list(group)})

    return {
        "deployment": deployment,
        "tier": tier,
        "title": spec["title"],
        "provider": provider,
        "region": region,
        "droplet_class": droplet_class if provider == "digitalocean" else None,
        "with_storage": bool(with_storage),
        "capacity": dict(spec["capacity"]),
        "hosts": hosts,
        "floating_ips": floating,
        "firewall": firewall_rules(_firewall(catalog, servers, networks, monitoring), ssh_address),
        "public_ips": sum(h["public_ips"] for h in hosts) + len(floating),
        # AWS spreads hosts over this many availability zones by index (lib.cloud.zones).
        "zones": ZONE_COUNT if provider == "aws" else 1,
        # AWS: the hosts without an address of their own reach Docker's repository and the
        # registry through one NAT gateway of a network the pack creates (lib.cloud.aws_egress).
        "nat_gateways": int(provider == "aws" and len(hosts) > len(
            hosts_needing_public_subnet({"hosts": hosts, "floating_ips": floating}))),
        "totals": {
            "hosts": len(hosts),
            "cpus": sum(h["cpus"] for h in hosts),
            "memory_gb": sum(h["memory_gb"] for h in hosts),
            "disk_gb": sum(d["size_gb"] for h in hosts for d in h["disks"]),
        },
    }
