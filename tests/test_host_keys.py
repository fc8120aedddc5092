"""SSH host keys pinned per deployment (lib.hosts.host_keys): first contact records the key in
the datastore, a changed key is refused naming the host and both fingerprints, a profile's
known_hosts pins instead, and cloud-init's console fingerprints are checked on AWS."""

import json

import paramiko
import pytest

from lib.hosts import host_keys
from lib.hosts.host_keys import HostKeyPins, HostKeyRefused

KEY = "dialog.prod.host_keys"


class Datastore:
    """The calls the pack makes on st2's action_service datastore."""

    def __init__(self):
        self.values = {}

    def get_value(self, name, local=True):
        assert local is False
        return self.values.get(name)

    def set_value(self, name, value, local=True):
        assert local is False
        self.values[name] = value
        return True

    def delete_value(self, name, local=True):
        assert local is False
        return self.values.pop(name, None) is not None


@pytest.fixture(scope="module")
def keys():
    return [paramiko.ECDSAKey.generate() for _ in range(2)]


def text(key):
    return "%s %s" % (key.get_name(), key.get_base64())


def offer(pins, name, key, address="10.0.1.5"):
    pins.policy(name, address).missing_host_key(None, address, key)


def test_first_contact_pins_the_key_and_a_changed_key_is_refused(keys):
    store = Datastore()
    pins = HostKeyPins(store, "prod")
    offer(pins, "dialog-server-1", keys[0])
    assert json.loads(store.values[KEY]) == {"dialog-server-1": text(keys[0])}
    offer(HostKeyPins(store, "prod"), "dialog-server-1", keys[0])     # a later action
    with pytest.raises(HostKeyRefused) as refused:
        offer(HostKeyPins(store, "prod"), "dialog-server-1", keys[1])
    message = str(refused.value)
    assert "dialog-server-1 (10.0.1.5)" in message
    assert host_keys.fingerprint(text(keys[0])) in message
    assert host_keys.fingerprint(text(keys[1])) in message
    assert "delete its entry 'dialog-server-1'" in message and KEY in message
    assert json.loads(store.values[KEY]) == {"dialog-server-1": text(keys[0])}


def test_each_host_and_deployment_has_its_own_pin(keys):
    store = Datastore()
    offer(HostKeyPins(store, "prod"), "dialog-proxy-1", keys[0])
    offer(HostKeyPins(store, "prod"), "dialog-server-1", keys[1])
    offer(HostKeyPins(store, "staging"), "dialog-proxy-1", keys[1])
    assert sorted(json.loads(store.values[KEY])) == ["dialog-proxy-1", "dialog-server-1"]
    assert json.loads(store.values["dialog.staging.host_keys"]) == \
        {"dialog-proxy-1": text(keys[1])}


def test_destroy_forgets_the_pins(keys):
    store = Datastore()
    offer(HostKeyPins(store, "prod"), "dialog-proxy-1", keys[0])
    assert host_keys.forget(store, "prod") is True
    offer(HostKeyPins(store, "prod"), "dialog-proxy-1", keys[1])     # the rebuilt host


def test_a_retired_host_loses_only_its_own_pin(keys):
    """dialog.retire_host replaces one machine: its replacement's new key is pinned on first
    contact, every other host keeps its pin."""
    store = Datastore()
    offer(HostKeyPins(store, "prod"), "dialog-proxy-1", keys[0])
    offer(HostKeyPins(store, "prod"), "dialog-server-1", keys[0])
    assert host_keys.forget_host(store, "prod", "dialog-server-1") is True
    assert host_keys.forget_host(store, "prod", "dialog-server-1") is False
    offer(HostKeyPins(store, "prod"), "dialog-server-1", keys[1])     # the replacement
    with pytest.raises(HostKeyRefused):
        offer(HostKeyPins(store, "prod"), "dialog-proxy-1", keys[1])


def test_the_health_sensor_never_pins_a_replacements_key(keys):
    """Seen in the chaos run: after dialog.retire_host forgot proxy-1's pin, the sensor met a
    machine at a stale address for it and pinned that key; the deploy making the new proxy-1
    was then refused. A watcher (pin_new=False) checks pins and never makes one."""
    store = Datastore()
    offer(HostKeyPins(store, "prod"), "dialog-proxy-1", keys[0])
    host_keys.forget_host(store, "prod", "dialog-proxy-1")
    watcher = HostKeyPins(store, "prod", pin_new=False)
    with pytest.raises(host_keys.HostKeyNotPinned) as unpinned:
        offer(watcher, "dialog-proxy-1", keys[1])
    assert "no pinned SSH host key yet" in str(unpinned.value)
    assert "dialog-proxy-1" not in json.loads(store.values[KEY])
    offer(HostKeyPins(store, "prod"), "dialog-proxy-1", keys[0])     # the deploy pins it
    offer(watcher, "dialog-proxy-1", keys[0])                        # the sensor checks it
    with pytest.raises(HostKeyRefused):
        offer(watcher, "dialog-proxy-1", keys[1])


