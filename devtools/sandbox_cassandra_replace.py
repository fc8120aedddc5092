#!/usr/bin/env python3
"""Replace a dead Cassandra node in the sandbox, the way dialog.heal_cassandra does.

    flock /tmp/dialog-sandbox.lock .venv/bin/python devtools/sandbox_cassandra_replace.py
        [index=3] [keep_flag_check=true]

Deploys small-failover (3 Cassandra nodes) on the AWS stand-in, terminates cassandra-<index>'s
instance at the emulator, waits until the first surviving node reads it DN, runs
dialog.retire_host (its data volume set aside) and then `dialog.deploy replacing={host: old
address}`; prints `nodetool status` (the stand-in's, read through the node's own control
socket, formatted by the fake docker's nodetool) before and after: 3 UN, the old address
gone. Then a deploy without `replacing` must drop JVM_EXTRA_OPTS and keep the ring whole. Real:
the deploy workflow, the pack's actions, moto's EC2, SSH to each sandbox host (see
sandbox_deploy.py); the Cassandra ring is the fake docker's stand-in (fake_docker.Ring).
"""

import contextlib
import glob
import io
import json
import os
import sys
import tempfile
import time

from sandbox_deploy import local_runner, preflight, sandbox
from chaos.faults import instance_of
from sandbox import fake_docker

DEPLOYMENT = "dialog"


def inventory(box):
    ok, result, _ = box.run("dialog.inventory", {"deployment": DEPLOYMENT})
    assert ok, result
    hosts = result.get("hosts") if isinstance(result, dict) else result
    return {h["name"]: h for h in hosts}


def nodetool_status(box, name):
    """`nodetool status` as node `name` answers it (its container's control socket)."""
    state = os.path.join(box.hosts.host_root(name), "var/lib/dialog/fake-docker")
    sockets = glob.glob(os.path.join(state, "containers", "*cassandra*.sock"))
    if not sockets:
        return None
    # The socket's full path is longer than AF_UNIX allows (108 bytes): a short link to it.
    link = os.path.join(tempfile.gettempdir(), "ring-%s" % name)
    with contextlib.suppress(OSError):
        os.unlink(link)
    os.symlink(state, link)
    fake_docker.STATE_DIR = link
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
            code = fake_docker.nodetool({"name": os.path.basename(sockets[0])[:-5]}, "status")
    except (OSError, ValueError):
        return None
    finally:
        os.unlink(link)
    return printed.getvalue() if code == 0 else None


def rows(text):
    return {line.split()[1]: line.split()[0] for line in (text or "").splitlines()
            if line[:2] in ("UN", "UJ", "DN", "UL", "DJ", "UM")}


def wait_ring(box, name, check, what, timeout=180):
    deadline = time.monotonic() + timeout
    while True:
        text = nodetool_status(box, name)
        if text and check(rows(text)):
            return text
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for %s; last:\n%s" % (what, text))
        time.sleep(1)


def compose_env(box, name):
    paths = glob.glob(os.path.join(box.hosts.host_root(name), "opt/dialog/docker-compose.yml"))
    with open(paths[0], encoding="utf-8") as handle:
        return [line.strip() for line in handle if "JVM_EXTRA_OPTS" in line
                or "CASSANDRA_SEEDS" in line]


def main(argv):
    params = dict(arg.split("=", 1) for arg in argv if "=" in arg)
    index = int(params.get("index", "3"))
    problems = preflight()
    if problems:
        print("the sandbox cannot run here:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    schemas = local_runner.parameter_schemas(local_runner.load_action_metadata("dialog.deploy"))

    def deploy(box, *args):
        started = time.perf_counter()
        ok, result, _ = box.run("dialog.deploy", local_runner.cast_cli_parameters(
            ["tier=small-failover", "provider=aws"] + list(args), schemas), progress=False)
        print("   %s in %.0f s" % ("succeeded" if ok else "FAILED", time.perf_counter() - started))
        if not ok:
            output = result.get("output") or result
            print(output.get("failure") or json.dumps(output, default=str)[:3000])
            raise SystemExit(1)
        return result

    with sandbox() as box:
        print("== dialog.deploy tier=small-failover", flush=True)
        deploy(box)
        hosts = inventory(box)
        victim = "%s-cassandra-%d" % (DEPLOYMENT, index)
        watcher = next(n for n in sorted(hosts) if "cassandra" in hosts[n]["roles"]
                       and n != victim)
        old = hosts[victim]["private_address"]
        print("\n== nodetool status on %s\n%s" % (watcher, wait_ring(
            box, watcher, lambda r: len(r) == 3 and set(r.values()) == {"UN"}, "3 UN")))
        ec2 = box.emulator.client("ec2")
        ec2.terminate_instances(InstanceIds=[instance_of(ec2, DEPLOYMENT, victim)])
        print("== %s (%s) terminated at the emulator" % (victim, old), flush=True)
        print(wait_ring(box, watcher, lambda r: r.get(old) == "DN", old + " DN"))
        print("== dialog.retire_host %s" % victim, flush=True)
        ok, result, _ = box.run("dialog.retire_host", {"deployment": DEPLOYMENT,
                                                       "host": victim})
        print("   %s: %s" % ("succeeded" if ok else "FAILED", json.dumps(result, default=str)))
        if not ok:
            return 1
        replacing = json.dumps({victim: old})
        print("== dialog.deploy tier=small-failover replacing=%s" % replacing, flush=True)
        deploy(box, "replacing=%s" % replacing)
        new = inventory(box)[victim]["private_address"]
        print("   %s is back at %s; its compose file: %s"
              % (victim, new, compose_env(box, victim)))
        final = wait_ring(box, watcher, lambda r: len(r) == 3 and set(r.values()) == {"UN"}
                          and (new == old or old not in r), "3 UN, %s gone" % old)
        print("== nodetool status on %s\n%s" % (watcher, final))
        status = 0 if (old not in rows(final) or new == old) else 1
        if params.get("keep_flag_check", "true") == "true":
            print("== dialog.deploy tier=small-failover (no replacing)", flush=True)
            deploy(box)
            env = compose_env(box, victim)
            print("   %s's compose file: %s" % (victim, env))
            after = wait_ring(box, watcher, lambda r: set(r.values()) == {"UN"} and len(r) == 3,
                              "3 UN after the flag was dropped")
            print(after)
            status = status or int(any("JVM_EXTRA_OPTS" in line for line in env))
    print("result: %s" % ("ok" if status == 0 else "FAILED"))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
