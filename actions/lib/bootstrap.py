"""Bootstrap a host over SSH: Docker, TLS, rendered files, docker compose, health.

bootstrap_host(connection, rendered) takes one host rendered by lib.render.render_host() and
makes it run, in two parts. prepare_host() does everything that waits for no other host: Docker
Engine and the compose plugin present, data volumes mounted, registry login and image pulls, a
self-signed certificate on proxy hosts, every rendered file in place (only the changed ones
uploaded). start_host() brings the compose project up and waits until every health check
passes; dialog.deploy runs it only once the hosts this one needs are running (lib.stages). A
re-run on an unchanged host uploads nothing, starts nothing and reports "changed": False.

SSH round trips (the action runner may be far from the hosts, so they are batched): one command
checks or installs Docker; the volume and registry steps (lib.hosts.volumes, lib.hosts.registry);
one command creates the TLS pair on proxy hosts and the parent directories and reads the mode
and sha256 of every target file; SFTP uploads the changed files, if any; one command runs
compose (config -q, ps, up -d when needed) and then the health probe, which retries on the host
until every check passes.

Secrets: file contents go only over SFTP and are never printed, returned or put in an error;
error details that come from the host are scrubbed of every secret file's values first. The
admin password of create_admin() travels on stdin only.

Everything runs as root: directly when the SSH user is root, else through `sudo -n` (a sudo that
asks for a password fails at once instead of hanging). A non-root user's uploads are staged in
a private directory under /tmp and moved into place by root in one extra command.
"""

import hashlib
import io
import posixpath
import random
import re
import secrets
import shlex
import time

import fabric
import paramiko

from lib import health
from lib.hosts import docker_install, registry, volumes
from lib.hosts import gateways
from lib.errors import InputError, ProviderError, ResourceFailed

TLS_DIR = "/etc/dialog/tls"
TLS_CERT = "cert.pem"           # PEM certificate, mode 0644
TLS_KEY = "key.pem"             # PEM private key (RSA 2048, unencrypted), mode 0600
PROXY_ROLES = ("proxy",)
APPLIED_DIR = "/var/lib/dialog"  # <project>.applied: digest of the files compose last ran with
DOCKER_TIMEOUT = 1800.0         # apt-get may wait for cloud-init's own apt run to finish
SCRIPT_TIMEOUT = 120.0
UP_TIMEOUT = 900                # image pulls
COMPOSE_TIMEOUT = 120 + 60 + UP_TIMEOUT + 30
KEEPALIVE = 15
# connect(): TCP, banner and auth each get its timeout, after up to one timeout of retried
# handshakes that sshd dropped (HandshakeDropped).
LOGIN_BOUND = 4 * 30.0
HANDSHAKE_PAUSE_MAX = 4.0
LOGIN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")

_NOOP = lambda message: None  # noqa: E731


# ----------------------------------------------------------------------------- connections

class HandshakeDropped(ProviderError):
    """sshd closed or reset the connection before its banner: what OpenSSH does to new
    unauthenticated connections beyond MaxStartups (10:30:100 by default, sshd_config(5)), as
    when every host of a deploy logs in through the same proxy at once. Worth another try."""


class JumpUnreachable(ProviderError):
    """The jump proxy itself could not be logged in to (lib.operations.session then tries
    the next proxy)."""


def _dropped(exc):
    if isinstance(exc, (EOFError, ConnectionResetError)):
        return True
    # "Invalid packet blinding": paramiko read a packet length that does not decrypt, the
    # connection's stream is corrupt; a new connection is the cure, as for a dropped banner.
    return isinstance(exc, paramiko.SSHException) and (
        "protocol banner" in str(exc) or "Invalid packet blinding" in str(exc))


def connect(address, user="root", key_file=None, private_key_text=None, port=22, timeout=30.0,
            known_hosts=None, jump=None, host_keys=None, name=None, sleep=time.sleep,
            clock=time.monotonic):
    """_connect_once(), tried again with a growing, jittered pause while sshd drops the
    handshake (HandshakeDropped), for up to `timeout` seconds; then the last error."""
    started = clock()
    attempt = 0
    while True:
        try:
            return _connect_once(address, user, key_file, private_key_text, port, timeout,
                                 known_hosts, jump, host_keys, name)
        except HandshakeDropped:
            attempt += 1
            pause = min(HANDSHAKE_PAUSE_MAX, 0.25 * 2 ** attempt) * random.uniform(0.5, 1.0)
            if clock() - started + pause >= timeout:
                raise
            sleep(pause)


