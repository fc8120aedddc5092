"""Tests for the sandbox's cloud strictness: who logs in, who reaches what.

- login_user: only the image's user logs in (key only) and has passwordless sudo; root is
  refused, as on Debian's and Ubuntu's cloud images.
- runner_outside: this machine reaches hosts only at their public addresses (AWS: a 1:1 NAT);
  a private address is refused at once.
- internet: a host reaches the internet address only once given egress, and fails fast before.
- the AWS hypervisor derives public addresses and egress from moto's VPC, as AWS routes.
- the DigitalOcean layout: the public address on eth0, the VPC address on eth1.

Real network namespaces, sshd, sudo and nftables; needs root (CI runs as root).
"""

import ipaddress
import os
import socket
import subprocess
import sys
import threading
import time

import boto3
import paramiko
import pytest
import requests
from moto.server import ThreadedMotoServer

from sandbox import network
from sandbox.hosts import (SandboxError, SandboxHosts, machine_networks,
                           package_index_names, preflight, resolve_addresses,
                           resolver_nameservers, sweep_stale)
from sandbox.hypervisor import Hypervisor, use_public_elastic_ips

pytestmark = pytest.mark.xdist_group("netns")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CIDR = "10.83.0.0/24"
PRIVATE = {"a": "10.83.0.11", "b": "10.83.0.12"}
PUBLIC_A = "54.214.7.8"
DO_PUBLIC, DO_PRIVATE = "198.18.0.5", "10.83.0.21"
KNOB = {"FAKE_CASSANDRA_JOIN_SECONDS": "7"}


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    problems = preflight()
    if problems:
        pytest.fail("sandbox tests need root and `ip netns`: " + "; ".join(problems),
                    pytrace=False)
    hosts = SandboxHosts(tmp_path_factory.mktemp("strict"), cidr=CIDR, env=KNOB,
                         login_user="admin", runner_outside=True, internet=True)
    try:
        for name, address in PRIVATE.items():
            hosts.boot(name, address)
        hosts.boot("do", DO_PRIVATE, public_address=DO_PUBLIC, public_on_interface=True,
                   login_user="root")
        for name in list(PRIVATE) + ["do"]:
            hosts.wait_ready(name)
        hosts.set_public_address("a", PUBLIC_A)
        yield hosts
    finally:
        hosts.close()


@pytest.fixture(scope="module")
def internet_server(strict):
    """A TCP server at the sandbox's internet address: answers "hi" to each connection."""
    server = socket.create_server((strict.internet_address, 8081))
    server.settimeout(0.2)
    halt = threading.Event()

    def serve():
        while not halt.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"hi")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield strict.internet_address, 8081
    halt.set()
    thread.join()
    server.close()


def ssh(hosts, address, user):
    client = paramiko.SSHClient()
    client.load_host_keys(hosts.known_hosts_path)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(address, username=user, timeout=10, **hosts.connect_kwargs)
    return client


def run(client, command):
    _, stdout, stderr = client.exec_command(command, timeout=20)
    status = stdout.channel.recv_exit_status()
    return status, stdout.read().decode(), stderr.read().decode()


def connect_seconds(address, port=22, timeout=5):
    """(error class name or None, seconds) of reaching an sshd from this machine. Reading the
    banner matters: a transparent proxy on the way out may accept any TCP connection."""
    started = time.monotonic()
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except OSError as exc:
        return type(exc).__name__, time.monotonic() - started
    with sock:
        sock.settimeout(1)
        try:
            banner = sock.recv(4)
        except OSError:
            banner = b""
        if banner != b"SSH-":
            return "NoBanner", time.monotonic() - started
    return None, time.monotonic() - started


def test_only_the_image_user_logs_in_and_sudo_needs_no_password(strict):
    with pytest.raises(paramiko.AuthenticationException):
        ssh(strict, PUBLIC_A, "root").close()
    client = ssh(strict, PUBLIC_A, "admin")
    try:
        assert run(client, "id -un; hostname; echo $HOME") == (0, "admin\na\n/home/admin\n", "")
        assert run(client, "sudo -n id -u") == (0, "0\n", "")
        # Privileged paths are root's: without sudo the user cannot write them.
        status, _, err = run(client, "touch /opt/dialog/x")
        assert status != 0 and "Permission denied" in err
        assert run(client, "sudo -n touch /opt/dialog/x && ls /opt/dialog")[1] == "x\n"
        # sudo resets the environment but keeps the sandbox's knobs and /usr/local/bin first.
        status, out, _ = run(client, "sudo -n sh -c 'echo $FAKE_CASSANDRA_JOIN_SECONDS $PATH'")
        assert status == 0 and out.split()[0] == "7"
        assert out.split()[1].split(":").index("/usr/local/bin") <= 1
        # Each host has its own accounts, root home and /tmp.
        run(client, "sudo -n sh -c 'echo a > /root/mark' && echo a > /tmp/mark")
    finally:
        client.close()


