#!/usr/bin/env python3
"""Run dialog.deploy end to end on this machine: no cloud account, no StackStorm.

    ./dialog-local sandbox tier=small provider=aws [deployment=dialog] [boot_delay=0]
        [docker_delay=0] [pull_delay=0] [keep=true]
    ./dialog-local sandbox tier=small-failover provider=digitalocean

What is real: the deploy workflow (run by orquesta's conductor through workflow_runner.py), the
pack's actions, the AWS driver talking to moto's EC2, S3 and IAM over HTTP (or the DigitalOcean
driver talking to the fake DigitalOcean API with pydo, moto's S3 standing in for Spaces), SSH (a
real sshd per host, each in its own network namespace, with its own users, /root, /etc/fstab
and /var/lib/dialog), sudo, block devices (loop devices at the provider's device paths), the
filesystems the deploy makes on them, file uploads, health probes over the network, the
datastore-backed secrets and the routes: a host reaches the sandbox's internet (its mirror of
Docker's apt repository and of the registries) only through a public address or a NAT gateway,
and this machine, the runner, reaches hosts only at their public addresses. What stands in: the
container runtime (devtools/sandbox/fake_docker.py, installed from the mirror by the deploy's
own Docker install; it answers each service's health check on its real port; no Dialog image
runs) and the datastore (in memory, encrypting like StackStorm's). The pack config is loaded as
StackStorm loads it, with every credential encrypted in the datastore.

The deploy runs twice: the second run must report no changes (no upload, no restart, no
format). Then the deployment is destroyed with delete_data=true and nothing may be left in the
provider's stand-in (unless keep=true, which waits for Ctrl-C first).
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import boto3
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, os.path.join(ROOT, "actions")]

# pylint: disable=wrong-import-position
import local_runner  # noqa: E402
from aws_emulator import AwsEmulator  # noqa: E402
from lib.providers.aws import VPC_CIDR  # noqa: E402
from lib.tables import format_table, render_status  # noqa: E402
from sandbox.hosts import SandboxHosts, preflight  # noqa: E402
from sandbox.hypervisor import Hypervisor, use_public_elastic_ips  # noqa: E402
from sandbox.mirror import Mirror  # noqa: E402
from sandbox.volumes import BlockDevices  # noqa: E402
import sandbox_digitalocean  # noqa: E402

SANDBOX_SECRETS = ("aws_access_key_id", "aws_secret_access_key")
SANDBOX_KEY_NAME = "dialog-sandbox"


def sandbox_values(emulator, hosts, datastore, images):
    """The pack config an operator would write for the sandbox. The emulator's credentials go
    into the datastore, encrypted, and the profile references them, as the README says. No
    ssh_user: the pack's per-image default (Debian: admin) must be right, unless moto lacks the
    Debian images; then the profile names the user as an operator would."""
    # As an operator does once per account: the key pair new instances get (preflight checks
    # that ssh_key_names are registered).
    ec2 = emulator.client()
    # moto's regions are this process's: an earlier sandbox's key pair may still be there.
    ec2.delete_key_pair(KeyName=SANDBOX_KEY_NAME)
    ec2.import_key_pair(KeyName=SANDBOX_KEY_NAME, PublicKeyMaterial=hosts.ssh_public_key.encode())
    user = {} if emulator.image is None else {"ssh_user": hosts.login_user or "root"}
    profile = emulator.profile(**user, ssh_key_file=hosts.ssh_key_path,
                               ssh_key_names=[SANDBOX_KEY_NAME],
                               admin_networks=["%s/32" % hosts.gateway],
                               images=dict(images))
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

    def __init__(self, emulator, hosts, values, datastore, workdir, devices):
        self.emulator, self.hosts, self.values, self.datastore, self.workdir = (
            emulator, hosts, values, datastore, workdir)
        self.devices = devices
        self.config = self.pack_config()

    def volumes(self):
        """Every attached data volume as seen from outside its host, on the block device
        itself: [{"host", "device", "fs", "files"}] (fs None: blank; files: the top-level
        entries of its filesystem, read with debugfs without mounting it)."""
        found = []
        for record in sorted(self.devices.attached.values(), key=lambda r: r["host"]):
            fs = subprocess.run(["blkid", "-p", "-o", "value", "-s", "TYPE", record["loop"]],
                                capture_output=True, text=True, check=False).stdout.strip()
            files = []
            if fs.startswith("ext"):
                listing = subprocess.run(["debugfs", "-R", "ls -p /", record["loop"]],
                                         capture_output=True, text=True, check=False).stdout
                files = [line.split("/")[5] for line in listing.splitlines()
                         if line.count("/") >= 6 and line.split("/")[5] not in (".", "..")]
            found.append({"host": record["host"], "device": record["name"],
                          "fs": fs or None, "files": files})
        return found

    def leftovers(self, deployment):
        """What the provider's stand-in still holds for the deployment: {kind: count}."""
        if isinstance(self.emulator, AwsEmulator):
            counts = self.emulator.resource_counts(deployment)
            counts["buckets"] = _deployment_buckets(self.emulator.client("s3"), deployment)
        else:
            counts = self.emulator.resource_counts()
            counts.pop("ssh_keys", None)  # the operator's key, registered by sandbox_values
            spaces = boto3.client("s3", endpoint_url=self.emulator.spaces_endpoint,
                                  region_name="us-east-1", aws_access_key_id="testing",
                                  aws_secret_access_key="testing")
            counts["buckets"] = _deployment_buckets(spaces, deployment)
        return {kind: count for kind, count in counts.items() if count}

    def pack_config(self, **sections):
        """The pack config with `sections` added (e.g. autoscaling) as an action or the sensor
        gets it from StackStorm."""
        return load_pack_config(dict(self.values, **sections), self.datastore, self.workdir)

    def run(self, ref, params, progress=True):
        """(succeeded, result, workflow result or None) of one action run in the sandbox;
        a workflow's progress lines are printed, or passed to `progress` when callable."""
        return run(ref, params, self.config, self.datastore, progress)


