"""The autoscaling control loop's decisions: smoothing, tolerance, stabilization and cooldowns.

Pure functions of (policy, observations, clock, remembered state): the sensor feeds it the
metrics of each poll and persists `state` in the datastore; the benchmark replays a trace on a
simulated clock through the same code. Modelled on Kubernetes' horizontal autoscaler:

* scale-out when the role's utilisation exceeds target x (1 + tolerance) for `breach_polls`
  consecutive polls (one spike is not a trend);
* scale-in only when, for `scale_in_window` seconds without a break, the utilisation projected
  onto the smaller count, u x n / (n - step), stays at most 0.9 x target, so the removal does
  not itself cause a scale-out;
* after a role's size changed, no scale-out for `cooldown_out` seconds and no scale-in for
  `cooldown_in` seconds (longer: a fresh node takes time to take load, and direction reversals
  are what an operator hates most). The clock starts when the change completed (dialog.scale
  records it in the deployment's record, `last_scaled`), or when a poll first saw the record's
  count change: a request nobody acted on delays nothing;
* a request is asked once: while the record still shows the count it was asked from, the same
  request is not dispatched again until `reask_interval` has passed (then marked as a repeat);
* a missing or failed metrics source makes no decision at all, and is reported at most once per
  `unavailable_interval` seconds.
"""

import copy

from lib.catalog import count_is_allowed, default_catalog

DEFAULTS = {
    "breach_polls": 3,
    "tolerance": 0.1,
    "scale_in_window": 300,
    "scale_in_margin": 0.9,
    "cooldown_out": 600,
    "cooldown_in": 900,
    "unavailable_interval": 900,
    "capacity_interval": 3600,
    # Long: a request still unanswered after this is most likely one no enabled rule acts on
    # (scale-in rules ship disabled) or whose operation failed and was announced as failed.
    "reask_interval": 21600,
}
# What drives each role: the metric, its target and how the hosts' values combine. How many
# hosts a step adds is the tier's (the catalog's count step: dialog servers 2, Cassandra 1).
ROLE_POLICIES = {
    "dialog-server": {"metric": "cpu", "target": 0.7, "aggregate": "mean"},
    "cassandra": {"metric": "disk", "target": 0.7, "aggregate": "max"},
}


def policy_from(config):
    """The effective policy: DEFAULTS and ROLE_POLICIES overlaid with the pack config's
    `autoscaling` block ({"breach_polls": 4, "roles": {"cassandra": {"target": 0.6}}})."""
    config = config or {}
    policy = dict(DEFAULTS)
    policy.update({k: v for k, v in config.items() if k in DEFAULTS and v is not None})
    roles = copy.deepcopy(ROLE_POLICIES)
    for role, overrides in (config.get("roles") or {}).items():
        if role in roles:
            roles[role].update({k: v for k, v in overrides.items() if v is not None})
    policy["roles"] = roles
    return policy


def aggregate(values, how):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return max(values) if how == "max" else sum(values) / len(values)


def _role_state(state, role):
    memory = state.setdefault("roles", {}).setdefault(role, {})
    # Versions before completion-based cooldowns kept the time of the last *request*.
    memory.pop("last_event", None)
    memory.pop("last_direction", None)
    for name, value in (("breaches", 0), ("calm_since", None), ("pending", None),
                        ("seen_count", None), ("changed_at", None)):
        memory.setdefault(name, value)
    return memory


def _allowed(count_spec, value):
    return value >= 1 and count_is_allowed(count_spec, value)


def _observe_record(memory, current, completed, now):
    """Follow the record: when its count moved, and whether the pending request is answered
    (the count it was asked from changed, or dialog.scale recorded a completion since)."""
    if memory["seen_count"] is not None and memory["seen_count"] != current:
        memory["changed_at"] = now
    memory["seen_count"] = current
    pending = memory["pending"]
    finished = (completed or {}).get("completed_at")
    if pending and (pending["current"] != current or
                    (finished is not None and finished >= pending["requested_at"])):
        memory["pending"] = None
    changes = [t for t in (finished, memory["changed_at"]) if t is not None]
    return max(changes) if changes else None


