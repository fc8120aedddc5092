"""Health checks of a bootstrapped host, run ON the host over SSH.

The StackStorm action runner may not reach a host's private address, so every check runs on the
host itself: a small python3 probe (Debian and Ubuntu cloud images ship python3) is sent on the
stdin of one SSH command, runs all of the host's checks concurrently, retries the failing ones
until they pass or the deadline comes, and prints one JSON line. One SSH round trip checks a
host, however many checks it has and however long it waits. A probe against the host's own
private address still crosses its network stack (the service must listen on that address).

Check kinds (the records of render_host()["checks"]):

* ``http``: GET http://address:port/path; a 2xx or 3xx answer passes (redirects not followed);
* ``tcp``: a TCP connection is accepted;
* ``stun``: an RFC 5389 Binding Request over UDP gets a Binding Success Response;
* ``exec``: ``docker compose -p P -f F exec -T SERVICE COMMAND...`` exits 0;
* ``cassandra``: ``nodetool status`` (through exec) lists the check's address as UN.

Results: ``[{"name", "role", "ok", "detail"}]``; details are short (an HTTP status, "connection
refused", the last line a command printed) and never a file's content.

remote() is the SSH primitive the pack's bootstrap shares: one exec channel on a fabric
Connection's transport, stdin sent and closed, stdout and stderr read to the end.
"""

import json
import socket
import time

import paramiko

from lib.errors import ProviderError, ResourceFailed

KINDS = ("http", "tcp", "stun", "exec", "cassandra")
RESULT_MARK = "@@dialog-result "
DEFAULT_INTERVAL = 2.0
# Seconds the SSH command may run beyond the probe's own deadline before the runner gives up.
SSH_MARGIN = 60.0

# The probe, sent to `python3 -` on the host. Python 3.5+ (Debian 9 and later, every Ubuntu
# LTS still supported), standard library only. REQUEST is appended as a JSON literal; a caller
# may define before(request) (bootstrap's compose step) in source placed ahead of main().
PROBE_SOURCE = r'''
import http.client
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time

STUN_MAGIC = 0x2112A442
NETWORK_LIMIT = 5.0     # seconds one network attempt may take
EXEC_LIMIT = 30.0       # seconds one exec attempt may take
RESULT_MARK = "@@dialog-result "


def reason(exc):
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return str(exc) or exc.__class__.__name__


def last_line(text):
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def compose_argv(request):
    return ["docker", "compose", "-p", request["project"], "-f", request["compose_file"]]


def run(argv, timeout):
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None, "", "timed out after %gs" % timeout
    return proc.returncode, out, err


def check_http(check, limit, request):
    conn = http.client.HTTPConnection(check["address"], int(check["port"]), timeout=limit)
    try:
        conn.request("GET", check.get("path") or "/", headers={"User-Agent": "dialog-health"})
        response = conn.getresponse()
        response.read(65536)
        return 200 <= response.status < 400, "HTTP %d" % response.status
    finally:
        conn.close()


def check_tcp(check, limit, request):
    socket.create_connection((check["address"], int(check["port"])), timeout=limit).close()
    return True, "connected"


def check_stun(check, limit, request):
    txid = os.urandom(12)
    packet = struct.pack("!HHI", 0x0001, 0, STUN_MAGIC) + txid
    family = socket.AF_INET6 if ":" in check["address"] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    deadline = time.monotonic() + limit
    wait = 0.2
    try:
        sock.connect((check["address"], int(check["port"])))  # ICMP errors become exceptions
        while True:
            sock.send(packet)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False, "no STUN response within %gs" % limit
            sock.settimeout(min(wait, remaining))
            try:
                data = sock.recv(2048)
            except socket.timeout:
                wait = min(wait * 2, 1.0)
                continue
            if len(data) < 20 or data[8:20] != txid:
                continue
            kind, _, magic = struct.unpack("!HHI", data[:8])
            if magic != STUN_MAGIC:
                continue
            if kind == 0x0101:
                return True, "binding success"
            if kind == 0x0111:
                return False, "binding error response"
    finally:
        sock.close()


def check_exec(check, limit, request):
    status, out, err = run(compose_argv(request) + ["exec", "-T", check["service"]]
                           + [str(arg) for arg in check["command"]], limit)
    if status is None:
        return False, err
    if status == 0:
        return True, last_line(out) or "exit 0"
    return False, "exit %d: %s" % (status, last_line(err) or last_line(out))


def check_cassandra(check, limit, request):
    status, out, err = run(compose_argv(request) + ["exec", "-T", check["service"],
                                                    "nodetool", "status"], limit)
    if status is None:
        return False, err
    if status != 0:
        return False, "nodetool status: exit %d: %s" % (status, last_line(err) or last_line(out))
    for line in out.splitlines():
        match = re.match(r"^([UD][NLJM])\s+(\S+)\s", line)
        if match and match.group(2) == check["address"]:
            state = match.group(1)
            return state in (check.get("states") or ["UN"]), "%s is %s" % (check["address"],
                                                                           state)
    return False, "%s is not in the ring" % check["address"]


CHECKS = {"http": check_http, "tcp": check_tcp, "stun": check_stun, "exec": check_exec,
          "cassandra": check_cassandra}


def attempt(check, limit, request):
    handler = CHECKS.get(check.get("kind"))
    if handler is None:
        return False, "unknown check kind %r" % check.get("kind")
    try:
        return handler(check, limit, request)
    except Exception as exc:  # every failure is a result, never a crash of the probe
        return False, reason(exc)


def wait_checks(request):
    checks = request["checks"]
    started = time.monotonic()
    deadline = started + float(request.get("timeout") or 0)
    single = deadline <= started  # one round (run_checks): each check gets its full limit
    interval = float(request.get("interval") or 2.0)
    results = [(False, "not run")] * len(checks)
    pending = list(range(len(checks)))
    rounds = 0
    while pending:
        remaining = deadline - time.monotonic()
        threads = []
        for index in pending:
            check = checks[index]
            cap = EXEC_LIMIT if check.get("kind") in ("exec", "cassandra") else NETWORK_LIMIT
            limit = cap if single else max(1.0, min(cap, remaining))

            def work(index=index, check=check, limit=limit):
                results[index] = attempt(check, limit, request)

            thread = threading.Thread(target=work)
            thread.daemon = True
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join()
        pending = [index for index in pending if not results[index][0]]
        rounds += 1
        # Quick retries first (services that were just started), then every `interval`.
        pause = min(interval, 0.2 * 2 ** (rounds - 1))
        if not pending or time.monotonic() + pause >= deadline:
            break
        time.sleep(pause)
    return {"results": [dict(name=check.get("name"), role=check.get("role"), ok=bool(ok),
                             detail=detail) for check, (ok, detail) in zip(checks, results)],
            "seconds": round(time.monotonic() - started, 3), "rounds": rounds}


def main():
    out = {}
    hook = globals().get("before")
    if hook is not None:
        out["before"] = hook(REQUEST)
        if out["before"].get("error"):
            sys.stdout.write(RESULT_MARK + json.dumps(out) + "\n")
            return
    if REQUEST.get("checks") is not None:
        out["health"] = wait_checks(REQUEST)
    sys.stdout.write(RESULT_MARK + json.dumps(out) + "\n")
'''