def _connect_once(address, user="root", key_file=None, private_key_text=None, port=22,
                  timeout=30.0, known_hosts=None, jump=None, host_keys=None, name=None):
    """An open fabric Connection to address:port as `user`.

    With key_file or private_key_text (an unencrypted ed25519, ECDSA or RSA key), only that key
    is offered: no SSH agent, no ~/.ssh keys. With neither, the agent and ~/.ssh keys are
    tried. ~/.ssh/config is not read (a runner's personal settings must not change where the
    pack connects).

    jump: {"name", "address", "user", "port"} of a jump host (the deployment's proxy). The
    runner then logs in to the jump host first (same key) and reaches address:port over a
    direct-tcpip channel of that connection, as `ssh -J` does; one connection to a jump host
    is shared by the sessions of a process (lib.hosts.gateways).

    Host keys: without `known_hosts`, a host key is accepted on first sight (kept in memory for
    this connection only, never written anywhere). The hosts are created by the pack moments
    before it connects and generate their host keys on first boot; no provider offers a
    trusted way to learn them in advance (console output is delayed, provider-specific and
    absent for static hosts), and refusing unknown keys would make bootstrap impossible. The
    risk accepted is an impostor on the network path during the first connection; the user
    still authenticates with its key and no password is ever sent. Pass a known_hosts file to
    pin keys instead: unknown or changed keys are then refused. Keys are never printed. A jump
    host's key is treated the same way, and a host behind it is checked under the address the
    jump opens the channel to (its private address).

    host_keys (lib.hosts.host_keys.HostKeyPins, the deployment's pins): the key is checked
    against the one pinned for `name` (the host's inventory name; the jump host's "name"),
    recorded on first contact; a changed key raises HostKeyRefused at once (never retried).

    ProviderError when the host (or the jump host) cannot be reached or refuses the key;
    InputError when private_key_text is not a private key (its text is not repeated)."""
    connect_kwargs = {"banner_timeout": timeout, "auth_timeout": timeout}
    if private_key_text:
        connect_kwargs["pkey"] = _load_key(private_key_text)
    if key_file:
        connect_kwargs["key_filename"] = key_file
    keyed = bool(private_key_text or key_file)
    connect_kwargs["look_for_keys"] = not keyed
    connect_kwargs["allow_agent"] = not keyed
    where = "%s@%s:%s" % (user, address, port)
    jumped = None
    if jump:
        key = (jump["address"], int(jump.get("port") or 22), jump.get("user") or user, key_file,
               private_key_text, known_hosts, host_keys)
        via = "the proxy %s (%s@%s)" % (jump.get("name") or jump["address"], key[2], key[0])
        try:
            gateway = gateways.acquire(key, lambda: connect(
                key[0], key[2], key_file, private_key_text, key[1], timeout, known_hosts,
                host_keys=host_keys, name=jump.get("name")))
        except ProviderError as exc:
            raise JumpUnreachable("%s: cannot reach it through %s: %s" % (where, via, exc)) \
                from None
        try:
            connect_kwargs["sock"] = gateways.open_channel(gateway, address, port, timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            gateways.release(key, gateway)
            raise ProviderError("%s: %s cannot open a connection to it: %s"
                                % (where, via, _reason(exc))) from None
        jumped = (key, gateway)
        where += " through %s" % via
    config = fabric.Config(ssh_config=paramiko.SSHConfig(), lazy=True)
    connection = gateways.JumpedConnection(address, user=user, port=int(port), config=config,
                                           connect_timeout=timeout,
                                           connect_kwargs=connect_kwargs)
    if jumped:
        connection.attach_jump(*jumped)
    if known_hosts:
        connection.client.load_host_keys(known_hosts)
        connection.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    elif host_keys is not None:
        connection.client.set_missing_host_key_policy(
            host_keys.policy(name or address, address, int(port)))
    else:
        connection.client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        connection.open()
    except paramiko.AuthenticationException:
        connection.close()
        raise ProviderError("%s: SSH authentication failed (the key was refused)" % where) \
            from None
    except paramiko.BadHostKeyException:
        connection.close()
        raise ProviderError("%s: the host key differs from the known one" % where) from None
    except (paramiko.SSHException, OSError, EOFError) as exc:
        connection.close()
        error = HandshakeDropped if _dropped(exc) else ProviderError
        raise error("%s: cannot connect: %s" % (where, _reason(exc))) from None
    except BaseException:
        connection.close()
        raise
    connection.transport.set_keepalive(KEEPALIVE)
    return connection


def _load_key(text):
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError, TypeError):
            continue
    raise InputError("private_key_text", "not an unencrypted ed25519, ECDSA or RSA private key "
                     "(the value is not shown)")


