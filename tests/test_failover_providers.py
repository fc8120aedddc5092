"""Failover primitives at the providers (dialog.move_address, dialog.fence, dialog.retire_host)
against the AWS emulator (moto, made as strict as EC2 about reassociation) and the fake
DigitalOcean API; the sandbox hypervisors following a moved address; the jump fallback."""

import socket
import threading
import time

import pytest
import requests

from fake_digitalocean import FakeDigitalOcean
from lib.cloud.failover import move_addresses
from lib.errors import InputError
from lib.hosts import ssh_path
from lib.planner import build_plan
from lib.providers import aws, digitalocean, static
from lib.removal_guard import check_removals
from sandbox.do_hypervisor import DoHypervisor
from sandbox.hosts import SandboxError
from sandbox.hypervisor import Hypervisor

ADMIN = ["203.0.113.0/24"]


def aws_driver(emu):
    return aws.Driver(emu.profile(), "us-east-1", wait_delay=0.01, wait_attempts=50)


def deployed(emu):
    driver = aws_driver(emu)
    plan = build_plan("small-failover", "aws", admin_networks=ADMIN)
    driver.reconcile(plan)
    return driver, plan, {h["name"]: h for h in driver.inventory("dialog")}


FLOATING = "dialog-proxy-vip-1"


def eip_holder(emu):
    ec2 = emu.client()
    address = [a for a in ec2.describe_addresses()["Addresses"]
               if {"Key": "dialog:floating", "Value": FLOATING} in a.get("Tags", [])][0]
    owner = {}
    for reservation in ec2.describe_instances()["Reservations"]:
        for instance in reservation["Instances"]:
            for nic in instance["NetworkInterfaces"]:
                owner[nic["NetworkInterfaceId"]] = instance["InstanceId"]
    return address["PublicIp"], owner.get(address.get("NetworkInterfaceId"))


# ---- AWS ----------------------------------------------------------------------------------

def test_emulator_refuses_reassociation_unless_allowed_as_ec2_does(emu):
    _, _, hosts = deployed(emu)
    ec2 = emu.client()
    address, _ = eip_holder(emu)
    with pytest.raises(Exception, match="AlreadyAssociated"):
        ec2.associate_address(PublicIp=address, InstanceId=hosts["dialog-proxy-2"]["provider_id"])


def test_move_address_puts_the_floating_eip_on_the_first_healthy_proxy(emu):
    driver, _, hosts = deployed(emu)
    address, holder = eip_holder(emu)
    assert holder == hosts["dialog-proxy-1"]["provider_id"]
    asked = []
    result = move_addresses(driver, "dialog", "dialog-proxy-1", list(hosts.values()),
                            lambda h: asked.append(h["name"]) or True)
    assert result["moved"] == [{"address": address, "from": "dialog-proxy-1",
                                "to": "dialog-proxy-2"}]
    assert asked == ["dialog-proxy-2"]
    assert eip_holder(emu) == (address, hosts["dialog-proxy-2"]["provider_id"])
    after = {h["name"]: h for h in driver.inventory("dialog")}
    assert address in after["dialog-proxy-2"]["public_addresses"]
    assert address not in after["dialog-proxy-1"]["public_addresses"]
    # Idempotent: a second run moves nothing and says where the address is.
    again = move_addresses(driver, "dialog", "dialog-proxy-1", list(after.values()),
                           lambda h: True)
    assert again["moved"] == [] and "dialog-proxy-2" in again["message"]
    # A deploy afterwards leaves the address on the proxy that holds it now.
    changes = driver.reconcile(build_plan("small-failover", "aws", admin_networks=ADMIN))
    assert [c for c in changes if c["kind"] == "address"] == []
    assert eip_holder(emu) == (address, hosts["dialog-proxy-2"]["provider_id"])


def test_move_address_skips_unreachable_proxies_and_names_them(emu):
    driver, _, by_name = deployed(emu)
    hosts = list(by_name.values())
    with pytest.raises(Exception, match="dialog-proxy-2 does not answer SSH"):
        move_addresses(driver, "dialog", "dialog-proxy-1", hosts, lambda h: False)
    with pytest.raises(InputError, match="to_host"):
        move_addresses(driver, "dialog", "dialog-proxy-1", hosts, lambda h: True,
                       to_host="dialog-web-1")


def test_fence_stops_the_instance_and_waits(emu):
    driver, _, hosts = deployed(emu)
    result = driver.fence("dialog", "dialog-postgres-1")
    assert result["instance"] == hosts["dialog-postgres-1"]["provider_id"]
    state = {h["name"]: h["state"] for h in driver.inventory("dialog")}
    assert state["dialog-postgres-1"] == "stopped" and state["dialog-postgres-2"] == "running"
    assert driver.fence("dialog", "dialog-postgres-1")["instance"] == result["instance"]


