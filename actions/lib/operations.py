"""Deployment-level operations on hosts over SSH: bootstrap one, check all, create the admin.

The actions call these with a deployment context (hosts, secrets, images: see
DialogAction.deployment_context) and SSH options from the profile. Everything here is plain
Python; each function opens its own connections and closes them on every path.
"""

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor

import paramiko

from lib import bootstrap, health
from lib.catalog import default_catalog
from lib.cluster import cassandra_ops
from lib.errors import DialogError, InputError, ResourceFailed
from lib.hosts import ssh_path
from lib.render import public_address, render_host
from lib.stages import hosts_with

DEFAULT_SSH_WAIT = 600.0
CHECK_CONCURRENCY = 16


def _noop(_message):
    return None


def ssh_address(host, via="private", hosts=None):
    """The address the runner logs in at (see lib.hosts.ssh_path for the modes); with jump, the
    address is reached through the proxy that ssh_path.route() names."""
    return ssh_path.route(host, via, hosts)[0]


def _login(ssh, host):
    """fabric connect() arguments for one host (ssh_path.login_user says which user)."""
    return {"user": ssh_path.login_user(host, ssh.get("user")),
            "key_file": ssh.get("key_file"), "private_key_text": ssh.get("private_key_text"),
            # lib.hosts.host_keys.HostKeyPins of the deployment (DialogAction.ssh_options)
            "host_keys": ssh.get("host_keys")}


@contextlib.contextmanager
def session(host, ssh, wait=None, progress=_noop, hosts=None, timeout=None):
    """An SSH connection to a host of the inventory, closed on exit. With `wait` seconds, the
    host is first given that long to accept SSH (a new host is still booting). `hosts`, the
    deployment's inventory, holds the proxy that ssh_address jump goes through. `timeout`:
    seconds each step of the login may take (bootstrap.connect's default otherwise; the health
    sensor's probes use a short one)."""
    # With jump, every proxy is a way in, those answering first: with the first proxy dead,
    # the hosts behind it are reached through the next one (ssh_path.ordered_routes).
    ways = ssh_path.ordered_routes(host, ssh.get("via") or "private", hosts)
    for number, (address, proxy) in enumerate(ways, 1):
        login = _login(ssh, host)
        if proxy is not None:
            login["jump"] = {"name": proxy["name"], "address": proxy["public_addresses"][0],
                             "user": ssh_path.login_user(proxy, ssh.get("user"))}
        where = address + (" through %s" % proxy["name"] if proxy is not None else "")
        try:
            if wait:
                progress("%s: waiting for SSH at %s" % (host["name"], where))
                waited = bootstrap.wait_for_ssh(address, name=host["name"], timeout=wait,
                                                **login)
                progress("%s: SSH ready after %.1fs" % (host["name"], waited))
            connection = bootstrap.connect(address, name=host["name"], **dict(
                login, **({"timeout": timeout} if timeout else {})))
            break
        except bootstrap.JumpUnreachable:
            if number == len(ways):
                raise
            ssh_path.PROBE.remember(proxy, False)
            progress("%s: jump proxy %s cannot be reached; trying %s"
                     % (host["name"], proxy["name"], ways[number][1]["name"]))
    try:
        yield connection
    finally:
        connection.close()


def _host(context, name):
    for host in context["hosts"]:
        if host["name"] == name:
            return host
    raise InputError("host", "no host named %r in the inventory" % (name,),
                     sorted(h["name"] for h in context["hosts"]))


def _failure_reason(exc):
    """What the hosts waiting for this one are told: the pack's own message (never a secret),
    or only the type of anything else."""
    if isinstance(exc, DialogError):
        return str(exc)
    return "crashed: %s" % type(exc).__name__