def _reason(exc):
    if isinstance(exc, TimeoutError) or exc.__class__.__name__ == "timeout":
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return str(exc) or exc.__class__.__name__


def wait_for_ssh(address, user="root", key_file=None, private_key_text=None, port=22,
                 timeout=300.0, interval=2.0, name=None, known_hosts=None, jump=None,
                 host_keys=None):
    """Connect and run `true` until it works; return the seconds waited.

    Every failure (refused, unreachable, key not yet installed by cloud-init) is retried every
    `interval` seconds; after `timeout` seconds, ResourceFailed naming the host and the last
    error. With `jump` (see connect()), each attempt retries both hops: the proxy may still be
    booting too. A bad private_key_text fails at once (InputError)."""
    started = time.monotonic()
    deadline = started + timeout
    label = "%s (%s)" % (name, address) if name else address
    last = "no attempt made"
    while True:
        attempt = max(0.5, min(10.0, deadline - time.monotonic()))
        connection = None
        try:
            connection = connect(address, user, key_file, private_key_text, port, attempt,
                                 known_hosts, jump, host_keys, name)
            status, _, _ = health.remote(connection, "true", timeout=attempt)
            if status == 0:
                return round(time.monotonic() - started, 3)
            last = "`true` exited with status %s" % status
        except ProviderError as exc:
            last = str(exc)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            last = _reason(exc)
        finally:
            if connection is not None:
                connection.close()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ResourceFailed("%s: SSH not ready after %gs: %s" % (label, timeout, last))
        time.sleep(min(interval, remaining))


# ----------------------------------------------------------------------------- host scripts

# Docker Engine and the compose plugin: lib/hosts/scripts/install_docker.sh, from the profile's
# docker_apt_repository (rendered["docker_apt_repository"]); this is the default repository's.
DOCKER_BODY = docker_install.docker_body()

# A self-signed certificate for the proxy, created once. Prints "@tls present|created".
TLS_BODY = r"""
d=%(dir)s
if [ -s "$d/%(cert)s" ] && [ -s "$d/%(key)s" ]; then echo "@tls present"; exit 0; fi
command -v openssl >/dev/null 2>&1 || { echo "openssl is missing" >&2; exit 1; }
mkdir -p -m 0755 "$d"
umask 077
name=$(hostname)
openssl req -x509 -newkey rsa:2048 -sha256 -nodes -days 3650 -subj "/CN=$name" \
  -addext "subjectAltName=DNS:$name" -keyout "$d/%(key)s.new" -out "$d/%(cert)s.new" \
  >"$d/.openssl.log" 2>&1 || { tail -n 3 "$d/.openssl.log" >&2; rm -f "$d/.openssl.log"; exit 1; }
rm -f "$d/.openssl.log"
chmod 0600 "$d/%(key)s.new"
chmod 0644 "$d/%(cert)s.new"
mv -f "$d/%(key)s.new" "$d/%(key)s"
mv -f "$d/%(cert)s.new" "$d/%(cert)s"
echo "@tls created"
"""

# The parent directories, then "@file MODE SHA256 PATH" for every target path that exists.
FILES_BODY = r"""
mkdir -p -- %(dirs)s
for p in %(paths)s; do
  if [ -f "$p" ]; then
    printf '@file %%s %%s %%s\n' "$(stat -c %%a -- "$p")" "$(sha256sum <"$p" | cut -c1-64)" "$p"
  fi
done
"""


def _fragment(step, body):
    """A body run under `set -e` in a subshell; on failure "@fail STEP" and the script stops.
    stdin is /dev/null: the script itself arrives on the shell's stdin."""
    return "(\nset -e\n%s\n) </dev/null\nrc=$?\nif [ $rc -ne 0 ]; then echo '@fail %s'; " \
           "exit $rc; fi\n" % (body.strip("\n"), step)


def _tls_fragment(path_dir):
    return _fragment("tls", TLS_BODY % {"dir": shlex.quote(path_dir), "cert": TLS_CERT,
                                        "key": TLS_KEY})


def _files_fragment(paths):
    if not paths:
        return ""
    dirs = sorted({posixpath.dirname(path) for path in paths})
    return _fragment("upload", FILES_BODY % {"dirs": " ".join(shlex.quote(d) for d in dirs),
                                             "paths": " ".join(shlex.quote(p) for p in paths)})


