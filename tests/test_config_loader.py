"""The pack config as StackStorm registers and loads it (devtools/st2_config_loader.py), and the
local datastore as StackStorm keeps it: encrypted values as st2's ciphertext, TTLs that expire.

StackStorm's ContentPackConfigLoader renders `{{ st2kv.system.x }}` from the datastore and then
decrypts every field the schema marks `secret: true` itself; the example config must therefore
reference secrets without `decrypt_kv`, and the actions must see the plain values.
"""

import binascii
import json
import os
import re
import time
import types

import pytest
import yaml

import local_runner
from fake_digitalocean import FakeDigitalOcean
from inventory import InventoryAction
from lib import operation_lock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "dialog.yaml.example")
PLAIN = {"dialog_aws_access_key_id": "AKIAIOSFODNN7EXAMPLE",
         "dialog_aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
         "dialog_do_token": "dop_v1_fake0123456789"}
SECRET_LINE = re.compile(r'^(\s+\w+: "\{\{ st2kv\.system\.\w+)( \| decrypt_kv)? \}\}"$', re.M)

# Made by StackStorm 3.9.0's own st2common.util.crypto (AESKey.generate(), symmetric_encrypt):
# the datastore key file st2 reads ([keyvalue] encryption_key_path) and a value it encrypted.
ST2_KEY_FILE = ('{"hmacKey":{"hmacKeyString":"T_lVkpMrKp6CvqWFvpOSvFNsmYZuzGtlTiYfEhs2cq0",'
                '"size":256},"aesKeyString":"oGXU67mzbs-x1DXSvueIVA7ilNO0tanBYB10-uEt-6s",'
                '"mode":"CBC","size":256}')
ST2_CIPHERTEXT = ("303030303014B7ECBD6C161BDF32779A78F93A9A7AED77A1F43D8B3FFD4937165A49FAA4A468CF"
                  "9681A1A325DE3512FAE8662D44B423B949959DCB63A51EB63B4138F941CC79C73B7B")


class Clock(object):
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def service(store, class_name="InventoryAction"):
    return local_runner.LocalActionService("dialog", class_name, store)


def encrypted_store(**kwargs):
    """A datastore with the example's keys set as `st2 key set <name> <value> --encrypt`."""
    store = local_runner.MemoryDatastore(**kwargs)
    for name, value in PLAIN.items():
        service(store).set_value(name, value, local=False, encrypt=True)
    return store


def example_copy(tmp_path, decrypt_kv=False, **do_fra):
    """dialog.yaml.example as an operator copies it to /opt/stackstorm/configs/dialog.yaml,
    with do_fra settings added to the do-fra profile (the fake's endpoint_url)."""
    text = open(EXAMPLE, encoding="utf-8").read()
    # decrypt_kv: the form the README used to give
    text, count = SECRET_LINE.subn(r'\1%s }}"' % (" | decrypt_kv" if decrypt_kv else ""), text)
    assert count == 3
    config = yaml.safe_load(text)
    config["profiles"]["do-fra"].update(do_fra)
    path = tmp_path / "dialog.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.fixture(scope="module")
def digitalocean():
    with FakeDigitalOcean(token=PLAIN["dialog_do_token"]) as fake:
        yield fake


def test_example_references_secret_fields_without_decrypt_kv():
    text = open(EXAMPLE, encoding="utf-8").read()
    references = re.findall(r'^\s+(\w+): "\{\{ st2kv\.system\.(\w+) \}\}"$', text, re.M)
    assert sorted(name for _, name in references) == sorted(PLAIN)
    assert "| decrypt_kv" not in "".join(line for line in text.splitlines()
                                         if not line.lstrip().startswith("#"))


