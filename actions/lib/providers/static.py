"""The static provider: servers the operator already has, listed in the profile's `hosts`.

It creates and deletes nothing. Reconciling checks that the listed servers can carry the plan
and says which plan host each of them becomes; then, over SSH, that each has the seed's CPUs,
memory and disk for its role, and puts the plan's firewall on it (lib.hosts.host_firewall),
before any service is installed. Inventory reports them.
"""

import contextlib
import re

from lib.errors import InputError
from lib.hosts import host_firewall
from lib.hosts.ssh_path import resolve_via
from lib.providers import base

GROUP_INDEX = re.compile(r"^(?P<group>[a-z][a-z0-9-]*)-(?P<index>[0-9]+)$")


def _host_record(given, deployment):
    prefix = deployment + "-"
    name = given["name"]
    parsed = GROUP_INDEX.match(name[len(prefix):]) if name.startswith(prefix) else None
    record = {
        "name": given["name"],
        "group": parsed.group("group") if parsed else None,
        "index": int(parsed.group("index")) if parsed else None,
        "roles": list(given.get("roles") or []),
        "provider_id": "static:%s" % given["address"],
        "size": None,
        "state": "given",
        "private_address": given.get("private_address") or given["address"],
        "public_addresses": [given["address"]],
        "volumes": [],
    }
    if given.get("ssh_user"):
        record["ssh_user"] = given["ssh_user"]
    # The operator's servers: the host's ssh_user, else the profile's, else root (ssh_path).
    record["login_user"] = given.get("ssh_user") or "root"
    return record


def _session(host, ssh, hosts):
    # Imported here: lib.operations pulls in the renderer and the bootstrap, which inventory
    # and match() do not need.
    from lib import operations  # pylint: disable=import-outside-toplevel
    return operations.session(host, ssh, hosts=hosts)


class Driver(base.Driver):
    name = "static"
    # (host record, ssh options, inventory) -> context manager of a connection; tests replace it
    host_session = staticmethod(_session)
    ssh = None      # the action's ssh options (DialogAction.ssh_options); else the profile's

    def _ssh(self):
        if self.ssh is not None:
            return self.ssh
        profile = self.profile
        return {"user": profile.get("ssh_user") or None, "key_file": profile.get("ssh_key_file"),
                "private_key_text": profile.get("ssh_private_key"),
                "via": resolve_via(profile.get("ssh_address"), "static")}

    def _given(self):
        hosts = self.profile.get("hosts") or []
        if not hosts:
            raise InputError("profile", "profile %r lists no hosts: the static provider deploys "
                             "on the servers in profiles.%s.hosts"
                             % (self.profile.get("name"), self.profile.get("name")))
        return hosts

    def match(self, plan):
        """{plan host name: given host}: same name first, then the first unused host whose
        roles cover the plan host's roles. Raises InputError naming what is missing."""
        given = list(self._given())
        by_name = {h["name"]: h for h in given}
        matched, used = {}, set()
        for host in plan["hosts"]:
            if host["name"] in by_name:
                matched[host["name"]] = by_name[host["name"]]
                used.add(host["name"])
        for host in plan["hosts"]:
            if host["name"] in matched:
                continue
            for candidate in given:
                if candidate["name"] not in used and \
                        set(host["roles"]) <= set(candidate.get("roles") or []):
                    matched[host["name"]] = candidate
                    used.add(candidate["name"])
                    break
            else:
                raise InputError("profile", "profile %r has no host for %s (roles: %s); add "
                                 "one to profiles.%s.hosts"
                                 % (self.profile.get("name"), host["name"],
                                    ", ".join(host["roles"]), self.profile.get("name")))
        for name, candidate in matched.items():
            plan_host = next(h for h in plan["hosts"] if h["name"] == name)
            missing = set(plan_host["roles"]) - set(candidate.get("roles") or [])
            if missing:
                raise InputError("profile", "host %s of profile %r does not list roles %s "
                                 "that %s needs" % (candidate["name"], self.profile.get("name"),
                                                    ", ".join(sorted(missing)), name))
        return matched

    def inventory(self, deployment):
        return sorted((_host_record(h, deployment) for h in self._given()),
                      key=lambda h: h["name"])

    def reconcile(self, plan, dry_run=False):
        matched = self.match(plan)
        for name, given in sorted(matched.items()):
            if name != given["name"]:
                self.progress("%s will serve as %s" % (given["name"], name))
        return self._prepare_hosts(plan, matched, dry_run)

    def _prepare_hosts(self, plan, matched, dry_run):
        """Every host's hardware checked first (all problems at once, nothing changed on any
        host), then each one's firewall. Returns a change per firewall applied."""
        inventory = self.inventory(plan["deployment"])
        records = {h["name"]: h for h in inventory}
        addresses = sorted({a for h in inventory
                            for a in [h["private_address"]] + h["public_addresses"]})
        plan_hosts = {h["name"]: h for h in plan["hosts"]}
        ssh = self._ssh()
        problems, changes = [], []
        with contextlib.ExitStack() as stack:
            connections = {}
            for name, given in sorted(matched.items()):
                record = records[given["name"]]
                connection = stack.enter_context(self.host_session(record, ssh, inventory))
                connections[name] = connection
                facts = host_firewall.read_hardware(connection, given["name"])
                problems += host_firewall.hardware_problems(given["name"], plan_hosts[name],
                                                            facts)
            host_firewall.raise_hardware(problems)
            for name, given in sorted(matched.items()):
                self._firewall(plan, plan_hosts[name], given, connections[name], addresses,
                               dry_run, changes)
        return changes

    def _firewall(self, plan, plan_host, given, connection, addresses, dry_run, changes):
        text = host_firewall.ruleset(plan["deployment"], given["name"], plan_host["roles"],
                                     plan["firewall"], addresses)
        rules = host_firewall.host_rules(plan["firewall"], plan_host["roles"])
        runner = host_firewall.runner_address(connection)
        if runner and not host_firewall.allows(rules, plan_host["roles"], 22, runner,
                                               addresses):
            raise InputError("admin_networks", "%s sees this action runner's SSH connection "
                             "come from %s, which admin_networks does not include: its firewall "
                             "would shut the runner out; add that address or network"
                             % (given["name"], runner))
        state = host_firewall.apply(connection, given["name"], text, check_only=dry_run)
        if state != "unchanged":
            changes.append(base.change("update", "firewall", given["name"],
                                       "nftables table inet dialog: %d rules of the plan"
                                       % len(rules)))
            self.progress("%s: firewall %s" % (given["name"], state))

    def destroy(self, deployment, dry_run=False, delete_data=False):
        self.progress("static hosts are the operator's: nothing is deleted")
        return []

    # ---- failover primitives: the operator's servers, the operator's hands -----------------

    def fence(self, deployment, host):
        raise InputError("provider", "fencing %s needs its out-of-band power (IPMI, iLO, a "
                         "managed PDU) or its network port cut at the switch, which the pack "
                         "cannot reach for a static server: power it off by hand, then run the "
                         "repair again" % host, ["aws", "digitalocean"])

    def retire(self, deployment, host):
        raise InputError("provider", "a static server is the operator's: replace %s by hand "
                         "(reinstall it, or put a new server at its address in the profile's "
                         "hosts) and run dialog.deploy" % host, ["aws", "digitalocean"])

    def assign_floating(self, deployment, entry, host):
        raise InputError("provider", "static servers have no provider floating address; "
                         "move the address by hand (or with keepalived)",
                         ["aws", "digitalocean"])