def _run_script(connection, label, script, timeout, step, redact=None):
    """Run a shell script (sent on stdin) as root; return its "@key value" lines as a list of
    (key, value). ResourceFailed naming the failed step and the last error line."""
    command = health.sudo_prefix(connection) + "sh -s"
    try:
        status, out, err = health.remote(connection, command, script, timeout)
    except health.RemoteTimeout as exc:
        raise ResourceFailed("%s: %s: %s" % (label, step, exc)) from None
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise ProviderError("%s: %s: SSH connection lost: %s" % (label, step, _reason(exc))) \
            from None
    marks = []
    for line in out.splitlines():
        if line.startswith("@"):
            key, _, value = line[1:].partition(" ")
            marks.append((key, value))
    if status != 0:
        failed = [value for key, value in marks if key == "fail"]
        detail = _tail(err, redact) or "exit status %s" % status
        if status == 1 and "sudo" in err and health.sudo_prefix(connection):
            detail += " (the SSH user needs passwordless sudo)"
        raise ResourceFailed("%s: %s failed: %s" % (label, failed[0] if failed else step, detail))
    return marks


def _tail(text, redact=None, lines=2):
    kept = [line.strip() for line in (text or "").splitlines() if line.strip()][-lines:]
    joined = " / ".join(kept)[:400]
    return redact(joined) if redact else joined


def _mark(marks, key):
    values = [value for name, value in marks if name == key]
    return values[-1] if values else None


def ensure_docker(connection, repository=None):
    """Install Docker Engine and the compose plugin unless `docker compose version` works
    (Debian/Ubuntu, Docker's apt repository); "present" or "installed". One SSH command."""
    marks = _run_script(connection, connection.host, _fragment(
        "docker", docker_install.docker_body(repository)),
                        DOCKER_TIMEOUT, "docker")
    return _mark(marks, "docker")


def ensure_tls(connection, path_dir=TLS_DIR):
    """Create a self-signed certificate (path_dir/cert.pem, key.pem 0600) unless both exist;
    "present" or "created". One SSH command. Only for proxy hosts: the caller decides."""
    marks = _run_script(connection, connection.host, _tls_fragment(path_dir), SCRIPT_TIMEOUT,
                        "tls")
    return _mark(marks, "tls")


# ----------------------------------------------------------------------------- files

def _checked_files(files):
    checked = []
    seen = set()
    for item in files or []:
        path = item.get("path") or ""
        if not path.startswith("/") or posixpath.normpath(path) != path or "\n" in path \
                or path in seen or path == "/":
            raise InputError("files", "%r is not a normalized absolute file path (or appears "
                             "twice)" % path)
        seen.add(path)
        content = item.get("content", "")
        data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        mode = int(item.get("mode", 0o600 if item.get("secret") else 0o644))
        checked.append({"path": path, "data": data, "mode": mode,
                        "secret": bool(item.get("secret")),
                        "sha256": hashlib.sha256(data).hexdigest()})
    return checked


def _remote_files(marks):
    """path -> (mode, sha256) from the "@file MODE SHA PATH" lines."""
    state = {}
    for key, value in marks:
        if key == "file":
            mode, sha, path = value.split(" ", 2)
            state[path] = (int(mode, 8), sha)
    return state


def _apply_uploads(connection, label, checked, remote_state):
    changed = [item for item in checked
               if remote_state.get(item["path"]) != (item["mode"], item["sha256"])]
    unchanged = [item["path"] for item in checked if item not in changed]
    if not changed:
        return [], unchanged
    current = None
    try:
        sftp = connection.sftp()
        if not health.sudo_prefix(connection):
            for item in changed:
                current = item["path"]
                _put_atomic(sftp, item)
        else:
            _put_staged(connection, sftp, label, changed)
    except (OSError, paramiko.SSHException, EOFError) as exc:
        raise ResourceFailed("%s: upload failed%s: %s" % (
            label, " (%s)" % current if current else "", _reason(exc))) from None
    return [item["path"] for item in changed], unchanged


def _put_atomic(sftp, item):
    """Write item to a new temporary name beside its path, mode set before any byte is
    written, then rename it over the path (atomic: readers see the old or the new file)."""
    directory, base = posixpath.split(item["path"])
    temp = "%s/.%s.dialog-%s" % (directory, base, secrets.token_hex(4))
    try:
        with sftp.open(temp, "wx") as handle:
            handle.chmod(item["mode"])
            handle.set_pipelined(True)
            handle.write(item["data"])
        sftp.posix_rename(temp, item["path"])
    except BaseException:
        try:
            sftp.remove(temp)
        except (OSError, paramiko.SSHException, EOFError):
            pass
        raise


