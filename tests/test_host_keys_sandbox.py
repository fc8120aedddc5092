"""Host-key pinning against sandbox hosts (real sshd, each host with its own stable key): a
host answering with another key than the one pinned for its name is refused before anything
is sent, directly and as a jump host. Traffic goes only to the 10.87.0.0/24 hosts made here.
"""

import json

import pytest

from lib import bootstrap
from lib.hosts.host_keys import HostKeyPins, HostKeyRefused
from sandbox_support import sandbox_hosts
from test_host_keys import Datastore

pytestmark = pytest.mark.xdist_group("netns")

CIDRS = ["10.87.%d.0/24" % third for third in range(0, 250, 10)]
NAMES = {"dlg-proxy-1": 41, "dlg-impostor-1": 42}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    hosts = sandbox_hosts(tmp_path_factory.mktemp("host-keys"), CIDRS)
    try:
        for name, number in NAMES.items():
            hosts.boot(name, str(hosts.network.network_address + number))
        for name in NAMES:
            hosts.wait_ready(name)
        yield hosts
    finally:
        hosts.close()


def address(sandbox, name):
    return str(sandbox.network.network_address + NAMES[name])


def login(sandbox, pins, name, at=None, **options):
    return bootstrap.connect(at or address(sandbox, name), "root", key_file=sandbox.ssh_key_path,
                             timeout=10, host_keys=pins, name=name, **options)


def test_a_changed_host_key_is_refused(sandbox):
    store = Datastore()
    pins = HostKeyPins(store, "prod")
    login(sandbox, pins, "dlg-proxy-1").close()          # first contact: pinned
    login(sandbox, pins, "dlg-proxy-1").close()          # same key: accepted
    assert "dlg-proxy-1" in store.values["dialog.prod.host_keys"]
    # Another machine answers at the proxy's name (a rebuilt host, or an impostor).
    with pytest.raises(HostKeyRefused, match=r"dlg-proxy-1 \(.*\) shows SSH host key SHA256:"):
        login(sandbox, pins, "dlg-proxy-1", at=address(sandbox, "dlg-impostor-1"))
    # The same refusal, at once, from the wait for SSH (not retried until its timeout).
    with pytest.raises(HostKeyRefused):
        bootstrap.wait_for_ssh(address(sandbox, "dlg-impostor-1"), "root",
                               key_file=sandbox.ssh_key_path, timeout=60, name="dlg-proxy-1",
                               host_keys=pins)


def test_a_jump_host_with_a_changed_key_is_refused(sandbox):
    store = Datastore()
    pins = HostKeyPins(store, "prod")
    jump = {"name": "dlg-proxy-1", "address": address(sandbox, "dlg-proxy-1"), "user": "root"}
    login(sandbox, pins, "dlg-impostor-1", jump=jump).close()
    assert sorted(json.loads(store.values["dialog.prod.host_keys"])) == \
        ["dlg-impostor-1", "dlg-proxy-1"]
    wrong = dict(jump, address=address(sandbox, "dlg-impostor-1"))
    with pytest.raises(HostKeyRefused, match="dlg-proxy-1"):
        login(sandbox, pins, "dlg-impostor-1", jump=wrong)