def bootstrap_one(context, name, ssh, health_timeout=600, ssh_wait=DEFAULT_SSH_WAIT,
                  progress=_noop, gate=None, started=None):
    """Render, prepare, start and check one host: bootstrap.start_host's result plus the
    host's roles and "seconds": {"setup", "ssh_wait", "prepare", "dependency_wait", "start"}
    (setup: from `started`, a time.monotonic() when the action began, to the first SSH attempt:
    its settings, secrets and rendered files; ssh_wait includes the login; start, the login
    after a wait).

    `gate` (lib.hosts.start_order.RunGate, dialog.deploy's run): the host is prepared at once,
    but started only once gate.wait() says every host it needs is running; then gate.ready(),
    or gate.failed(reason) on any failure, which also stops the hosts that wait for this one.
    A host of a rolling group (gate.rolls) whose start would take running services down
    (bootstrap.restart_plan) also waits for its turn (gate.wait_turn: the hosts before it are
    back); one that takes nothing down says so at once (gate.passed), holding no one back."""
    clock = time.monotonic
    seconds = {"setup": 0.0, "ssh_wait": 0.0, "prepare": 0.0, "dependency_wait": 0.0,
               "turn_wait": 0.0, "start": 0.0}

    def since(mark):
        return round(clock() - mark, 3)

    waits = gate is not None and bool(gate.needs)
    turn = False
    outcome = None
    try:
        rendered = render_host(context, name)
        host = _host(context, name)
        progress("%s: bootstrapping %s" % (name, ", ".join(rendered["roles"])))
        mark = clock()
        seconds["setup"] = since(started) if started is not None else 0.0
        with session(host, ssh, wait=ssh_wait, progress=progress,
                     hosts=context["hosts"]) as connection:
            seconds["ssh_wait"] = since(mark)
            mark = clock()
            prepared = bootstrap.prepare_host(connection, rendered, context.get("registry"),
                                              progress)
            seconds["prepare"] = since(mark)
            if gate is not None and gate.rolls:
                plan = bootstrap.restart_plan(connection, rendered, prepared)
                turn = bool(plan.get("takes_down"))
                if turn:
                    progress("%s: restarts %s (one host of its group at a time)"
                             % (name, ", ".join(plan.get("running") or [])))
                else:
                    gate.passed()
            if not waits and not turn:
                mark = clock()
                outcome = bootstrap.start_host(connection, rendered, prepared, progress,
                                               health_timeout)
                seconds["start"] = since(mark)
        if waits or turn:
            # A new session: the wait may be long, an idle one may be dropped meanwhile.
            if waits:
                seconds["dependency_wait"] = gate.wait()
            if turn:
                seconds["turn_wait"] = gate.wait_turn()
            mark = clock()
            with session(host, ssh, progress=progress, hosts=context["hosts"]) as connection:
                outcome = bootstrap.start_host(connection, rendered, prepared, progress,
                                               health_timeout)
            seconds["start"] = since(mark)
    except Exception as exc:
        if gate is not None:
            try:
                gate.failed(_failure_reason(exc))
            except Exception as marker_error:  # pylint: disable=broad-except
                progress("%s: could not tell the hosts waiting for it that it failed: %s"
                         % (name, type(marker_error).__name__))
        raise
    if gate is not None:
        gate.ready()
    outcome["roles"] = rendered["roles"]
    outcome["seconds"] = seconds
    return outcome


# An SSH connection that drops after it opened (a proxy's sshd restarted under a jump, a reset
# on a busy network) surfaces as one of these from paramiko, outside lib.errors.
DROPPED = (health.ConnectionDropped, EOFError, OSError, paramiko.SSHException)
CHECK_ATTEMPTS = 2


def _check_host(context, host, ssh, attempts=CHECK_ATTEMPTS):
    record = {"name": host["name"], "roles": host["roles"],
              "private_address": host.get("private_address"),
              "public_addresses": host.get("public_addresses") or []}
    for attempt in range(1, attempts + 1):
        try:
            rendered = render_host(context, host["name"])
            with session(host, ssh, hosts=context["hosts"]) as connection:
                checks = health.run_checks(connection, rendered)
            record.update(checks=checks, healthy=all(c["ok"] for c in checks), error=None)
            return record
        except DROPPED as exc:
            # A dropped connection says nothing about the host's services: ask again on a
            # new one before calling it unhealthy.
            reason = "%s: %s" % (type(exc).__name__, exc) if str(exc) else type(exc).__name__
            record.update(checks=[], healthy=False,
                          error="%s: the SSH connection dropped during the checks (%s, %d "
                                "attempt%s)" % (host["name"], reason, attempt,
                                                "" if attempt == 1 else "s"))
        except DialogError as exc:
            # One unreachable host must not hide the others' health.
            record.update(checks=[], healthy=False, error=str(exc))
            return record
    return record


def check_all(context, ssh, concurrency=CHECK_CONCURRENCY, only=None):
    """Every host's checks (or those of the hosts named in `only`), run once and concurrently:
    [{"name", "roles", "private_address", "public_addresses", "healthy", "checks", "error"}] in
    inventory order."""
    hosts = [h for h in context["hosts"] if only is None or h["name"] in only]
    if not hosts:
        return []
    with ThreadPoolExecutor(max_workers=min(concurrency, len(hosts))) as pool:
        return list(pool.map(lambda h: _check_host(context, h, ssh), hosts))


