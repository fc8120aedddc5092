"""Preflight: every wrong setting found with read-only calls, all at once, before anything is
made. AWS through moto's server (devtools/aws_emulator.py), DigitalOcean through the fake API
(devtools/fake_digitalocean.py); the only stand-in in front of them is a botocore before-send
handler answering Service Quotas, which moto does not model for EC2."""

import contextlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from botocore.awsrequest import AWSResponse
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from st2tests.base import BaseActionTestCase

from aws_emulator import AwsEmulator
from fake_digitalocean import FakeDigitalOcean
from lib.cloud import preflight as pf
from lib.planner import build_plan
from lib.providers import aws, digitalocean
from lib.providers.base import CallLog
from preflight import PreflightAction
from provision import ProvisionAction

ADMIN = ["198.51.100.0/24"]
IMAGES = {"dialog_server": "registry.example.com/dialog/server:2.1",
          "web_app": "registry.example.com/dialog/web-app:2.1",
          "dashboard": "registry.example.com/dialog/dashboard:2.1",
          "push": "registry.example.com/dialog/push:2.1"}


def private_key_text():
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption()).decode()


def public_key_text(private_text):
    key = serialization.load_ssh_private_key(private_text.encode(), None)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode()


KEY = private_key_text()


@pytest.fixture(name="emu")
def fresh_emulator(emulator):
    emulator.reset()
    emulator.client().import_key_pair(KeyName="dialog-deploy",
                                      PublicKeyMaterial=public_key_text(KEY).encode())
    return emulator


@pytest.fixture(scope="module")
def do_api():
    with FakeDigitalOcean() as running:
        yield running


@pytest.fixture(name="fake")
def fresh_fake(do_api):
    do_api.reset()
    return do_api


def good_aws(emu, **overrides):
    return emu.profile(**dict({"images": dict(IMAGES), "ssh_key_names": ["dialog-deploy"],
                               "ssh_private_key": KEY, "admin_networks": ADMIN}, **overrides))


def good_do(fake, **overrides):
    return fake.profile(**dict({"images": dict(IMAGES), "ssh_private_key": KEY,
                                "admin_networks": ADMIN}, **overrides))


def quota_hook(vcpus):
    """Answers GetServiceQuota for L-1216C47A as AWS does (JSON protocol); other calls go on."""
    def answer(**_):
        body = json.dumps({"Quota": {
            "ServiceCode": "ec2", "QuotaCode": "L-1216C47A", "Value": float(vcpus),
            "QuotaName": "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
            "Unit": "None", "Adjustable": True, "GlobalQuota": False}}).encode()
        return AWSResponse("https://servicequotas.amazonaws.com", 200,
                           {"Content-Type": "application/x-amz-json-1.1"}, _Body(body))

    def install(client):
        client.meta.events.register("before-send.service-quotas.GetServiceQuota", answer)
    return install


class _Body:
    def __init__(self, data):
        self._data = data

    def stream(self, **_):
        yield self._data


def run_aws(profile, plan, region="us-east-1", quota=None):
    calls = CallLog()
    driver = aws.Driver(profile, region, calls=calls,
                        client_hook=quota_hook(quota) if quota is not None else None)
    return pf.preflight(profile, plan, driver), calls


def run_do(profile, plan):
    calls = CallLog()
    driver = digitalocean.Driver(profile, plan["region"], calls=calls)
    return pf.preflight(profile, plan, driver), calls


def problem(report, setting):
    found = [p for p in report["problems"] if p.startswith(setting)]
    assert len(found) == 1, (setting, report["problems"])
    return found[0]


# ---- three wrong settings at once, no mutation ----------------------------------------------

def test_aws_three_wrong_settings_are_all_reported_with_no_mutating_call(emu):
    profile = good_aws(emu, images={}, ssh_key_names=["laptop"], admin_networks=[])
    report, calls = run_aws(profile, build_plan("small", "aws", admin_networks=[]))
    assert not report["ok"]
    assert len(report["problems"]) == 6, report["problems"]   # three settings, four images
    for key in IMAGES:
        assert "images.%s: not set" % key in " ".join(report["problems"])
    assert "'laptop' is not registered with aws in us-east-1; registered: dialog-deploy" \
        in problem(report, "ssh_key_names")
    assert "empty; on aws SSH is open only to these CIDR networks" \
        in problem(report, "admin_networks")
    assert calls.calls and calls.mutating == []
    assert set(calls.reads) >= {"DescribeKeyPairs", "DescribeInstanceTypeOfferings"}
    assert emu.resource_counts() == dict.fromkeys(emu.resource_counts(), 0)


def test_digitalocean_three_wrong_settings_are_all_reported_with_no_mutating_call(fake):
    profile = good_do(fake, images={"dialog_server": IMAGES["dialog_server"]},
                      ssh_key_names=["laptop", "dialog-deploy"], admin_networks=[])
    report, calls = run_do(profile, build_plan("small", "digitalocean", region="fra1",
                                               admin_networks=[]))
    assert not report["ok"]
    assert sorted(p.split(":")[0] for p in report["problems"]) == [
        "admin_networks", "images.dashboard", "images.push", "images.web_app", "ssh_key_names"]
    assert "'laptop' is not registered" in problem(report, "ssh_key_names")
    assert calls.calls and calls.mutating == []
    assert {r["method"] for r in fake.requests} == {"GET"}
    assert fake.resource_counts() == dict.fromkeys(fake.resource_counts(), 0)


