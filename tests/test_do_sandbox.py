"""DigitalOcean in the sandbox: the fake API's strictness where the sandbox relies on it, and
the DO hypervisor that turns droplets into sandbox hosts."""

import ipaddress
import os
import time

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from fake_digitalocean import FakeDigitalOcean, fingerprint
from sandbox.do_hypervisor import BY_ID_PREFIX, DoHypervisor


def public_key(comment):
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH,
                            serialization.PublicFormat.OpenSSH).decode() + " " + comment


SANDBOX_KEY, OTHER_KEY = public_key("sandbox"), public_key("other")


@pytest.fixture(scope="module")
def fake():
    with FakeDigitalOcean(public_network="198.18.0.0/16", vpc_ip_range="10.110.0.0/20") as api:
        yield api


@pytest.fixture
def api(fake):
    fake.reset()
    session = requests.Session()
    session.headers["Authorization"] = "Bearer %s" % fake.token

    def call(method, path, body=None):
        response = session.request(method, fake.url + path, json=body, timeout=10)
        return response.status_code, (response.json() if response.content else None)
    yield call
    session.close()


def droplet_body(**overrides):
    return dict({"name": "dialog-web-1", "region": "fra1", "size": "s-2vcpu-4gb",
                 "image": "debian-12-x64", "tags": ["dialog:d"]}, **overrides)


@pytest.mark.parametrize("field,value", [("size", "s-99vcpu-1tb"), ("region", "xyz9"),
                                         ("image", "windows-11")])
def test_unknown_size_region_or_image_is_refused_with_422(api, fake, field, value):
    status, body = api("POST", "/v2/droplets", droplet_body(**{field: value}))
    assert status == 422
    assert body["id"] == "unprocessable_entity"
    assert "invalid %s" % field in body["message"]
    assert fake.resource_counts()["droplets"] == 0


def test_a_size_outside_its_regions_is_refused_and_sizes_list_their_regions(api, fake):
    status, sizes = api("GET", "/v2/sizes?per_page=200")
    assert status == 200
    regions = {s["slug"]: s["regions"] for s in sizes["sizes"]}
    assert "fra1" in regions["s-2vcpu-4gb"] and "nyc3" not in regions["s-2vcpu-4gb"]
    status, body = api("POST", "/v2/droplets", droplet_body(region="nyc3"))
    assert (status, body["message"]) == (422, "Size is not available in this region.")
    status, listed = api("GET", "/v2/regions")
    nyc3 = next(r for r in listed["regions"] if r["slug"] == "nyc3")
    assert "s-2vcpu-4gb" not in nyc3["sizes"] and "s-4vcpu-8gb" in nyc3["sizes"]
    assert fake.resource_counts()["droplets"] == 0


def test_account_tells_the_droplet_limit(api, fake):
    fake.reset(limits={"droplet_limit": 3})
    status, body = api("GET", "/v2/account")
    assert status == 200
    assert body["account"]["droplet_limit"] == 3
    assert body["account"]["status"] == "active"


def test_ssh_keys_register_once_and_unknown_keys_refuse_droplets(api):
    status, body = api("POST", "/v2/account/keys", {"name": "sandbox", "public_key": SANDBOX_KEY})
    assert status == 201
    key = body["ssh_key"]
    assert key["fingerprint"] == fingerprint(SANDBOX_KEY)
    again = api("POST", "/v2/account/keys", {"name": "again", "public_key": SANDBOX_KEY})
    assert again[0] == 422 and "already in use" in again[1]["message"]
    assert api("POST", "/v2/account/keys", {"name": "bad", "public_key": "hello"})[0] == 422
    listed = api("GET", "/v2/account/keys")[1]["ssh_keys"]
    assert [k["name"] for k in listed].count("sandbox") == 1
    assert api("GET", "/v2/account/keys/%s" % key["fingerprint"])[1]["ssh_key"]["id"] == \
        key["id"]
    status, body = api("POST", "/v2/droplets", droplet_body(ssh_keys=[999999]))
    assert status == 422 and "ssh_keys" in body["message"]
    status, _ = api("POST", "/v2/droplets", droplet_body(ssh_keys=[key["fingerprint"]]))
    assert status == 202