def test_retire_keeps_data_volumes_aside_and_the_next_deploy_recreates_the_host(emu):
    driver, plan, hosts = deployed(emu)
    name = "dialog-postgres-2"
    old = hosts[name]
    data = [v["id"] for v in old["volumes"] if v["purpose"] != "system"]
    assert data, "postgres hosts have a data volume"
    result = driver.retire("dialog", name)
    assert result["instance"] == old["provider_id"] and sorted(result["volumes_kept"]) == \
        sorted(data)
    volumes = emu.client().describe_volumes(VolumeIds=data)["Volumes"]
    assert all(v["State"] == "available" for v in volumes)
    assert all(any(t["Key"] == "dialog:retired" for t in v.get("Tags", [])) for v in volumes)
    inventory = driver.inventory("dialog")
    assert name not in {h["name"] for h in inventory}
    # The removal guard sees a host to create, not one to remove.
    assert check_removals(plan, inventory, {"tier": "small-failover"})["remove_hosts"] == []
    changes = driver.reconcile(build_plan("small-failover", "aws", admin_networks=ADMIN))
    assert [(c["action"], c["kind"], c["name"]) for c in changes if c["kind"] == "host"] == \
        [("create", "host", name)]
    new = {h["name"]: h for h in driver.inventory("dialog")}[name]
    assert new["index"] == 2 and new["provider_id"] != old["provider_id"]
    assert not {v["id"] for v in new["volumes"]} & set(data), "fresh volumes"
    assert len(emu.client().describe_volumes(VolumeIds=data)["Volumes"]) == len(data)


def test_static_fence_refuses_with_the_manual_instruction():
    driver = static.Driver({"name": "s", "provider": "static", "hosts": []}, None)
    with pytest.raises(InputError, match="out-of-band power"):
        driver.fence("dialog", "dialog-postgres-1")


# ---- the AWS hypervisor follows a moved Elastic IP ------------------------------------------

class StrictHosts:
    """SandboxHosts' rule: a public address belongs to one host at a time."""

    def __init__(self):
        self.hosts, self.public, self.egress = {}, {}, {}

    def boot(self, name, address, **_):
        self.hosts[name] = address

    def set_public_address(self, name, address):
        for other, public in self.public.items():
            if address is not None and public == address and other != name:
                raise SandboxError("public address %s is already host %s's" % (address, other))
        self.public[name] = address

    def set_egress(self, name, allowed):
        self.egress[name] = allowed


def test_hypervisor_follows_an_elastic_ip_to_an_instance_listed_before_its_holder(emu):
    ec2 = emu.client()
    vpc = ec2.create_vpc(CidrBlock="10.86.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.86.1.0/24")["Subnet"]["SubnetId"]

    def launch(name):
        return ec2.run_instances(ImageId=emu.image or "ami-0d12b00c0ffee1202", MinCount=1,
                                 MaxCount=1, SubnetId=subnet, TagSpecifications=[{
                                     "ResourceType": "instance", "Tags": [
                                         {"Key": "Name", "Value": name},
                                         {"Key": "dialog:deployment", "Value": "x"}]}]
                                 )["Instances"][0]["InstanceId"]
    standby, active = launch("standby"), launch("active")
    allocation = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(AllocationId=allocation["AllocationId"], InstanceId=active)
    hosts = StrictHosts()
    hypervisor = Hypervisor(ec2, hosts, name_wait=0)
    hypervisor.poll_once()
    assert hosts.public["active"] == allocation["PublicIp"]
    ec2.associate_address(AllocationId=allocation["AllocationId"], InstanceId=standby,
                          AllowReassociation=True)
    hypervisor.poll_once()
    assert hosts.public["standby"] == allocation["PublicIp"]
    assert hosts.public["active"] != allocation["PublicIp"]
    assert hypervisor.errors == []


# ---- DigitalOcean -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def do_server():
    with FakeDigitalOcean(action_delay=0.2) as running:
        yield running


@pytest.fixture(name="fake")
def fresh_fake(do_server):
    do_server.reset()
    return do_server


def do_deployed(fake):
    storage = {"endpoint": "https://s3.example.net", "bucket": "files", "access_key_id": "k",
               "secret_access_key": "s"}
    driver = digitalocean.Driver(fake.profile(object_storage=storage), "fra1",
                                 poll_interval=0.05)
    driver.reconcile(build_plan("small-failover", "digitalocean", admin_networks=ADMIN))
    time.sleep(0.1)
    return driver, {h["name"]: h for h in driver.inventory("dialog")}


