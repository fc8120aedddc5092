"""Postgres failover: promote the standby (dialog.postgres_promote), then point every PgBouncer
and every dialog server at the new primary (dialog.postgres_repoint).

The deployment record's postgres_primary says which host is primary (lib.deployment_record);
promote() sets it only once the standby has left recovery. Which host renders as primary, the
replication slots and synchronous replication are the rendered server.sh's business
(templates/postgres-server.sh.j2); on the host, hosts/scripts/postgres_ha.sh reads a server's
state and promotes it, inside its postgres service. Nothing here prints a password: the
scripts print key=value lines of states and LSNs only.
"""

import hashlib
import json
import os
import shlex
import time

from lib import bootstrap, health, operations
from lib.deployment_record import postgres_primary
from lib.errors import DialogError, InputError, ResourceFailed
from lib.render import PGBOUNCER_ENV, PG_HBA, PG_SERVER, SERVER_CONF, render_host
from lib.stages import hosts_with

HA_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "hosts", "scripts", "postgres_ha.sh")
# A dead or fenced host must not hold the failover up for bootstrap.connect's 30 s default.
REACH_TIMEOUT = 8.0
PROMOTE_TIMEOUT = 150.0
# docker compose up of the primary's postgres and pgbouncer: a fast shutdown and a start.
PRIMARY_RECREATE_TIMEOUT = 180.0
# The files of a Postgres host that name the primary: PgBouncer's target, and server.sh (a
# restart of its postgres service must follow the new primary, never start a former one).
REPOINTED = (PGBOUNCER_ENV[0], PG_SERVER[0], PG_HBA[0])
# Instance states (EC2 InstanceState, DigitalOcean droplet status) in which a host runs
# nothing: dialog.fence's outcome. Such a host is not tried over SSH (a login to it only waits
# out REACH_TIMEOUT while the writes are down). Not "stopping"/"shutting-down": it may still
# accept writes until the state is final (dialog.fence waits for "stopped").
NOT_RUNNING = ("stopped", "terminated", "off", "archive")


def _not_running(host):
    """The provider's word that `host` runs nothing (its inventory state), else None."""
    state = host.get("state")
    return "%s at the provider" % state if state in NOT_RUNNING else None


def _noop(_message):
    return None


def _last_line(text):
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def _compose(rendered, connection, args):
    return health.sudo_prefix(connection) + "docker compose -p %s -f %s %s" % (
        shlex.quote(rendered["project"]), shlex.quote(rendered["compose_file"]),
        " ".join(shlex.quote(a) for a in args))


def parse_lines(text):
    """{key: value} of a script's key=value lines."""
    return dict(line.split("=", 1) for line in (text or "").splitlines() if "=" in line)


def run_ha(connection, rendered, command, timeout=60.0):
    """postgres_ha.sh COMMAND inside the host's postgres service: {key: value}."""
    with open(HA_SCRIPT, encoding="utf-8") as handle:
        script = handle.read()
    status, out, err = health.remote(
        connection, _compose(rendered, connection, ["exec", "-T", "postgres", "bash", "-s", "--",
                                                    command]), script, timeout)
    values = parse_lines(out)
    if status != 0:
        detail = values.get("error") or _last_line(err) or "exit status %s" % status
        raise ResourceFailed("%s (postgres): %s failed: %s" % (rendered["host"], command, detail),
                             details={"host": rendered["host"]})
    return values


def running_services(connection, rendered):
    """The compose services running on the host; None when docker compose cannot say (then
    nothing may be assumed stopped)."""
    status, out, _ = health.remote(connection, _compose(
        rendered, connection, ["ps", "--format", "json"]), timeout=30.0)
    if status != 0:
        return None
    try:
        text = out.strip()
        # A JSON array (compose before 2.21) or one object a line (since).
        rows = json.loads(text) if text.startswith("[") else [
            json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]
    except ValueError:
        return None
    return {row.get("Service") for row in rows if row.get("State") == "running"}


def _pair(context):
    postgres = hosts_with(context["hosts"], "postgres")
    if len(postgres) < 2:
        raise InputError("deployment", "%s has %s Postgres host%s: there is no standby to fail "
                         "over to (the small-failover tier has a primary and a standby)"
                         % (context["deployment"], len(postgres) or "no",
                            "" if len(postgres) == 1 else "s"))
    return postgres