def test_runner_reaches_hosts_only_at_public_addresses(strict):
    error, seconds = connect_seconds(PRIVATE["a"])
    assert error == "ConnectionRefusedError" and seconds < 1
    assert connect_seconds(PUBLIC_A) == (None, pytest.approx(0, abs=1))
    assert strict.info("a").public_address == PUBLIC_A
    strict.set_public_address("b", "54.214.7.9")
    try:
        client = ssh(strict, "54.214.7.9", "admin")
        try:
            assert run(client, "hostname; test -e /root/mark || echo own-root; "
                               "test -e /tmp/mark || echo own-tmp")[1] == "b\nown-root\nown-tmp\n"
            # Inside the VPC, hosts reach each other's private addresses.
            status, out, _ = run(client, "python3 -c \"import socket; print(socket.create_"
                                         "connection(('%s', 22), timeout=3).recv(4))\""
                                 % PRIVATE["a"])
            assert (status, out) == (0, "b'SSH-'\n")
        finally:
            client.close()
    finally:
        strict.set_public_address("b", None)
    # The address reaches nobody now, and stays in the sandbox: no answer, a timeout, as toward
    # a cloud address with no instance (not the real 54.214.7.9 through the default route).
    assert connect_seconds("54.214.7.9", timeout=2)[0] == "TimeoutError"
    with pytest.raises(SandboxError, match="cannot be a public address"):
        strict.set_public_address("b", "127.5.6.7")


def test_a_killed_hosts_public_address_times_out_inside_the_sandbox(strict):
    """The chaos run kills proxy-1 with its Elastic IP still associated: the sensor's SSH and
    the client's HTTPS to that address must find nobody (a timeout), as on AWS, until the
    address moves; they went out to the internet instead (an SSH connection with no banner,
    HTTP 404 from the machine's egress proxy)."""
    strict.boot("c", "10.83.0.13")
    strict.wait_ready("c")
    strict.set_public_address("c", "54.214.7.10")
    assert connect_seconds("54.214.7.10") == (None, pytest.approx(0, abs=1))
    strict.kill("c")
    assert connect_seconds("54.214.7.10", timeout=2)[0] == "TimeoutError"
    # Moved to a live host, it answers again.
    strict.set_public_address("c", None)
    strict.set_public_address("b", "54.214.7.10")
    try:
        assert connect_seconds("54.214.7.10") == (None, pytest.approx(0, abs=1))
    finally:
        strict.set_public_address("b", None)


