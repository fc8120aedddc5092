"""Postgres high availability: which host renders as primary (the deployment record), and what
the rendered server.sh does on real PostgreSQL 15 (slots, sync/async, a former primary moved
aside and cloned fresh, promotion), two clusters on loopback ports of this machine."""

import contextlib
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from lib import deployment_record
from lib.errors import DialogError, InputError
from lib.healing import postgres_failover
from lib.render import render_host, replication_slot
from test_render import SECRETS, compose, file_of, make_context, with_role

PG_BIN = "/usr/lib/postgresql/15/bin"
HERE = os.path.dirname(os.path.abspath(__file__))
PACK = os.path.dirname(HERE)
ENTRYPOINT = os.path.join(HERE, "fixtures", "pg_image_entrypoint.sh")
HA_SCRIPT = os.path.join(PACK, "actions", "lib", "hosts", "scripts", "postgres_ha.sh")
SERVER_SH = "/etc/dialog/postgres/server.sh"


class Store:
    """The datastore calls deployment_record makes."""

    def __init__(self):
        self.values = {}

    def get_value(self, key, local=True):
        return self.values.get(key)

    def set_value(self, key, value, local=True):
        self.values[key] = value


def pair_context(primary=None):
    context = make_context("small-failover")
    if primary:
        context["postgres_primary"] = primary
    return context


# ----------------------------------------------------------------------- record and render

def test_record_names_the_primary_and_a_deploy_keeps_it():
    store = Store()
    plan = {"deployment": "d", "hosts": [{"group": "postgres"}, {"group": "postgres"}]}
    deployment_record.save_record(store, deployment_record.record_of(plan))
    hosts = [{"name": "d-postgres-1", "index": 1, "roles": ["postgres"]},
             {"name": "d-postgres-2", "index": 2, "roles": ["postgres"]}]
    record = deployment_record.load_record(store, "d")
    assert deployment_record.postgres_primary(record, hosts) == "d-postgres-1"
    assert deployment_record.set_postgres_primary(store, "d", "d-postgres-2") is None
    # A later deploy writes a record without the field: the promotion stays.
    deployment_record.save_record(store, deployment_record.record_of(plan))
    record = deployment_record.load_record(store, "d")
    assert record["postgres_primary"] == "d-postgres-2"
    assert deployment_record.postgres_primary(record, hosts) == "d-postgres-2"
    # A name no longer among the hosts falls back to the lowest index.
    assert deployment_record.postgres_primary(record, hosts[:1]) == "d-postgres-1"
    assert deployment_record.postgres_primary({}, []) is None


def test_the_recorded_primary_renders_as_primary_everywhere():
    context = pair_context()
    first, second = with_role(context, "postgres")
    context["postgres_primary"] = second["name"]
    on_first = render_host(context, first["name"])
    on_second = render_host(context, second["name"])
    assert "a streaming STANDBY of %s" % second["name"] in file_of(on_first, SERVER_SH)
    assert "the PRIMARY" in file_of(on_second, SERVER_SH)
    assert "init-replication.sh" in " ".join(compose(on_second)["services"]["postgres"]
                                             ["volumes"])
    # PgBouncer on the standby points at the primary's address, the primary's at its own server.
    assert "DB_HOST=%s" % second["private_address"] in \
        file_of(on_first, "/etc/dialog/pgbouncer.env")
    assert "DB_HOST=postgres" in file_of(on_second, "/etc/dialog/pgbouncer.env")
    for name in ("DB_HOST",):
        assert name not in compose(on_first)["services"]["pgbouncer"]["environment"]
    dialog = with_role(context, "dialog-server")[0]
    conf = file_of(render_host(context, dialog["name"]), "/etc/dialog/server.conf")
    assert 'host = "%s"' % second["private_address"] in conf


