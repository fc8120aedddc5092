"""Tests for devtools/sandbox: sandbox hosts, the fake docker on them and the hypervisor.

Everything here is real except the container runtime: network namespaces on a bridge, sshd
from Debian's openssh-server, fabric/paramiko over SSH, HTTP and STUN over the bridge, and
moto's server over HTTP on 127.0.0.1. Needs root and `ip netns` (CI runs as root); without
them every test fails with the reason, none is skipped. Traffic goes only to loopback and to
the 10.80.0.0/16 and 10.81.0.0/24 hosts these tests create.
"""

import io
import json
import os
import socket
import struct
import subprocess
import sys
import time

import boto3
import fabric
import paramiko
import pytest
import requests
import yaml
from moto.server import ThreadedMotoServer

from sandbox.hosts import SandboxError, SandboxHosts, preflight, sweep_stale
from sandbox.hypervisor import Hypervisor

# Sandbox hosts: one sandbox per machine, so under pytest-xdist these run in one group, on
# one worker, one test after another (./dialog-local test runs -n 2 --dist loadgroup).
pytestmark = pytest.mark.xdist_group("netns")

CIDR = "10.80.0.0/16"
HOSTS = {"h1": "10.80.0.11", "h2": "10.80.0.12", "h3": "10.80.0.13"}
COMPOSE = "/opt/dialog/docker-compose.yml"
STUN_MAGIC = 0x2112A442

# Images the sandbox has no real server for (nginx and coturn/coturn run Debian's own, see
# devtools/sandbox/real_servers): these containers are the fake docker's HTTP/STUN stand-ins.
WEB_COMPOSE = """
services:
  web:
    image: registry.example/web:1.25
    ports: ["8080:80"]
    environment:
      GREETING: "hello"
    healthcheck:
      test: ["CMD", "curl", "-f", "http://localhost/"]
      interval: 5s
  turn:
    image: registry.example/turn:4.6
    ports: ["3478:3478/udp"]
    depends_on: [web]
"""

CASSANDRA_COMPOSE = """
services:
  cassandra:
    image: cassandra:4.1
    ports: ["7000:7000", "9042:9042"]
    environment:
      CASSANDRA_CLUSTER_NAME: dialog
      CASSANDRA_SEEDS: "10.80.0.11,10.80.0.12"
      CASSANDRA_BROADCAST_ADDRESS: "{address}"
      FAKE_CASSANDRA_JOIN_SECONDS: "{join}"
"""


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    problems = preflight()
    if problems:
        pytest.fail("sandbox tests need root and `ip netns` (CI runs as root): "
                    + "; ".join(problems), pytrace=False)
    hosts = SandboxHosts(tmp_path_factory.mktemp("sandbox"), cidr=CIDR)
    try:
        for name, address in HOSTS.items():
            hosts.boot(name, address)
        for name in HOSTS:
            hosts.wait_ready(name)
        yield hosts
    finally:
        hosts.close()


@pytest.fixture
def connect(sandbox):
    """connect(address) -> a fabric Connection checking the host key against known_hosts."""
    opened = []

    def _connect(address):
        conn = fabric.Connection(address, user="root", connect_kwargs=sandbox.connect_kwargs,
                                 connect_timeout=10)
        conn.client.load_host_keys(sandbox.known_hosts_path)
        conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        conn.close()


def run(conn, command):
    return conn.run(command, hide=True, warn=True, in_stream=False)


def put_text(conn, text, remote):
    conn.put(io.BytesIO(text.encode()), remote=remote)


def host_state(sandbox, name):
    path = os.path.join(sandbox.host_root(name), "var/lib/dialog/fake-docker/state.json")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def stun_binding(address, port=3478):
    """Send a STUN Binding Request; return (mapped ip, mapped port, local (ip, port))."""
    txid = os.urandom(12)
    request = struct.pack("!HHI", 0x0001, 0, STUN_MAGIC) + txid
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(1.0)
    try:
        for _ in range(5):
            sock.sendto(request, (address, port))
            try:
                data, _ = sock.recvfrom(2048)
                break
            except socket.timeout:
                continue
        else:
            raise AssertionError("no STUN answer from %s:%d" % (address, port))
        local = sock.getsockname()
    finally:
        sock.close()
    msg_type, length, cookie = struct.unpack("!HHI", data[:8])
    assert (msg_type, cookie, data[8:20]) == (0x0101, STUN_MAGIC, txid)
    offset = 20
    while offset < 20 + length:
        attr, size = struct.unpack("!HH", data[offset:offset + 4])
        value = data[offset + 4:offset + 4 + size]
        if attr == 0x0020:
            port_x = struct.unpack("!H", value[2:4])[0] ^ (STUN_MAGIC >> 16)
            ip_x = bytes(a ^ b for a, b in zip(value[4:8], struct.pack("!I", STUN_MAGIC)))
            return socket.inet_ntoa(ip_x), port_x, local
        offset += 4 + size + (-size % 4)
    raise AssertionError("no XOR-MAPPED-ADDRESS in the STUN answer")


