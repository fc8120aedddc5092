"""The chaos run's client probe: every second, the web app through the floating address, and a
write through PgBouncer that counts only once its COMMIT returned.

Where each probe runs, and why that is a fair client:

* web: from this machine, the runner, which the sandbox keeps outside the VPC (it reaches
  hosts only at public addresses, through the 1:1 NAT that stands in for AWS's internet
  gateway). That is where a user on the internet is: the GET goes to the floating Elastic IP,
  through whichever proxy holds it now, to a web host, over TLS as a browser does (ALPN
  http/1.1, which nginx's stream router hands to its HTTP server);
* write: psql inside the network namespace of a dialog server that the run leaves alone, i.e.
  from a dialog server's own address, to the PgBouncer that host's server.conf names now (the
  file the pack rendered on it, read as the dialog server would read it). That is the
  dialog servers' own path to the database, through the same pg_hba and PgBouncer auth; a
  write from the runner would need a path no client has.
"""

import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import threading
import time

from .timeline import WEB, WRITE, Sample

PROBE_TABLE = "chaos_probe"
WRITE_TIMEOUT = 4.0   # seconds: psql killed after this counts as not committed
WEB_TIMEOUT = 3.0


class Probe:
    """Runs web_check() and write(seq) once per `interval` each, in two threads, and adds a
    Sample per attempt to the timeline. web_check() -> (ok, detail); write(seq) -> (committed,
    detail), committed True only when the COMMIT returned. An attempt that raises failed."""

    def __init__(self, timeline, web_check, write, interval=1.0, log=None):
        self.timeline, self.log = timeline, log
        self.web_check, self.write = web_check, write
        self.interval = interval
        self.next_seq = 1
        self._halt = threading.Event()
        self._threads = []

    def web_once(self):
        return self._attempt(WEB, self.web_check)

    def write_once(self):
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        return self._attempt(WRITE, lambda: self.write(seq), seq)

    def _attempt(self, kind, call, seq=None):
        started = self.timeline.clock()
        try:
            ok, detail = call()
        except Exception as exc:  # pylint: disable=broad-except
            ok, detail = False, "%s: %s" % (type(exc).__name__, exc)
        sample = Sample(kind, started, self.timeline.clock(), bool(ok), detail, seq)
        self.timeline.add(sample)
        if not ok and self.log:
            # The run's log says why each failed probe failed (the table only counts them).
            self.log("probe %s failed at %.1f: %s" % (kind, started, detail))
        return sample

    def start(self):
        for once in (self.web_once, self.write_once):
            thread = threading.Thread(target=self._loop, args=(once,), daemon=True,
                                      name="chaos-probe-%s" % once.__name__)
            thread.start()
            self._threads.append(thread)

    def stop(self):
        self._halt.set()
        for thread in self._threads:
            thread.join(WRITE_TIMEOUT + 5)

    def _loop(self, once):
        # A fixed schedule: a slow attempt (a timeout) delays the next one, it does not add
        # attempts to catch up.
        next_at = time.monotonic()
        while not self._halt.is_set():
            once()
            next_at = max(next_at + self.interval, time.monotonic())
            self._halt.wait(max(0.0, next_at - time.monotonic()))


def https_get(address, port=443, path="/", timeout=WEB_TIMEOUT, tls=True):
    """(ok, detail): GET `path` at address:port answered 200. TLS without certificate checks
    (the bootstrap's certificate is self-signed), ALPN http/1.1 like a browser."""
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["http/1.1"])
        connection = http.client.HTTPSConnection(address, port, timeout=timeout,
                                                 context=context)
    else:
        connection = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Host": address})
        response = connection.getresponse()
        response.read()
        return response.status == 200, "HTTP %d" % response.status
    except (OSError, http.client.HTTPException) as exc:
        return False, "%s: %s" % (type(exc).__name__, exc)
    finally:
        connection.close()