def test_fake_do_assign_is_an_action_in_progress_then_completed(fake):
    driver, hosts = do_deployed(fake)
    address = list(fake.reserved_ips)[0]
    session = requests.Session()
    session.headers["Authorization"] = "Bearer %s" % fake.token
    target = hosts["dialog-proxy-2"]["provider_id"]
    reply = session.post(fake.url + "/v2/reserved_ips/%s/actions" % address,
                         json={"type": "assign", "droplet_id": int(target)}, timeout=10)
    assert reply.status_code == 201 and reply.json()["action"]["status"] == "in-progress"
    holder = fake.reserved_ips[address]["droplet"]["name"]
    assert holder == "dialog-proxy-1", "not moved before the action completes"
    again = session.post(fake.url + "/v2/reserved_ips/%s/actions" % address,
                         json={"type": "assign", "droplet_id": int(target)}, timeout=10)
    assert again.status_code == 422
    time.sleep(0.25)
    action = session.get(fake.url + "/v2/actions/%s" % reply.json()["action"]["id"],
                         timeout=10).json()["action"]
    assert action["status"] == "completed"
    assert fake.reserved_ips[address]["droplet"]["name"] == "dialog-proxy-2"
    session.close()
    assert driver


def test_do_move_and_fence_wait_for_their_actions(fake):
    driver, hosts = do_deployed(fake)
    address = list(fake.reserved_ips)[0]
    result = move_addresses(driver, "dialog", "dialog-proxy-1", list(hosts.values()),
                            lambda h: True)
    assert result["moved"] == [{"address": address, "from": "dialog-proxy-1",
                                "to": "dialog-proxy-2"}]
    assert fake.reserved_ips[address]["droplet"]["name"] == "dialog-proxy-2"
    # A deploy afterwards makes no second reserved IP for proxy-1.
    changes = driver.reconcile(build_plan("small-failover", "digitalocean",
                                          admin_networks=ADMIN))
    assert [c for c in changes if c["kind"] == "reserved_ip"] == []
    fenced = driver.fence("dialog", "dialog-postgres-1")
    assert fenced["method"].startswith("power_off")
    state = {h["name"]: h["state"] for h in driver.inventory("dialog")}
    assert state["dialog-postgres-1"] == "off"


class DoHosts(StrictHosts):
    ssh_public_key = None

    def __init__(self):
        super().__init__()
        self.killed = []

    def kill(self, name):
        self.killed.append(name)

    def ready(self, name):
        return name in self.hosts


def test_do_hypervisor_follows_a_reserved_ip_reassign_and_a_power_off(fake):
    driver, hosts = do_deployed(fake)
    sandbox = DoHosts()
    hypervisor = DoHypervisor(fake, sandbox, require_key=False)
    hypervisor.poll_once()
    address = list(fake.reserved_ips)[0]
    assert sandbox.public["dialog-proxy-1"] == address
    move_addresses(driver, "dialog", "dialog-proxy-1", list(hosts.values()), lambda h: True)
    hypervisor.poll_once()
    assert sandbox.public["dialog-proxy-2"] == address
    assert sandbox.public["dialog-proxy-1"] is None
    driver.fence("dialog", "dialog-proxy-1")
    hypervisor.poll_once()
    assert "dialog-proxy-1" in sandbox.killed and hypervisor.errors == []


# ---- jump fallback ------------------------------------------------------------------------

def sshd_stub():
    """A socket that says an SSH banner, like sshd does first."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
            conn.close()
    threading.Thread(target=serve, daemon=True).start()
    return server


def test_ordered_routes_put_a_dead_first_proxy_last(monkeypatch):
    server = sshd_stub()
    port = server.getsockname()[1]
    monkeypatch.setattr(ssh_path, "SSH_PORT", port)
    hosts = [{"name": "d-proxy-1", "roles": ["proxy"], "public_addresses": ["127.0.0.9"],
              "private_address": "10.0.0.1"},
             {"name": "d-proxy-2", "roles": ["proxy"], "public_addresses": ["127.0.0.1"],
              "private_address": "10.0.0.2"},
             {"name": "d-web-1", "roles": ["web"], "public_addresses": [],
              "private_address": "10.0.0.3"}]
    probe = ssh_path.JumpProbe(timeout=1.0)
    ways = ssh_path.ordered_routes(hosts[2], "jump", hosts, probe=probe)
    assert [(a, (j or {}).get("name")) for a, j in ways] == [
        ("10.0.0.3", "d-proxy-2"), ("10.0.0.3", "d-proxy-1")]
    assert ssh_path.route(hosts[2], "jump", hosts)[1]["name"] == "d-proxy-1"
    server.close()


def test_move_address_takes_a_running_proxy_no_ssh_path_leads_to(emu):
    """The standby proxy has no public address: with the lost proxy as the only jump, nothing
    can check it over SSH. Running at the provider is then enough (the address it receives
    makes it reachable); a proxy that answers is still preferred, one that refuses is not
    taken."""
    driver, _, by_name = deployed(emu)
    hosts = list(by_name.values())
    address, _ = eip_holder(emu)
    result = move_addresses(driver, "dialog", "dialog-proxy-1", hosts, lambda h: None)
    assert result["moved"] == [{"address": address, "from": "dialog-proxy-1",
                                "to": "dialog-proxy-2"}]
