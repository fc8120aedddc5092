"""Host lists given to actions are the provider's: a host or an address the inventory does not
have is refused before any SSH connection (the bootstrap would send it the secrets)."""

import contextlib
import io

import pytest
from st2tests.base import BaseActionTestCase

from bootstrap_host import BootstrapHostAction
from lib import bootstrap
from lib.errors import InputError
from lib.hosts.inventory_check import check_hosts
from lib.providers import open_provider
from status import StatusAction

HOSTS = [
    {"name": "edge", "address": "198.51.100.1", "private_address": "10.0.0.1",
     "roles": ["proxy"]},
    {"name": "db", "address": "10.0.0.6", "roles": ["postgres", "cassandra"]},
    {"name": "v6", "address": "2001:db8::7", "roles": ["web"]},
]
PROFILE = {"provider": "static", "hosts": HOSTS}


def inventory():
    return open_provider("static", dict(PROFILE, name="onprem"), None).inventory("dialog")


def changed(which, **change):
    """The inventory with host `which` changed."""
    return [dict(h, **change) if h["name"] == which else h for h in inventory()]


def test_the_inventory_itself_passes():
    hosts = inventory()
    assert check_hosts(hosts, inventory(), "dialog") is hosts
    assert check_hosts(hosts[:1], inventory(), "dialog") == hosts[:1]   # a subset is fine


def test_an_address_is_compared_as_an_address():
    check_hosts(changed("v6", public_addresses=["2001:0db8:0000::0007"]), inventory(), "dialog")


@pytest.mark.parametrize("change, words", [
    ({"private_address": "203.0.113.9"}, "edge: address 203.0.113.9 is not one the provider"),
    ({"public_addresses": ["198.51.100.1", "203.0.113.9"]}, "address 203.0.113.9"),
    # Another host's address under this host's name.
    ({"private_address": "10.0.0.6"}, "edge: address 10.0.0.6 is not one"),
    ({"private_address": "10.0.0.1; curl evil"}, "'10.0.0.1; curl evil' is not an IP address"),
    ({"public_addresses": ["example.com"]}, "'example.com' is not an IP address"),
    ({"public_addresses": "198.51.100.1"}, "public_addresses must be a list"),
    ({"name": "intruder"}, "host intruder is not a host of deployment dialog"),
])
def test_a_foreign_or_garbled_host_is_refused(change, words):
    with pytest.raises(InputError) as caught:
        check_hosts(changed("edge", **change), inventory(), "dialog")
    assert caught.value.field == "hosts" and words in str(caught.value)


def test_a_list_is_required():
    with pytest.raises(InputError, match="^hosts: must be a list"):
        check_hosts({"name": "edge"}, inventory(), "dialog")


class HostListActionsTestCase(BaseActionTestCase):
    action_cls = StatusAction

    def run_action(self, cls, **parameters):
        self.action_cls = cls
        self.setUp()
        action = self.get_action_instance(config={"default_profile": "onprem",
                                                  "profiles": {"onprem": PROFILE}})
        connects = []

        def no_ssh(*args, **kwargs):
            connects.append(args)
            raise AssertionError("SSH attempted")

        real = bootstrap.connect
        bootstrap.connect = no_ssh
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                ok, result = action.run(**parameters)
        finally:
            bootstrap.connect = real
        return ok, result, connects

    def test_status_refuses_a_host_list_with_a_foreign_address(self):
        hosts = changed("db", private_address="192.0.2.66")
        ok, result, connects = self.run_action(StatusAction, hosts=hosts, tier="small")
        self.assertFalse(ok)
        self.assertIn("hosts: host db: address 192.0.2.66 is not one the provider gives",
                      result["error"])
        self.assertEqual(connects, [])

    def test_bootstrap_host_refuses_an_unknown_host(self):
        hosts = inventory() + [{"name": "elsewhere", "roles": ["cassandra"],
                                "private_address": "192.0.2.66", "public_addresses": []}]
        ok, result, connects = self.run_action(BootstrapHostAction, deployment="dialog",
                                               host="db", hosts=hosts, tier="small")
        self.assertFalse(ok)
        self.assertIn("hosts: host elsewhere is not a host of deployment dialog",
                      result["error"])
        self.assertIn("its hosts: db, edge, v6", result["error"])
        self.assertEqual(connects, [])
