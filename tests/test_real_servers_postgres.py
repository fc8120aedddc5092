"""Real PostgreSQL streaming replication and PgBouncer in the sandbox.

Two sandbox hosts get the small-failover tier's rendered Postgres files (compose services
postgres + pgbouncer, postgres.env, pgbouncer.env, the primary's init-replication.sh, the
standby's standby.sh) through the pack's real SSH bootstrap. The sandbox's fake docker runs
Debian's PostgreSQL 15 and PgBouncer for them (devtools/sandbox/real_servers). A row written
through PgBouncer on the primary must reach the standby by streaming replication and survive
a re-deploy; a setting the real server refuses must fail the deploy.
"""

import shlex
import subprocess
import time

import pytest
import yaml

from lib import bootstrap
from lib.render import COMPOSE_FILE, render_host
from sandbox_support import sandbox_hosts
from test_render import make_context, with_role

pytestmark = pytest.mark.xdist_group("netns")

CIDRS = ["10.87.%d.0/24" % third for third in range(0, 250, 10)]
SERVICES = ("postgres", "pgbouncer")


def postgres_files(context, host):
    """The host's rendered files that the postgres role uses, compose trimmed to its services."""
    rendered = render_host(context, host["name"])
    compose = yaml.safe_load(next(f["content"] for f in rendered["files"]
                                  if f["path"] == COMPOSE_FILE))
    compose["services"] = {name: compose["services"][name] for name in SERVICES}
    compose["services"]["pgbouncer"].pop("depends_on", None)
    compose["services"]["pgbouncer"]["depends_on"] = ["postgres"]
    files = [f for f in rendered["files"]
             if "postgres" in f["path"] or "pgbouncer" in f["path"]]
    files.append({"path": COMPOSE_FILE, "content": yaml.safe_dump(compose), "mode": 0o644,
                  "secret": False})
    return {"host": host["name"], "address": host["private_address"], "project": "dialog",
            "compose_file": COMPOSE_FILE, "roles": ["postgres"], "files": files,
            "services": list(SERVICES), "checks": []}


def psql(address, port, password, sql, database="dialog", user="dialog"):
    proc = subprocess.run(
        ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", address, "-p", str(port),
         "-U", user, "-d", database, "-c", sql],
        env={"PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def deploy(hosts, rendered):
    connection = bootstrap.connect(rendered["address"], "root", key_file=hosts.ssh_key_path,
                                   known_hosts=hosts.known_hosts_path, timeout=10)
    try:
        return bootstrap.bootstrap_host(connection, rendered, health_timeout=60)
    finally:
        connection.close()


def ssh(hosts, address, command):
    connection = bootstrap.connect(address, "root", key_file=hosts.ssh_key_path,
                                   known_hosts=hosts.known_hosts_path, timeout=10)
    try:
        result = connection.run(command, hide=True, warn=True, in_stream=False, timeout=120)
        return result.exited, result.stdout + result.stderr
    finally:
        connection.close()


def compose_exec(hosts, address, args):
    return ssh(hosts, address, "docker compose -p dialog -f %s exec -T %s"
               % (COMPOSE_FILE, " ".join(shlex.quote(a) for a in args)))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    hosts = sandbox_hosts(tmp_path_factory.mktemp("pg"), CIDRS)
    try:
        context = make_context("small-failover")
        primary, standby = with_role(context, "postgres")[:2]
        for offset, host in enumerate((primary, standby)):
            host["private_address"] = str(hosts.network.network_address + 41 + offset)
            host["public_addresses"] = []
            hosts.boot(host["name"], host["private_address"])
        for host in (primary, standby):
            hosts.wait_ready(host["name"])
        files = {h["name"]: postgres_files(context, h) for h in (primary, standby)}
        for host in (primary, standby):
            assert deploy(hosts, files[host["name"]])["compose"] == "started"
        yield hosts, context, primary, standby, files
    finally:
        hosts.close()


def wait_for(check, seconds=30):
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def test_a_row_written_through_pgbouncer_streams_to_the_standby_and_survives_redeploy(pair):
    hosts, context, primary, standby, files = pair
    password = context["secrets"]["postgres_password"]
    psql(primary["private_address"], 6432, password,
         "CREATE TABLE IF NOT EXISTS probe (id int PRIMARY KEY, note text); "
         "INSERT INTO probe VALUES (1, 'through pgbouncer') ON CONFLICT DO NOTHING")
    assert wait_for(lambda: psql(standby["private_address"], 5432, password,
                                 "SELECT note FROM probe WHERE id = 1")) == "through pgbouncer"
    assert psql(standby["private_address"], 5432, password,
                "SELECT pg_is_in_recovery()") == "t"
    assert psql(primary["private_address"], 5432, password,
                "SELECT host(client_addr) || ' ' || state FROM pg_stat_replication") == \
        "%s streaming" % standby["private_address"]
    # exec runs inside the container, as the image's postgres user when asked.
    code, out = compose_exec(hosts, primary["private_address"],
                             ["-u", "postgres", "postgres", "pg_isready"])
    assert code == 0 and "accepting connections" in out, out
    code, out = compose_exec(hosts, primary["private_address"],
                             ["postgres", "ps", "-o", "user=", "-C", "postgres"])
    assert code == 0 and set(out.split()) == {"postgres"}, out

    # A re-deploy recreating the containers keeps the data (the volume) and the replication.
    for host in (primary, standby):
        code, out = ssh(hosts, host["private_address"],
                        "docker compose -p dialog -f %s down" % COMPOSE_FILE)
        assert code == 0, out
    for host in (primary, standby):
        assert deploy(hosts, files[host["name"]])["compose"] == "started"
    assert psql(primary["private_address"], 6432, password,
                "SELECT note FROM probe WHERE id = 1") == "through pgbouncer"
    psql(primary["private_address"], 6432, password, "INSERT INTO probe VALUES (2, 'after')")
    assert wait_for(lambda: psql(standby["private_address"], 5432, password,
                                 "SELECT count(*) FROM probe") == "2")


def test_a_setting_the_real_postgres_refuses_fails_the_deploy(pair):
    hosts, _, primary, _, files = pair
    rendered = dict(files[primary["name"]])
    compose = yaml.safe_load(next(f["content"] for f in rendered["files"]
                                  if f["path"] == COMPOSE_FILE))
    compose["services"]["postgres"]["command"] = ["postgres", "-c", "shared_buffers=lots"]
    rendered["files"] = [f for f in rendered["files"] if f["path"] != COMPOSE_FILE] + [
        {"path": COMPOSE_FILE, "content": yaml.safe_dump(compose), "mode": 0o644,
         "secret": False}]
    with pytest.raises(Exception) as failure:
        result = deploy(hosts, rendered)
        assert result["compose"] == "started", result
    assert 'invalid value for parameter "shared_buffers": "lots"' in str(failure.value)
