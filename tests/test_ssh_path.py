"""How the runner reaches hosts (ssh_address), as whom (login users), and what the firewall opens
for it. The end-to-end path through a proxy is in test_ssh_jump_sandbox.py."""

import pytest

from aws_emulator import AwsEmulator
from dialog_action import DialogAction
from lib.cloud.login_users import aws_login_user
from lib.errors import InputError
from lib.hosts import ssh_path
from lib.planner import build_plan
from lib.providers import aws

ADMIN = ["198.51.100.0/24"]


def host(name, roles, public=None, **extra):
    return dict({"name": name, "roles": roles, "private_address": "10.0.0.%d" % len(name),
                 "public_addresses": [public] if public else []}, **extra)


PROXY = host("d-proxy-1", ["proxy"], "203.0.113.10")
PROXY2 = host("d-proxy-2", ["proxy"], "203.0.113.11")
DB = host("d-postgres-1", ["postgres"])
VOICE = host("d-voice-1", ["voice"], "203.0.113.20")
MINI = host("d-mini-1", ["proxy", "web", "postgres"], "203.0.113.30")


@pytest.mark.parametrize("provider, expected", [("aws", "jump"), ("digitalocean", "jump"),
                                                ("static", "private")])
def test_default_path_per_provider(provider, expected):
    assert ssh_path.resolve_via(None, provider) == expected
    assert DialogAction.login_options({"provider": provider})["via"] == expected
    assert DialogAction.login_options({"provider": provider, "ssh_address": "public"})["via"] \
        == "public"


def test_an_unknown_path_names_the_field_and_the_choices():
    with pytest.raises(InputError) as caught:
        ssh_path.resolve_via("vpn", "aws")
    assert "ssh_address" in str(caught.value) and "jump" in str(caught.value)


def test_jump_routes_every_host_but_the_proxies_through_the_first_proxy():
    hosts = [PROXY2, DB, VOICE, PROXY]
    assert ssh_path.route(DB, "jump", hosts) == (DB["private_address"], PROXY)
    # Voice has a public address, but only the proxies open 22: it goes through the proxy too.
    assert ssh_path.route(VOICE, "jump", hosts) == (VOICE["private_address"], PROXY)
    assert ssh_path.route(PROXY2, "jump", hosts) == ("203.0.113.11", None)
    assert ssh_path.route(MINI, "jump", [MINI]) == ("203.0.113.30", None)
    assert ssh_path.route(DB, "private", hosts) == (DB["private_address"], None)
    assert ssh_path.route(VOICE, "public", hosts) == ("203.0.113.20", None)
    assert ssh_path.route(DB, "public", hosts) == (DB["private_address"], None)


def test_jump_without_a_public_proxy_is_a_clear_error():
    with pytest.raises(InputError) as caught:
        ssh_path.route(DB, "jump", [DB, host("d-proxy-1", ["proxy"])])
    assert "ssh_address" in str(caught.value) and DB["name"] in str(caught.value)


def test_login_user_comes_from_the_image_unless_the_profile_or_host_says():
    debian = dict(DB, login_user="admin")
    assert ssh_path.login_user(debian) == "admin"
    assert ssh_path.login_user(debian, "deploy") == "deploy"
    assert ssh_path.login_user(dict(debian, ssh_user="ops"), "deploy") == "ops"
    assert ssh_path.login_user(DB) == "root"      # a record from before login_user
    assert DialogAction.login_options({"provider": "aws"})["user"] is None
    with pytest.raises(InputError) as caught:
        ssh_path.login_user(dict(DB, login_user=None, image="ami-0abc"))
    assert "ssh_user" in str(caught.value) and "ami-0abc" in str(caught.value)


@pytest.mark.parametrize("image, user", [
    ({"Name": "debian-12-amd64-20240717-1811", "Description": "Debian 12 (20240717-1811)"},
     "admin"),
    ({"Name": "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20240701",
      "Description": "Canonical, Ubuntu, 24.04 LTS, amd64 noble image"}, "ubuntu"),
    ({"Name": "al2023-ami-2023.5.20240701.0-kernel-6.1-x86_64",
      "Description": "Amazon Linux 2023 AMI"}, None),
])
def test_aws_image_login_users(image, user):
    assert aws_login_user(image) == user


def test_a_debian_ami_yields_login_user_admin_in_the_inventory():
    with AwsEmulator() as emu:
        plan = build_plan("mini", "aws", admin_networks=ADMIN, ssh_address="jump")
        driver = aws.Driver(emu.profile(), "us-east-1", wait_delay=0.01, wait_attempts=20)
        driver.reconcile(plan)
        [record] = driver.inventory("dialog")
        driver.destroy("dialog")
    if emu.image:       # moto's own catalog (not Debian's images) was loaded first
        pytest.skip("the emulator could not load its Debian images")
    assert record["login_user"] == "admin" and record["image"].startswith("ami-")


@pytest.mark.parametrize("provider", ["aws", "digitalocean"])
def test_jump_opens_ssh_to_admin_networks_on_the_proxies_only(provider):
    plan = build_plan("small", provider, admin_networks=ADMIN, ssh_address="jump")
    ssh = sorted((r["role"], r["source"], tuple(r["cidrs"])) for r in plan["firewall"]
                 if r["from_port"] <= 22 <= r["to_port"])
    assert ssh == [("*", "internal", ()), ("proxy", "admin", tuple(ADMIN))]
    old = build_plan("small", provider, admin_networks=ADMIN, ssh_address="private")
    assert [(r["role"], r["source"]) for r in old["firewall"] if r["from_port"] == 22] == \
        [("*", "admin")]