def test_fingerprint_is_what_ssh_keygen_prints():
    line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG8CWp3qWrJ3DrAdmMebyI++viVCrM7hBx38gex+jcmg"
    # ssh-keygen -lf: "256 SHA256:mTTesXGKkWo3NamDet2Mjjg0F0gLet82aB2hi0fkQF4 ... (ED25519)"
    assert host_keys.fingerprint(line) == "SHA256:mTTesXGKkWo3NamDet2Mjjg0F0gLet82aB2hi0fkQF4"


@pytest.mark.parametrize("inline", [True, False])
def test_a_profiles_known_hosts_pins_instead(keys, tmp_path, inline):
    listed = "dialog-proxy-1 %s\n10.0.1.9 %s\n" % (text(keys[0]), text(keys[1]))
    path = tmp_path / "known_hosts"
    path.write_text(listed)
    store = Datastore()
    pins = HostKeyPins(store, "prod", listed if inline else str(path))
    offer(pins, "dialog-proxy-1", keys[0])
    offer(pins, "dialog-server-2", keys[1], address="10.0.1.9")     # listed by address
    with pytest.raises(HostKeyRefused, match="lists SHA256:"):
        offer(pins, "dialog-proxy-1", keys[1])
    with pytest.raises(HostKeyRefused, match="has no ecdsa-sha2-nistp256 key for it"):
        offer(pins, "dialog-web-1", keys[0], address="10.0.1.7")
    assert store.values == {}        # known_hosts decides; nothing is pinned besides it


CONSOLE = """[   12.3] cloud-init[512]: Cloud-init v. 22.4.2 running 'modules:config'
<14>Dec  7 01:02:03 cloud-init: #############################################################
<14>Dec  7 01:02:03 cloud-init: -----BEGIN SSH HOST KEY FINGERPRINTS-----
<14>Dec  7 01:02:03 cloud-init: 256 %(ecdsa)s root@ip-10-0-1-5 (ECDSA)
<14>Dec  7 01:02:03 cloud-init: 256 SHA256:2QfK2VbN5zTqIQ0H1mVbX3dkl7n4Lq+0gD0J0y8v3X0 \
root@ip-10-0-1-5 (ED25519)
<14>Dec  7 01:02:03 cloud-init: 3072 SHA256:u1Qm3kqg0x2y9Tg7C0fJk8Cr1n1vY3r0e2y0J8n7cQw \
root@ip-10-0-1-5 (RSA)
<14>Dec  7 01:02:03 cloud-init: -----END SSH HOST KEY FINGERPRINTS-----
"""


def test_console_fingerprints_are_read_from_cloud_inits_block(keys):
    output = CONSOLE.replace("\\\n", "") % {"ecdsa": host_keys.fingerprint(text(keys[0]))}
    printed = host_keys.console_fingerprints(output)
    assert printed == {"ecdsa": host_keys.fingerprint(text(keys[0])),
                       "ssh-ed25519": "SHA256:2QfK2VbN5zTqIQ0H1mVbX3dkl7n4Lq+0gD0J0y8v3X0",
                       "ssh-rsa": "SHA256:u1Qm3kqg0x2y9Tg7C0fJk8Cr1n1vY3r0e2y0J8n7cQw"}
    assert host_keys.console_fingerprints("no block here") == {}
    store = Datastore()
    pins = HostKeyPins(store, "prod", console=lambda name: printed)
    with pytest.raises(HostKeyRefused, match="not among the fingerprints its console printed"):
        offer(pins, "dialog-proxy-1", keys[1])
    assert store.values == {}        # an impostor's key is never pinned
    offer(pins, "dialog-proxy-1", keys[0])
    assert json.loads(store.values[KEY]) == {"dialog-proxy-1": text(keys[0])}


def test_no_console_block_pins_on_first_contact(keys):
    store = Datastore()
    offer(HostKeyPins(store, "prod", console=lambda name: {}), "dialog-proxy-1", keys[1])
    assert KEY in store.values