def _put_staged(connection, sftp, label, changed):
    """Non-root user: upload into a private 0700 directory, then root copies each file beside
    its target (umask 077, so never readable by others), sets its mode and renames it."""
    stage = "/tmp/dialog-upload-%s" % secrets.token_hex(8)
    sftp.mkdir(stage, 0o700)
    lines = ["trap 'rm -rf %s' EXIT" % shlex.quote(stage), "umask 077"]
    for index, item in enumerate(changed):
        staged = "%s/%d" % (stage, index)
        with sftp.open(staged, "wx") as handle:
            handle.chmod(0o600)
            handle.set_pipelined(True)
            handle.write(item["data"])
        temp = "%s.dialog-%s" % (item["path"], secrets.token_hex(4))
        # One command a line: `set -e` ignores failures inside an && list.
        lines += ["cp -- %s %s" % (shlex.quote(staged), shlex.quote(temp)),
                  "chown root:root %s" % shlex.quote(temp),
                  "chmod %o %s" % (item["mode"], shlex.quote(temp)),
                  "mv -f -- %s %s" % (shlex.quote(temp), shlex.quote(item["path"]))]
    _run_script(connection, label, _fragment("upload", "\n".join(lines)), SCRIPT_TIMEOUT,
                "upload")


def upload_changed(connection, files):
    """Upload the files whose content or mode differs on the host; (uploaded, unchanged) paths.

    One SSH command creates the parent directories and reads every target's mode and sha256
    (missing files are simply different); SFTP then writes each changed file to a temporary
    name with its mode already set and renames it into place. Contents are never printed."""
    checked = _checked_files(files)
    label = connection.host
    marks = _run_script(connection, label, _files_fragment([i["path"] for i in checked]),
                        SCRIPT_TIMEOUT, "upload")
    return _apply_uploads(connection, label, checked, _remote_files(marks))


# ----------------------------------------------------------------------------- compose

# Runs on the host ahead of the health probe (lib.health.PROBE_SOURCE provides run(),
# compose_argv() and last_line()). `up -d --remove-orphans` runs when a file other than a
# reloadable one changed, when a service is not running, or when the files differ from those
# the last successful `up` ran with (a run that crashed between upload and up is finished by the
# next one). A service whose only changed files are reloadable ones (nginx.conf: rendered
# "reload") is told to reload them (`exec -T SERVICE` its test, then its reload command): nginx
# keeps serving, no container is recreated. The marker keeps both digests, one a line.
# mode "plan" only says what "apply" would do: whether running services would be restarted.
COMPOSE_PRELUDE = r"""
def compose_rows(text):
    text = text.strip()
    if text.startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]


def compose_failed(step, status, out, err):
    if status is None:
        return {"error": step, "detail": err}
    return {"error": step, "detail": last_line(err) or last_line(out) or "exit %d" % status}


def read_applied(marker):
    try:
        with open(marker) as handle:
            lines = handle.read().split()
    except OSError:
        lines = []
    return (lines + ["", ""])[:2]


def compose_plan(request):
    compose = request["compose"]
    base = compose_argv(request)
    # config -q and ps only read: run them side by side.
    answers = {}
    reader = threading.Thread(target=lambda: answers.update(
        ps=run(base + ["ps", "--format", "json"], 60)))
    reader.daemon = True
    reader.start()
    status, out, err = run(base + ["config", "-q"], 120)
    reader.join()
    if status != 0:
        return compose_failed("compose config", status, out, err)
    status, out, err = answers["ps"]
    if status != 0:
        return compose_failed("compose ps", status, out, err)
    try:
        rows = compose_rows(out)
    except ValueError:
        return {"error": "compose ps", "detail": "unreadable `ps --format json` output"}
    running = sorted(set(row.get("Service") for row in rows
                         if str(row.get("State", "")).lower() == "running"))
    missing = [name for name in compose["services"] if name not in running]
    applied, applied_reload = read_applied(compose["marker"])
    restart = bool(missing) or compose["changed"] or applied != compose["digest"]
    stale = compose["reload_changed"] or applied_reload != compose.get("reload_digest", "")
    # A service not running starts with the new files: nothing to reload.
    reload = sorted(s for s in compose.get("reload") or {} if s in running) if stale else []
    return {"running": running, "missing": missing, "restart": restart, "reload": reload,
            "takes_down": restart and bool(running)}


def reload_service(base, service, commands):
    status, out, err = run(base + ["exec", "-T", service] + commands["test"], 60)
    if status != 0:
        return compose_failed("%s config test" % service, status, out, err)
    for attempt in range(5):
        # Right after `up` a recreated service may not have written its pid file yet.
        status, out, err = run(base + ["exec", "-T", service] + commands["reload"], 60)
        if status == 0:
            return None
        time.sleep(1.0)
    return compose_failed("%s reload" % service, status, out, err)


def before(request):
    compose = request["compose"]
    plan = compose_plan(request)
    if plan.get("error") or compose.get("mode") == "plan":
        return plan
    running = plan["running"]
    if not plan["restart"] and not plan["reload"]:
        return {"status": "unchanged", "running": running}
    base = compose_argv(request)
    if plan["restart"]:
        status, out, err = run(base + ["up", "-d", "--remove-orphans"], compose["up_timeout"])
        if status != 0:
            return compose_failed("compose up", status, out, err)
    for service in plan["reload"]:
        failed = reload_service(base, service, compose["reload"][service])
        if failed:
            return failed
    marker = compose["marker"]
    try:
        os.makedirs(os.path.dirname(marker), exist_ok=True)
        with open(marker + ".new", "w") as handle:
            handle.write(compose["digest"] + "\n" + compose.get("reload_digest", "") + "\n")
        os.replace(marker + ".new", marker)
    except OSError:
        pass  # the next run then runs `up` once more, which changes nothing
    status = ("updated" if running else "started") if plan["restart"] else "reloaded"
    return {"status": status, "running": running, "missing": plan["missing"],
            "reloaded": plan["reload"]}
"""


