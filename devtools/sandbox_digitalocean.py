"""The DigitalOcean side of the sandbox (sandbox_deploy.sandbox(provider="digitalocean")).

    with digitalocean_cloud(workdir, boot_delay=0, droplet_delay=1.0) as (fake, hosts, devices):
        values = sandbox_values(fake, hosts, datastore, images)

The fake DigitalOcean API (devtools/fake_digitalocean.py) serves on 127.0.0.1; the pack's
DigitalOcean driver reaches it through the profile's endpoint_url with the real pydo client.
Droplets stay 'new' for `droplet_delay` seconds, then turn active, and the DO hypervisor boots a
sandbox host for each: its public address (from the sandbox's public network) on eth0, its VPC
address on eth1, root logging in with the SSH key registered in the fake under KEY_NAME, the
profile's ssh_key_names. Volumes attached through the API appear in the host as
/dev/disk/by-id/scsi-0DO_Volume_<name> (loop devices, devtools/sandbox/volumes.py).
"""

import contextlib
import os
import sys

from aws_emulator import AwsEmulator
from fake_digitalocean import FakeDigitalOcean
from sandbox.do_hypervisor import DoHypervisor
from sandbox.hosts import PUBLIC_CIDR, SandboxHosts
from sandbox.volumes import BlockDevices

# The range DigitalOcean would generate for the deployment's VPC (a /20 of 10.0.0.0/8); the
# fake gives it to the first VPC created without one, and the hosts' VPC bridge is on it.
VPC_CIDR = "10.110.0.0/20"
KEY_NAME = "dialog-sandbox"
SECRETS = ("digitalocean_token", "spaces_secret_access_key")


@contextlib.contextmanager
def digitalocean_cloud(workdir, boot_delay=0.0, droplet_delay=1.0, **host_options):
    """Start the fake API, the hosts (SandboxHosts options in host_options) and the DO
    hypervisor with its block devices; yield (fake, hosts, devices); tear all down on exit."""
    public_cidr = host_options.pop("public_cidr", PUBLIC_CIDR)
    # moto's S3 stands in for Spaces (the files bucket of multi-server tiers).
    with AwsEmulator() as spaces, \
            FakeDigitalOcean(boot_delay=droplet_delay, public_network=public_cidr,
                             vpc_ip_range=VPC_CIDR) as fake, \
            SandboxHosts(os.path.join(workdir, "hosts"), cidr=VPC_CIDR, boot_delay=boot_delay,
                         public_cidr=public_cidr, **host_options) as hosts, \
            BlockDevices(os.path.join(workdir, "devices"), hosts) as devices:
        fake.spaces_endpoint = spaces.endpoint_url
        hypervisor = DoHypervisor(fake, hosts, devices=devices)
        hypervisor.start()
        try:
            yield fake, hosts, devices
        finally:
            hypervisor.stop()
            left = {kind: n for kind, n in fake.resource_counts().items() if n}
            if left:
                # After dialog.destroy nothing may remain (tags included: the pack made them).
                print("left in the fake DigitalOcean API: %s" % ", ".join(
                    "%d %s" % (n, kind) for kind, n in sorted(left.items())), file=sys.stderr)


def sandbox_values(fake, hosts, datastore, images):
    """The pack config an operator would write for DigitalOcean: the sandbox's public key
    registered with the account (as `doctl compute ssh-key import` would) and named in
    ssh_key_names, the token encrypted in the datastore and referenced from the profile."""
    fake.add_ssh_key(KEY_NAME, hosts.ssh_public_key)
    # DigitalOcean's cloud firewalls see the runner at its public address: this machine's
    # address on the public bridge.
    profile = fake.profile(ssh_key_file=hosts.ssh_key_path, ssh_key_names=[KEY_NAME],
                           admin_networks=["%s/32" % hosts.public_gateway,
                                           "%s/32" % hosts.gateway],
                           images=dict(images))
    del profile["name"]  # the fake's label for its own tests; the config schema refuses it
    for key in SECRETS:
        datastore.set("sandbox_%s" % key, profile[key], encrypt=True)
        profile[key] = "{{ st2kv.system.sandbox_%s }}" % key
    return {"default_profile": "sandbox", "profiles": {"sandbox": profile}}
