#!/usr/bin/env python3
"""Run dialog.deploy end to end on this machine: no cloud account, no StackStorm.

    ./dialog-local sandbox tier=small provider=aws [deployment=dialog] [boot_delay=0] [keep=true]
        [strict=true]

What is real: the deploy workflow (run by orquesta's conductor through workflow_runner.py), the
pack's actions, the AWS driver talking to moto's EC2 server over HTTP, SSH (a real sshd per host,
each in its own network namespace at its instance's private address, with its own /etc/dialog,
/opt/dialog and /var/lib/dialog), file uploads, health probes over the network, and the
datastore-backed secrets. What stands in: the container runtime (devtools/sandbox/fake_docker.py
answers each service's health check on its real port; no Dialog image runs) and the datastore
(in memory, shared by both runs, encrypting like StackStorm's). The pack config is loaded as
StackStorm loads it, with the emulator's credentials encrypted in the datastore. The hosts boot
when moto reports their instances, like VMs.

strict=true makes the AWS sandbox as strict as AWS (SandboxHosts options): hosts let in only
Debian's login user `admin` (passwordless sudo), this machine (the runner) reaches hosts only at
their public addresses, and the internet (the sandbox's mirror) only hosts with egress (a public
address and an internet gateway route, or a NAT gateway route).

The deploy runs twice: the second run must report no changes. Then the deployment is destroyed
and the sandbox torn down (unless keep=true, which waits for Ctrl-C first).
"""

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, os.path.join(ROOT, "actions")]

# pylint: disable=wrong-import-position
import local_runner  # noqa: E402
from aws_emulator import AwsEmulator  # noqa: E402
from lib.providers.aws import VPC_CIDR  # noqa: E402
from lib.tables import render_status  # noqa: E402
from sandbox.hosts import SandboxHosts, preflight  # noqa: E402
from sandbox.hypervisor import Hypervisor, use_public_elastic_ips  # noqa: E402
import sandbox_digitalocean  # noqa: E402

# Dialog's registries are gone, so its images are configuration; the stand-in runtime needs only
# names. A real profile names the images in the operator's registry.
SANDBOX_IMAGES = {"dialog_server": "sandbox.local/dialog-server:1", "web_app":
                  "sandbox.local/web-app:1", "dashboard": "sandbox.local/dashboard:1",
                  "push": "sandbox.local/push:1"}


SANDBOX_SECRETS = ("aws_access_key_id", "aws_secret_access_key")
SANDBOX_KEY_NAME = "dialog-sandbox"


def sandbox_values(emulator, hosts, datastore, strict=False):
    """The pack config an operator would write for the sandbox. The emulator's credentials go
    into the datastore, encrypted, and the profile references them, as the README says.
    Strict: no ssh_user, the pack's per-image default (Debian: admin) must be right; unless
    moto lacks the Debian images, then the profile names the user as an operator would."""
    # As an operator does once per account: the key pair new instances get (preflight checks
    # that ssh_key_names are registered).
    emulator.client().import_key_pair(KeyName=SANDBOX_KEY_NAME,
                                      PublicKeyMaterial=hosts.ssh_public_key.encode())
    user = {} if strict and not emulator.image else \
        {"ssh_user": hosts.login_user or "root"}
    profile = emulator.profile(**user, ssh_key_file=hosts.ssh_key_path,
                               ssh_key_names=[SANDBOX_KEY_NAME],
                               admin_networks=["%s/32" % hosts.gateway],
                               images=dict(SANDBOX_IMAGES))
    del profile["name"]  # the emulator's label for its own tests; the config schema refuses it
    for key in SANDBOX_SECRETS:
        datastore.set("sandbox_%s" % key, profile[key], encrypt=True)
        profile[key] = "{{ st2kv.system.sandbox_%s }}" % key
    return {"default_profile": "sandbox", "profiles": {"sandbox": profile}}