def test_slots_sync_and_hba_follow_the_plan():
    context = pair_context()
    first, second = with_role(context, "postgres")
    script = file_of(render_host(context, first["name"]), SERVER_SH)
    assert 'STANDBY_SLOTS="%s"' % replication_slot(second["name"]) in script
    assert replication_slot("dialog-postgres-2") == "standby_dialog_postgres_2"
    assert "wal_keep_size=1GB" in script and "ANY 1 (" in script
    for host in (first, second):
        hba = file_of(render_host(context, host["name"]), "/etc/dialog/postgres/pg_hba.conf")
        other = second if host is first else first
        assert "replicator   %s/32" % other["private_address"] in hba
        assert "replicator   %s/32" % host["private_address"] not in hba
    # A single Postgres host keeps the image's own start and no replication files.
    single = make_context("small")
    result = render_host(single, with_role(single, "postgres")[0]["name"])
    assert "command" not in compose(result)["services"]["postgres"]
    assert SERVER_SH not in [f["path"] for f in result["files"]]


# ----------------------------------------------------------------------- real PostgreSQL 15

def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _need_real_postgres():
    missing = [b for b in ("initdb", "pg_ctl", "postgres", "pg_basebackup", "pg_receivewal",
                           "psql", "pg_controldata") if not os.path.exists(os.path.join(PG_BIN, b))]
    if missing:
        pytest.skip("PostgreSQL 15 server binaries missing (%s): apt-get install postgresql-15"
                    % ", ".join(missing))
    if os.geteuid() == 0:
        try:
            subprocess.run(["id", "postgres"], check=True, capture_output=True)
        except subprocess.CalledProcessError:
            pytest.skip("running as root and no postgres user to run the servers as")


class Host:
    """One Postgres host: a data directory, a socket directory, a port, server.sh running."""

    def __init__(self, root, name, port):
        self.name, self.port = name, port
        self.dir = os.path.join(root, name)
        for sub in ("data", "run", "conf", "aside", "initdb"):
            os.makedirs(os.path.join(self.dir, sub), mode=0o700)
        self.proc = None
        with open(self.path("server.log"), "w", encoding="utf-8"):
            pass

    def path(self, sub):
        return os.path.join(self.dir, sub)

    def env(self, bin_dir):
        return {"PATH": "%s:%s:/usr/bin:/bin" % (bin_dir, PG_BIN), "PGDATA": self.path("data"),
                "PGHOST": self.path("run"), "PGPORT": str(self.port), "TEST_LISTEN": "127.0.0.1",
                "POSTGRES_USER": "dialog", "POSTGRES_DB": "dialog", "HOME": self.dir,
                "POSTGRES_PASSWORD": SECRETS["postgres_password"],
                "REPLICATION_PASSWORD": SECRETS["replication_password"],
                "DIALOG_POSTGRES_CONF": self.path("conf"),
                "DIALOG_POSTGRES_ASIDE": self.path("aside"),
                "DIALOG_POSTGRES_PASSFILE": self.path("pgpass"),
                "INITDB_D": self.path("initdb")}

    def install(self, rendered, ports):
        """The host's rendered files where server.sh reads them; the catalog's port replaced by
        the test's (both servers listen on 127.0.0.1, each on its own port)."""
        for item in rendered["files"]:
            text = item["content"]
            if item["path"] == SERVER_SH:
                primary = re.search(r"^PRIMARY_ADDRESS=.*$", text, re.M)
                assert primary
                text = re.sub(r"^PRIMARY_PORT=\d+$", "PRIMARY_PORT=%d" % ports["primary"], text,
                              flags=re.M)
                target = self.path("conf/server.sh")
            elif item["path"].endswith("pg_hba.conf"):
                target = self.path("conf/pg_hba.conf")
            elif item["path"].endswith("init-replication.sh"):
                target = self.path("initdb/init-replication.sh")
            else:
                continue
            with open(target, "w", encoding="utf-8") as handle:
                handle.write(text)

    def start(self, bin_dir, user):
        log = open(self.path("server.log"), "ab")  # pylint: disable=consider-using-with
        argv = ["bash", self.path("conf/server.sh")]
        self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
            argv, env=self.env(bin_dir), stdout=log, stderr=log, start_new_session=True,
            preexec_fn=_as_postgres if user else None)

    def stop(self, mode="fast"):
        if self.proc and self.proc.poll() is None:
            subprocess.run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.path("data"), "-m", mode,
                            "-w", "stop"], capture_output=True, check=False,
                           preexec_fn=_as_postgres)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
            try:
                os.killpg(self.proc.pid, 9)   # the watcher, left behind by an immediate stop
            except ProcessLookupError:
                pass

    def sql(self, statement, timeout=30):
        out = subprocess.run(
            [os.path.join(PG_BIN, "psql"), "-XAtq", "-v", "ON_ERROR_STOP=1", "-h",
             self.path("run"), "-p", str(self.port), "-U", "dialog", "-d", "dialog", "-c",
             statement], capture_output=True, text=True, timeout=timeout, check=False)
        if out.returncode:
            raise RuntimeError(out.stderr.strip())
        return out.stdout.strip()

    def ha(self, bin_dir, command):
        env = self.env(bin_dir)
        with open(HA_SCRIPT, encoding="utf-8") as handle:
            out = subprocess.run(["env", "-i"] + ["%s=%s" % kv for kv in env.items()]
                                 + ["bash", "-s", "--", command], stdin=handle,
                                 capture_output=True, text=True, timeout=120, check=False,
                                 preexec_fn=_as_postgres)
        return out.returncode, dict(line.split("=", 1) for line in out.stdout.splitlines()
                                    if "=" in line)

    def log(self):
        with open(self.path("server.log"), encoding="utf-8", errors="replace") as handle:
            return handle.read()