def test_droplets_get_a_public_address_and_one_in_their_vpc(api, fake):
    vpc = api("POST", "/v2/vpcs", {"name": "dialog-d", "region": "fra1"})[1]["vpc"]
    assert vpc["ip_range"] == "10.110.0.0/20"
    second = api("POST", "/v2/vpcs", {"name": "other", "region": "fra1"})[1]["vpc"]
    assert not ipaddress.ip_network(second["ip_range"]).overlaps(
        ipaddress.ip_network(vpc["ip_range"]))
    body = droplet_body(names=["a", "b"], vpc_uuid=vpc["id"])
    del body["name"]
    status, body = api("POST", "/v2/droplets", body)
    assert status == 202
    assert all(d["status"] == "new" and d["networks"]["v4"] == [] for d in body["droplets"])
    listed = api("GET", "/v2/droplets?tag_name=dialog:d")[1]["droplets"]
    addresses = [{n["type"]: n["ip_address"] for n in d["networks"]["v4"]} for d in listed]
    assert all(d["status"] == "active" for d in listed)
    publics = [ipaddress.ip_address(a["public"]) for a in addresses]
    privates = [ipaddress.ip_address(a["private"]) for a in addresses]
    assert len(set(publics)) == len(set(privates)) == 2
    assert all(p in fake.public_network and str(p) != "198.18.0.1" for p in publics)
    assert all(p in ipaddress.ip_network(vpc["ip_range"]) for p in privates)


# ---- the hypervisor, against stand-ins for SandboxHosts and BlockDevices ----------------------

class Hosts:
    """Records boot/kill like SandboxHosts (no namespaces)."""

    def __init__(self, public_key):
        self.ssh_public_key = public_key
        self.booted, self.killed, self.egress, self.public = {}, [], {}, {}

    @property
    def hosts(self):
        return {}

    def boot(self, name, address, **options):
        self.booted[name] = dict(options, address=address)

    def kill(self, name):
        self.killed.append(name)

    def ready(self, name):
        return name in self.booted

    def set_egress(self, name, allowed):
        self.egress[name] = allowed

    def set_public_address(self, name, address):
        self.public[name] = address


class Devices:
    def __init__(self):
        self.calls = []

    def attach(self, host, by_id_name, size_gb, key):
        self.calls.append(("attach", host, by_id_name, size_gb, key))

    def detach(self, key):
        self.calls.append(("detach", key))

    def delete(self, key):
        self.calls.append(("delete", key))


def test_hypervisor_boots_active_droplets_with_the_key_and_follows_their_volumes(fake):
    fake.reset(boot_delay=0.3)
    key = fake.add_ssh_key("sandbox", SANDBOX_KEY)
    other = fake.add_ssh_key("other", OTHER_KEY)
    hosts, devices = Hosts(SANDBOX_KEY), Devices()
    hypervisor = DoHypervisor(fake, hosts, devices=devices)
    session = requests.Session()
    session.headers["Authorization"] = "Bearer %s" % fake.token

    def post(path, body):
        response = session.post(fake.url + path, json=body, timeout=10)
        assert response.status_code in (201, 202), response.text
        return response.json()

    post("/v2/droplets", droplet_body(name="db-1", ssh_keys=[key["id"]]))
    post("/v2/droplets", droplet_body(name="keyless", ssh_keys=[other["id"]]))
    post("/v2/droplets", droplet_body(name="untagged", tags=[], ssh_keys=[key["id"]]))
    hypervisor.poll_once()
    assert hosts.booted == {}, "a droplet that is still 'new' has no host yet"
    time.sleep(0.35)
    hypervisor.poll_once()
    assert set(hosts.booted) == {"db-1"}
    booted = hosts.booted["db-1"]
    droplet = fake.snapshot()["droplets"][0]
    assert (booted["address"], booted["public_address"]) == (droplet["private"],
                                                             droplet["public"])
    assert booted["public_on_interface"] is True and booted["login_user"] == "root"
    assert hosts.egress == {"db-1": True} and hosts.public == {}
    reserved = post("/v2/reserved_ips", {"droplet_id": droplet["id"]})["reserved_ip"]["ip"]
    hypervisor.poll_once()
    assert hosts.public == {"db-1": reserved}
    assert any("keyless" in message and "SSH key" in message
               for _, message in hypervisor.errors)

    volume = post("/v2/volumes", {"name": "db-1-data", "size_gigabytes": 20,
                                  "region": "fra1"})["volume"]
    post("/v2/volumes/%s/actions" % volume["id"], {"type": "attach", "droplet_id":
                                                   droplet["id"], "region": "fra1"})
    hypervisor.poll_once()
    assert devices.calls == [("attach", "db-1", BY_ID_PREFIX + "db-1-data", 20, volume["id"])]
    hypervisor.poll_once()
    assert len(devices.calls) == 1, "an attached volume is attached once"

    assert session.delete(fake.url + "/v2/droplets/%s" % droplet["id"]).status_code == 204
    hypervisor.poll_once()
    assert hosts.killed == ["db-1"]
    assert fake.resource_counts()["reserved_ips"] == 1, "destroying a droplet keeps its IP"
    assert devices.calls[1:] == [("detach", volume["id"])]
    assert session.delete(fake.url + "/v2/volumes/%s" % volume["id"]).status_code == 204
    hypervisor.poll_once()
    assert devices.calls[2:] == [("delete", volume["id"])]
    session.close()