def test_internet_needs_egress_and_fails_fast_without(strict, internet_server):
    address, port = internet_server
    # Outside every VPC, and not an address this machine needs: its package indexes (an egress
    # proxy may have a documentation address too), its DNS server, its own networks.
    assert not any(ipaddress.ip_address(address) in ipaddress.ip_network(net) for net in
                   ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", CIDR))
    needed = resolve_addresses(package_index_names())
    assert all(address not in found for found in needed.values()), needed
    assert address not in resolver_nameservers()
    assert ipaddress.ip_address(address) not in ipaddress.ip_network(strict.public_network)
    # On this machine it is only on the sandbox's own link: no network of the machine has it.
    on = [line for net, _, line in machine_networks() if ipaddress.ip_address(address) in net]
    assert on and all(strict.internet_link in line for line in on), on
    probe = ("python3 -c \"import socket, time; t = time.monotonic()\n"
             "try:\n  print(socket.create_connection(('%s', %d), timeout=10).recv(2).decode())\n"
             "except OSError as e:\n  print(type(e).__name__, round(time.monotonic() - t))\""
             % (address, port))
    client = ssh(strict, PUBLIC_A, "admin")
    try:
        assert run(client, probe)[1] == "ConnectionRefusedError 0\n"
        strict.set_egress("a", True)
        assert run(client, probe)[1] == "hi\n"
        strict.set_egress("a", False)
        assert run(client, probe)[1] == "ConnectionRefusedError 0\n"
    finally:
        client.close()
    # A DigitalOcean host reaches it through its own public interface.
    client = ssh(strict, DO_PUBLIC, "root")
    try:
        assert run(client, probe)[1] == "hi\n"
    finally:
        client.close()


def test_digitalocean_layout_public_on_eth0_vpc_on_eth1(strict):
    assert connect_seconds(DO_PRIVATE)[0] == "ConnectionRefusedError"
    client = ssh(strict, DO_PUBLIC, "root")
    try:
        status, out, _ = run(client, "ip -4 -o addr show dev eth0; ip -4 -o addr show dev eth1;"
                                     " id -un")
        assert status == 0
        eth0, eth1, user = out.splitlines()
        assert DO_PUBLIC + "/16" in eth0 and DO_PRIVATE + "/24" in eth1 and user == "root"
    finally:
        client.close()
    with pytest.raises(SandboxError, match="not in the public network"):
        strict.boot("bad", "10.83.0.30", public_address="54.1.2.3", public_on_interface=True)


class RecordingHosts:
    """Stands in for SandboxHosts: records what the hypervisor asks of it."""

    def __init__(self):
        self.hosts, self.public, self.egress = {}, {}, {}

    def boot(self, name, address, **_):
        self.hosts[name] = address

    def set_public_address(self, name, address):
        self.public[name] = address

    def set_egress(self, name, allowed):
        self.egress[name] = allowed


def test_hypervisor_derives_public_addresses_and_egress_as_aws_routes(monkeypatch):
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    use_public_elastic_ips()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    # moto's backends are this process's: start from an empty region, whatever ran before.
    requests.post("http://%s:%d/moto-api/reset" % server.get_host_and_port(), timeout=10)
    try:
        ec2 = boto3.client("ec2", endpoint_url="http://%s:%d" % server.get_host_and_port(),
                           region_name="us-east-1", aws_access_key_id="testing",
                           aws_secret_access_key="testing")
        vpc = ec2.create_vpc(CidrBlock="10.84.0.0/16")["Vpc"]["VpcId"]
        subnets = {name: ec2.create_subnet(VpcId=vpc, CidrBlock=cidr)["Subnet"]["SubnetId"]
                   for name, cidr in (("public", "10.84.1.0/24"), ("private", "10.84.2.0/24"),
                                      ("natted", "10.84.3.0/24"))}

        def launch(name, subnet):
            spec = [{"ResourceType": "instance", "Tags": [
                {"Key": "Name", "Value": name}, {"Key": "dialog:deployment", "Value": "x"}]}]
            return ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
                                     SubnetId=subnets[subnet],
                                     TagSpecifications=spec)["Instances"][0]["InstanceId"]

        def eip(instance):
            allocation = ec2.allocate_address(Domain="vpc")
            ec2.associate_address(AllocationId=allocation["AllocationId"], InstanceId=instance)
            return allocation["PublicIp"]

        web = launch("web", "public")
        launch("db", "public")
        lone = launch("lone", "private")
        launch("app", "natted")
        lone_ip = eip(lone)
        web_ip = eip(web)
        hosts = RecordingHosts()
        hypervisor = Hypervisor(ec2, hosts, name_wait=0)
        hypervisor.poll_once()
        # No internet gateway yet: nobody has egress, public addresses are translated anyway.
        assert hosts.public == {"web": web_ip, "lone": lone_ip}
        assert not web_ip.startswith("127.")
        assert hosts.egress == {}

        igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
        ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
        table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
        ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
        ec2.associate_route_table(RouteTableId=table, SubnetId=subnets["public"])
        hypervisor.poll_once()
        # The route serves the public subnet only, and only instances with a public address.
        assert hosts.egress == {"web": True}

        nat = ec2.create_nat_gateway(SubnetId=subnets["public"],
                                     AllocationId=ec2.allocate_address(Domain="vpc")[
                                         "AllocationId"])["NatGateway"]["NatGatewayId"]
        natted = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
        ec2.create_route(RouteTableId=natted, DestinationCidrBlock="0.0.0.0/0",
                         NatGatewayId=nat)
        ec2.associate_route_table(RouteTableId=natted, SubnetId=subnets["natted"])
        # The main route table (subnets without an association) gets the internet gateway.
        main = ec2.describe_route_tables(Filters=[
            {"Name": "vpc-id", "Values": [vpc]},
            {"Name": "association.main", "Values": ["true"]}])["RouteTables"][0]["RouteTableId"]
        ec2.create_route(RouteTableId=main, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
        hypervisor.poll_once()
        assert hosts.egress == {"web": True, "app": True, "lone": True}
        assert "db" not in hosts.egress  # public subnet, but no public address

        ec2.disassociate_address(PublicIp=web_ip)
        hypervisor.poll_once()
        assert hosts.public["web"] is None and hosts.egress["web"] is False
        assert hypervisor.errors == [] and set(hosts.hosts) == {"web", "db", "lone", "app"}
    finally:
        # moto's backends are this process's: later tests must not see these instances.
        requests.post("http://%s:%d/moto-api/reset" % server.get_host_and_port(), timeout=10)
        server.stop()


def test_sweep_removes_a_dead_owners_firewall(tmp_path):
    script = ("import sys; sys.path.insert(0, %r)\n"
              "from sandbox.hosts import SandboxHosts\n"
              "hosts = SandboxHosts(%r, cidr='10.85.0.0/24', runner_outside=True)\n"
              "print(hosts.token, flush=True)\n"
              "sys.stdin.read()\n" % (os.path.join(ROOT, "devtools"), str(tmp_path)))
    owner = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        token = owner.stdout.readline().strip()
        assert token, "the owner process did not start"
        assert "dsb" + token in network.list_tables()
    finally:
        owner.kill()
        owner.wait()
        owner.stdin.close()
        owner.stdout.close()
    sweep_stale()
    assert "dsb" + token not in network.list_tables()
    addresses = subprocess.run(["ip", "-o", "addr"], check=True, capture_output=True,
                               text=True).stdout
    assert token not in addresses