class RemoteTimeout(ProviderError):
    """An SSH command did not finish in time."""


def remote(connection, command, stdin=None, timeout=60.0):
    """Run `command` on the connection's host; return (exit status, stdout, stderr) as text.

    stdin (str or bytes) is written to the command and closed. One SSH channel, no pty, no
    shell echo: nothing sent on stdin appears in a process listing. Raises RemoteTimeout when
    the command has not finished within `timeout` seconds (its channel is then closed)."""
    connection.open()
    deadline = time.monotonic() + timeout
    channel = connection.client.get_transport().open_session(timeout=min(timeout, 30.0))
    try:
        channel.exec_command(command)
        if stdin:
            channel.sendall(stdin.encode("utf-8") if isinstance(stdin, str) else stdin)
        channel.shutdown_write()
        out = _drain(channel, channel.recv, deadline, timeout)
        err = _drain(channel, channel.recv_stderr, deadline, timeout)
        if not channel.status_event.wait(max(0.0, deadline - time.monotonic())):
            raise RemoteTimeout("command did not finish within %gs" % timeout)
        status = channel.exit_status
    finally:
        channel.close()
    return status, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def _drain(channel, receive, deadline, timeout):
    chunks = []
    while True:
        channel.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            data = receive(65536)
        except socket.timeout:
            raise RemoteTimeout("command did not finish within %gs" % timeout) from None
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def sudo_prefix(connection):
    """"" for root, else "sudo -n " (non-interactive: a password prompt would hang)."""
    return "" if (connection.user or "root") == "root" else "sudo -n "


def host_label(rendered):
    """'dialog-web-1 (web, proxy)': the host and its roles, for messages."""
    roles = host_roles(rendered)
    return "%s (%s)" % (rendered["host"], ", ".join(roles)) if roles else rendered["host"]


def host_roles(rendered):
    """The host's roles: rendered["roles"] when render_host gives them, else its checks'."""
    roles = list(rendered.get("roles") or [])
    for check in rendered.get("checks") or []:
        if check.get("role") and check["role"] not in roles:
            roles.append(check["role"])
    return roles


def probe_request(rendered, timeout=0.0, interval=DEFAULT_INTERVAL):
    """The probe's REQUEST for a rendered host: checks with addresses filled in."""
    checks = []
    for check in rendered.get("checks") or []:
        item = dict(check)
        item.setdefault("address", rendered.get("address"))
        checks.append(item)
    return {"project": rendered["project"], "compose_file": rendered["compose_file"],
            "checks": checks, "timeout": float(timeout), "interval": float(interval)}