def test_a_missing_private_key_and_half_registry_credentials_are_named(emu, tmp_path):
    profile = good_aws(emu, ssh_private_key=None, ssh_key_file=str(tmp_path / "absent"),
                       registry_username="deploy")
    report, _ = run_aws(profile, build_plan("small", "aws", admin_networks=ADMIN))
    assert "is not a readable file" in problem(report, "ssh_key_file")
    assert "only registry_username is set" in problem(report, "registry_username")
    profile = good_aws(emu, ssh_private_key="not a key at all")
    report, _ = run_aws(profile, build_plan("small", "aws", admin_networks=ADMIN))
    assert problem(report, "ssh_private_key").endswith("(the value is not shown)")
    assert "not a key at all" not in repr(report)


def test_no_key_at_all_is_named_unless_the_runner_has_one_of_its_own(emu, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    plan = build_plan("small", "aws", admin_networks=ADMIN)
    report, _ = run_aws(good_aws(emu, ssh_private_key=None), plan)
    assert "neither is set" in problem(report, "ssh_private_key or ssh_key_file")
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_ed25519").write_text(KEY)
    assert run_aws(good_aws(emu, ssh_private_key=None), plan)[0]["ok"]
    (tmp_path / "key").write_text("ssh-ed25519 AAAA public half only")
    report, _ = run_aws(good_aws(emu, ssh_private_key=None, ssh_key_file=str(tmp_path / "key")),
                        plan)
    found = problem(report, "ssh_key_file")
    assert "holds no unencrypted ed25519, ECDSA or RSA private key" in found


# ---- account limits -------------------------------------------------------------------------

def test_aws_vcpu_quota_too_small_for_the_plan_is_reported(emu):
    plan = build_plan("small", "aws", admin_networks=ADMIN)
    needed = sum(h["instance"]["vcpus"] for h in plan["hosts"])
    report, _ = run_aws(good_aws(emu), plan, quota=needed + 2)
    assert report["ok"], report["problems"]
    # Another deployment's running instance uses 4 of the quota: the plan no longer fits.
    image = emu.image or "ami-0d12b00c0ffee1202"
    emu.client().run_instances(ImageId=image, InstanceType="t2.xlarge", MinCount=1, MaxCount=1)
    report, calls = run_aws(good_aws(emu), plan, quota=needed + 2)
    assert problem(report, "account limits") == (
        "account limits: the plan needs %d more vCPUs of On-Demand standard instances in "
        "us-east-1, but 4 of the quota's %d are in use (Service Quotas L-1216C47A); request an "
        "increase or plan fewer or smaller hosts" % (needed, needed + 2))
    assert "GetServiceQuota" in calls.reads and calls.mutating == []


def test_aws_quota_check_is_skipped_not_failed_when_service_quotas_cannot_answer(emu):
    # moto's Service Quotas knows no EC2 quota: like an account whose policy lacks it.
    report, _ = run_aws(good_aws(emu), build_plan("small", "aws", admin_networks=ADMIN))
    assert report["ok"], report["problems"]
    assert "limits" not in report["checked"]
    assert "the vCPU limit was not checked" in report["skipped"]["limits"]


def test_digitalocean_droplet_limit_too_small_for_the_plan_is_reported(fake):
    fake.reset(limits={"droplet_limit": 5})
    plan = build_plan("small", "digitalocean", region="fra1", admin_networks=ADMIN)
    report, _ = run_do(good_do(fake), plan)
    assert problem(report, "account limits").startswith(
        "account limits: the plan adds 7 droplets to the 0 the account has, beyond its "
        "droplet_limit of 5")


# ---- sizes in the region -------------------------------------------------------------------

def test_aws_sizes_not_offered_in_the_region_are_reported(emu):
    # Stockholm offers no t2 instances (moto's offerings are AWS's published ones).
    plan = build_plan("small", "aws", region="eu-north-1", admin_networks=ADMIN)
    report, calls = run_aws(good_aws(emu, region="eu-north-1"), plan, region="eu-north-1")
    assert problem(report, "region") == (
        "region: eu-north-1 does not offer sizes t2.medium, t2.xlarge the plan needs; choose a "
        "region that offers them")
    assert calls.mutating == []


def test_digitalocean_size_not_offered_in_the_region_is_reported(fake):
    report, _ = run_do(good_do(fake, region="nyc3"),
                       build_plan("small", "digitalocean", region="nyc3",
                                  admin_networks=ADMIN))
    assert problem(report, "region").startswith(
        "region: nyc3 does not offer size s-2vcpu-4gb the plan needs")


# ---- a correct profile ---------------------------------------------------------------------

def test_a_correct_aws_profile_passes_every_check(emu):
    plan = build_plan("small-failover", "aws", admin_networks=ADMIN)
    report, calls = run_aws(good_aws(emu), plan, quota=1000)
    assert report == {"ok": True, "problems": [], "skipped": {}, "checked": [
        "images", "registry", "ssh_keys", "private_key", "admin_networks", "limits", "sizes"]}
    assert calls.mutating == []


def test_a_correct_digitalocean_profile_passes_every_check(fake):
    report, _ = run_do(good_do(fake), build_plan("small-failover", "digitalocean",
                                                 region="fra1", admin_networks=ADMIN))
    assert report["ok"] and report["skipped"] == {}, report


# ---- registry login ------------------------------------------------------------------------

class _Registry(BaseHTTPRequestHandler):
    """A registry (HTTP API v2) that, like a private one, serves manifests only with Basic
    credentials and answers 404 for an unknown repository."""

    def do_HEAD(self):  # noqa: N802  (http.server's naming)
        expected = "Basic ZGVwbG95OnMzY3IzdA=="        # deploy:s3cr3t
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="registry"')
        elif "/dialog/" in self.path:
            self.send_response(200)
        else:
            self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):  # pylint: disable=arguments-differ
        pass