def speaks_tls(address, port=443, timeout=WEB_TIMEOUT):
    """True when address:port completes a TLS handshake."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            with context.wrap_socket(sock):
                return True
    except (OSError, ssl.SSLError):
        return False


_BLOCK_RE = re.compile(r"^\s*postgresql\s*\{(.*?)^\s*\}", re.S | re.M)
_ENTRY_RE = re.compile(r"^\s*([A-Za-z][\w-]*)\s*=\s*(\"(?:[^\"\\]|\\.)*\"|[^\s#]+)", re.M)


def postgres_settings(server_conf):
    """{"host", "port", "db", "user", "password"} of the `services.postgresql` block of a
    dialog server's server.conf (HOCON as the pack renders it: quoted strings are JSON)."""
    block = _BLOCK_RE.search(server_conf)
    if not block:
        raise ValueError("server.conf has no postgresql block")
    values = {}
    for key, raw in _ENTRY_RE.findall(block.group(1)):
        values[key] = json.loads(raw) if raw.startswith('"') else raw
    missing = [k for k in ("host", "port", "db", "user", "password") if k not in values]
    if missing:
        raise ValueError("server.conf's postgresql block lacks %s" % ", ".join(missing))
    values["port"] = int(values["port"])
    return values


class PsqlClient:
    """psql run in a network namespace, against the PgBouncer a dialog server's server.conf
    names. `where()` -> (namespace, server.conf path on this machine), asked before every
    statement so a rewritten server.conf (a repoint) or another probe host takes effect."""

    def __init__(self, where, timeout=WRITE_TIMEOUT):
        self.where = where
        self.timeout = timeout

    def target(self):
        namespace, conf_path = self.where()
        with open(conf_path, encoding="utf-8") as handle:
            return namespace, postgres_settings(handle.read())

    def run(self, *statements, tuples_only=False):
        """(returncode, stdout lines, stderr) of the statements in one psql session."""
        namespace, pg = self.target()
        argv = ["ip", "netns", "exec", namespace, "psql", "-X", "-v", "ON_ERROR_STOP=1",
                "-h", pg["host"], "-p", str(pg["port"]), "-U", pg["user"], "-d", pg["db"]]
        if tuples_only:
            argv += ["-A", "-t"]
        for statement in statements:
            argv += ["-c", statement]
        # The password in the environment, never in argv (other users see argv in ps).
        env = dict(os.environ, PGPASSWORD=pg["password"], PGCONNECT_TIMEOUT="2",
                   PGAPPNAME="dialog-chaos-probe")
        try:
            done = subprocess.run(argv, capture_output=True, text=True, env=env,
                                  timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            return None, [], "psql: no answer within %ss" % self.timeout
        return done.returncode, done.stdout.splitlines(), done.stderr.strip()

    def create_table(self):
        code, _, err = self.run("CREATE TABLE IF NOT EXISTS %s (seq bigint PRIMARY KEY, "
                                "at timestamptz NOT NULL DEFAULT now())" % PROBE_TABLE)
        if code != 0:
            raise RuntimeError("cannot create the probe table through PgBouncer: %s" % err)

    def write(self, seq):
        """(committed, detail): committed only when psql printed COMMIT's own tag (an aborted
        transaction's COMMIT answers ROLLBACK) and exited 0."""
        code, lines, err = self.run("BEGIN", "INSERT INTO %s (seq) VALUES (%d)"
                                    % (PROBE_TABLE, int(seq)), "COMMIT")
        if code == 0 and lines and lines[-1].strip() == "COMMIT":
            return True, "COMMIT"
        return False, err or " ".join(lines) or "psql exit %s" % code

    def read_back(self):
        """Every sequence number the database behind PgBouncer holds."""
        code, lines, err = self.run("SELECT seq FROM %s" % PROBE_TABLE, tuples_only=True)
        if code != 0:
            raise RuntimeError("cannot read the probe table back: %s" % err)
        return {int(line) for line in lines if line.strip()}

    def streaming_standbys(self):
        """Standbys streaming from the database behind PgBouncer (pg_stat_replication; the
        deploy's database user is the image's superuser, which sees it)."""
        code, lines, err = self.run("SELECT count(*) FROM pg_stat_replication "
                                    "WHERE state = 'streaming'", tuples_only=True)
        if code != 0:
            raise RuntimeError("cannot read pg_stat_replication: %s" % err)
        return int(lines[0]) if lines else 0