def load_pack_config(values, datastore, config_dir):
    """`values` written to config_dir/dialog.yaml, then registered and loaded as StackStorm
    does with /opt/stackstorm/configs/dialog.yaml (schema check, st2kv, secrets, defaults)."""
    path = os.path.join(config_dir, "dialog.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(values, handle, default_flow_style=False)
    return local_runner.load_config(config_path=path, datastore=datastore)


class Sandbox(object):
    """A running sandbox: the emulator, the hosts, the pack config and the datastore."""

    def __init__(self, emulator, hosts, values, datastore, workdir):
        self.emulator, self.hosts, self.values, self.datastore, self.workdir = (
            emulator, hosts, values, datastore, workdir)
        self.config = self.pack_config()

    def pack_config(self, **sections):
        """The pack config with `sections` added (e.g. autoscaling) as an action or the sensor
        gets it from StackStorm."""
        return load_pack_config(dict(self.values, **sections), self.datastore, self.workdir)

    def run(self, ref, params, progress=True):
        """(succeeded, result, workflow result or None) of one action run in the sandbox;
        a workflow's progress lines are printed, or passed to `progress` when callable."""
        return run(ref, params, self.config, self.datastore, progress)


@contextlib.contextmanager
def sandbox(boot_delay=0.0, provider="aws", strict=False, **delays):
    """Start the AWS emulator, the host network and the hypervisor; tear all down on exit.
    strict (AWS): login user admin, runner outside the VPC, internet only with egress."""
    workdir = tempfile.mkdtemp(prefix="dialog-sandbox-")
    try:
        if provider == "digitalocean":  # helper DO (issue 12): the fake DigitalOcean API
            with sandbox_digitalocean.digitalocean_cloud(workdir, boot_delay, **delays) as (
                    fake, hosts):
                datastore = local_runner.MemoryDatastore()
                yield Sandbox(fake, hosts, sandbox_digitalocean.sandbox_values(
                    fake, hosts, datastore, SANDBOX_IMAGES), datastore, workdir)
            return
        with AwsEmulator() as emulator, \
                SandboxHosts(os.path.join(workdir, "hosts"), cidr=VPC_CIDR,
                             boot_delay=boot_delay, login_user="admin" if strict else None,
                             runner_outside=strict, internet=strict) as hosts:
            use_public_elastic_ips()  # after the emulator loaded moto's EC2 models
            hypervisor = Hypervisor(emulator.client("ec2"), hosts)
            hypervisor.start()
            try:
                datastore = local_runner.MemoryDatastore()
                yield Sandbox(emulator, hosts, sandbox_values(emulator, hosts, datastore,
                                                              strict), datastore, workdir)
            finally:
                hypervisor.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(ref, params, config, datastore, progress=True):
    meta = local_runner.load_action_metadata(ref)
    action_params, _ = local_runner.prepare_parameters(meta, params)
    if meta["runner_type"] == "orquesta":
        if progress is True:
            progress = lambda line: print("  " + line, flush=True)  # noqa: E731
        result = local_runner.run_workflow(ref, action_params, config, datastore=datastore,
                                           progress=progress or None)
        return result.succeeded, result.result, result
    succeeded, result = local_runner.execute(meta, action_params, config, datastore=datastore)
    return succeeded, result, None


def summary(output):
    """The final table: every host with its roles and health, then the endpoints."""
    health = output.get("health") or []
    return render_status({"deployment": output.get("deployment"), "hosts": health,
                          "healthy": bool(health) and all(h["healthy"] for h in health),
                          "endpoints": output.get("endpoints")})


def changed_anything(output):
    bootstrapped = output.get("bootstrapped") or []
    return bool(output.get("changes")) or any(b.get("changed") for b in bootstrapped)


def main(argv):
    params = dict(arg.split("=", 1) for arg in argv if "=" in arg)
    keep = params.pop("keep", "false").lower() == "true"
    boot_delay = float(params.pop("boot_delay", "0"))
    strict = params.pop("strict", "false").lower() == "true"
    params.setdefault("tier", "small")
    params.setdefault("provider", "aws")
    if params["provider"] not in ("aws", "digitalocean"):
        print("the sandbox emulates provider=aws and provider=digitalocean only",
              file=sys.stderr)
        return 2
    problems = preflight()
    if problems:
        print("the sandbox cannot run here:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    deployment = params.setdefault("deployment", "dialog")
    meta = local_runner.load_action_metadata("dialog.deploy")
    typed = local_runner.cast_cli_parameters(["%s=%s" % kv for kv in params.items()],
                                             local_runner.parameter_schemas(meta))
    status = 1
    started = time.perf_counter()
    with sandbox(boot_delay, provider=params["provider"], strict=strict) as box:
        try:
            print("== sandbox: %s API at %s, hosts on %s via %s"
                  % (params["provider"], box.emulator.endpoint_url, box.hosts.network,
                     box.hosts.gateway), flush=True)
            print("== dialog.deploy %s (first run)" % " ".join(argv), flush=True)
            ok, result, _ = box.run("dialog.deploy", typed)
            output = result.get("output") or {}
            if not ok:
                print(json.dumps(result, indent=2, default=str))
                return 1
            print("\n" + summary(output))
            print("first admin's credentials: datastore key %s" % output.get("admin_credentials"))
            first = time.perf_counter() - started
            print("\n== dialog.deploy again: a healthy deployment must not change", flush=True)
            ok, result, _ = box.run("dialog.deploy", typed)
            output = result.get("output") or {}
            if not ok or changed_anything(output):
                print("second run changed something or failed:")
                print(json.dumps(result, indent=2, default=str))
                return 1
            print("second run: no changes (provider and every host unchanged)")
            print("\nfirst deploy %.1f s, second %.1f s" % (
                first, time.perf_counter() - started - first))
            if keep:
                print("\nkept running (ssh -i %s %s@<address>); Ctrl-C to tear down"
                      % (box.hosts.ssh_key_path, box.hosts.login_user or "root"))
                while True:
                    time.sleep(3600)
            print("\n== dialog.destroy", flush=True)
            ok, result, _ = box.run("dialog.destroy", {"deployment": deployment,
                                                       "confirm": deployment})
            status = 0 if ok else 1
        except KeyboardInterrupt:
            status = 130
    print("sandbox torn down")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