def decide(policy, role, samples, current, count_spec, now, state, completed=None):
    """One poll's decision for one role; mutates `state` (the role's memory) and returns None
    or {"role", "direction", "current", "desired", "reason", "metrics", "repeat",
    "reask_after"}.

    samples: {instance: value} of the role's driving metric this poll (fractions 0..1);
    count_spec: the tier's count rule for the role's server group (catalog `count`);
    completed: the record's last_scaled entry of the role ({"direction", "from", "to",
    "completed_at"}) or None."""
    rule = policy["roles"][role]
    memory = _role_state(state, role)
    last = _observe_record(memory, current, completed, now)
    value = aggregate(samples.values(), rule["aggregate"])
    if value is None or current < 1:
        memory["breaches"], memory["calm_since"] = 0, None
        return None
    target, step = rule["target"], count_spec.get("step") or 1
    metrics = {"metric": rule["metric"], "aggregate": rule["aggregate"], "value": round(value, 4),
               "target": target, "instances": {k: round(v, 4) for k, v in samples.items()}}
    # The utilisation after a scale-in. A mean is a share of the role's capacity; a maximum is
    # Cassandra's fullest disk, and the survivors take over the leavers' data, so each then
    # holds n / (n - step) times as much: both rise by the same factor.
    projected = None
    if current > step:
        projected = value * current / (current - step)

    if value > target * (1 + policy["tolerance"]):
        memory["breaches"] += 1
        memory["calm_since"] = None
    else:
        memory["breaches"] = 0
        if projected is not None and projected <= policy["scale_in_margin"] * target:
            if memory["calm_since"] is None:
                memory["calm_since"] = now
        else:
            memory["calm_since"] = None

    desired, direction, reason = None, None, None
    if memory["breaches"] >= policy["breach_polls"]:
        if last is None or now - last >= policy["cooldown_out"]:
            if _allowed(count_spec, current + step):
                desired, direction = current + step, "out"
                reason = "%s %s %.0f%% above the %.0f%% target (+%.0f%% tolerance) for %d polls" % (
                    rule["aggregate"], rule["metric"], value * 100, target * 100,
                    policy["tolerance"] * 100, memory["breaches"])
    elif memory["calm_since"] is not None and now - memory["calm_since"] >= \
            policy["scale_in_window"]:
        if last is None or now - last >= policy["cooldown_in"]:
            if _allowed(count_spec, current - step):
                desired, direction = current - step, "in"
                reason = ("%s %s %.0f%% would be %.0f%% on %d hosts, at most %.0f%% of the target, "
                          "for %ds" % (rule["aggregate"], rule["metric"], value * 100,
                                       projected * 100, current - step,
                                       policy["scale_in_margin"] * 100,
                                       now - memory["calm_since"]))
    if desired is None:
        return None
    pending = memory["pending"]
    repeat = 0
    if pending and (pending["direction"], pending["desired"]) == (direction, desired):
        if now - pending["requested_at"] < policy["reask_interval"]:
            return None  # asked already, and the record does not show an answer yet
        repeat = pending.get("repeat", 0) + 1
    memory.update(breaches=0, calm_since=None, pending={
        "direction": direction, "current": current, "desired": desired, "requested_at": now,
        "repeat": repeat})
    return {"role": role, "direction": direction, "current": current, "desired": desired,
            "reason": reason, "metrics": metrics, "repeat": repeat,
            "reask_after": int(policy["reask_interval"])}


def capacity_check(tier, active_users, now, state, policy, catalog=None):
    """The tier_capacity finding when active users leave the tier's documented range (at most
    once per capacity_interval): {"tier", "active_users", "users_min", "users_max",
    "next_tier", "direction"} or None."""
    if active_users is None:
        return None
    catalog = catalog or default_catalog()
    capacity = catalog.tier(tier)["capacity"]
    order = catalog.tier_names  # the catalog lists the tiers smallest first
    position = order.index(tier)
    if capacity["users_max"] is not None and active_users > capacity["users_max"]:
        direction = "up"
        next_tier = order[position + 1] if position + 1 < len(order) else None
    elif active_users < capacity["users_min"] and position > 0:
        direction, next_tier = "down", order[position - 1]
    else:
        return None
    last = state.get("capacity_reported")
    if last is not None and now - last < policy["capacity_interval"]:
        return None
    state["capacity_reported"] = now
    return {"tier": tier, "active_users": int(active_users), "users_min": capacity["users_min"],
            "users_max": capacity["users_max"], "next_tier": next_tier, "direction": direction}


def unavailable_due(state, now, policy):
    """True when a metrics_unavailable report is due (rate limit), and records it."""
    last = state.get("unavailable_reported")
    if last is not None and now - last < policy["unavailable_interval"]:
        return False
    state["unavailable_reported"] = now
    return True


def evaluate(policy, deployment, tier, groups, metrics, now, state, with_storage=False,
             catalog=None, last_scaled=None, busy=False):
    """Every finding of one poll of one deployment: [("scale_requested" | "tier_capacity",
    payload)]. groups: {server group: host count} from the deployment's record (what the
    deploy made; a host whose exporter is down still counts); metrics: PrometheusSource.fetch();
    last_scaled: the record's completed scale operations by role; busy: an operation of the
    deployment holds its lock, so its hosts are changing: no scale request meanwhile.
    """
    catalog = catalog or default_catalog()
    servers = {role: s for s in catalog.tier(tier)["servers"]
               if not s.get("optional") or with_storage for role in s["roles"]}
    findings = []
    for role, rule in sorted(policy["roles"].items()):
        server = servers.get(role)
        if server is None or len(server["roles"]) > 1:
            continue  # the tier has no such group, or its count is fixed (mini's one server)
        samples = (metrics.get(rule["metric"]) or {}).get(role) or {}
        current = (groups or {}).get(server["name"]) or len(samples)
        if busy:
            samples = {}  # what the hosts show mid-operation is no trend: decide nothing
        decision = decide(policy, role, samples, current, server["count"], now, state,
                          (last_scaled or {}).get(role))
        if decision:
            decision["deployment"] = deployment
            findings.append(("scale_requested", decision))
    users = (metrics.get("users") or {}).get("dialog-server")
    if users:
        capacity = capacity_check(tier, sum(users.values()), now, state, policy, catalog)
        if capacity:
            capacity["deployment"] = deployment
            findings.append(("tier_capacity", capacity))
    return findings


def forget_streaks(state):
    """A poll without data breaks every run of consecutive breaches and every calm window:
    what happened meanwhile is unknown. Cooldowns stay."""
    for memory in (state.get("roles") or {}).values():
        memory["breaches"], memory["calm_since"] = 0, None
