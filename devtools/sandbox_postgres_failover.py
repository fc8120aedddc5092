#!/usr/bin/env python3
"""Postgres failover by hand in the sandbox: promote the standby, re-point, write.

    flock /tmp/dialog-sandbox.lock .venv/bin/python devtools/sandbox_postgres_failover.py

Deploys small-failover (real Debian PostgreSQL 15 and PgBouncer run from the rendered files,
see devtools/sandbox/real_servers), writes rows through the PgBouncer a dialog server's
server.conf names, checks the standby streams synchronously, then kills the primary's host,
runs dialog.postgres_promote on the standby and dialog.postgres_repoint, and checks that every
row committed before is there and a new write through PgBouncer commits on the new primary.
Prints the seconds each step took; destroys the deployment.
"""

import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE]

# pylint: disable=wrong-import-position
from chaos.probe import PsqlClient  # noqa: E402
from sandbox.hosts import RUNNING, preflight  # noqa: E402
from sandbox_deploy import local_runner, sandbox  # noqa: E402

DEPLOYMENT = "pgha"


def where(box):
    def find():
        for name in sorted(box.hosts.hosts):
            info = box.hosts.hosts[name]
            conf = os.path.join(box.hosts.host_root(name), "etc", "dialog", "server.conf")
            if "-dialog-server-" in name and info.state == RUNNING and os.path.exists(conf):
                return info.namespace, conf
        raise RuntimeError("no running dialog server")
    return find


def main(argv):
    params = dict(arg.split("=", 1) for arg in argv if "=" in arg)
    provider = params.get("provider", "aws")
    problems = preflight()
    if problems:
        print("the sandbox cannot run here:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    schemas = local_runner.parameter_schemas(local_runner.load_action_metadata("dialog.deploy"))
    typed = local_runner.cast_cli_parameters(
        ["tier=small-failover", "provider=%s" % provider, "deployment=" + DEPLOYMENT], schemas)
    started = time.perf_counter()
    with sandbox(provider=provider) as box:
        try:
            print("== dialog.deploy tier=small-failover", flush=True)
            ok, result, _ = box.run("dialog.deploy", typed, progress=False)
            if not ok:
                output = result.get("output") or {}
                print("deploy failed: %s" % (output.get("failure") or result.get("error")
                                             or json.dumps(result, default=str)[:2000]))
                return 1
            print("deployed in %.0f s" % (time.perf_counter() - started), flush=True)
            psql = PsqlClient(where(box), timeout=10.0)
            psql.create_table()
            committed = set()
            for seq in range(1, 21):
                ok, detail = psql.write(seq)
                if not ok:
                    print("write %d through PgBouncer failed: %s" % (seq, detail))
                    return 1
                committed.add(seq)
            code, lines, err = psql.run(
                "SELECT application_name || ' ' || state || ' ' || sync_state "
                "FROM pg_stat_replication", tuples_only=True)
            print("primary's standbys: %s" % (lines or err))
            if code != 0 or not any("streaming quorum" in line for line in lines):
                print("the standby is not streaming synchronously")
                return 1
            primary, standby = DEPLOYMENT + "-postgres-1", DEPLOYMENT + "-postgres-2"
            print("\n== killing %s (host gone, as a power loss)" % primary, flush=True)
            box.hosts.kill(primary)
            mark = time.perf_counter()
            ok, result, _ = box.run("dialog.postgres_promote",
                                    {"deployment": DEPLOYMENT, "host": standby})
            print(json.dumps(result, indent=2, default=str))
            if not ok:
                return 1
            promoted = time.perf_counter() - mark
            mark = time.perf_counter()
            ok, result, _ = box.run("dialog.postgres_repoint", {"deployment": DEPLOYMENT})
            print(json.dumps(result, indent=2, default=str))
            if not ok:
                return 1
            repointed = time.perf_counter() - mark
            ok, detail = psql.write(21)
            print("write after the repoint: %s" % detail)
            held = psql.read_back()
            lost = sorted(committed - held)
            code, lines, _ = psql.run("SELECT pg_is_in_recovery(), inet_server_addr()",
                                      tuples_only=True)
            print("behind PgBouncer now: %s" % lines)
            print("promote %.1f s, repoint %.1f s, committed before: %d, lost: %s"
                  % (promoted, repointed, len(committed), lost or 0))
            if not ok or lost or 21 not in held:
                return 1
            return 0
        finally:
            print("\n== dialog.destroy", flush=True)
            box.run("dialog.destroy", {"deployment": DEPLOYMENT, "confirm": DEPLOYMENT,
                                       "delete_data": True}, progress=False)
            print("sandbox torn down after %.0f s" % (time.perf_counter() - started))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
