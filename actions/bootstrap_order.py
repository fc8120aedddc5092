from dialog_action import DialogAction, reports_errors
from lib.bootstrap import prepare_bound, start_bound
from lib.catalog import default_catalog
from lib.deployment_record import postgres_primary
# What nginx.conf.j2 reads to forward the push ports; the one place the catalog says so.
from lib.render import proxied_push_purposes
from lib.stages import dependencies, depths, rolling_after, start_order

# test_action_timeouts' margin: API round trips, process start, a poll's last attempt.
MIN_MARGIN = 300


def bounds(needs, health_timeout, ssh_timeout, after=None):
    """{host: (dependency wait bound, action timeout)}, both from the bootstrap's start.

    Every host prepares at once, within prepare_bound; a host needing nothing is running
    start_bound later; one whose longest chain of needs is d hosts deep, d start_bounds later
    still. So the hosts it needs are running by prepare + d * start, and it by one start more:
    its timeout, plus margin, so that the bootstrap's own message (naming the step or the
    host it waited for) is what the operator sees, never StackStorm's kill. A host that
    restarts in turn (`after`: lib.stages.rolling_after) may also wait for each host before
    it to restart: one start more per such host."""
    prepare, start = prepare_bound(ssh_timeout), start_bound(health_timeout)
    after = after or {}
    result = {}
    for name, depth in depths(needs).items():
        turns = len(after.get(name) or ())
        wait = int(prepare + (depth + turns) * start) if depth or turns else 0
        worst = prepare + (depth + turns + 1) * start
        result[name] = (wait, int(worst + max(MIN_MARGIN, worst / 10)))
    return result


class BootstrapOrderAction(DialogAction):
    """dialog.bootstrap_order: what each host needs running before it starts, and the bounds."""

    @reports_errors
    def run(self, hosts, tier=None, health_timeout=600, ssh_timeout=600, deployment=None):
        route_push = bool(proxied_push_purposes(default_catalog(), tier)) if tier else True
        primary = postgres_primary(self.record(deployment), hosts) if deployment else None
        needs = dependencies(hosts, route_push, primary)
        limits = bounds(needs, health_timeout, ssh_timeout, rolling_after(hosts))
        return {"order": start_order(needs), "needs": needs,
                "wait": {name: limits[name][0] for name in needs},
                "timeout": {name: limits[name][1] for name in needs}}