def test_example_with_encrypted_keys_gives_the_actions_the_plain_values(tmp_path, digitalocean):
    store = encrypted_store()
    for name, value in PLAIN.items():  # the datastore holds ciphertext, not the value
        assert value not in store.items[name]
        assert re.fullmatch("[0-9A-F]+", store.items[name])
    path = example_copy(tmp_path, endpoint_url=digitalocean.url)
    # dialog.inventory on DigitalOcean: the fake answers 401 to any other bearer token.
    ok, result = local_runner.run_action(
        "dialog.inventory", {"profile": "do-fra", "deployment": "dialog"}, config_path=path,
        datastore=store)
    assert ok, result
    assert result["provider"] == "digitalocean" and result["hosts"] == []
    # On AWS: what the action's driver hands boto3 to sign requests with.
    config = local_runner.load_config(ROOT, path, store)
    action = InventoryAction(config=config, action_service=service(store))
    settings, provider, region = action.target("aws-eu")
    credentials = action.driver(settings, provider, region)._session().get_credentials()
    assert (credentials.access_key, credentials.secret_key) == (
        PLAIN["dialog_aws_access_key_id"], PLAIN["dialog_aws_secret_access_key"])
    assert (provider, region) == ("aws", "eu-west-1")


def test_values_stackstorm_encrypted_load_with_stackstorm_key(tmp_path):
    import st2_crypto  # pylint: disable=import-outside-toplevel
    key_file = tmp_path / "datastore_key.json"
    key_file.write_text(ST2_KEY_FILE)
    store = local_runner.MemoryDatastore(
        items={"dialog_do_token": ST2_CIPHERTEXT}, encrypted={"dialog_do_token"},
        crypto_key=st2_crypto.read_crypto_key(str(key_file)))
    config = local_runner.load_config(ROOT, example_copy(tmp_path), store)
    assert config["profiles"]["do-fra"]["digitalocean_token"] == PLAIN["dialog_do_token"]


def test_decrypt_kv_on_a_secret_field_fails_with_stackstorms_error(tmp_path, digitalocean):
    store = encrypted_store()
    path = example_copy(tmp_path, decrypt_kv=True, endpoint_url=digitalocean.url)
    ok, result = local_runner.run_action(
        "dialog.inventory", {"profile": "do-fra", "deployment": "dialog"}, config_path=path,
        datastore=store)
    # What ContentPackConfigLoader.get_config() raises on StackStorm 3.9.0 and master: the
    # expression decrypts, then the loader decrypts the plain value again.
    assert not ok
    assert result["error"] == "Non-hexadecimal digit found"
    with pytest.raises(binascii.Error, match="Non-hexadecimal digit found"):
        local_runner.load_config(ROOT, path, store)


def test_dialog_local_run_loads_the_config_as_stackstorm(tmp_path, capsys):
    # With an empty datastore, as `./dialog-local run` has: a plain reference renders as None
    # (st2 renders a missing key as nothing), decrypt_kv of a missing key fails the execution.
    assert local_runner.main(["run", "dialog.plan", "tier=small", "--config", EXAMPLE]) == 0
    capsys.readouterr()
    old = example_copy(tmp_path, decrypt_kv=True)
    assert local_runner.main(["run", "dialog.plan", "tier=small", "--config", old]) == 1
    out = capsys.readouterr().out
    assert "status: failed" in out
    assert ('Failed to render dynamic configuration value for key '
            '\\"profiles.aws-eu.aws_access_key_id\\"') in out
    assert "Referenced datastore item \\\"st2kv.system.dialog_aws_access_key_id\\\" doesn't exist" \
        in out


def test_schema_defaults_are_filled_in_as_stackstorm_does():
    config = local_runner.load_config(ROOT, EXAMPLE, local_runner.MemoryDatastore())
    profiles = config["profiles"]
    # additionalProperties sub-schema defaults, per profile
    # No default login user or SSH path: they depend on the image and the provider (Debian on
    # AWS logs in as admin, DigitalOcean as root), so StackStorm must not fill one in.
    assert "ssh_user" not in profiles["do-fra"] and "ssh_address" not in profiles["do-fra"]
    assert profiles["onprem"]["ssh_user"] == "deploy"  # given values stay
    assert all(p["images"] == {} for p in profiles.values())
    assert profiles["onprem"]["ssh_key_names"] == []
    # an array of objects without default becomes [] (st2 creates it to descend into it)
    assert profiles["aws-eu"]["hosts"] == []
    # nested properties defaults
    assert config["autoscaling"]["cooldown_out"] == 600
    assert config["autoscaling"]["tolerance"] == 0.1
    assert config["autoscaling"]["poll_interval"] == 30
    # keys absent from the datastore render as None
    assert profiles["aws-eu"]["aws_access_key_id"] is None
    assert profiles["do-fra"]["digitalocean_token"] is None


