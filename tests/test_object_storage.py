"""Shared files: the dialog servers of a multi-server deployment keep uploads in one bucket
(lib.cloud.object_storage), the AWS bucket's keys belong to an IAM user allowed that bucket
only, and they reach the servers' config in a secret file only."""

import json

import pytest

from aws_emulator import AwsEmulator
from lib.cloud import object_storage
from lib.planner import build_plan
from lib.providers import aws
from lib.render import render_host
from test_render import make_context


class Datastore:
    """The two datastore calls object_storage makes, as StackStorm's action service has
    them; the test can read what was encrypted and written."""

    def __init__(self):
        self.values = {}

    def get_value(self, name, local=True, decrypt=False):
        assert not local and decrypt
        return self.values.get(name)

    def set_value(self, name, value, local=True, encrypt=False):
        assert not local and encrypt
        self.values[name] = value


@pytest.fixture(scope="module")
def emu():
    with AwsEmulator() as running:
        yield running


def dialog_conf(context):
    server = [h for h in context["hosts"] if "dialog-server" in h["roles"]][0]
    (conf,) = [f for f in render_host(context, server["name"])["files"]
               if f["path"] == "/etc/dialog/server.conf"]
    assert conf["secret"] and conf["mode"] == 0o600
    return conf["content"]


def test_dialog_servers_share_the_bucket_and_keep_its_key_in_a_secret_file():
    context = make_context("small-failover")
    assert "LocalFileStorageAdapter" in dialog_conf(context)
    context["object_storage"] = {"endpoint": "https://s3.eu-west-1.amazonaws.com",
                                 "bucket": "dialog-dialog-0123abcd", "region": "eu-west-1",
                                 "path_style": False, "access_key_id": "AKIAFILES",
                                 "secret_access_key": "files-secret-value"}
    text = dialog_conf(context)
    assert "S3StorageAdapter" in text and "LocalFileStorageAdapter" not in text
    assert 'default-bucket = "dialog-dialog-0123abcd"' in text
    assert 'secret-key = "files-secret-value"' in text
    others = [h for h in context["hosts"] if "dialog-server" not in h["roles"]]
    for host in others:
        for item in render_host(context, host["name"])["files"]:
            assert "files-secret-value" not in item["content"], (host["name"], item["path"])


def test_a_bucket_without_keys_is_named_before_anything_runs():
    context = make_context("small-failover")
    context["object_storage"] = {"endpoint": "https://s3.example.net", "bucket": "b"}
    server = [h for h in context["hosts"] if "dialog-server" in h["roles"]][0]
    with pytest.raises(Exception) as caught:
        render_host(context, server["name"])
    assert "object_storage" in str(caught.value) and "access_key_id" in str(caught.value)


def test_aws_bucket_keys_are_made_once_kept_encrypted_and_limited_to_the_bucket(emu):
    emu.reset()
    driver = aws.Driver(emu.profile(), "us-east-1", wait_delay=0.01)
    plan = build_plan("small", "aws", admin_networks=["203.0.113.0/24"])
    driver.reconcile(plan)
    store = Datastore()
    hosts = plan["hosts"]
    # Bootstraps run in parallel and only read: without a kept key they say what to run.
    with pytest.raises(Exception) as caught:
        object_storage.files_settings(store, driver, "dialog", hosts, False)
    assert "dialog.provision" in str(caught.value) and store.values == {}
    first = object_storage.files_settings(store, driver, "dialog", hosts, False, create=True)
    assert "new_credentials" not in first
    kept = json.loads(store.values["dialog.dialog.files_key"])
    assert kept["access_key_id"] == first["access_key_id"]
    again = aws.Driver(emu.profile(), "us-east-1")
    second = object_storage.files_settings(store, again, "dialog", hosts, False)
    assert second == first and again.calls.mutating == []
    iam = emu.client("iam")
    policy = iam.get_user_policy(UserName="dialog-dialog-files", PolicyName="dialog-files")
    document = policy["PolicyDocument"]
    resources = {r for s in document["Statement"] for r in [s["Resource"]]}
    assert resources == {"arn:aws:s3:::%s" % first["bucket"], "arn:aws:s3:::%s/*"
                         % first["bucket"]}
    gone = aws.Driver(emu.profile(), "us-east-1", wait_delay=0.01)
    gone.destroy("dialog")
    assert iam.list_users(PathPrefix="/dialog/")["Users"] == []
    assert object_storage.files_settings(store, driver, "dialog", hosts[:1], False) is None


def test_an_object_storage_holding_only_filled_in_defaults_is_not_given():
    assert object_storage.operator_storage({"object_storage": {"path_style": True}}) is None
    assert object_storage.operator_storage({}) is None
    with pytest.raises(Exception) as caught:
        object_storage.operator_storage({"object_storage": {"bucket": "b"}})
    assert "endpoint" in str(caught.value)
