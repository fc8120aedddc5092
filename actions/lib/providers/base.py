"""What every provider driver offers, and the pieces they share.

A driver reconciles a provider to a plan (lib.planner.build_plan) the way Terraform applies a
configuration: read what exists (by tag, never from a local state file), compute the
difference, create what is missing, delete what the plan no longer has, and report each change.
A second run on an unchanged provider makes no mutating call and reports no change.
"""

import time

from lib.removal_guard import refuse_unallowed_deletions

# Tags every resource carries (AWS tag keys; DigitalOcean tag names are built from them).
TAG_DEPLOYMENT = "dialog:deployment"
TAG_GROUP = "dialog:group"
TAG_ROLES = "dialog:roles"
TAG_INDEX = "dialog:index"
TAG_MANAGED = "dialog:managed-by"
MANAGED_BY = "stackstorm-dialog"


class CallLog:
    """Every provider API call a driver makes is recorded here after it returns.

    Drivers call record() once per API request (after retries), with mutating=True for any
    call that changes the provider. Benchmarks count them; fault tests subclass this and raise
    from after_mutation() to simulate a crash right after the provider applied a change.
    """

    def __init__(self):
        self.calls = []

    def record(self, operation, mutating):
        self.calls.append((operation, bool(mutating)))
        if mutating:
            self.after_mutation(operation)

    def after_mutation(self, operation):
        """Hook for tests: called after each mutating call has succeeded."""

    @property
    def mutating(self):
        return [op for op, mutating in self.calls if mutating]

    @property
    def reads(self):
        return [op for op, mutating in self.calls if not mutating]


def change(action, kind, name, detail=""):
    """One line of a change set: action is create, update or delete."""
    return {"action": action, "kind": kind, "name": name, "detail": detail}


def check_deletions(plan, doomed):
    """Called by a driver before it deletes any host: doomed is [(name, roles)]. A stateful
    host (lib.removal_guard) that plan["remove_hosts"] does not name stops the reconcile before
    anything is deleted; dialog.provision fills remove_hosts once its own check passed."""
    refuse_unallowed_deletions(plan, doomed)


def summarize(changes):
    counts = {"create": 0, "update": 0, "delete": 0}
    for item in changes:
        counts[item["action"]] += 1
    return counts


def wait_until(check, timeout, interval, what, clock=time.monotonic, sleep=time.sleep):
    """Poll check() until it returns a true value or timeout seconds pass (then TimeoutError).

    clock and sleep are injectable so tests and emulators can run waits on virtual time."""
    deadline = clock() + timeout
    while True:
        result = check()
        if result:
            return result
        if clock() >= deadline:
            raise TimeoutError("timed out after %ss waiting for %s" % (timeout, what))
        sleep(interval)


# ---- failover primitives (dialog.move_address, dialog.fence, dialog.retire_host) ------------

TAG_RETIRED = "dialog:retired"      # a retired host's data volume: when it was set aside


def host_key(deployment, name):
    """(group, index) of a host name <deployment>-<group>-<index>; ValueError otherwise."""
    prefix = deployment + "-"
    group, _, index = name[len(prefix):].rpartition("-")
    if not name.startswith(prefix) or not group or not index.isdigit():
        raise ValueError(name)
    return group, int(index)


def floating_group(deployment, name):
    """The server group of a floating address named <deployment>-<group>-vip-<n> (planner)."""
    body = name[len(deployment) + 1:] if name.startswith(deployment + "-") else name
    return body.rsplit("-vip-", 1)[0]


class FailoverUnsupported:
    """The failover primitives' defaults: a driver that cannot do one says so plainly."""

    def floating_addresses(self, deployment, known=()):
        """[{address, name, group, holder (host name or None), id}]: the deployment's
        floating addresses. known: addresses the record saw on a host (DigitalOcean cannot
        tag a reserved IP, so an unassigned one is found only by its address)."""
        return []

    def assign_floating(self, deployment, entry, host):
        """Move one floating_addresses() entry to `host` (an inventory record); returns once
        the provider reports the move done."""
        raise NotImplementedError

    def fence(self, deployment, host):
        """Make `host` (name) unable to serve; returns {host, method, instance}."""
        raise NotImplementedError

    def retire(self, deployment, host):
        """Remove `host`'s machine, keep its data volumes aside; {host, instance,
        volumes_kept}."""
        raise NotImplementedError


class Driver(FailoverUnsupported):
    """The interface. Subclasses implement the three operations for one provider.

    profile: the resolved config profile (lib.profiles.resolve_profile), credentials included;
    a driver never puts a credential in a result, a log line or an exception message.
    region: the region to work in. calls: a CallLog (a fresh one when None).
    progress: callable(str) for human-readable progress lines, or None.
    """

    name = None

    def __init__(self, profile, region, calls=None, progress=None):
        self.profile = profile
        self.region = region
        self.calls = calls if calls is not None else CallLog()
        self.progress = progress or (lambda message: None)

    def inventory(self, deployment):
        """Hosts tagged with the deployment, sorted by name. Each host is a dict:
        name, group, index, roles (list), provider_id, size, state, private_address,
        public_addresses (list, floating addresses it holds included),
        volumes (list of {id, size_gb, kind, purpose})."""
        raise NotImplementedError

    def reconcile(self, plan, dry_run=False):
        """Make the provider match the plan; return the list of change() records. With dry_run,
        return the changes that would be made and make no mutating call."""
        raise NotImplementedError

    kept = ()   # after destroy: what it left in place on purpose, one sentence each

    def destroy(self, deployment, dry_run=False, delete_data=False):
        """Delete every resource tagged with the deployment (hosts, volumes, addresses,
        firewalls, networks); return the change() records. The bucket of uploaded files
        (lib.cloud.object_storage) goes only with delete_data; else it is listed in kept."""
        raise NotImplementedError
