"""The static provider: servers the operator already has, listed in the profile's `hosts`.

It creates and deletes nothing. Reconciling checks that the listed servers can carry the plan
and says which plan host each of them becomes; inventory reports them.
"""

import re

from lib.errors import InputError
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


class Driver(base.Driver):
    name = "static"

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
        return []

    def destroy(self, deployment, dry_run=False, delete_data=False):
        self.progress("static hosts are the operator's: nothing is deleted")
        return []
