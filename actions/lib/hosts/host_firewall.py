"""The host firewall and the hardware check of static hosts, over SSH.

Clouds filter traffic before it reaches a host (security groups, cloud firewalls); the
operator's own servers have nothing of the kind, so the static provider puts the plan's
firewall rules on each host itself: an nftables table `inet dialog`
(scripts/dialog-firewall.nft.j2) that lets a public port in from anywhere, an internal port
only from the deployment's own hosts, and an admin port (SSH) only from admin_networks. Ports
the plan does not name are left to the operator's other tables.

The seed's hardware minimums are checked on the host itself (scripts/hardware.sh) before
anything is installed: what a cloud size guarantees, an operator's server may not have.
"""

import ipaddress
import os
import shlex

import jinja2

from lib import health
from lib.errors import InputError, ProviderError

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts")
_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(SCRIPTS), trim_blocks=True,
                          lstrip_blocks=True, keep_trailing_newline=True,
                          undefined=jinja2.StrictUndefined)
# MemTotal is what the kernel leaves after its own reservations: a server with 8 GB of RAM
# reports about 7.6-7.8 GiB. 90% of the nominal amount accepts that and nothing smaller.
MEMORY_SHARE = 0.9
DISK_SHARE = 0.9        # a "100 GB" disk formatted: about 98 GB of filesystem, less reserved
SCRIPT_TIMEOUT = 60.0


def _script(name):
    with open(os.path.join(SCRIPTS, name), encoding="utf-8") as handle:
        return handle.read()


def host_rules(rules, roles):
    """The plan's firewall rules that apply to a host with these roles."""
    return [r for r in rules if r["role"] == "*" or r["role"] in roles]


def _ports(rule):
    low, high = rule["from_port"], rule["to_port"]
    return str(low) if low == high else "%d-%d" % (low, high)


def _networks(cidrs):
    """(IPv4 networks, IPv6 networks) as text, each parsed."""
    nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]
    return ([str(n) for n in nets if n.version == 4], [str(n) for n in nets if n.version == 6])


def ruleset(deployment, host, roles, rules, addresses):
    """The nft script for one host. rules: the plan's firewall; addresses: every address of
    the deployment's hosts (their traffic is "internal")."""
    parsed = sorted({ipaddress.ip_address(a) for a in addresses},
                    key=lambda a: (a.version, int(a)))
    accepts, closed = [], {}
    for rule in host_rules(rules, roles):
        match = "%s dport %s" % (rule["protocol"], _ports(rule))
        closed.setdefault(rule["protocol"], [])
        if _ports(rule) not in closed[rule["protocol"]]:
            closed[rule["protocol"]].append(_ports(rule))
        why = "%s %s %s: %s" % (rule["role"], rule["protocol"], _ports(rule), rule["source"])
        if rule["source"] == "internal":
            accepts.append({"why": why, "text": "%s ip saddr @deployment_v4 accept" % match})
            accepts.append({"why": why, "text": "%s ip6 saddr @deployment_v6 accept" % match})
            continue
        v4, v6 = _networks(rule["cidrs"])
        if "0.0.0.0/0" in v4 and "::/0" in v6:
            accepts.append({"why": why, "text": "%s accept" % match})
            continue
        if v4:
            accepts.append({"why": why, "text": "%s ip saddr { %s } accept"
                            % (match, ", ".join(v4))})
        if v6:
            accepts.append({"why": why, "text": "%s ip6 saddr { %s } accept"
                            % (match, ", ".join(v6))})
    return _ENV.get_template("dialog-firewall.nft.j2").render(
        deployment=deployment, host=host, accepts=accepts,
        closed=sorted(closed.items()),
        v4=[str(a) for a in parsed if a.version == 4],
        v6=[str(a) for a in parsed if a.version == 6])


def allows(rules, roles, port, source, addresses, protocol="tcp"):
    """Whether the rules let `source` (an address) reach `port` on a host with these roles."""
    source = ipaddress.ip_address(source)
    known = {ipaddress.ip_address(a) for a in addresses}
    for rule in host_rules(rules, roles):
        if rule["protocol"] != protocol or not rule["from_port"] <= port <= rule["to_port"]:
            continue
        if rule["source"] == "internal" and source in known:
            return True
        if any(source in ipaddress.ip_network(c, strict=False) for c in rule["cidrs"]
               if ipaddress.ip_network(c, strict=False).version == source.version):
            return True
    return False


def runner_address(connection):
    """The address this SSH session comes from, as the host sees it ($SSH_CLIENT)."""
    status, out, _ = health.remote(connection, 'printf "%s" "$SSH_CLIENT"', timeout=30.0)
    first = out.split()[0] if status == 0 and out.split() else ""
    try:
        return str(ipaddress.ip_address(first))
    except ValueError:
        return None


def apply(connection, name, text, check_only=False):
    """Install the ruleset (scripts/apply_firewall.sh): "unchanged", "applied" or, with
    check_only, "would-apply". ProviderError naming the host when nft refuses it."""
    command = "%senv CHECK_ONLY=%d sh -c %s" % (
        health.sudo_prefix(connection), int(check_only), shlex.quote(_script("apply_firewall.sh")))
    status, out, err = health.remote(connection, command, stdin=text, timeout=SCRIPT_TIMEOUT)
    for line in out.splitlines():
        if line.startswith("@firewall "):
            return line.split()[1]
    raise ProviderError("%s: the host firewall could not be applied (exit %s): %s"
                        % (name, status, (err.strip().splitlines() or ["no output"])[-1][:300]))


def read_hardware(connection, name):
    """{"cpus", "memory_kb", "disk_kb"} of a host (scripts/hardware.sh)."""
    status, out, err = health.remote(connection, "sh -c %s" % shlex.quote(_script(
        "hardware.sh")), timeout=SCRIPT_TIMEOUT)
    facts = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].startswith("@") and parts[1].isdigit():
            facts[parts[0][1:]] = int(parts[1])
    if status != 0 or set(facts) != {"cpus", "memory_kb", "disk_kb"}:
        raise ProviderError("%s: cannot read its CPUs, memory and disk (exit %s): %s"
                            % (name, status, (err.strip().splitlines() or ["no output"])[-1]))
    return facts


def hardware_problems(given_name, plan_host, facts):
    """What the host lacks for the plan host it serves, one sentence each (empty: enough)."""
    need_cpus, need_gb = plan_host["cpus"], plan_host["memory_gb"]
    need_disk = sum(d["size_gb"] for d in plan_host.get("disks") or [])
    have_gb = facts["memory_kb"] / 1024.0 / 1024.0
    have_disk = facts["disk_kb"] / 1000.0 / 1000.0
    role = "%s (%s)" % (plan_host["name"], ", ".join(plan_host["roles"]))
    problems = []
    if facts["cpus"] < need_cpus:
        problems.append("%s has %d CPUs; %s needs %d"
                        % (given_name, facts["cpus"], role, need_cpus))
    if have_gb < need_gb * MEMORY_SHARE:
        problems.append("%s has %.1f GiB of memory; %s needs %d GB"
                        % (given_name, have_gb, role, need_gb))
    if need_disk and have_disk < need_disk * DISK_SHARE:
        problems.append("%s has %.0f GB on the filesystem of /var/lib/dialog; %s needs %d GB"
                        % (given_name, have_disk, role, need_disk))
    return problems


def raise_hardware(problems):
    if problems:
        raise InputError("hosts", "below the seed's hardware minimums: %s" % "; ".join(problems))