def _digest_of(items):
    return hashlib.sha256("".join(
        "%s %o %s\n" % (item["path"], item["mode"], item["sha256"])
        for item in sorted(items, key=lambda i: i["path"])).encode()).hexdigest()


def _compose_request(rendered, checked, changed, mode="apply"):
    """`changed`: the uploaded paths (or a bool: something changed)."""
    reload = rendered.get("reload") or {}
    reloadable = {path for entry in reload.values() for path in entry["paths"]}
    changed_paths = set(changed) if isinstance(changed, (list, tuple, set)) else set()
    marker = posixpath.join(APPLIED_DIR, "%s.applied" % re.sub(r"[^A-Za-z0-9_.-]", "_",
                                                               rendered["project"]))
    return {"services": list(rendered.get("services") or []),
            "changed": bool(changed_paths - reloadable) or changed is True,
            "reload_changed": bool(changed_paths & reloadable),
            "digest": _digest_of(i for i in checked if i["path"] not in reloadable),
            "reload_digest": _digest_of(i for i in checked if i["path"] in reloadable)
            if reloadable else "",
            "reload": {s: {"test": e["test"], "reload": e["reload"]} for s, e in reload.items()},
            "marker": marker, "up_timeout": UP_TIMEOUT, "mode": mode}


def _compose_outcome(label, outcome, redact):
    if outcome.get("error"):
        raise ResourceFailed("%s: %s failed: %s" % (label, outcome["error"],
                                                    redact(outcome.get("detail") or "")))
    return outcome["status"]


def compose_up(connection, rendered, changed):
    """`docker compose -p P -f F config -q`, then `up -d --remove-orphans` when `changed`, when
    a service is not running (`ps --format json`) or when the last up ran with other files;
    "started" (nothing was running), "updated", "reloaded" (only reloadable files changed:
    see COMPOSE_PRELUDE) or "unchanged". One SSH command."""
    checked = _checked_files(rendered.get("files"))
    request = health.probe_request(rendered)
    request["checks"] = None
    request["compose"] = _compose_request(rendered, checked, changed)
    result = health.run_probe(connection, rendered, request, COMPOSE_PRELUDE,
                              timeout=COMPOSE_TIMEOUT, step="compose")
    return _compose_outcome(health.host_label(rendered), result["before"],
                            health.redactor(rendered.get("files")))


def restart_plan(connection, rendered, prepared):
    """What start_host would do to a prepared host, doing nothing: {"running", "missing",
    "restart" (compose up would run), "reload" (services told to reload), "takes_down"
    (running services would be recreated: the host restarts, in a rolling group one at a
    time)}. A host where Docker was just installed runs nothing: no SSH command then."""
    if prepared.get("docker") == "installed":
        return {"running": [], "missing": list(rendered.get("services") or []),
                "restart": True, "reload": [], "takes_down": False}
    checked = _checked_files(rendered.get("files"))
    request = health.probe_request(rendered)
    request["checks"] = None
    request["compose"] = _compose_request(rendered, checked, prepared["uploaded"], "plan")
    result = health.run_probe(connection, rendered, request, COMPOSE_PRELUDE,
                              timeout=COMPOSE_TIMEOUT, step="compose plan")
    before = result["before"]
    _compose_outcome(health.host_label(rendered), dict(before, status=None),
                     health.redactor(rendered.get("files")))
    return before


