"""Registry settings, the Docker install script and the images a host pulls (no hosts needed;
tests/test_registry_sandbox.py runs them against the sandbox's mirror)."""

import json
import os
import subprocess

import pytest
import yaml

from lib.errors import InputError
from lib.hosts import docker_install, registry
from lib.render import render_host
from test_render import make_context

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSWORD = "reg-Secret-5d6e7f8a9b"


def profile_schema():
    with open(os.path.join(PACK_ROOT, "config.schema.yaml"), encoding="utf-8") as handle:
        schema = yaml.safe_load(handle)
    return schema["profiles"]["additionalProperties"]["properties"]


def test_config_schema_keeps_the_registry_password_secret():
    fields = profile_schema()
    assert fields["registry_password"]["secret"] is True
    assert not fields["registry_username"].get("secret")
    assert fields["docker_apt_repository"]["default"] == docker_install.DEFAULT_APT_REPOSITORY
    assert "registry" in fields


def test_registry_defaults_to_the_dialog_images_registry():
    profile = {"images": {"dialog_server": "registry.example.com:5000/dialog/server:2.5"},
               "registry_username": "ci", "registry_password": PASSWORD}
    assert registry.registry_settings(profile) == {
        "server": "registry.example.com:5000", "username": "ci", "password": PASSWORD}
    assert registry.registry_settings(dict(profile, registry="other.example"))["server"] == \
        "other.example"
    assert registry.registry_settings({"images": profile["images"]}) is None
    assert registry.registry_of("postgres:16") == "docker.io"
    assert registry.registry_of("quay.io/ceph/ceph:v18") == "quay.io"


@pytest.mark.parametrize("profile, field", [
    ({"registry_username": "ci", "registry": "r.example"}, "registry_password"),
    ({"registry_password": PASSWORD, "registry": "r.example"}, "registry_username"),
    ({"registry_username": "ci", "registry_password": PASSWORD}, "registry"),
    ({"registry": "https://r.example/", "registry_username": "ci",
      "registry_password": PASSWORD}, "registry"),
    ({"registry": "r.example", "registry_username": "ci",
      "registry_password": PASSWORD + "\nx"}, "registry_password"),
])
def test_incomplete_registry_settings_name_the_field(profile, field):
    with pytest.raises(InputError) as failure:
        registry.registry_settings(profile)
    assert failure.value.field == field
    assert PASSWORD not in str(failure.value)


def test_no_credentials_means_no_login_and_no_ssh():
    assert registry.ensure_login(None, {"host": "h"}, None) == "none"
    nothing = {"pulled": [], "present": []}
    assert registry.pull_images(None, {"host": "h", "images": []}) == nothing


def test_docker_apt_repository_is_checked_and_lands_in_the_script():
    assert docker_install.apt_repository(None) == "https://download.docker.com/linux"
    assert docker_install.apt_repository("http://mirror.lan:8080/docker/linux/") == \
        "http://mirror.lan:8080/docker/linux"
    with pytest.raises(InputError) as failure:
        docker_install.apt_repository("ftp://mirror.lan/linux")
    assert failure.value.field == "docker_apt_repository"
    body = docker_install.docker_body("http://mirror.lan/linux")
    assert body.startswith("repo=http://mirror.lan/linux\n")
    code = [line for line in body.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in code if "download.docker.com" in line]
    for name in ("install_docker.sh", "registry_login.sh", "pull_images.sh"):
        subprocess.run(["sh", "-n", os.path.join(registry.SCRIPTS, name)], check=True)


def test_hosts_pull_their_images_and_never_see_the_registry_password():
    context = make_context("small")
    context["registry"] = {"server": "registry.example.com", "username": "ci",
                           "password": PASSWORD}
    context["docker_apt_repository"] = "http://mirror.lan/linux"
    servers = [h for h in context["hosts"] if "dialog-server" in h["roles"]]
    rendered = render_host(context, servers[0]["name"])
    assert context["images"]["dialog_server"] in rendered["images"]
    assert "prom/node-exporter:v1.8.2" in rendered["images"]
    assert rendered["images"] == sorted(set(rendered["images"]))
    assert rendered["docker_apt_repository"] == "http://mirror.lan/linux"
    for name in (h["name"] for h in context["hosts"]):
        assert PASSWORD not in json.dumps(render_host(context, name), default=str)