def first_admin(context, ssh, progress=_noop):
    """Create the first admin through the first dialog server (idempotent). The login and
    password come from the deployment's secrets and the password never leaves them."""
    servers = hosts_with(context["hosts"], "dialog-server")
    if not servers:
        raise InputError("hosts", "the inventory has no dialog-server host to create the first "
                         "admin on")
    secrets = context["secrets"]
    rendered = render_host(context, servers[0]["name"])
    with session(servers[0], ssh, hosts=context["hosts"]) as connection:
        outcome = bootstrap.create_admin(connection, rendered, secrets["admin_login"],
                                         secrets["admin_password"])
    state = "created" if outcome["created"] else "already there"
    progress("%s: first admin %r %s" % (servers[0]["name"], outcome["login"], state))
    return outcome


def endpoints(hosts, catalog=None):
    """Where clients connect: the proxies' public address for web, API, WebSocket and the mobile
    protocol (all on the HTTPS port, see nginx.conf.j2), the voice hosts' for TURN. Point DNS at
    every address in `proxies`; `web` and the others name the first for convenience."""
    catalog = catalog or default_catalog()
    proxies = [a for h in hosts_with(hosts, "proxy") for a in (h.get("public_addresses") or [])]
    voice = [public_address(h) for h in hosts_with(hosts, "voice")]
    result = {"proxies": proxies, "turn": ["turn:%s:%d" % (a, catalog.port("voice", "turn"))
                                           for a in voice]}
    if proxies:
        https = catalog.port("proxy", "https")
        where = proxies[0] if https == 443 else "%s:%d" % (proxies[0], https)
        result.update(web="https://%s/" % where, api="https://%s/v1" % where,
                      websocket="wss://%s/" % where, mobile="tls://%s:%d" % (proxies[0], https))
    return result


def dialog_servers_healthy(context, ssh):
    """Raise unless every dialog server passes its checks (scale-in never runs otherwise)."""
    servers = [h["name"] for h in context["hosts"] if "dialog-server" in h["roles"]]
    checked = check_all(context, ssh, only=servers)
    sick = [h["name"] + ": " + (h["error"] or ", ".join(
        c["name"] for c in h["checks"] if not c["ok"])) for h in checked if not h["healthy"]]
    if sick:
        raise ResourceFailed("no scale-in while a dialog server is unhealthy: %s"
                             % "; ".join(sick))


def scale_gate(context, ssh, step, progress=_noop):
    """What must hold before a scale step (lib.scaling.scale_step) changes anything: dialog
    servers in, every one healthy; Cassandra in, the decommission check; Cassandra out, every
    node UN (one join at a time, never beside a node down or leaving). Raises ResourceFailed;
    returns a line saying what was checked, or None for a role without a gate."""
    role, direction = step["role"], step["direction"]
    if role == "dialog-server" and direction == "in":
        dialog_servers_healthy(context, ssh)
        return "every dialog server healthy"
    if role == "cassandra" and direction == "in":
        check = cassandra_decommission_check(context, ssh, step["leaving"][0])
        line = ("decommission check: %(survivors)d survivors, each with room for "
                "%(share_bytes)d bytes" % check)
    elif role == "cassandra" and direction == "out":
        ring = cassandra_ring_normal(context, ssh, "no node joins")
        line = "cassandra ring: %d nodes, all UN" % len(ring)
    else:
        return None
    progress(line)
    return line


def _survivors(context, leaver_name):
    """The Cassandra hosts that stay; the first of them watches the ring for the others."""
    return [h for h in hosts_with(context["hosts"], "cassandra") if h["name"] != leaver_name]


def cassandra_decommission_check(context, ssh, leaver_name):
    """The ring as a surviving node sees it, and the survivors' free space, checked by
    cassandra_ops.check_decommission (one SSH session per survivor)."""
    leaver = _host(context, leaver_name)
    ring, free = None, {}
    for node in _survivors(context, leaver_name):
        with session(node, ssh, hosts=context["hosts"]) as connection:
            if ring is None:
                ring = cassandra_ops.ring(connection, render_host(context, node["name"]))
            free[node["private_address"]] = cassandra_ops.free_bytes(connection)
    return cassandra_ops.check_decommission(leaver["private_address"], ring or [], free)


def _ring_names(context):
    return {h["private_address"]: h["name"] for h in hosts_with(context["hosts"], "cassandra")}


def cassandra_ring_normal(context, ssh, why):
    """The ring as the first Cassandra host sees it, required all UN with every Cassandra host
    of the inventory in it (cassandra_ops.require_normal)."""
    names = _ring_names(context)
    nodes = hosts_with(context["hosts"], "cassandra")
    if not nodes:
        return []
    with session(nodes[0], ssh, hosts=context["hosts"]) as connection:
        ring = cassandra_ops.ring(connection, render_host(context, nodes[0]["name"]))
    return cassandra_ops.require_normal(ring, names, [h["private_address"] for h in nodes],
                                        why)