@pytest.fixture(name="registry")
def local_registry():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield "127.0.0.1:%d" % server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_registry_that_needs_a_login_is_found_before_anything_is_made(emu, registry):
    images = {key: "%s/dialog/%s:2.1" % (registry, key) for key in IMAGES}
    plan = build_plan("small", "aws", admin_networks=ADMIN)
    profile = good_aws(emu, images=images, registry="http://" + registry)
    report, _ = run_aws(profile, plan, quota=1000)
    assert len(report["problems"]) == 4
    assert "refuses to serve %s/dialog/push:2.1 without a login" % registry \
        in " ".join(report["problems"])
    wrong = dict(profile, registry_username="deploy", registry_password="guess")
    report, _ = run_aws(wrong, plan, quota=1000)
    assert "refused these credentials" in report["problems"][0]
    assert "guess" not in repr(report)
    right = dict(profile, registry_username="deploy", registry_password="s3cr3t")
    assert run_aws(right, plan, quota=1000)[0]["ok"]
    typo = dict(right, images=dict(images, push="%s/dialgo/push:2.1" % registry))
    assert run_aws(typo, plan, quota=1000)[0]["problems"] == [
        "images: %s/dialgo/push:2.1 does not exist in %s (check the name and tag)"
        % (registry, registry)]


# ---- the actions ---------------------------------------------------------------------------

class PreflightActionsTestCase(BaseActionTestCase):
    action_cls = ProvisionAction

    def run_action(self, cls, config, **parameters):
        self.action_cls = cls
        self.setUp()
        action = self.get_action_instance(config=config)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            ok, result = action.run(**parameters)
        return ok, result, printed.getvalue()

    def test_provision_with_a_bad_profile_fails_before_creating_anything(self):
        with AwsEmulator() as emu:
            profile = good_aws(emu, images={}, ssh_key_names=["laptop"], admin_networks=[])
            config = {"default_profile": "cloud", "profiles": {"cloud": profile}}
            ok, result, printed = self.run_action(ProvisionAction, config, tier="small")
            self.assertFalse(ok)
            self.assertEqual(len(result["problems"]), 6, result["problems"])
            self.assertIn("preflight found 6 problems; nothing was created or changed",
                          result["error"])
            self.assertIn("ssh_key_names: 'laptop' is not registered", result["error"])
            self.assertIn("6 problems, all to fix before anything is created", printed)
            self.assertEqual(emu.resource_counts(), dict.fromkeys(emu.resource_counts(), 0))
            self.assertNotIn("testing", repr(result))       # the profile's access key

    def test_provision_on_digitalocean_with_a_bad_profile_creates_nothing(self):
        with FakeDigitalOcean(limits={"droplet_limit": 3}) as fake:
            config = {"default_profile": "do", "profiles": {"do": good_do(fake, images={})}}
            ok, result, _ = self.run_action(ProvisionAction, config, tier="small")
            self.assertFalse(ok)
            self.assertTrue(any(p.startswith("account limits") for p in result["problems"]))
            self.assertEqual(fake.resource_counts(), dict.fromkeys(fake.resource_counts(), 0))
            self.assertEqual({r["method"] for r in fake.requests}, {"GET"})

    def test_preflight_action_reports_ok_and_the_checks_it_ran(self):
        with FakeDigitalOcean() as fake:
            config = {"default_profile": "do", "profiles": {"do": good_do(fake)}}
            ok, result, printed = self.run_action(PreflightAction, config, tier="small")
            self.assertTrue(ok, result)
            self.assertTrue(result["ok"])
            self.assertEqual(result["problems"], [])
            self.assertIn("sizes", result["checked"])
            self.assertIn("no problems found", printed)
            ok, result, _ = self.run_action(PreflightAction, config, tier="small",
                                            region="nyc3")
            self.assertFalse(ok)
            self.assertFalse(result["ok"])
            self.assertIn("s-2vcpu-4gb", result["error"])
