"""The static provider and the provision/inventory/destroy actions on operator-given hosts."""

import contextlib
import io
import socket

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from st2tests.base import BaseActionTestCase

from destroy import DestroyAction
from inventory import InventoryAction
from lib.errors import InputError
from lib.planner import build_plan
from lib.providers import open_provider, static
from provision import ProvisionAction
from test_static_host_firewall import Hosts

SMALL_HOSTS = [
    {"name": "edge-a", "address": "198.51.100.1", "roles": ["proxy"]},
    {"name": "edge-b", "address": "198.51.100.2", "roles": ["proxy"]},
    {"name": "web", "address": "198.51.100.3", "roles": ["web"]},
    {"name": "media", "address": "198.51.100.4", "roles": ["voice", "push"]},
    {"name": "dialog-dialog-server-1", "address": "10.0.0.5", "roles": ["dialog-server"],
     "ssh_user": "deploy"},
    {"name": "db", "address": "10.0.0.6", "private_address": "10.1.0.6",
     "roles": ["postgres", "cassandra"]},
    {"name": "db2", "address": "10.0.0.7", "roles": ["cassandra"]},
]
# What dialog.provision's preflight asks of any profile: Dialog's images and a private key.
DEPLOYABLE = {"images": {"dialog_server": "registry.example.com/dialog/server:2",
                         "web_app": "registry.example.com/dialog/web-app:2",
                         "dashboard": "registry.example.com/dialog/dashboard:2",
                         "push": "registry.example.com/dialog/push:2"},
              "ssh_private_key": ed25519.Ed25519PrivateKey.generate().private_bytes(
                  serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                  serialization.NoEncryption()).decode()}
CONFIG = {"default_profile": "onprem",
          "profiles": {"onprem": dict(DEPLOYABLE, provider="static", hosts=SMALL_HOSTS),
                       "cloud": {"provider": "aws", "region": "eu-west-1",
                                 "endpoint_url": "http://127.0.0.1:9",
                                 "aws_secret_access_key": "s3cr3t-value"}}}


@contextlib.contextmanager
def no_network():
    original = socket.socket.connect

    def refuse(*_args, **_kwargs):
        raise AssertionError("the action reached for the network")

    socket.socket.connect = refuse
    try:
        yield
    finally:
        socket.socket.connect = original


def driver(hosts):
    return open_provider("static", {"name": "onprem", "provider": "static", "hosts": hosts},
                         "static")


def test_plan_hosts_are_matched_by_name_then_by_roles():
    matched = driver(SMALL_HOSTS).match(build_plan("small", "static"))
    assert {plan: given["name"] for plan, given in matched.items()} == {
        "dialog-proxy-1": "edge-a", "dialog-proxy-2": "edge-b", "dialog-web-1": "web",
        "dialog-voice-push-1": "media", "dialog-dialog-server-1": "dialog-dialog-server-1",
        "dialog-postgres-1": "db", "dialog-cassandra-1": "db2"}


def test_a_plan_host_without_a_server_is_named():
    hosts = [h for h in SMALL_HOSTS if h["name"] != "media"]
    try:
        driver(hosts).match(build_plan("small", "static"))
    except InputError as exc:
        assert "dialog-voice-push-1 (roles: voice, push)" in str(exc)
        assert "profiles.onprem.hosts" in str(exc)
    else:
        raise AssertionError("a missing host was accepted")


def test_a_host_named_for_a_plan_host_must_carry_its_roles():
    hosts = [dict(h, roles=["web"]) if h["name"] == "dialog-dialog-server-1" else h
             for h in SMALL_HOSTS]
    try:
        driver(hosts).match(build_plan("small", "static"))
    except InputError as exc:
        assert "does not list roles dialog-server" in str(exc)
    else:
        raise AssertionError("a host without its roles was accepted")


def test_inventory_reports_the_given_hosts():
    hosts = driver(SMALL_HOSTS).inventory("dialog")
    assert [h["name"] for h in hosts] == sorted(h["name"] for h in SMALL_HOSTS)
    db = next(h for h in hosts if h["name"] == "db")
    assert (db["private_address"], db["public_addresses"]) == ("10.1.0.6", ["10.0.0.6"])
    named = next(h for h in hosts if h["name"] == "dialog-dialog-server-1")
    assert (named["group"], named["index"], named["ssh_user"]) == ("dialog-server", 1, "deploy")


class StaticActionsTestCase(BaseActionTestCase):
    action_cls = ProvisionAction

    def run_action(self, cls, **parameters):
        self.action_cls = cls
        self.setUp()
        action = self.get_action_instance(config=CONFIG)
        printed = io.StringIO()
        with no_network(), contextlib.redirect_stdout(printed):
            ok, result = action.run(**parameters)
        return ok, result, printed.getvalue()

    def test_provision_on_static_hosts_changes_nothing_and_lists_them(self):
        # SSH stands in (tests/test_static_host_firewall.py): each host's firewall, no more.
        monkeypatch = pytest.MonkeyPatch()
        self.addCleanup(monkeypatch.undo)
        Hosts().install(monkeypatch, static.Driver)
        admin = ["203.0.113.0/24"]      # where the stand-in hosts see the runner
        ok, result, printed = self.run_action(ProvisionAction, tier="small",
                                              admin_networks=admin)
        self.assertTrue(ok, result)
        self.assertEqual(result["provider"], "static")
        self.assertEqual(result["summary"], {"create": 0, "update": len(SMALL_HOSTS),
                                             "delete": 0})
        self.assertEqual({c["kind"] for c in result["changes"]}, {"firewall"})
        self.assertEqual(len(result["hosts"]), len(SMALL_HOSTS))
        self.assertIn("edge-a will serve as dialog-proxy-1", printed)
        ok, result, printed = self.run_action(ProvisionAction, tier="small",
                                              admin_networks=admin)
        self.assertEqual(result["changes"], [])
        self.assertIn("No changes", printed)

    def test_provision_refuses_a_plan_the_hosts_cannot_carry(self):
        ok, result, _ = self.run_action(ProvisionAction, tier="small-failover")
        self.assertFalse(ok)
        self.assertEqual(result["field"], "profile")

    def test_inventory_of_static_hosts(self):
        ok, result, printed = self.run_action(InventoryAction, deployment="dialog")
        self.assertTrue(ok, result)
        self.assertIn("198.51.100.4", printed)

    def test_destroy_needs_the_name_typed_again_before_any_call(self):
        ok, result, _ = self.run_action(DestroyAction, deployment="dialog", confirm="dialgo",
                                        profile="cloud")
        self.assertFalse(ok)
        self.assertEqual(result["field"], "confirm")
        self.assertNotIn("s3cr3t-value", repr(result))

    def test_destroy_of_static_hosts_deletes_nothing(self):
        ok, result, printed = self.run_action(DestroyAction, deployment="dialog",
                                              confirm="dialog")
        self.assertTrue(ok, result)
        self.assertEqual(result["changes"], [])
        self.assertIn("nothing is deleted", printed)

    def test_unknown_profile_names_the_profiles_there_are(self):
        ok, result, _ = self.run_action(InventoryAction, profile="prod")
        self.assertFalse(ok)
        self.assertEqual((result["field"], result["allowed"]), ("profile", ["cloud", "onprem"]))