def _deployment_buckets(s3, deployment):
    """The deployment's files buckets (lib.cloud.object_storage.bucket_name: dialog-<name>-...);
    moto's S3 is this process's, so other sandboxes' buckets may be there too."""
    prefix = "dialog-%s-" % deployment
    return len([b for b in s3.list_buckets()["Buckets"] if b["Name"].startswith(prefix)])


def use_mirror(values, mirror, datastore):
    """Point the sandbox profile at the mirror: Docker from its apt repository, Dialog's
    images from its registry, with the registry password encrypted in the datastore."""
    fields, secrets = mirror.profile_values()
    for key, value in secrets.items():
        datastore.set(key, value, encrypt=True)
    values["profiles"]["sandbox"].update(fields)
    return values


@contextlib.contextmanager
def sandbox(boot_delay=0.0, provider="aws", docker_delay=0.0, pull_delay=0.0):
    """Start the provider's stand-in (moto's EC2 or the fake DigitalOcean API), the hosts, the
    hypervisor and the mirror; tear all down on exit.

    As strict as the clouds: AWS hosts let in only Debian's login user `admin` (passwordless
    sudo), DigitalOcean's only root; this machine (the runner) reaches hosts only at their
    public addresses; the internet (the mirror: Docker's apt repository and the registries)
    only hosts with egress; Docker is not installed; Dialog's registry wants a login; data
    volumes are blank block devices at the provider's device paths. docker_delay and
    pull_delay (seconds) model a real Docker install and a real image pull."""
    workdir = tempfile.mkdtemp(prefix="dialog-sandbox-")
    strict = {"runner_outside": True, "internet": True, "docker_preinstalled": False}
    delays = {"docker_delay": docker_delay, "pull_delay": pull_delay}
    try:
        if provider == "digitalocean":
            with sandbox_digitalocean.digitalocean_cloud(workdir, boot_delay, **strict) as (
                    fake, hosts, devices), Mirror(hosts.internet_address, **delays) as mirror:
                datastore = local_runner.MemoryDatastore()
                values = sandbox_digitalocean.sandbox_values(fake, hosts, datastore,
                                                             mirror.dialog_images)
                yield Sandbox(fake, hosts, use_mirror(values, mirror, datastore), datastore,
                              workdir, devices)
            return
        if provider != "aws":
            raise ValueError("provider: the sandbox emulates aws and digitalocean, not %r"
                             % (provider,))
        with AwsEmulator() as emulator, \
                SandboxHosts(os.path.join(workdir, "hosts"), cidr=VPC_CIDR,
                             boot_delay=boot_delay, login_user="admin", **strict) as hosts, \
                BlockDevices(os.path.join(workdir, "devices"), hosts) as devices, \
                Mirror(hosts.internet_address, **delays) as mirror:
            use_public_elastic_ips()  # after the emulator loaded moto's EC2 models
            hypervisor = Hypervisor(emulator.client("ec2"), hosts, block_devices=devices)
            hypervisor.start()
            try:
                datastore = local_runner.MemoryDatastore()
                values = sandbox_values(emulator, hosts, datastore, mirror.dialog_images)
                yield Sandbox(emulator, hosts, use_mirror(values, mirror, datastore),
                              datastore, workdir, devices)
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