# ----------------------------------------------------------------------------- a whole host

def is_proxy(rendered):
    """True for hosts that terminate TLS: rendered["tls"] when given, else a proxy role."""
    if "tls" in rendered:
        return bool(rendered["tls"])
    return any(role in PROXY_ROLES for role in health.host_roles(rendered))


def prepare_host(connection, rendered, credentials=None, progress=None):
    """Everything a host needs before its services start, none of it waiting for another
    host: Docker present (installed if missing), data volumes formatted once and mounted
    (lib.hosts.volumes), the registry login and the image pulls (lib.hosts.registry), the
    self-signed TLS pair on proxy hosts, the changed files uploaded.

    Returns what start_host() takes: {"host", "docker", "volumes", "registry", "images",
    "tls" (proxy hosts), "uploaded", "unchanged"}. `credentials`: the registry's, or None.
    Failures raise ResourceFailed (ProviderError when SSH itself fails) naming host, roles and
    step; no message contains a secret."""
    say = progress or _NOOP
    host = rendered["host"]
    label = health.host_label(rendered)
    checked = _checked_files(rendered.get("files"))
    redact = health.redactor(rendered.get("files"))

    docker_body = docker_install.docker_body(rendered.get("docker_apt_repository"))
    marks = _run_script(connection, label, _fragment("docker", docker_body), DOCKER_TIMEOUT,
                        "docker", redact)
    docker = _mark(marks, "docker")
    say("%s: docker %s" % (host, docker))
    mounted = volumes.ensure_volumes(connection, rendered, progress)
    login = registry.ensure_login(connection, rendered, credentials, progress)
    images = registry.pull_images(connection, rendered, progress)

    tls = is_proxy(rendered)
    script = _tls_fragment(TLS_DIR) if tls else ""
    script += _files_fragment([item["path"] for item in checked])
    marks = _run_script(connection, label, script, SCRIPT_TIMEOUT, "upload", redact) \
        if script else []
    tls_state = _mark(marks, "tls") if tls else None
    if tls:
        say("%s: TLS certificate %s" % (host, tls_state))
    uploaded, unchanged = _apply_uploads(connection, label, checked, _remote_files(marks))
    if uploaded:
        say("%s: uploaded %d file%s" % (host, len(uploaded), "" if len(uploaded) == 1 else "s"))
        # Which ones (paths only, never contents): what an operator asks first of a re-run
        # that changed a host.
        say("%s: changed %s" % (host, ", ".join(sorted(uploaded))))
    else:
        say("%s: %d files unchanged" % (host, len(unchanged)))
    prepared = {"host": host, "docker": docker, "volumes": mounted, "registry": login,
                "images": images, "uploaded": uploaded, "unchanged": unchanged}
    if tls:
        prepared["tls"] = tls_state
    return prepared


def _prepare_changed(prepared):
    return bool(prepared["uploaded"]) or prepared["docker"] == "installed" \
        or prepared.get("tls") == "created" or bool(prepared["images"].get("pulled")) \
        or any(v.get("formatted") or v.get("mounted") for v in prepared["volumes"])


def start_host(connection, rendered, prepared, progress=None, health_timeout=300,
               health_interval=health.DEFAULT_INTERVAL):
    """Start a prepared host (prepare_host's result) and wait until every check passes:
    compose up when a file changed, a service is not running or the last up ran with other
    files; then the checks, retried on the host for up to health_timeout seconds. One SSH
    command. Returns `prepared` with "compose", "checks" and "changed" added."""
    say = progress or _NOOP
    host = rendered["host"]
    label = health.host_label(rendered)
    checked = _checked_files(rendered.get("files"))
    request = health.probe_request(rendered, health_timeout, health_interval)
    request["compose"] = _compose_request(rendered, checked, prepared["uploaded"])
    result = health.run_probe(connection, rendered, request, COMPOSE_PRELUDE,
                              timeout=COMPOSE_TIMEOUT + health_timeout, step="compose")
    compose = _compose_outcome(label, result["before"], health.redactor(rendered.get("files")))
    say("%s: compose %s (%d services)" % (host, compose, len(rendered.get("services") or [])))
    results = health.scrub_results(rendered, result["health"]["results"])
    checks = health.raise_for_failures(rendered, results, health_timeout)
    say("%s: healthy (%d checks)" % (host, len(checks)))
    outcome = dict(prepared, compose=compose, checks=checks)
    outcome["changed"] = compose != "unchanged" or _prepare_changed(prepared)
    return outcome


