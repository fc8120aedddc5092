"""Moving a deployment's floating addresses off a lost host (dialog.move_address).

The target is the first healthy host of the lost host's group by index: running at the provider
and answering SSH (the caller's probe), or the one the caller names. A move is idempotent: an
address already on the target is left alone, and so is one another live host holds (it did
not belong to the lost host any more).
"""

from lib.errors import InputError, ResourceFailed
from lib.providers.base import host_key

RUNNING = ("running", "active")     # AWS, DigitalOcean; static hosts report "running"


def lost_group(deployment, lost_host, hosts):
    for host in hosts:
        if host["name"] == lost_host:
            return host["group"]
    try:
        return host_key(deployment, lost_host)[0]
    except ValueError:
        raise InputError("lost_host", "%r is not a host of deployment %s" % (
            lost_host, deployment), sorted(h["name"] for h in hosts)) from None


def pick_target(hosts, group, lost_host, reachable, to_host=None):
    """The host to move to: `to_host` when given (it must be of `group`, running, not the
    lost one), else the first of `group` by index that runs and reachable(host) says yes
    (True), else the first running one that could not be checked (reachable(host) is None:
    no SSH path leads to it)."""
    candidates = sorted((h for h in hosts if h["group"] == group and h["name"] != lost_host),
                        key=lambda h: h["index"])
    if to_host:
        named = [h for h in candidates if h["name"] == to_host]
        if not named:
            raise InputError("to_host", "%r is not a %s host of the deployment other than %s"
                             % (to_host, group, lost_host), [h["name"] for h in candidates])
        if named[0].get("state") not in RUNNING:
            raise ResourceFailed("%s is %s at the provider; it cannot take the address"
                                 % (to_host, named[0].get("state")))
        return named[0]
    tried, unchecked = [], []
    for host in candidates:
        answer = reachable(host) if host.get("state") in RUNNING else False
        if host.get("state") not in RUNNING:
            tried.append("%s is %s" % (host["name"], host.get("state")))
        elif answer is None:
            unchecked.append(host)
        elif not answer:
            tried.append("%s does not answer SSH" % host["name"])
        else:
            return host
    if unchecked:
        # No SSH path to check it: a standby proxy without a public address is reached only
        # through a jump proxy, and the lost proxy was that jump. Running at the provider is
        # then the best evidence there is; the address it receives makes it reachable again.
        return unchecked[0]
    raise ResourceFailed("no healthy %s host to move the address to (%s)"
                         % (group, "; ".join(tried) or "the group has no other host"))


def move_addresses(driver, deployment, lost_host, hosts, reachable, to_host=None, known=()):
    """{moved: [{address, from, to}], message}. hosts: the provider's inventory now."""
    group = lost_group(deployment, lost_host, hosts)
    entries = [e for e in driver.floating_addresses(deployment, known=known)
               if e["group"] == group and e["holder"] in (lost_host, None)]
    if not entries:
        held = [e for e in driver.floating_addresses(deployment, known=known)
                if e["group"] == group]
        where = ", ".join("%s on %s" % (e["address"], e["holder"]) for e in held)
        return {"moved": [], "message": "%s holds no floating address%s" % (
            lost_host, " (%s)" % where if where else "")}
    target = pick_target(hosts, group, lost_host, reachable, to_host)
    moved = []
    for entry in entries:
        driver.assign_floating(deployment, entry, target)
        moved.append({"address": entry["address"], "from": entry["holder"] or lost_host,
                      "to": target["name"]})
    return {"moved": moved, "message": "moved %s to %s" % (
        ", ".join(m["address"] for m in moved), target["name"])}


def target_of(record, settings):
    """(provider, region) of a deployment: its record's, else the profile's."""
    provider = record.get("provider") or settings.get("provider") or "aws"
    region = record.get("region") or (settings.get("region")
                                      if settings.get("provider") == provider else None)
    return provider, region