def test_user_scope_is_rendered_for_the_loading_user(tmp_path):
    store = local_runner.MemoryDatastore()
    store.set("chat", "#ops-stanley", scope="user", user="stanley")
    store.set("chat", "#ops-alice", scope="user", user="alice")
    path = tmp_path / "dialog.yaml"
    path.write_text('chat_channel: "{{ st2kv.user.chat }}"\n')
    assert local_runner.load_config(ROOT, str(path), store)["chat_channel"] == "#ops-stanley"
    config = local_runner.load_config(ROOT, str(path), store, user="alice")
    assert config["chat_channel"] == "#ops-alice"


@pytest.mark.parametrize("content, field", [
    ("profiles:\n  good: {provider: aws}\n  second: {region: fra1}\n",
     '"profiles.second.provider": \'provider\' is a required property'),
    ("profiles:\n  p:\n    provider: static\n    hosts:\n      - {name: a, roles: [web]}\n",
     '"profiles.p.hosts.0.address": \'address\' is a required property'),
    ("profiles:\n  sandbox: {provider: aws, name: sandbox}\n",
     '"profiles.sandbox": Additional properties are not allowed (\'name\' was unexpected)'),
])
def test_a_config_stackstorm_refuses_is_refused_naming_the_field(tmp_path, content, field):
    path = tmp_path / "dialog.yaml"
    path.write_text(content)
    with pytest.raises(local_runner.RunnerError) as info:
        local_runner.load_config(ROOT, str(path))
    assert "Failed validating config" in str(info.value)
    assert field in str(info.value)


def pack_with_schema(tmp_path, schema, config):
    (tmp_path / "pack.yaml").write_text("ref: dialog\nname: dialog\nversion: 0.1.0\n")
    (tmp_path / "config.schema.yaml").write_text(schema)
    (tmp_path / "dialog.yaml").write_text(config)
    return str(tmp_path)


def test_registration_refuses_decrypt_kv_on_a_top_level_secret(tmp_path):
    pack = pack_with_schema(tmp_path, "token: {type: string, secret: true}\n",
                            'token: "{{ st2kv.system.token | decrypt_kv }}"\n')
    with pytest.raises(local_runner.RunnerError,
                       match='Values specified as "secret: True" in config schema are '
                             'automatically decrypted by default'):
        local_runner.load_config(pack)


def test_a_schema_stackstorm_refuses_refuses_every_config(tmp_path):
    # A draft 4 `required` list: st2's dialect wants `required: true` on each property.
    pack = pack_with_schema(
        tmp_path, "auth:\n  type: object\n  required: [user]\n  properties:\n"
                  "    user: {type: string}\n", "auth: {user: x}\n")
    with pytest.raises(local_runner.RunnerError, match="is not of type 'boolean'"):
        local_runner.load_config(pack)


def test_ciphertext_round_trip_and_stackstorms_errors():
    store = local_runner.MemoryDatastore()
    action = service(store)
    action.set_value("k", "s3cret value", local=False, encrypt=True)
    stored = action.get_value("k", local=False)
    # st2's format: hex of header (5) + IV (16) + AES-CBC blocks + HMAC-SHA1 (20)
    assert re.fullmatch("[0-9A-F]+", stored) and len(stored) == 2 * (5 + 16 + 16 + 20)
    assert action.get_value("k", local=False, decrypt=True) == "s3cret value"
    assert store.decrypt(stored) == "s3cret value"
    action.set_value("k", "s3cret value", local=False, encrypt=True)
    assert action.get_value("k", local=False) != stored  # a fresh IV every time
    # decrypting what is not ciphertext fails as st2's symmetric_decrypt does
    with pytest.raises(binascii.Error, match="Non-hexadecimal digit found"):
        store.decrypt("s3cret value")
    with pytest.raises(Exception, match="Signature did not match digest"):
        local_runner.MemoryDatastore().decrypt(stored)  # another datastore's key
    # a plain value is handed out as it is, with or without decrypt
    action.set_value("plain", "visible", local=False)
    assert action.get_value("plain", local=False, decrypt=True) == "visible"
    assert [(v.name, v.secret) for v in action.list_values(local=False)] == [
        ("k", True), ("plain", False)]


