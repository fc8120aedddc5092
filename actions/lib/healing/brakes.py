"""The brakes on automatic repairs: when a repair may start, and when a human must decide.

State, in the datastore key dialog.<deployment>.repairs (JSON):
  active:  the repair running now {role, host, fault, execution, started_at}, or null;
  history: the last HISTORY_LENGTH repairs {role, host, fault, status, started_at, finished_at,
           detail}; status "reset" marks a human's dialog.repair_reset (the window restarts);
  halted:  {"<role>" or "*": reason}: no repair of that role (every role for "*") until
           dialog.repair_reset;
  down:    {host: {role, fault, since, announced}}: hosts reported down and not yet back.
           Every dialog.host_down is noted here (rule note_host_down, and the gate for its own
           host), dialog.recovered and a successful repair remove it. A second host in it means
           two faults overlap.

Rules, in the order decide() applies them:
  1. a halted role (or "*") refuses, announced once per host;
  2. another host down, or another repair active: overlapping faults. Nothing is repaired,
     every role is halted ("*") and one announcement names every host involved;
  3. the deployment busy with another operation (the lock was refused): refused, announced;
  4. a repair of the same role started within `window` seconds (since its last reset):
     refused, announced;
  5. otherwise the repair starts (active).
A failed repair halts its role (finish()). Nothing here retries: the sensor dispatches
host_down once per outage, and a refused or halted fault waits for a human.

The datastore has no compare-and-set: two gates deciding in the same milliseconds could both
see the other's host only as down (two announcements, still no repair). The gate runs under
the deployment's operation lock, and policies/repair_gate_concurrency.yaml serialises gates
per deployment where StackStorm has a coordination backend.
"""

import json

KEY_TEMPLATE = "dialog.%s.repairs"
HISTORY_LENGTH = 50
DEFAULT_WINDOW = 1800
EVERYTHING = "*"


def repairs_key(deployment):
    return KEY_TEMPLATE % deployment


def empty_state():
    return {"active": None, "history": [], "halted": {}, "down": {}}


def load(datastore, deployment):
    """The stored state; an unreadable value (edited by hand) halts everything, so a broken
    state never lets repairs run unchecked."""
    text = datastore.get_value(repairs_key(deployment), local=False)
    state = empty_state()
    if not text:
        return state
    try:
        stored = json.loads(text)
    except ValueError:
        stored = None
    if not isinstance(stored, dict):
        state["halted"][EVERYTHING] = ("the repairs state %s is unreadable (%r)"
                                       % (repairs_key(deployment), text[:80]))
        return state
    for name, value in empty_state().items():
        state[name] = stored.get(name) if isinstance(stored.get(name), type(value)) else value
    if isinstance(stored.get("active"), dict):
        state["active"] = stored["active"]
    return state


def save(datastore, deployment, state):
    state["history"] = state["history"][-HISTORY_LENGTH:]
    datastore.set_value(repairs_key(deployment), json.dumps(state, sort_keys=True), local=False)


def reset_command(deployment, role=None):
    return "st2 run dialog.repair_reset deployment=%s%s" % (
        deployment, " role=%s" % role if role and role != EVERYTHING else "")


def heal_command(deployment, role, host):
    return "st2 run dialog.heal_%s deployment=%s host=%s" % (
        role.replace("-", "_"), deployment, host)


def note_down(state, host, role, fault, now):
    """Remember that `host` (of group `role`) is down; the first report's time is kept."""
    if host not in state["down"]:
        state["down"][host] = {"role": role, "fault": fault, "since": now, "announced": False}
    return state["down"][host]


def note_recovered(state, host):
    """`host` answers again: it no longer counts as a fault. True when it was noted down."""
    return state["down"].pop(host, None) is not None


def _last_repair(state, role):
    """started_at of the role's last repair since its last reset (or a full reset), or None."""
    last = None
    for entry in state["history"]:
        if entry.get("status") == "reset" and entry.get("role") in (role, EVERYTHING):
            last = None
        elif entry.get("role") == role:
            last = entry.get("started_at")
    return last


def _describe(state, host):
    entry = state["down"].get(host) or {}
    return "%s (%s: %s)" % (host, entry.get("role") or "?", entry.get("fault") or "down")