# ---- real sandbox hosts --------------------------------------------------------------------

@pytest.mark.xdist_group("netns")
def test_a_droplet_is_a_host_with_its_public_address_on_eth0_and_goes_with_it(fake, tmp_path):
    hosts_module = pytest.importorskip("sandbox.hosts")
    if hosts_module.preflight():
        pytest.skip("sandbox hosts cannot run here: %s" % hosts_module.preflight())
    if "public_on_interface" not in hosts_module.SandboxHosts.boot.__code__.co_varnames:
        pytest.fail("SandboxHosts.boot has no public_on_interface")
    import paramiko

    fake.reset(boot_delay=0.2)
    with hosts_module.SandboxHosts(str(tmp_path / "hosts"), cidr="10.110.0.0/20") as hosts:
        key = fake.add_ssh_key("sandbox", hosts.ssh_public_key)
        hypervisor = DoHypervisor(fake, hosts, interval=0.1)
        hypervisor.start()
        try:
            session = requests.Session()
            session.headers["Authorization"] = "Bearer %s" % fake.token
            vpc = session.post(fake.url + "/v2/vpcs", json={"name": "dialog-d", "region":
                                                            "fra1"}).json()["vpc"]
            created = session.post(fake.url + "/v2/droplets", json=droplet_body(
                name="web-1", ssh_keys=[key["id"]], vpc_uuid=vpc["id"])).json()["droplet"]
            deadline = time.monotonic() + 20
            while not (hosts.hosts.get("web-1") and hosts.ready("web-1")):
                assert time.monotonic() < deadline, hypervisor.errors
                time.sleep(0.1)
            droplet = session.get(fake.url + "/v2/droplets/%s" % created["id"]).json()["droplet"]
            addresses = {n["type"]: n["ip_address"] for n in droplet["networks"]["v4"]}
            client = paramiko.SSHClient()
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
            client.connect(addresses["public"], username="root", timeout=10,
                           **hosts.connect_kwargs)
            _, out, _ = client.exec_command("ip -o -4 addr show")
            lines = out.read().decode().splitlines()
            client.close()
            by_interface = {line.split()[1]: line.split()[3].split("/")[0] for line in lines}
            assert by_interface.get("eth0") == addresses["public"], lines
            assert by_interface.get("eth1") == addresses["private"], lines

            assert session.delete(fake.url + "/v2/droplets/%s" % created["id"]).status_code \
                == 204
            deadline = time.monotonic() + 10
            while hosts.info("web-1").state != hosts_module.TERMINATED:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert not os.path.exists("/run/netns/" + hosts.info("web-1").namespace)
            session.close()
        finally:
            hypervisor.stop()