def test_decrypt_kv_of_a_plain_value_fails_like_stackstorm(tmp_path):
    store = local_runner.MemoryDatastore()
    store.set("channel", "#ops")
    path = tmp_path / "dialog.yaml"
    path.write_text('chat_channel: "{{ st2kv.system.channel | decrypt_kv }}"\n')
    with pytest.raises(RuntimeError, match='Failed to render dynamic configuration value for key '
                                           '"chat_channel".*Non-hexadecimal digit found'):
        local_runner.load_config(ROOT, str(path), store)


def test_ttl_expires_and_frees_the_operation_lock():
    clock = Clock()
    store = local_runner.MemoryDatastore(clock=clock)
    action = service(store, "ScaleAction")
    operation_lock.acquire(action, "prod", "exec-1", "scale", clock(), ttl=600)
    clock.now += 599
    with pytest.raises(operation_lock.LockHeld, match="scale is running, execution exec-1"):
        operation_lock.acquire(action, "prod", "exec-2", "deploy", clock(), ttl=600)
    clock.now += 1
    assert action.get_value(operation_lock.lock_key("prod"), local=False) is None
    assert action.list_values(local=False) == []
    operation_lock.acquire(action, "prod", "exec-2", "deploy", clock(), ttl=600)  # free again
    # a value set again without ttl no longer expires; ttl must be an integer, as in st2's API
    action.set_value("kept", "1", ttl=5, local=False)
    action.set_value("kept", "2", local=False)
    clock.now += 10 ** 6
    assert action.get_value("kept", local=False) == "2"
    with pytest.raises(ValueError, match="is not of type 'integer'"):
        action.set_value("kept", "3", ttl=1.5, local=False)


def test_ttl_expires_on_the_real_clock():
    action = service(local_runner.MemoryDatastore())
    action.set_value("short", "x", ttl=1)
    assert action.get_value("short") == "x"
    time.sleep(1.05)
    assert action.get_value("short") is None


def test_the_sandbox_registers_its_config_with_encrypted_credentials(tmp_path):
    import sandbox_deploy  # pylint: disable=import-outside-toplevel
    from sandbox_autoscale import POLL  # pylint: disable=import-outside-toplevel
    from aws_emulator import AwsEmulator  # pylint: disable=import-outside-toplevel
    store = local_runner.MemoryDatastore()
    # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    public = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    hosts = types.SimpleNamespace(ssh_key_path=str(tmp_path / "key"), gateway="10.40.0.1",
                                  ssh_public_key=public, login_user="admin")
    from sandbox.mirror import Mirror  # pylint: disable=import-outside-toplevel
    with AwsEmulator() as emulator, Mirror("127.0.0.1", apt_port=0, registry_port=0) as mirror:
        values = sandbox_deploy.sandbox_values(emulator, hosts, store, mirror.dialog_images)
        values = sandbox_deploy.use_mirror(values, mirror, store)
        box = sandbox_deploy.Sandbox(emulator, hosts, values, store, str(tmp_path), None)
    profile = box.config["profiles"]["sandbox"]
    assert json.dumps(values).count("st2kv.system.sandbox_") == 3
    credentials = (profile["aws_access_key_id"], profile["aws_secret_access_key"])
    assert credentials == ("testing", "testing")
    assert "testing" not in store.items["sandbox_aws_secret_access_key"]
    assert profile["registry_password"] == mirror.password
    assert mirror.password not in store.items["sandbox_registry_password"]
    assert profile["docker_apt_repository"] == mirror.apt_repository
    # The autoscaling sandbox's sensor gets the same config, its poll_interval an integer.
    sensor = box.pack_config(autoscaling={"deployments": [], "poll_interval": POLL})
    assert sensor["autoscaling"]["cooldown_out"] == 600 and "sandbox" in sensor["profiles"]