def wait_for(check, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting for %s" % what
        time.sleep(0.05)


def ring_lines(conn):
    result = run(conn, "docker compose -f %s exec -T cassandra nodetool status" % COMPOSE)
    assert result.exited == 0, result.stderr
    return [line.split() for line in result.stdout.splitlines()
            if line[:2] in ("UN", "UJ", "DN", "UL")]


def test_hosts_answer_ssh_at_their_addresses(sandbox, connect):
    assert {n: (i.address, i.state) for n, i in sandbox.hosts.items()} == \
        {n: (a, "running") for n, a in HOSTS.items()}
    for name, address in HOSTS.items():
        conn = connect(address)
        result = run(conn, "hostname; ip -4 -o addr show dev eth0; command -v docker; whoami; "
                           "docker version --format json")
        assert result.exited == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == name
        assert "inet %s/16" % address in lines[1]
        assert lines[2:4] == ["/usr/local/bin/docker", "root"]
        assert json.loads(lines[4])["Server"]["Version"] == "27.3.1"


def test_only_the_sandbox_key_logs_in(sandbox, tmp_path):
    assert sandbox.ssh_public_key.startswith("ssh-ed25519 ")
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        with pytest.raises(paramiko.AuthenticationException):
            client.connect(HOSTS["h1"], username="root", key_filename=str(other),
                           look_for_keys=False, allow_agent=False, timeout=10)
        with pytest.raises(paramiko.AuthenticationException):
            client.connect(HOSTS["h1"], username="root", password="root", look_for_keys=False,
                           allow_agent=False, timeout=10)
    finally:
        client.close()


def test_each_host_has_its_own_files(sandbox, connect):
    put_text(connect(HOSTS["h1"]), "only on h1\n", "/opt/dialog/x")
    assert run(connect(HOSTS["h1"]), "cat /opt/dialog/x").stdout == "only on h1\n"
    for name in ("h2", "h3"):
        assert run(connect(HOSTS[name]), "test -e /opt/dialog/x").exited == 1
    with open(os.path.join(sandbox.host_root("h1"), "opt/dialog/x"), encoding="utf-8") as f:
        assert f.read() == "only on h1\n"
    assert not os.path.exists("/opt/dialog/x")
    # Every per-host path is separate, and the rest of the filesystem is shared.
    run(connect(HOSTS["h2"]), "mkdir -p /etc/dialog/server && echo h2 > /etc/dialog/server/a")
    assert run(connect(HOSTS["h3"]), "ls /etc/dialog").stdout == ""
    assert run(connect(HOSTS["h3"]), "python3 -c 'print(6 * 7)'").stdout == "42\n"


def test_compose_up_serves_http_and_stun_and_is_idempotent(sandbox, connect):
    conn = connect(HOSTS["h1"])
    put_text(conn, WEB_COMPOSE, COMPOSE)
    result = run(conn, "docker compose -f %s up -d" % COMPOSE)
    assert result.exited == 0, result.stderr
    assert "Container dialog-web-1  Started" in result.stderr

    response = requests.get("http://%s:8080/" % HOSTS["h1"], timeout=5)
    assert response.status_code == 200
    assert response.json()["service"] == "web"
    mapped_ip, mapped_port, local = stun_binding(HOSTS["h1"])
    assert (mapped_ip, mapped_port) == (sandbox.gateway, local[1])

    ps_out = run(conn, "docker compose -f %s ps --format json" % COMPOSE).stdout
    rows = {row["Service"]: row for row in map(json.loads, ps_out.splitlines())}
    assert {s: r["State"] for s, r in rows.items()} == {"web": "running", "turn": "running"}
    assert rows["web"]["Health"] == "healthy"
    assert rows["turn"]["Publishers"] == [{"URL": "0.0.0.0", "TargetPort": 3478,
                                           "PublishedPort": 3478, "Protocol": "udp"}]

    pids = {n: c["pid"] for n, c in host_state(sandbox, "h1")["containers"].items()}
    again = run(conn, "docker compose -f %s up -d" % COMPOSE)
    assert again.exited == 0, again.stderr
    assert "Started" not in again.stderr and "Container dialog-web-1  Running" in again.stderr
    assert {n: c["pid"] for n, c in host_state(sandbox, "h1")["containers"].items()} == pids

    # Changing one service's definition recreates that service only.
    put_text(conn, WEB_COMPOSE.replace('"hello"', '"bonjour"'), COMPOSE)
    assert run(conn, "docker compose -f %s up -d" % COMPOSE).exited == 0
    after = {n: c["pid"] for n, c in host_state(sandbox, "h1")["containers"].items()}
    assert after["dialog-turn-1"] == pids["dialog-turn-1"]
    assert after["dialog-web-1"] != pids["dialog-web-1"]
    assert requests.get("http://%s:8080/health" % HOSTS["h1"], timeout=5).status_code == 200

    assert run(conn, "docker compose -f %s down" % COMPOSE).exited == 0
    with pytest.raises(requests.ConnectionError):
        requests.get("http://%s:8080/" % HOSTS["h1"], timeout=5)


def test_compose_without_image_is_rejected(connect):
    conn = connect(HOSTS["h2"])
    put_text(conn, "services:\n  dialog-server:\n    ports: ['9090:9090']\n",
             "/opt/dialog/bad.yml")
    for command in ("config -q", "up -d"):
        result = run(conn, "docker compose -f /opt/dialog/bad.yml %s" % command)
        assert result.exited != 0
        assert 'service "dialog-server" has neither an image' in result.stderr
    put_text(conn, "services:\n  proxy:\n    image: nginx\n    ports: ['80:80:80']\n",
             "/opt/dialog/bad.yml")
    result = run(conn, "docker compose -f /opt/dialog/bad.yml config -q")
    assert result.exited != 0 and "services.proxy.ports.0" in result.stderr
    result = run(conn, "docker compose -f /opt/dialog/bad.yml ps --format json")
    assert result.exited != 0 and "services.proxy.ports.0" in result.stderr
    # ${VAR} interpolation (and so .env) is not simulated: refused, naming the field.
    put_text(conn, "services:\n  db:\n    image: postgres\n    environment:\n"
                   "      PASSWORD: '${PGPASS}'\n      PRICE: '5$$'\n", "/opt/dialog/bad.yml")
    result = run(conn, "docker compose -f /opt/dialog/bad.yml config -q")
    assert result.exited != 0
    assert "services.db.environment.PASSWORD: variable interpolation" in result.stderr
    assert " Containers: 0\n" in run(conn, "docker info").stdout


def test_postgres_and_dialog_server_exec(sandbox, connect):
    conn = connect(HOSTS["h2"])
    put_text(conn, """
services:
  postgres:
    image: postgres:15
    ports: ["5432:5432"]
    environment: {POSTGRES_DB: dialog, POSTGRES_USER: dialog, POSTGRES_PASSWORD: "pa$$word"}
  dialog-server:
    image: registry.example/dialog-server:1
    ports: ["9090:9090", "9080:9080", "9070:9070"]
    depends_on: [postgres]
""", COMPOSE)
    assert run(conn, "docker compose -f %s up -d" % COMPOSE).exited == 0
    ready = run(conn, "docker compose -f %s exec -T postgres pg_isready -U dialog" % COMPOSE)
    assert ready.exited == 0 and "accepting connections" in ready.stdout
    assert requests.get("http://%s:9090/v1/status" % HOSTS["h2"], timeout=5).status_code == 200
    socket.create_connection((HOSTS["h2"], 5432), timeout=5).close()
    cli = "docker compose -f %s exec -T dialog-server /opt/docker/bin/cli" % COMPOSE
    assert run(conn, cli + " create-user --login admin --password s3cret").exited == 0
    second = run(conn, cli + " create-user --login admin --password other")
    assert second.exited != 0 and "already exists" in second.stderr
    assert run(conn, cli + " admin-grant --login admin").exited == 0
    users = host_state(sandbox, "h2")["users"]["dialog"]
    assert users["admin"]["admin"] is True
    config = yaml.safe_load(run(conn, "docker compose -f %s config" % COMPOSE).stdout)
    assert config["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == "pa$word"
    # The postgres container runs the real server: psql in it reaches the database the image
    # created for POSTGRES_USER/POSTGRES_DB, and refuses a role that does not exist (root's).
    query = run(conn, "docker compose -f %s exec -T postgres psql -U dialog -d dialog -tAc "
                "'select current_user, current_database()'" % COMPOSE)
    assert query.exited == 0 and query.stdout.strip() == "dialog|dialog", query.stderr
    as_root = run(conn, "docker compose -f %s exec -T postgres psql -c 'select 1'" % COMPOSE)
    assert as_root.exited == 2 and 'role "root" does not exist' in as_root.stderr
    # A stand-in container runs no command it does not simulate.
    unknown = run(conn, "docker compose -f %s exec -T dialog-server psql -c 'select 1'"
                  % COMPOSE)
    assert unknown.exited == 127 and "not simulated" in unknown.stderr
    assert run(conn, "docker compose -f %s down" % COMPOSE).exited == 0


def test_cassandra_ring_two_seeds_and_a_joiner(connect):
    conns = {name: connect(address) for name, address in HOSTS.items()}
    try:
        for name in ("h1", "h2", "h3"):  # seeds first, then the joiner (3 s join)
            compose = CASSANDRA_COMPOSE.format(address=HOSTS[name],
                                               join="3" if name == "h3" else "1")
            put_text(conns[name], compose, COMPOSE)
            result = run(conns[name], "docker compose -f %s up -d" % COMPOSE)
            assert result.exited == 0, result.stderr
        joiner = {line[1]: line[0] for line in ring_lines(conns["h3"])}
        assert joiner.get(HOSTS["h3"]) == "UJ"
        deadline = time.monotonic() + 10
        while True:
            views = {name: ring_lines(conn) for name, conn in conns.items()}
            statuses = {name: sorted((line[1], line[0]) for line in lines)
                        for name, lines in views.items()}
            if all(s == sorted((a, "UN") for a in HOSTS.values()) for s in statuses.values()):
                break
            assert time.monotonic() < deadline, statuses
            time.sleep(0.3)
        # The real layout: status, address, load (2 words), tokens, owns, host id, rack.
        for line in views["h1"]:
            assert len(line) == 8 and line[4] == "16" and line[7] == "rack1"
        host_ids = {line[6] for lines in views.values() for line in lines}
        assert len(host_ids) == 3
        assert run(conns["h1"], "docker compose -f %s exec -T cassandra nodetool cleanup"
                   % COMPOSE).exited == 0
    finally:
        for conn in conns.values():
            run(conn, "docker compose -f %s down" % COMPOSE)


def test_hypervisor_boots_a_host_per_moto_instance(sandbox, monkeypatch):
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    hypervisor = None
    try:
        endpoint = "http://%s:%d" % server.get_host_and_port()
        ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        vpc = ec2.create_vpc(CidrBlock=CIDR)["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.80.1.0/24")["Subnet"]["SubnetId"]
        hypervisor = Hypervisor(ec2, sandbox)
        hypervisor.start()

        def launch(tags):
            spec = [{"ResourceType": "instance",
                     "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
            return ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
                                     InstanceType="t3.micro", SubnetId=subnet,
                                     TagSpecifications=spec)["Instances"][0]

        untagged = launch({"Name": "not-ours"})
        instance = launch({"Name": "dialog-server-1", "dialog:deployment": "sbx"})
        address = instance["PrivateIpAddress"]
        wait_for(lambda: "dialog-server-1" in sandbox.hosts, "the hypervisor to boot a host")
        info = sandbox.wait_ready("dialog-server-1", timeout=15)
        assert info.address == address
        client = paramiko.SSHClient()
        client.load_host_keys(sandbox.known_hosts_path)
        try:
            client.connect(address, username="root", timeout=10, **sandbox.connect_kwargs)
            _, stdout, _ = client.exec_command("hostname")
            assert stdout.read().decode().strip() == "dialog-server-1"
        finally:
            client.close()
        assert "not-ours" not in sandbox.hosts
        assert untagged["InstanceId"] not in sandbox.hosts

        # Tagged with its Name right after RunInstances: the host still gets that name.
        late = launch({"dialog:deployment": "sbx"})
        ec2.create_tags(Resources=[late["InstanceId"]],
                        Tags=[{"Key": "Name", "Value": "dialog-late-1"}])
        wait_for(lambda: "dialog-late-1" in sandbox.hosts, "the late-named host")
        assert sandbox.wait_ready("dialog-late-1").address == late["PrivateIpAddress"]
        assert late["InstanceId"] not in sandbox.hosts

        ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
        wait_for(lambda: sandbox.info("dialog-server-1").state == "terminated",
                 "the hypervisor to remove the host")
        assert info.namespace not in subprocess.run(["ip", "netns", "list"], check=True,
                                                    capture_output=True, text=True).stdout
        with pytest.raises(OSError):
            socket.create_connection((address, 22), timeout=2).close()
        assert hypervisor.errors == []
    finally:
        if hypervisor is not None:
            hypervisor.stop()
        server.stop()


def test_boot_delay_kill_and_close_leave_nothing(tmp_path):
    if preflight():
        pytest.fail("; ".join(preflight()), pytrace=False)
    hosts = SandboxHosts(tmp_path, cidr="10.81.0.0/24", boot_delay=0.5)
    try:
        with pytest.raises(SandboxError, match="overlaps"):
            SandboxHosts(tmp_path / "second", cidr="10.81.0.0/25")
        hosts.boot("slow", "10.81.0.5")
        time.sleep(0.2)
        assert not hosts.ready("slow")
        with pytest.raises(OSError):
            socket.create_connection(("10.81.0.5", 22), timeout=1).close()
        hosts.wait_ready("slow", timeout=10)
        hosts.boot("other", "10.81.0.6", delay=0)
        hosts.wait_ready("other")
        key = paramiko.Ed25519Key.from_private_key_file(hosts.ssh_key_path)
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        client.connect("10.81.0.5", username="root", pkey=key, look_for_keys=False,
                       allow_agent=False, timeout=10)
        try:
            _, stdout, _ = client.exec_command(
                "printf 'services:\\n  s:\\n    image: x\\n    ports: [\"8000:8000\"]\\n' "
                "> /opt/dialog/c.yml && docker compose -f /opt/dialog/c.yml up -d "
                "&& setsid -f sleep 600 </dev/null >/dev/null 2>&1")
            assert stdout.channel.recv_exit_status() == 0
        finally:
            client.close()
        assert requests.get("http://10.81.0.5:8000/", timeout=5).status_code == 200
        hosts.kill("slow")
        assert hosts.info("slow").state == "terminated"
        assert hosts.info("other").state == "running"
    finally:
        hosts.close()
    namespaces = subprocess.run(["ip", "netns", "list"], check=True, capture_output=True,
                                text=True).stdout
    assert hosts.token not in namespaces
    links = subprocess.run(["ip", "-o", "link"], check=True, capture_output=True,
                           text=True).stdout
    assert hosts.bridge not in links
    processes = subprocess.run(["ps", "-eo", "stat,args"], check=True, capture_output=True,
                               text=True).stdout
    assert str(tmp_path) not in processes and "sleep 600" not in processes
    assert not [p for p in processes.splitlines()
                if p.startswith("Z") and ("sshd" in p or "unshare" in p)]


def test_sweep_removes_what_a_killed_owner_left(tmp_path):
    if preflight():
        pytest.fail("; ".join(preflight()), pytrace=False)
    script = (
        "import sys; sys.path.insert(0, %r)\n"
        "from sandbox.hosts import SandboxHosts\n"
        "hosts = SandboxHosts(%r, cidr='10.82.0.0/24')\n"
        "hosts.boot('orphan', '10.82.0.9'); hosts.wait_ready('orphan')\n"
        "print(hosts.token, flush=True)\n"
        "sys.stdin.read()\n" % (os.path.join(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))), "devtools"), str(tmp_path)))
    owner = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        token = owner.stdout.readline().strip()
        assert token, "the owner process did not start its host"
        socket.create_connection(("10.82.0.9", 22), timeout=5).close()
    finally:
        owner.kill()
        owner.wait()
        owner.stdin.close()
        owner.stdout.close()
    namespaces = subprocess.run(["ip", "netns", "list"], check=True, capture_output=True,
                                text=True).stdout
    assert "dsb%s-orphan" % token in namespaces
    sweep_stale()
    state = subprocess.run("ip netns list; ip -o link; ip rule; ps -eo args", shell=True,
                           check=True, capture_output=True, text=True).stdout
    assert token not in state and str(tmp_path) not in state
