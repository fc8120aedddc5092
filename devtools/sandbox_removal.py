#!/usr/bin/env python3
"""The removal guard in the sandbox: a deploy never removes a Cassandra node on its own.

    flock /tmp/dialog-sandbox.lock .venv/bin/python devtools/sandbox_removal.py [provider=aws]

Deploys production with 4 Cassandra nodes (the smallest tier with a ring of more than three),
then sends `dialog.deploy ... cassandra_nodes=3` and `tier=small`, both of which must fail
naming the field, with the provider's inventory unchanged (no instance terminated, no
mutation), then destroys the deployment. Real: the deploy workflow, the pack's actions, the
driver against moto's EC2 (or the fake DigitalOcean API), SSH to each sandbox host (see
sandbox_deploy.py).
"""

import json
import sys
import time

from sandbox_deploy import local_runner, preflight, sandbox


def host_names(box):
    ok, result, _ = box.run("dialog.inventory", {"deployment": "dialog"})
    assert ok, result
    hosts = result.get("hosts") if isinstance(result, dict) else result
    return sorted((h["name"], h["provider_id"]) for h in hosts)


def main(argv):
    params = dict(arg.split("=", 1) for arg in argv if "=" in arg)
    provider = params.get("provider", "aws")
    problems = preflight()
    if problems:
        print("the sandbox cannot run here:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    meta = local_runner.load_action_metadata("dialog.deploy")
    schemas = local_runner.parameter_schemas(meta)

    def typed(*args):
        return local_runner.cast_cli_parameters(list(args), schemas)

    status = 1
    started = time.perf_counter()
    with sandbox(provider=provider) as box:
        base = ["tier=production", "provider=%s" % provider]
        print("== dialog.deploy tier=production cassandra_nodes=4", flush=True)
        ok, result, _ = box.run("dialog.deploy", typed(*base, "cassandra_nodes=4"),
                                progress=False)
        if not ok:
            print(json.dumps(result, indent=2, default=str))
            return 1
        before = host_names(box)
        print("deployed in %.0f s: %d hosts, %s" % (
            time.perf_counter() - started, len(before),
            ", ".join(n for n, _ in before if "cassandra" in n)))
        try:
            for extra in (["cassandra_nodes=3"], ["tier=small"]):
                args = base[1:] + (extra if extra[0].startswith("tier=") else
                                   ["tier=production"] + extra)
                print("\n== dialog.deploy %s" % " ".join(args), flush=True)
                ok, result, _ = box.run("dialog.deploy", typed(*args), progress=False)
                failure = (result.get("output") or {}).get("failure")
                print("status: %s\nfailure: %s" % ("succeeded" if ok else "failed", failure))
                after = host_names(box)
                print("inventory unchanged: %s (%d hosts)" % (after == before, len(after)))
                if ok or after != before:
                    return 1
            status = 0
        finally:
            print("\n== dialog.destroy", flush=True)
            box.run("dialog.destroy", {"deployment": "dialog", "confirm": "dialog",
                                       "delete_data": True}, progress=False)
    print("sandbox torn down after %.0f s" % (time.perf_counter() - started))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