def cassandra_replace_ring(context, ssh, replacing):
    """dialog.deploy's `replacing` on the ring as the first Cassandra host of the inventory sees
    it: each dead address DN and every other node UN (cassandra_ops.replace_gate), every host
    of the inventory in it."""
    names = _ring_names(context)
    nodes = hosts_with(context["hosts"], "cassandra")
    with session(nodes[0], ssh, hosts=context["hosts"]) as connection:
        ring = cassandra_ops.ring(connection, render_host(context, nodes[0]["name"]))
    for dead in sorted(replacing.values()):
        cassandra_ops.replace_gate(ring, dead, names)
    return cassandra_ops.require_normal(
        [n for n in ring if n["address"] not in replacing.values()], names,
        [h["private_address"] for h in nodes if h["name"] not in replacing], "no replacement")


def cassandra_join_wait(context, ssh, name, progress=_noop,
                        timeout=cassandra_ops.JOIN_TIMEOUT):
    """Wait until the joining node `name` reads UN in the ring an older node sees (first by
    index), a progress line every cassandra_ops.JOIN_POLL seconds."""
    joiner = _host(context, name)
    observer = _survivors(context, name)[0]
    rendered = render_host(context, observer["name"])
    progress("%s: waiting for %s to join the ring (bound %ds), as %s sees it"
             % (name, joiner["private_address"], timeout, observer["name"]))

    # A fresh session per poll: a join lasts hours, and one dropped connection or one failed
    # nodetool call must not end it (wait_joined bounds how long the ring may stay unread).
    def read_ring():
        try:
            with session(observer, ssh, hosts=context["hosts"]) as connection:
                return cassandra_ops.ring(connection, rendered)
        except (DialogError,) + DROPPED as exc:
            progress("%s: ring not read this time: %s" % (observer["name"], _failure_reason(exc)))
            return None

    return cassandra_ops.wait_joined(read_ring, joiner["private_address"], name, progress,
                                     timeout=timeout)


def cassandra_replication(context, ssh, progress=_noop):
    """cassandra_ops.ensure_replication for the deployment's ring, through its first node (the
    others are opened too, for a repair the ring may need on every node); [] without Cassandra.
    Call it once the dialog servers have started: they create Dialog's keyspaces."""
    nodes = hosts_with(context["hosts"], "cassandra")
    if not nodes:
        return []
    with contextlib.ExitStack() as stack:
        opened = [(stack.enter_context(session(node, ssh, hosts=context["hosts"])),
                   render_host(context, node["name"])) for node in nodes]
        (connection, rendered), peers = opened[0], opened[1:]
        return cassandra_ops.ensure_replication(connection, rendered, len(nodes), peers,
                                                progress=progress)


def cassandra_cleanup(context, ssh, name, progress=_noop):
    """After a node joined: first the replication the larger ring allows (raised RF and its
    repair; a node then keeps the ranges it still replicates), then `nodetool cleanup`."""
    replication = cassandra_replication(context, ssh, progress)
    host = _host(context, name)
    with session(host, ssh, hosts=context["hosts"]) as connection:
        cassandra_ops.cleanup(connection, render_host(context, name))
    progress("%s: nodetool cleanup done" % name)
    return {"host": name, "cleanup": "done", "replication": replication}


def cassandra_decommission(context, ssh, name, progress=_noop):
    """Decommission one node and wait until a surviving node's ring no longer lists it."""
    leaver = _host(context, name)
    observer = _survivors(context, name)[0]
    progress("%s: nodetool decommission (streams its data to the others)" % name)
    with session(leaver, ssh, hosts=context["hosts"]) as connection, \
            session(observer, ssh, hosts=context["hosts"]) as watcher:
        cassandra_ops.decommission(connection, render_host(context, name), watcher,
                                   render_host(context, observer["name"]))
    progress("%s: left the ring" % name)
    return {"host": name, "decommissioned": True}


def finish_cleanups(context, ssh, owed, done, progress=_noop):
    """Run the cleanups a join left owed (lib.pending_cleanup), one node at a time, calling
    done(name) after each that succeeds (and for a name no longer a Cassandra host of the
    inventory: nothing left to clean). The first failure stops here, the rest still owed.
    Returns the names cleaned."""
    cassandra = {h["name"] for h in hosts_with(context["hosts"], "cassandra")}
    cleaned = []
    for name in owed:
        if name not in cassandra:
            progress("%s: owed a cleanup but no longer a cassandra host; dropped" % name)
            done(name)
            continue
        progress("%s: finishing the nodetool cleanup an earlier scale-out left owed" % name)
        cassandra_cleanup(context, ssh, name, progress)
        done(name)
        cleaned.append(name)
    return cleaned