def bootstrap_host(connection, rendered, progress=None, health_timeout=300,
                   health_interval=health.DEFAULT_INTERVAL, credentials=None):
    """prepare_host, then start_host at once (no other host to wait for); start_host's
    result. A re-run on an unchanged host uploads nothing, starts nothing and reports
    "changed": False."""
    prepared = prepare_host(connection, rendered, credentials, progress)
    return start_host(connection, rendered, prepared, progress, health_timeout,
                      health_interval)


def prepare_bound(ssh_wait):
    """Seconds prepare_host may take at most on a host still booting: SSH readiness and a
    login, then each of its remote steps at its own timeout: Docker, the data volume (a host
    has one: its device's wait and the format), the registry login, the pulls, TLS and the
    uploads' two commands."""
    return ssh_wait + LOGIN_BOUND + DOCKER_TIMEOUT + volumes.bound(1) \
        + registry.LOGIN_TIMEOUT + registry.PULL_TIMEOUT + 3 * SCRIPT_TIMEOUT


def start_bound(health_timeout):
    """Seconds start_host may take at most: a login, compose (config, ps, up), the checks."""
    return LOGIN_BOUND + COMPOSE_TIMEOUT + health_timeout + health.SSH_MARGIN


# ----------------------------------------------------------------------------- first admin

def create_admin(connection, rendered_dialog_server, login, password,
                 service="dialog-server"):
    """Create the first Dialog user and grant it admin rights; idempotent.

    Runs `/opt/docker/bin/cli create-user --login LOGIN` and then `admin-grant --login LOGIN`
    with `docker compose exec -T` in the dialog-server service, in one SSH command. A user that
    "already exists" counts as created. The password never appears in a command line (where
    `ps` would show it to every user of the host) nor in an environment: it is written on the
    SSH command's stdin, which `exec -T` hands to create-user's stdin, and any error text is
    scrubbed of it. Returns {"host", "login", "created" (False when it existed), "admin"}."""
    rendered = rendered_dialog_server
    label = health.host_label(rendered)
    if not isinstance(login, str) or not LOGIN_RE.match(login):
        raise InputError("login", "must be 1-64 letters, digits, '.', '_', '@' or '-'")
    if not isinstance(password, str) or not password or "\n" in password or "\0" in password:
        raise InputError("password", "must be a non-empty single line (the value is not shown)")
    cli = "docker compose -p %s -f %s exec -T %s /opt/docker/bin/cli" % (
        shlex.quote(rendered["project"]), shlex.quote(rendered["compose_file"]),
        shlex.quote(service))
    quoted = shlex.quote(login)
    script = "\n".join([
        "out=$(%s create-user --login %s 2>&1); rc=$?" % (cli, quoted),
        "if [ $rc -eq 0 ]; then echo '@user created'",
        "elif printf '%s' \"$out\" | grep -qi 'already exists'; then echo '@user exists'",
        "else printf '%s\\n' \"$out\" | tail -n 2 >&2; echo '@fail create-user'; exit 1; fi",
        "out=$(%s admin-grant --login %s 2>&1 </dev/null); rc=$?" % (cli, quoted),
        "if [ $rc -ne 0 ]; then printf '%s\\n' \"$out\" | tail -n 2 >&2;"
        " echo '@fail admin-grant'; exit 1; fi",
        "echo '@admin granted'",
    ])

    scrub = health.redactor(rendered.get("files"))

    def redact(text):
        return scrub(text.replace(password, "***"))

    command = health.sudo_prefix(connection) + "sh -c " + shlex.quote(script)
    try:
        status, out, err = health.remote(connection, command, password + "\n", SCRIPT_TIMEOUT)
    except health.RemoteTimeout as exc:
        raise ResourceFailed("%s: create admin: %s" % (label, exc)) from None
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise ProviderError("%s: create admin: SSH connection lost: %s" % (label, _reason(exc))) \
            from None
    marks = [line[1:].partition(" ")[::2] for line in out.splitlines() if line.startswith("@")]
    if status != 0:
        failed = [value for key, value in marks if key == "fail"]
        raise ResourceFailed("%s: %s for %s failed: %s" % (
            label, failed[0] if failed else "create admin", login,
            _tail(err, redact) or "exit status %s" % status))
    return {"host": rendered["host"], "login": login,
            "created": _mark(marks, "user") == "created", "admin": True}