def _as_postgres():
    if os.geteuid() == 0:
        import pwd  # pylint: disable=import-outside-toplevel
        entry = pwd.getpwnam("postgres")
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)


def _until(what, check, timeout=60.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            last = exc
        time.sleep(0.3)
    raise AssertionError("%s: not within %ss (last: %r)" % (what, timeout, last))


def logged_at(log, message):
    """When server.sh first logged a line holding message ("postgres (<UTC time>): ...")."""
    found = re.search(r"^postgres \((\S+)\): .*%s" % re.escape(message), log, re.M)
    assert found, "no %r in the log" % message
    return found.group(1)


@pytest.fixture
def cluster_dir():
    _need_real_postgres()
    root = tempfile.mkdtemp(prefix="dialog-pgha-")
    bin_dir = os.path.join(root, "bin")
    os.makedirs(bin_dir)
    os.symlink(ENTRYPOINT, os.path.join(bin_dir, "docker-entrypoint.sh"))
    os.chmod(root, 0o755)
    hosts = []
    yield root, bin_dir, hosts
    for host in hosts:
        host.stop("immediate")
        print("----- %s's log\n%s" % (host.name, host.log()[-3000:]))
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.timeout(240)
def test_pair_on_real_postgres_slots_sync_degrade_promote_and_a_former_primary(cluster_dir):
    root, bin_dir, hosts = cluster_dir
    user = "postgres" if os.geteuid() == 0 else None
    context = pair_context()
    first, second = with_role(context, "postgres")
    for host in (first, second):
        host["private_address"] = "127.0.0.1"
    a = Host(root, first["name"], _free_port())
    b = Host(root, second["name"], _free_port())
    hosts += [a, b]
    if user:
        subprocess.run(["chown", "-R", "postgres:postgres", root], check=True)
    slot_a, slot_b = replication_slot(a.name), replication_slot(b.name)

    # 1. A primary, B its standby (the first deploy: no record field). A deploy boots the hosts
    # in any order: B, up first, waits for A (and keeps waiting while A initializes, its server
    # answering on the socket only).
    a.install(render_host(context, a.name), {"primary": a.port})
    b.install(render_host(context, b.name), {"primary": a.port})
    b.start(bin_dir, user)
    _until("B waits for A", lambda: "not reachable yet, waiting" in b.log(), 30)
    a.start(bin_dir, user)
    _until("A accepts connections", lambda: a.sql("SELECT 1") == "1")
    _until("B streams from A", lambda: a.sql(
        "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'") == slot_b,
        90)
    assert a.sql("SELECT slot_name || ' ' || active FROM pg_replication_slots") == \
        "%s true" % slot_b
    _until("A replicates synchronously", lambda: a.sql(
        "SHOW synchronous_standby_names") == "ANY 1 (%s)" % slot_b)
    assert a.sql("SELECT application_name || ' ' || sync_state FROM pg_stat_replication") == \
        "%s quorum" % slot_b
    # ... on the standby's own stream, not on the clone's: pg_basebackup streams WAL through the
    # standby's slot while it copies, and commits on the primary would wait for that stream.
    assert logged_at(a.log(), "synchronous replication on") >= logged_at(b.log(), "cloned ")
    assert b.sql("SELECT pg_is_in_recovery()") == "t"
    assert "ERROR" not in a.log(), "a standby's start leaves no error in the primary's log"
    a.sql("CREATE TABLE writes (n int PRIMARY KEY)")
    a.sql("INSERT INTO writes SELECT generate_series(1, 100)")

    # 2. The standby goes away: commits hang only until the primary degrades to async.
    b.stop()
    started = time.monotonic()
    a.sql("INSERT INTO writes VALUES (101)", timeout=30)
    assert time.monotonic() - started < 20
    assert a.sql("SHOW synchronous_standby_names") == ""
    assert "asynchronous until one streams" in a.log()
    # ... and back to sync once it streams again (its slot kept the WAL it missed).
    b.start(bin_dir, user)
    _until("A sync again", lambda: a.sql("SHOW synchronous_standby_names") == "ANY 1 (%s)"
           % slot_b, 60)
    a.sql("INSERT INTO writes SELECT generate_series(102, 200)")
    committed = a.sql("SELECT count(*) FROM writes")

    # 3. The primary dies; B is promoted by the script dialog.postgres_promote sends.
    a.stop("immediate")
    status, state = b.ha(bin_dir, "promote")
    assert status == 0, state
    assert state["promoted"] == "now" and state["in_recovery"] == "false"
    assert b.sql("SELECT count(*) FROM writes") == committed == "200"
    b.sql("INSERT INTO writes VALUES (201)")    # async: no standby streams yet
    _until("B keeps a slot for A", lambda: a.name and b.sql(
        "SELECT slot_name FROM pg_replication_slots") == slot_a, 15)

    # 4. A comes back, rendered as B's standby (record: postgres_primary = B): its data, a
    # former primary's, is moved aside (kept), a fresh copy of B is cloned through A's slot.
    context["postgres_primary"] = b.name
    a.install(render_host(context, a.name), {"primary": b.port})
    a.start(bin_dir, user)
    _until("A streams from B", lambda: b.sql(
        "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'") == slot_a,
        90)
    aside = glob.glob(os.path.join(a.path("aside"), "data-*", "PG_VERSION"))
    assert len(aside) == 1, "the former primary's data is kept aside"
    assert "a former primary" in a.log()
    _until("B sync with A", lambda: b.sql("SHOW synchronous_standby_names")
           == "ANY 1 (%s)" % slot_a, 30)
    assert logged_at(b.log(), "synchronous replication on") >= logged_at(a.log(), "cloned ")
    b.sql("INSERT INTO writes VALUES (202)")
    _until("A has every write", lambda: a.sql("SELECT count(*) FROM writes") == "202")
    assert a.sql("SELECT pg_is_in_recovery()") == "t"


# ----------------------------------------------------------------------- promote and repoint

class FakeConnection:
    def __init__(self, name):
        self.host, self.user = name, "root"


class FakePair:
    """SSH to the hosts of a deployment, faked where lib.healing.postgres_failover reaches
    them: which hosts answer, each postgres service's state and what each command did."""

    def __init__(self, monkeypatch, down=(), running=("postgres", "pgbouncer"), states=None):
        self.down, self.running, self.states = set(down), running, states or {}
        self.commands, self.uploads, self.bootstrapped, self.recorded = [], {}, [], []
        monkeypatch.setattr(postgres_failover.operations, "session", self.session)
        monkeypatch.setattr(postgres_failover.health, "remote", self.remote)
        monkeypatch.setattr(postgres_failover.bootstrap, "upload_changed", self.upload)
        monkeypatch.setattr(postgres_failover.operations, "bootstrap_one",
                            lambda context, name, ssh, **_: self.bootstrapped.append(name))
        # The primary's checks after its restart: (host, timeout) of each wait.
        self.waited = []
        monkeypatch.setattr(postgres_failover.health, "wait_healthy",
                            lambda connection, rendered, timeout: self.waited.append(
                                (rendered["host"], timeout)))

    @contextlib.contextmanager
    def session(self, host, ssh, hosts=None, timeout=None, **_):
        if host["name"] in self.down:
            raise postgres_failover.ResourceFailed("%s: SSH timed out" % host["name"])
        yield FakeConnection(host["name"])

    def remote(self, connection, command, stdin=None, timeout=60.0):
        self.commands.append((connection.host, command))
        if command.endswith("ps --format json"):
            if self.running is None:
                return 1, "", "Cannot connect to the Docker daemon"
            return 0, "".join(json.dumps({"Service": name, "State": "running"}) + "\n"
                              for name in self.running), ""
        if "postgres_ha" in (stdin or "") or "exec -T postgres bash -s -- " in command:
            verb = command.rsplit(" ", 1)[1]
            state = dict(self.states.get(connection.host, {}))
            if verb == "promote":
                state.update(in_recovery="false", lsn="0/3025C68", promoted="now")
            return 0, "".join("%s=%s\n" % kv for kv in state.items()), ""
        if command.startswith("sha256sum"):
            return 0, "0" * 64 + "  /etc/dialog/server.conf\n", ""
        if "--force-recreate" in command or command.endswith("up -d --no-deps postgres pgbouncer"):
            return 0, "", ""
        return 127, "", "unexpected command: " + command

    def upload(self, connection, files):
        self.uploads[connection.host] = [f["path"] for f in files]
        return [f["path"] for f in files], []


STANDBY_STATE = {"in_recovery": "true", "receiver": "", "received": "0/3025C68",
                 "replayed": "0/3025C68", "lsn": "0/3025C68", "streaming": ""}


def _promote(context, name, record=None):
    recorded = []
    result = postgres_failover.promote(context, {}, name, record or {}, recorded.append)
    return result, recorded


def test_promote_refuses_a_host_that_is_not_a_postgres_standby_before_any_ssh(monkeypatch):
    fake = FakePair(monkeypatch)
    context = pair_context()
    with pytest.raises(InputError) as error:
        _promote(context, "dialog-web-1")
    assert error.value.field == "host"
    assert error.value.allowed == ["dialog-postgres-1", "dialog-postgres-2"]
    single = make_context("small")
    with pytest.raises(InputError, match="no standby to fail over to"):
        _promote(single, with_role(single, "postgres")[0]["name"])
    assert fake.commands == []


def test_promote_refuses_while_the_recorded_primary_still_serves(monkeypatch):
    fake = FakePair(monkeypatch, states={"dialog-postgres-2": STANDBY_STATE})
    with pytest.raises(DialogError, match="Fence it first .st2 run dialog.fence "
                       "deployment=dialog host=dialog-postgres-1"):
        _promote(pair_context(), "dialog-postgres-2")
    assert not any("promote" in command for _, command in fake.commands)
    # A host that answers but cannot say whether postgres runs is not taken for fenced.
    fake = FakePair(monkeypatch, running=None, states={"dialog-postgres-2": STANDBY_STATE})
    with pytest.raises(DialogError, match="could not say"):
        _promote(pair_context(), "dialog-postgres-2")
    assert not any("promote" in command for _, command in fake.commands)


def test_promote_refuses_a_standby_that_never_streamed(monkeypatch):
    FakePair(monkeypatch, down=["dialog-postgres-1"],
             states={"dialog-postgres-2": dict(STANDBY_STATE, received="")})
    with pytest.raises(DialogError, match="not a streaming standby"):
        _promote(pair_context(), "dialog-postgres-2")


def test_promote_with_the_primary_fenced_records_the_new_primary(monkeypatch):
    fake = FakePair(monkeypatch, down=["dialog-postgres-1"],
                    states={"dialog-postgres-2": STANDBY_STATE})
    result, recorded = _promote(pair_context(), "dialog-postgres-2")
    assert recorded == ["dialog-postgres-2"]
    assert result["primary"] == "dialog-postgres-2" and result["previous"] == "dialog-postgres-1"
    assert result["lsn"] == "0/3025C68" and result["seconds"] >= 0
    assert ("dialog-postgres-2", next(c for h, c in fake.commands if c.endswith(" promote"))) \
        in fake.commands
    assert not any(secret in repr(result) for secret in SECRETS.values())
    # Stopped postgres service on a reachable former primary counts as fenced too.
    fake = FakePair(monkeypatch, running=("pgbouncer",),
                    states={"dialog-postgres-2": STANDBY_STATE})
    result, recorded = _promote(pair_context(), "dialog-postgres-2")
    assert recorded == ["dialog-postgres-2"]


@pytest.mark.parametrize("standby_up", [False, True])
def test_repoint_restarts_the_primary_once_and_only_pgbouncer_on_a_standby(
        monkeypatch, standby_up):
    """The promoted primary's postgres and PgBouncer are recreated by the repoint (writes are
    down anyway), and its checks waited for, so the deploy that rebuilds the standby finds its
    files and label unchanged and never restarts the only primary. A standby that answers (a
    switchover) gets only PgBouncer recreated. Dialog servers restart one at a time."""
    fake = FakePair(monkeypatch, down=[] if standby_up else ["dialog-postgres-1"])
    context = pair_context("dialog-postgres-2")
    result = postgres_failover.repoint(context, {}, health_timeout=240)
    assert result["primary"] == "dialog-postgres-2"
    # Every file the deploy renders for the primary: the next deploy finds nothing to change.
    assert sorted(fake.uploads["dialog-postgres-2"]) == sorted(
        f["path"] for f in render_host(context, "dialog-postgres-2")["files"])
    on_primary = [c for h, c in fake.commands if h == "dialog-postgres-2" and "up -d" in c]
    assert len(on_primary) == 1 and on_primary[0].endswith("up -d --no-deps postgres pgbouncer")
    assert fake.waited == [("dialog-postgres-2", 240)]
    on_standby = [c for h, c in fake.commands if h == "dialog-postgres-1" and "up -d" in c]
    if standby_up:
        assert sorted(fake.uploads["dialog-postgres-1"]) == sorted(postgres_failover.REPOINTED)
        assert len(on_standby) == 1 and \
            on_standby[0].endswith("--no-deps --force-recreate pgbouncer")
    else:
        assert "dialog-postgres-1" in result["skipped"] and not on_standby
    servers = [h["name"] for h in with_role(context, "dialog-server")]
    assert fake.bootstrapped == servers     # one at a time, in index order
    assert result["dialog_servers"] == {name: "restarted" for name in servers}