def decide(state, deployment, role, host, fault, now, window=DEFAULT_WINDOW, execution=None,
           busy=None):
    """Apply the brakes to a repair of `host` (group `role`) for `fault` at `now` (epoch s).
    Changes `state` (the caller saves it) and returns {proceed, reason, message, announce}:
    reason is one of halted, active, overlap, busy, window, proceed; message is the chat text;
    announce is False when this fault was already announced (say nothing again)."""
    note_down(state, host, role, fault, now)
    mine = state["down"][host]
    first_time = not mine.get("announced")
    mine["announced"] = True
    halt = state["halted"].get(role) and role or (
        state["halted"].get(EVERYTHING) and EVERYTHING)
    if halt:
        return _refused("halted", first_time, (
            "%s: %s is down (%s); not repaired, because automatic repairs of %s are halted: %s. "
            "A human must repair it: check the host, then `%s` and `%s` (or fix it by hand and "
            "then reset)." % (deployment, host, fault, "every role" if halt == EVERYTHING
                              else role, state["halted"][halt], reset_command(deployment, halt),
                              heal_command(deployment, role, host))))
    active = state["active"]
    if active and active.get("host") == host and active.get("execution") != execution:
        # The same fault reported twice (a re-delivered trigger): its repair runs already.
        return _refused("active", first_time, (
            "%s: %s is being repaired already (execution %s, started %s)."
            % (deployment, host, active.get("execution"), active.get("started_at"))))
    others = sorted(h for h in state["down"] if h != host)
    if (active and active.get("host") != host) or others:
        involved = sorted(set(others) | ({active["host"]} if active else set()) | {host})
        new = [h for h in involved if h != host and not state["down"].get(h, {}).get(
            "announced")]
        for name in involved:
            if name in state["down"]:
                state["down"][name]["announced"] = True
        running = (" while the repair of %s (execution %s, started %s) runs" % (
            active["host"], active.get("execution"), active.get("started_at"))) if active else ""
        reason = "overlapping faults: %s%s" % (
            "; ".join(_describe(state, h) for h in involved if h in state["down"]), running)
        state["halted"][EVERYTHING] = reason
        return _refused("overlap", first_time or bool(new), (
            "%s: %s. Two faults at once are beyond automatic repair: nothing is repaired, and "
            "every automatic repair is halted%s. A human must look at every host named, repair "
            "them (e.g. `%s`), then `%s`." % (
                deployment, reason, " (the running repair finishes)" if active else "",
                heal_command(deployment, role, host), reset_command(deployment))))
    if busy:
        return _refused("busy", first_time, (
            "%s: %s is down (%s); not repaired, because another operation holds the "
            "deployment: %s. When it has ended, `%s` repairs it." % (
                deployment, host, fault, busy, heal_command(deployment, role, host))))
    last = _last_repair(state, role)
    if last is not None and now - last < window:
        return _refused("window", first_time, (
            "%s: %s is down (%s); not repaired: a %s repair already started %d s ago, and at "
            "most one runs per %d s (healing.repair_window), so a fault that comes back is not "
            "repaired in a loop. A human must look at it: `%s` allows the next repair, then `%s`."
            % (deployment, host, fault, role, now - last, window,
               reset_command(deployment, role), heal_command(deployment, role, host))))
    state["active"] = {"role": role, "host": host, "fault": fault, "execution": execution,
                       "started_at": now}
    return {"proceed": True, "reason": "proceed", "announce": True, "message": (
        "%s: %s is down (%s); repairing it automatically (%s repair, execution %s)."
        % (deployment, host, fault, role, execution))}


def _refused(reason, announce, message):
    return {"proceed": False, "reason": reason, "announce": bool(announce), "message": message}


def finish(state, deployment, role, host, status, detail, now, execution=None):
    """Record the end of the active repair of `host`: history; on success the host no longer
    counts as down; on failure the role is halted until dialog.repair_reset. Returns the chat
    text."""
    active = state["active"] or {}
    if active.get("host") == host:
        state["active"] = None
    started = active.get("started_at") if active.get("host") == host else None
    state["history"].append({"role": role, "host": host, "fault": active.get("fault"),
                             "status": status, "started_at": started, "finished_at": now,
                             "detail": detail})
    took = " in %d s" % (now - started) if started is not None else ""
    if status == "succeeded":
        note_recovered(state, host)
        return "%s: %s repaired%s (%s repair). %s" % (deployment, host, took, role, detail or "")
    state["halted"][role] = "the repair of %s failed: %s" % (host, detail or "no detail")
    return ("%s: the repair of %s FAILED%s: %s. Automatic %s repairs are halted: they are not "
            "tried again. A human must finish it (`st2 execution get %s` shows every step), "
            "then `%s`." % (deployment, host, took, detail or "no detail", role, execution,
                            reset_command(deployment, role)))


def reset(state, role, now):
    """A human's dialog.repair_reset: lift the halt of `role` (every halt when None), forget
    its hosts' faults and restart its window. Returns what was lifted."""
    if role in (None, "", EVERYTHING):
        lifted = dict(state["halted"])
        state["halted"], state["down"], state["active"] = {}, {}, None
        role = EVERYTHING
    else:
        lifted = {role: state["halted"].pop(role)} if role in state["halted"] else {}
        state["down"] = {h: e for h, e in state["down"].items() if e.get("role") != role}
        if state["active"] and state["active"].get("role") == role:
            state["active"] = None
    state["history"].append({"role": role, "host": None, "fault": None, "status": "reset",
                             "started_at": now, "finished_at": now, "detail": "by a human"})
    return lifted