def volume_table(volumes):
    """The data volumes as the block devices show them, outside the hosts."""
    return format_table(["HOST", "DEVICE (/dev/disk/by-id)", "FILESYSTEM", "FILES"],
                        [[v["host"], v["device"], v["fs"] or "-", ", ".join(v["files"]) or "-"]
                         for v in volumes])


# The top-level entries of a Postgres data directory, as the real server's initdb leaves them
# (the postgres image's PGDATA is the volume's root).
POSTGRES_DATA = frozenset(("PG_VERSION", "base", "global", "pg_wal"))


def holds_service_data(files):
    """Whether a data volume's top-level entries show its service's data: a real Postgres
    server's data directory, or the mark a stand-in container writes (sandbox-<name>.data)."""
    return POSTGRES_DATA <= set(files) or any(f.startswith("sandbox-") for f in files)


def volumes_hold_data(volumes, output):
    """Every host the plan gave a data volume has one, formatted, with its service's data on
    it (not on the root disk below the mount point)."""
    wanted = {h["name"] for h in output.get("hosts") or []
              if any(v.get("purpose") == "data" for v in h.get("volumes") or [])}
    seen = {v["host"] for v in volumes if v["fs"] and holds_service_data(v["files"])}
    return wanted <= seen


def changed_anything(output):
    bootstrapped = output.get("bootstrapped") or []
    return bool(output.get("changes")) or any(b.get("changed") for b in bootstrapped)


def main(argv):
    params = dict(arg.split("=", 1) for arg in argv if "=" in arg)
    keep = params.pop("keep", "false").lower() == "true"
    boot_delay = float(params.pop("boot_delay", "0"))
    delays = {key: float(params.pop(key, "0")) for key in ("docker_delay", "pull_delay")}
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
    with sandbox(boot_delay, provider=params["provider"], **delays) as box:
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
            volumes = box.volumes()
            print("\n" + volume_table(volumes))
            if not volumes_hold_data(volumes, output):
                print("a data volume is not formatted or holds no data")
                return 1
            print("\n== dialog.deploy again: a healthy deployment must not change", flush=True)
            ok, result, _ = box.run("dialog.deploy", typed)
            output = result.get("output") or {}
            if not ok or changed_anything(output):
                print("second run changed something or failed:")
                print(json.dumps(result, indent=2, default=str))
                return 1
            if box.volumes() != volumes:
                print("the second run changed a data volume")
                return 1
            print("second run: no changes (provider, every host and every volume unchanged)")
            print("\nfirst deploy %.1f s, second %.1f s" % (
                first, time.perf_counter() - started - first))
            if keep:
                print("\nkept running (ssh -i %s %s@<address>); Ctrl-C to tear down"
                      % (box.hosts.ssh_key_path, box.hosts.login_user or "root"))
                while True:
                    time.sleep(3600)
            print("\n== dialog.destroy", flush=True)
            ok, result, _ = box.run("dialog.destroy", {"deployment": deployment,
                                                       "confirm": deployment,
                                                       "delete_data": True})
            left = box.leftovers(deployment)
            if ok and left:
                print("destroy left: %s" % ", ".join("%d %s" % (n, kind)
                                                     for kind, n in sorted(left.items())))
            elif ok:
                print("destroy left nothing behind")
            else:
                print(json.dumps(result, indent=2, default=str))
            status = 0 if ok and not left else 1
        except KeyboardInterrupt:
            status = 130
    print("sandbox torn down")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