def probe_script(request, prelude=""):
    """Python source for `python3 -`: the probe, an optional prelude defining before(), main."""
    return "%s\n%s\nREQUEST = json.loads(%r)\nmain()\n" % (
        PROBE_SOURCE, prelude, json.dumps(request, sort_keys=True))


class ConnectionDropped(ProviderError):
    """The SSH channel of a command closed without an exit status."""


def run_probe(connection, rendered, request, prelude="", timeout=None, step="health check"):
    """Run the probe once on the host; return its result dict ({"before": ..., "health": ...}).

    ResourceFailed (naming host and step) when python3 is missing or the probe crashed."""
    label = host_label(rendered)
    if timeout is None:
        timeout = float(request.get("timeout") or 0) + SSH_MARGIN
    command = sudo_prefix(connection) + "python3 -"
    try:
        status, out, err = remote(connection, command, probe_script(request, prelude), timeout)
    except RemoteTimeout as exc:
        raise ResourceFailed("%s: %s: %s" % (label, step, exc)) from None
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise ProviderError("%s: %s: SSH connection lost: %s" % (label, step, exc)) from None
    for line in reversed(out.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    if status == -1:
        # paramiko's exit status when the channel closed without one: the connection (or the
        # jump under it) went away, or sshd killed the command; the host's services may be fine.
        raise ConnectionDropped("%s: %s: the SSH channel closed before the probe ended (no exit "
                                "status)" % (label, step))
    if status == 127:
        raise ResourceFailed("%s: %s: python3 is missing on the host (the Debian and Ubuntu "
                             "images the pack deploys on have it)" % (label, step))
    tail = [line for line in err.splitlines() if line.strip()][-1:] or ["exit %s" % status]
    raise ResourceFailed("%s: %s: the probe failed: %s" % (label, step, tail[0][:300]))


def _text(content):
    if isinstance(content, bytes):
        return content.decode("utf-8", "replace")
    return content or ""


def redactor(files):
    """A function replacing every value found in the secret files (render_host()["files"]
    with "secret": True) with ***: for any text from a host that could quote one."""
    values = set()
    for item in files or []:
        if not item.get("secret"):
            continue
        content = item.get("content") or ""
        if isinstance(content, bytes):
            content = content.decode("utf-8", "replace")
        for line in content.splitlines():
            line = line.strip()
            values.add(line)
            for sep in ("=", ":"):
                if sep in line:
                    values.add(line.split(sep, 1)[1].strip().strip("'\""))
    # A value the host's open files also show (a compose service name such as "postgres" in
    # a secret file's host line) is no secret: masking it garbled every message naming it.
    public = "\n".join(_text(item.get("content")) for item in files or []
                       if not item.get("secret"))
    values = sorted((value for value in values if len(value) >= 6 and value not in public),
                    key=len, reverse=True)

    def redact(text):
        for value in values:
            text = text.replace(value, "***")
        return text

    return redact


def scrub_results(rendered, results):
    """Results with every secret file value in their details replaced by ***."""
    redact = redactor(rendered.get("files"))
    for item in results:
        item["detail"] = redact(str(item["detail"]))
    return results


def run_checks(connection, rendered):
    """Run every check of the host once (one SSH round trip); [{"name","role","ok","detail"}]."""
    if not rendered.get("checks"):
        return []
    result = run_probe(connection, rendered, probe_request(rendered, timeout=0))
    return scrub_results(rendered, result["health"]["results"])


def wait_healthy(connection, rendered, timeout=300, interval=DEFAULT_INTERVAL):
    """Retry the host's checks until all pass (one SSH round trip: the probe loops on the host)
    and return the results; ResourceFailed naming host, role, check and the last detail if any
    still fails after `timeout` seconds."""
    if not rendered.get("checks"):
        return []
    result = run_probe(connection, rendered, probe_request(rendered, timeout, interval))
    results = scrub_results(rendered, result["health"]["results"])
    return raise_for_failures(rendered, results, timeout)


def raise_for_failures(rendered, results, timeout):
    """Return results when all passed, else raise ResourceFailed about the first failure:
    "dialog-web-1 (web): check 'prometheus ready' failed after 120s: connection refused"."""
    failed = [item for item in results if not item["ok"]]
    if not failed:
        return results
    first = failed[0]
    message = "%s (%s): check '%s' failed after %gs: %s" % (
        rendered["host"], first.get("role") or ", ".join(host_roles(rendered)) or "?",
        first["name"], float(timeout), first["detail"])
    if len(failed) > 1:
        message += "; also failing: %s" % ", ".join(
            "'%s' (%s)" % (item["name"], item["detail"]) for item in failed[1:])
    raise ResourceFailed(message)