def _reachable_primary(context, ssh, old, name, progress):
    """None when the old primary cannot serve writes any more (SSH does not answer: stopped,
    fenced, dead; or its postgres service is not running), else the reason to refuse."""
    stopped = _not_running(old)
    if stopped:
        progress("%s (the recorded primary) is %s: fenced" % (old["name"], stopped))
        return None
    try:
        with operations.session(old, ssh, hosts=context["hosts"],
                                timeout=REACH_TIMEOUT) as connection:
            rendered = render_host(context, old["name"])
            running = running_services(connection, rendered)
            if running is not None and "postgres" not in running:
                progress("%s: reachable, its postgres service is stopped" % old["name"])
                return None
    except (DialogError, OSError, EOFError) as exc:
        progress("%s (the recorded primary) does not answer over SSH: %s"
                 % (old["name"], type(exc).__name__))
        return None
    return ("%s, the recorded primary, still answers over SSH and its postgres service runs "
            "(or docker compose could not say): "
            "promoting %s now would give two primaries. Fence it first (st2 run dialog.fence "
            "deployment=%s host=%s), or stop its postgres service"
            % (old["name"], name, context["deployment"], old["name"]))


def promote(context, ssh, name, record, set_primary, progress=_noop, clock=time.monotonic):
    """Promote the standby `name`: {primary, previous, lsn, seconds, received, message}.

    Refused before any change (InputError/DialogError, naming why) when `name` is not a
    Postgres host of the deployment, when the recorded primary still serves, or when `name`
    is not a standby that streamed from it. set_primary(name) records the new primary (the
    datastore), called only once the server is out of recovery. Running it again after a
    success answers with the same primary and changes nothing."""
    started = clock()
    postgres = _pair(context)
    by_name = {h["name"]: h for h in postgres}
    if name not in by_name:
        raise InputError("host", "%r is not a Postgres host of %s" % (name, context["deployment"]),
                         sorted(by_name))
    previous = postgres_primary(record, context["hosts"])
    host = by_name[name]
    rendered = render_host(context, name)
    if previous != name:
        refusal = _reachable_primary(context, ssh, by_name[previous], name, progress)
        if refusal:
            raise DialogError(refusal, details={"primary": previous, "host": name})
    with operations.session(host, ssh, hosts=context["hosts"]) as connection:
        state = run_ha(connection, rendered, "state")
        if state.get("in_recovery") == "true" and not state.get("received"):
            raise DialogError("%s is not a streaming standby: it never received WAL from a "
                              "primary (was it cloned?); nothing changed" % name,
                              details={"host": name})
        if state.get("in_recovery") != "true":
            progress("%s is already out of recovery (a primary)" % name)
            outcome = dict(state, promoted="already")
        else:
            progress("%s: standby received WAL up to %s (receiver %s); promoting"
                     % (name, state.get("received"), state.get("receiver") or "stopped"))
            outcome = run_ha(connection, rendered, "promote", PROMOTE_TIMEOUT)
        if outcome.get("in_recovery") != "false":
            raise ResourceFailed("%s is still in recovery after pg_promote; the record still "
                                 "names %s" % (name, previous), details={"host": name})
    if previous != name or record.get("postgres_primary") != name:
        set_primary(name)
    seconds = round(clock() - started, 2)
    message = ("%s is the Postgres primary (was %s), at LSN %s, in %.1fs; next: "
               "dialog.postgres_repoint" % (name, previous, outcome.get("lsn"), seconds)
               if outcome.get("promoted") == "now" or previous != name
               else "%s already is the Postgres primary; nothing changed" % name)
    progress(message)
    return {"primary": name, "previous": previous, "lsn": outcome.get("lsn"),
            "received": state.get("received"), "seconds": seconds, "message": message}


def _sha256(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _remote_digest(connection, path):
    status, out, _ = health.remote(connection, health.sudo_prefix(connection)
                                   + "sha256sum %s" % shlex.quote(path), timeout=30.0)
    return out.split()[0] if status == 0 and out.split() else None


def _repoint_postgres_host(context, host, ssh, progress, primary=False, health_timeout=300):
    rendered = render_host(context, host["name"])
    # The primary gets every file of its render, the deploy's own: whatever names the primary
    # (server.sh, init-replication.sh, pg_hba, PgBouncer's env, the compose labels) is then
    # what the next deploy finds. A standby only learns where the primary is.
    files = rendered["files"] if primary else [f for f in rendered["files"]
                                               if f["path"] in REPOINTED]
    with operations.session(host, ssh, hosts=context["hosts"],
                            timeout=REACH_TIMEOUT) as connection:
        uploaded, _ = bootstrap.upload_changed(connection, files)
        if primary and uploaded:
            # The promoted server now renders as the primary: its compose file (the postgres
            # service's config-hash label follows server.sh) and PgBouncer's env changed.
            # Recreated here, while writes are down anyway, a restart of a primary that is
            # already out of recovery; left to the deploy that rebuilds the standby, it would
            # restart the only primary in the middle of that deploy (a second write outage).
            status, _, err = health.remote(connection, _compose(
                rendered, connection, ["up", "-d", "--no-deps", "postgres", "pgbouncer"]),
                timeout=PRIMARY_RECREATE_TIMEOUT)
            if status != 0:
                raise ResourceFailed("%s: recreating postgres and pgbouncer failed: %s"
                                     % (host["name"], _last_line(err)))
            health.wait_healthy(connection, rendered, timeout=health_timeout)
            progress("%s: postgres restarted as the primary it is; pgbouncer points at it"
                     % host["name"])
        elif PGBOUNCER_ENV[0] in uploaded:
            # Only PgBouncer: its env file is read when the container is created. The compose
            # file on the host still carries the former label; the next deploy uploads it
            # (and restarts this standby's postgres to follow the new primary).
            status, _, err = health.remote(connection, _compose(
                rendered, connection, ["up", "-d", "--no-deps", "--force-recreate",
                                       "pgbouncer"]), timeout=120.0)
            if status != 0:
                raise ResourceFailed("%s: recreating pgbouncer failed: %s"
                                     % (host["name"], _last_line(err)))
            progress("%s: pgbouncer now points at the primary" % host["name"])
    return sorted(uploaded)


def repoint(context, ssh, progress=_noop, health_timeout=300, clock=time.monotonic):
    """Point every PgBouncer and every dialog server at the primary the context names
    (context["postgres_primary"], the record's): {primary, postgres: {host: [files]},
    dialog_servers: {host: "restarted" | "unchanged"}, skipped: {host: reason}, seconds}.

    Postgres hosts: only the files naming the primary are uploaded. On the primary, postgres
    and PgBouncer are recreated where their files changed (the promoted server restarts as
    the primary it already is, so the deploy that rebuilds the standby leaves it running),
    then its checks are waited for; on a standby only PgBouncer is recreated (seconds).
    Dialog servers whose server.conf changed are bootstrapped one at a time
    (lib.operations.bootstrap_one: upload, recreate, wait healthy), the others are left alone.
    A host that does not answer (the fenced former primary) is skipped and named: the deploy
    that rebuilds it renders the same files."""
    started = clock()
    postgres = _pair(context)
    name = postgres_primary({"postgres_primary": context.get("postgres_primary")},
                            context["hosts"])
    result = {"primary": name, "postgres": {}, "dialog_servers": {}, "skipped": {}}
    for host in postgres:
        stopped = _not_running(host) if host["name"] != name else None
        if stopped:
            result["skipped"][host["name"]] = stopped
            progress("%s: skipped (%s)" % (host["name"], stopped))
            continue
        try:
            result["postgres"][host["name"]] = _repoint_postgres_host(
                context, host, ssh, progress, primary=host["name"] == name,
                health_timeout=health_timeout)
        except (DialogError, OSError, EOFError) as exc:
            if host["name"] == name:
                raise
            result["skipped"][host["name"]] = str(exc) if isinstance(exc, DialogError) \
                else type(exc).__name__
            progress("%s: skipped (%s)" % (host["name"], result["skipped"][host["name"]]))
    for host in hosts_with(context["hosts"], "dialog-server"):
        conf = next(f for f in render_host(context, host["name"])["files"]
                    if f["path"] == SERVER_CONF[0])
        try:
            with operations.session(host, ssh, hosts=context["hosts"],
                                    timeout=REACH_TIMEOUT) as connection:
                same = _remote_digest(connection, SERVER_CONF[0]) == _sha256(conf["content"])
        except (DialogError, OSError, EOFError) as exc:
            result["skipped"][host["name"]] = type(exc).__name__
            progress("%s: skipped (%s)" % (host["name"], type(exc).__name__))
            continue
        if same:
            result["dialog_servers"][host["name"]] = "unchanged"
            continue
        progress("%s: server.conf names the new primary; restarting it (one at a time)"
                 % host["name"])
        operations.bootstrap_one(context, host["name"], ssh, health_timeout=health_timeout,
                                 progress=progress)
        result["dialog_servers"][host["name"]] = "restarted"
    result["seconds"] = round(clock() - started, 2)
    progress("repointed to %s in %.1fs" % (name, result["seconds"]))
    return result
