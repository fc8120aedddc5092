"""The DigitalOcean driver, through the real pydo client, against devtools/fake_digitalocean.py
served on 127.0.0.1."""

import copy
import math
import time
from collections import Counter

import pytest

from aws_emulator import AwsEmulator
from fake_digitalocean import FakeDigitalOcean
from lib import errors
from lib.planner import build_plan
from lib.providers import base
from lib.providers import digitalocean
from lib.providers.digitalocean import (Driver, _RateLimitRetry, deployment_tag, group_tag,
                                        rate_limit_wait, role_tag)

ADMIN = ["203.0.113.0/24"]
WORLD = {"0.0.0.0/0", "::/0"}
NOTHING = {"droplets": 0, "volumes": 0, "firewalls": 0, "reserved_ips": 0, "vpcs": 0,
           "tags": 0}
COMBINATIONS = [(tier, storage, droplet_class)
                for tier in ("mini", "small", "small-failover", "production")
                for storage in (False, True) for droplet_class in ("standard", "optimized")
                if not (tier == "mini" and storage)]


class Crash(Exception):
    """Stands for the process dying right after DigitalOcean applied a change."""


class CrashAfter(base.CallLog):
    def __init__(self, k):
        super().__init__()
        self.k = k

    def after_mutation(self, operation):
        if len(self.mutating) == self.k:
            raise Crash(operation)


class VirtualTime:
    """A clock that sleeping advances: rate-limit waits cost no real time."""

    def __init__(self):
        self.offset = 0.0
        self.sleeps = []

    def time(self):
        return time.time() + self.offset

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.offset += max(seconds, 0.0)


@pytest.fixture(scope="module")
def spaces():
    """moto's S3 standing in for Spaces' S3 API."""
    with AwsEmulator() as s3:
        yield s3


@pytest.fixture(scope="module")
def server(spaces):
    with FakeDigitalOcean() as fake:
        fake.spaces_endpoint = spaces.endpoint_url
        forget = fake.reset

        def reset(**options):     # the account's Spaces go with the rest of it
            spaces.reset()
            forget(**options)
        fake.reset = reset
        yield fake


@pytest.fixture
def fake(server):
    server.reset()
    yield server
    server.reset()


def driver(fake, calls=None, profile=None, **kwargs):
    kwargs.setdefault("poll_interval", 0.001)
    return Driver(fake.profile(**(profile or {})), "fra1", calls=calls, **kwargs)


def plan_for(tier="small-failover", **options):
    options.setdefault("admin_networks", ADMIN)
    return build_plan(tier, "digitalocean", **options)


def own_droplets(fake, deployment="dialog"):
    return [d for d in fake.droplets.values() if deployment_tag(deployment) in d["tags"]]


def reserved_ip_hosts(plan):
    """Host names that should hold a reserved IP: public hosts and each VIP's first host."""
    hosts = {h["name"] for h in plan["hosts"] if h["public_ips"]}
    return hosts | {vip["hosts"][0] for vip in plan["floating_ips"]}


def firewall_rules(fake, deployment):
    """The fake's firewalls read back as plan["firewall"] rules."""
    rules = []
    for firewall in fake.firewalls.values():
        role = "*" if firewall["name"] == deployment + "-hosts" else \
            firewall["name"][len(deployment) + 1:]
        wanted_tag = deployment_tag(deployment) if role == "*" else role_tag(deployment, role)
        assert firewall["tags"] == [wanted_tag]
        for rule in firewall["inbound_rules"]:
            low, _, high = rule["ports"].partition("-")
            sources = rule["sources"]
            if "tags" in sources:
                assert sources == {"tags": [deployment_tag(deployment)]}
                source, cidrs = "internal", []
            else:
                source, cidrs = ("admin" if role == "*" else "public"), sources["addresses"]
            rules.append({"role": role, "protocol": rule["protocol"], "from_port": int(low),
                          "to_port": int(high or low), "source": source, "cidrs": cidrs})
    return rules


def _sorted_rules(rules):
    return sorted(rules, key=lambda r: sorted((k, str(v)) for k, v in r.items()))


def assert_matches_plan(fake, plan):
    """The fake holds exactly the plan: no duplicate, no orphan, nothing missing."""
    deployment = plan["deployment"]
    droplets = {d["name"]: d for d in own_droplets(fake, deployment)}
    assert sorted(droplets) == sorted(h["name"] for h in plan["hosts"])
    assert len(droplets) == len(fake.droplets)
    vpc = next(iter(fake.vpcs.values()))
    assert len(fake.vpcs) == 1 and vpc["name"] == "dialog-" + deployment
    by_id = {d["id"]: name for name, d in droplets.items()}
    for host in plan["hosts"]:
        droplet = droplets[host["name"]]
        assert droplet["size_slug"] == host["size"] and droplet["status"] == "active"
        assert droplet["vpc_uuid"] == vpc["id"]
        assert set(droplet["tags"]) == {deployment_tag(deployment),
                                        group_tag(deployment, host["group"])} | {
            role_tag(deployment, role) for role in host["roles"]}
    volumes = {v["name"]: (v["size_gigabytes"], [by_id[i] for i in v["droplet_ids"]])
               for v in fake.volumes.values()}
    assert volumes == {"%s-%s" % (h["name"], d["purpose"]): (d["size_gb"], [h["name"]])
                       for h in plan["hosts"] for d in h["disks"] if d["source"] == "volume"}
    holders = [by_id[(ip["droplet"] or {}).get("id")] for ip in fake.reserved_ips.values()]
    assert sorted(holders) == sorted(reserved_ip_hosts(plan))
    expected_rules = [r for r in plan["firewall"] if r["source"] != "admin" or r["cidrs"]]
    assert _sorted_rules(firewall_rules(fake, deployment)) == _sorted_rules(expected_rules)
    assert_no_world_on_internal_ports(fake, plan)


def assert_no_world_on_internal_ports(fake, plan):
    public = {(r["role"], r["protocol"], r["from_port"], r["to_port"])
              for r in plan["firewall"] if r["source"] == "public"}
    deployment = plan["deployment"]
    for firewall in fake.firewalls.values():
        role = firewall["name"][len(deployment) + 1:]
        for rule in firewall["inbound_rules"]:
            if WORLD & set(rule["sources"].get("addresses", [])):
                low, _, high = rule["ports"].partition("-")
                assert (role, rule["protocol"], int(low), int(high or low)) in public, rule


def assert_inventory(inventory, plan):
    hosts = {h["name"]: h for h in plan["hosts"]}
    assert [h["name"] for h in inventory] == sorted(hosts)
    with_ip = reserved_ip_hosts(plan)
    for item in inventory:
        host = hosts[item["name"]]
        assert (item["group"], item["index"], item["size"], item["state"]) == \
            (host["group"], host["index"], host["size"], "active")
        assert sorted(item["roles"]) == sorted(host["roles"])
        assert sorted(v["size_gb"] for v in item["volumes"]) == sorted(
            d["size_gb"] for d in host["disks"] if d["source"] == "volume")
        assert len(item["public_addresses"]) == 1 + (item["name"] in with_ip)
        assert item["private_address"]


def droplet_creates_by_group(fake, deployment="dialog"):
    creates = [r["body"] for r in fake.requests if r["method"] == "POST"
               and r["template"] == "/v2/droplets" and r["status"] == 202]
    assert all(len(body["names"]) <= 10 for body in creates)
    prefix = group_tag(deployment, "")
    return Counter(next(t[len(prefix):] for t in body["tags"] if t.startswith(prefix))
                   for body in creates)


def assert_rerun_is_quiet(fake, plan, **kwargs):
    calls = base.CallLog()
    assert driver(fake, calls=calls, **kwargs).reconcile(plan) == []
    assert calls.mutating == []


@pytest.mark.parametrize("tier,with_storage,droplet_class", COMBINATIONS)
def test_every_tier_provisions_exactly_the_plan(fake, tier, with_storage, droplet_class):
    plan = plan_for(tier, with_storage=with_storage, droplet_class=droplet_class)
    changes = driver(fake).reconcile(plan)

    assert_matches_plan(fake, plan)
    assert_inventory(driver(fake).inventory("dialog"), plan)
    groups = Counter(h["group"] for h in plan["hosts"])
    assert droplet_creates_by_group(fake) == {g: math.ceil(n / 10) for g, n in groups.items()}
    created = Counter(c["kind"] for c in changes if c["action"] == "create")
    assert created["droplet"] == len(plan["hosts"])
    assert created["reserved_ip"] == len(reserved_ip_hosts(plan))
    assert_rerun_is_quiet(fake, plan)

    driver(fake).destroy("dialog")
    assert fake.resource_counts() == NOTHING


def test_a_group_larger_than_ten_takes_two_creates(fake):
    plan = plan_for(dialog_servers=13)
    driver(fake).reconcile(plan)
    assert droplet_creates_by_group(fake)["dialog-server"] == 2
    assert_matches_plan(fake, plan)
    assert_rerun_is_quiet(fake, plan)


def test_mini_reports_the_reserved_ip_shortfall(fake):
    plan = plan_for("mini")
    changes = driver(fake).reconcile(plan)
    [address] = [c for c in changes if c["kind"] == "reserved_ip"]
    assert "asks for 3 public addresses" in address["detail"]
    assert "1 short" in address["detail"]
    assert len(fake.reserved_ips) == 1


def test_dry_run_lists_the_changes_and_changes_nothing(fake):
    plan = plan_for(with_storage=True)
    calls = base.CallLog()
    planned = driver(fake, calls=calls).reconcile(plan, dry_run=True)
    assert calls.mutating == [] and fake.resource_counts() == NOTHING
    assert planned == driver(fake).reconcile(plan)

    bigger = plan_for(with_storage=True, dialog_servers=5)
    calls = base.CallLog()
    assert [(c["action"], c["kind"], c["name"]) for c in driver(fake, calls=calls).reconcile(
        bigger, dry_run=True)] == [("create", "droplet", "dialog-dialog-server-4"),
                                   ("create", "droplet", "dialog-dialog-server-5")]
    calls_destroy = base.CallLog()
    listed = driver(fake, calls=calls_destroy).destroy("dialog", dry_run=True)
    assert calls.mutating == [] and calls_destroy.mutating == []
    assert Counter(c["kind"] for c in listed)["droplet"] == len(plan["hosts"])
    assert fake.resource_counts()["droplets"] == len(plan["hosts"])


def test_a_crash_after_any_mutating_call_converges_on_rerun(fake):
    plan = plan_for(with_storage=True)
    clean = base.CallLog()
    driver(fake, calls=clean).reconcile(plan)
    expected = fake.resource_counts()
    n = len(clean.mutating)
    started = time.monotonic()
    for k in range(1, n + 1):
        fake.reset()
        with pytest.raises(Crash):
            driver(fake, calls=CrashAfter(k)).reconcile(plan)
        driver(fake).reconcile(plan)
        assert fake.resource_counts() == expected, "crash after call %d" % k
        assert_matches_plan(fake, plan)
        assert_rerun_is_quiet(fake, plan)
    print("\ncrash injection: N=%d mutating calls, %d crash/re-run cycles in %.1fs"
          % (n, n, time.monotonic() - started))


def test_a_crash_during_destroy_converges_on_rerun(fake):
    plan = plan_for(with_storage=True)
    driver(fake).reconcile(plan)
    clean = base.CallLog()
    driver(fake, calls=clean).destroy("dialog")
    for k in range(1, len(clean.mutating) + 1, 3):
        fake.reset()
        driver(fake).reconcile(plan)
        with pytest.raises(Crash):
            driver(fake, calls=CrashAfter(k)).destroy("dialog")
        driver(fake).destroy("dialog")
        assert fake.resource_counts() == NOTHING, "crash after call %d" % k


def test_a_volume_created_but_not_attached_is_attached_on_rerun(fake):
    plan = plan_for()
    clean = base.CallLog()
    driver(fake, calls=clean).reconcile(plan)
    k = clean.mutating.index("POST /v2/volumes") + 1
    fake.reset()
    with pytest.raises(Crash):
        driver(fake, calls=CrashAfter(k)).reconcile(plan)
    [orphan] = [v for v in fake.volumes.values() if not v["droplet_ids"]]
    changes = driver(fake).reconcile(plan)
    assert ("update", "volume", orphan["name"]) in [(c["action"], c["kind"], c["name"])
                                                    for c in changes]
    assert not [c for c in changes if c["kind"] == "volume" and c["name"] == orphan["name"]
                and c["action"] == "create"]
    assert_matches_plan(fake, plan)


def test_throttling_is_waited_out_as_the_headers_say(fake):
    clock = VirtualTime()
    fake.reset(throttle_rate=0.2, seed=7, throttle_reset=5, clock=clock.time)
    plan = plan_for(with_storage=True)
    driver(fake, sleep=clock.sleep, clock=clock.time).reconcile(plan)

    throttled = sum(fake.request_counts(status=429).values())
    assert throttled >= 0.1 * len(fake.requests)
    assert fake.early_requests == 0          # no request came before the announced reset
    waits = [s for s in clock.sleeps if s > 1]
    assert len(waits) == throttled and all(4 <= s <= 6 for s in waits)
    assert_matches_plan(fake, plan)
    assert_rerun_is_quiet(fake, plan, sleep=clock.sleep, clock=clock.time)
    driver(fake, sleep=clock.sleep, clock=clock.time).destroy("dialog")
    assert fake.resource_counts() == NOTHING


def test_scale_dialog_servers_up_and_back_down(fake):
    three = plan_for(droplet_class="optimized")          # dialog servers carry a volume here
    five = plan_for(droplet_class="optimized", dialog_servers=5)
    driver(fake).reconcile(three)

    up = driver(fake).reconcile(five)
    assert sorted((c["action"], c["kind"], c["name"]) for c in up) == [
        ("create", "droplet", "dialog-dialog-server-4"),
        ("create", "droplet", "dialog-dialog-server-5"),
        ("create", "volume", "dialog-dialog-server-4-data"),
        ("create", "volume", "dialog-dialog-server-5-data")]
    assert_matches_plan(fake, five)
    assert_rerun_is_quiet(fake, five)

    # The second line of defence (lib.removal_guard): a dialog server goes only when named.
    calls = base.CallLog()
    with pytest.raises(errors.InputError, match="will not delete dialog-dialog-server-4, "
                                                "dialog-dialog-server-5"):
        driver(fake, calls=calls).reconcile(three)
    assert calls.mutating == []
    assert_matches_plan(fake, five)
    leaving = ["dialog-dialog-server-4", "dialog-dialog-server-5"]
    down = driver(fake).reconcile(dict(three, remove_hosts=leaving))
    assert sorted((c["action"], c["kind"], c["name"]) for c in down) == [
        ("delete", "droplet", "dialog-dialog-server-4"),
        ("delete", "droplet", "dialog-dialog-server-5"),
        ("delete", "volume", "dialog-dialog-server-4-data"),
        ("delete", "volume", "dialog-dialog-server-5-data")]
    assert_matches_plan(fake, three)
    assert_rerun_is_quiet(fake, three)


def test_a_removed_host_takes_its_reserved_ip_with_it(fake):
    plan = plan_for()
    driver(fake).reconcile(plan)
    smaller = copy.deepcopy(plan)
    smaller["hosts"] = [h for h in plan["hosts"] if h["name"] != "dialog-voice-2"]
    changes = driver(fake).reconcile(smaller)
    assert sorted((c["action"], c["kind"]) for c in changes) == [
        ("delete", "droplet"), ("delete", "reserved_ip")]
    assert_matches_plan(fake, smaller)


def test_a_second_droplet_of_the_same_name_is_removed(fake):
    plan = plan_for("small")
    driver(fake).reconcile(plan)
    [web] = [d for d in fake.droplets.values() if d["name"] == "dialog-web-1"]
    copy_body = {"names": ["dialog-web-1"], "region": "fra1", "size": web["size_slug"],
                 "image": "debian-12-x64", "tags": web["tags"], "vpc_uuid": web["vpc_uuid"]}
    driver(fake).api.droplets.create(body=copy_body)
    changes = driver(fake).reconcile(plan)
    assert [(c["action"], c["name"]) for c in changes] == [("delete", "dialog-web-1")]
    assert web["id"] in fake.droplets
    assert_matches_plan(fake, plan)


def test_size_drift_is_reported_not_acted_on(fake):
    plan = plan_for()
    driver(fake).reconcile(plan)
    [web] = [d for d in fake.droplets.values() if d["name"] == "dialog-web-1"]
    web["size_slug"] = "s-1vcpu-1gb"
    calls = base.CallLog()
    [change] = driver(fake, calls=calls).reconcile(plan)
    assert (change["action"], change["kind"], change["name"]) == \
        ("update", "droplet", "dialog-web-1")
    assert "s-1vcpu-1gb" in change["detail"] and calls.mutating == []


def test_firewall_drift_is_put_back(fake):
    plan = plan_for()
    driver(fake).reconcile(plan)
    [postgres] = [f for f in fake.firewalls.values() if f["name"] == "dialog-postgres"]
    postgres["inbound_rules"][0]["sources"] = {"addresses": ["0.0.0.0/0"]}
    calls = base.CallLog()
    [change] = driver(fake, calls=calls).reconcile(plan)
    assert (change["action"], change["name"]) == ("update", "dialog-postgres")
    assert calls.mutating == ["PUT /v2/firewalls/{id}"]
    assert_matches_plan(fake, plan)


def test_a_given_vpc_is_used_and_kept(fake):
    vpc = driver(fake).api.vpcs.create(body={"name": "shared", "region": "fra1"})["vpc"]
    plan = plan_for("small")
    changes = driver(fake, profile={"vpc_id": vpc["id"]}).reconcile(plan)
    assert "vpc" not in {c["kind"] for c in changes}
    assert {d["vpc_uuid"] for d in fake.droplets.values()} == {vpc["id"]}
    driver(fake, profile={"vpc_id": vpc["id"]}).destroy("dialog")
    assert list(fake.vpcs) == [vpc["id"]] and not fake.droplets


def test_ssh_closed_without_admin_networks(fake):
    plan = plan_for("small", admin_networks=[])
    driver(fake).reconcile(plan)
    [hosts] = [f for f in fake.firewalls.values() if f["name"] == "dialog-hosts"]
    # Only the deployment's own hosts may come in (node_exporter on every host); no port 22.
    assert hosts["outbound_rules"]
    assert hosts["inbound_rules"] and all(
        rule["sources"] == {"tags": ["dialog:dialog"]} and rule["ports"] != "22"
        for rule in hosts["inbound_rules"])
    assert_matches_plan(fake, plan)


def test_a_wrong_token_is_a_credentials_error_without_the_token(fake):
    secret = "dop_v1_not-the-right-one-0123456789"
    with pytest.raises(errors.CredentialsError) as caught:
        driver(fake, profile={"digitalocean_token": secret}).reconcile(plan_for())
    assert str(caught.value) == "profile 'fake-do' (digitalocean): the token was refused"
    assert secret not in str(caught.value) and fake.token not in str(caught.value)


def test_the_droplet_limit_is_a_quota_error(fake):
    fake.reset(limits={"droplet_limit": 5})
    with pytest.raises(errors.QuotaError) as caught:
        driver(fake).reconcile(plan_for())
    text = str(caught.value)
    assert "droplet limit" in text and "creating 2 droplet(s)" in text
    assert "profile 'fake-do' (digitalocean)" in text


def test_the_volume_limit_is_a_quota_error(fake):
    fake.reset(limits={"volume_limit": 2})
    with pytest.raises(errors.QuotaError, match="volume limit"):
        driver(fake).reconcile(plan_for())


def test_an_unknown_size_or_region_is_named(fake):
    plan = plan_for("small")
    plan["hosts"][0]["size"] = "s-99vcpu-1tb"
    with pytest.raises(errors.ProviderError, match="s-99vcpu-1tb") as caught:
        driver(fake).reconcile(plan)
    assert not isinstance(caught.value, errors.QuotaError)
    plan = plan_for("small")
    plan["region"] = "mars1"
    with pytest.raises(errors.ProviderError, match="mars1"):
        driver(fake).reconcile(plan)


def test_a_missing_ssh_key_is_named(fake):
    with pytest.raises(errors.ProviderError, match="'laptop'.*registered: dialog-deploy"):
        driver(fake, profile={"ssh_key_names": ["laptop"]}).reconcile(plan_for("small"))
    assert fake.resource_counts()["droplets"] == 0


def test_a_droplet_that_fails_is_named(fake):
    fake.reset(fail_droplets=("dialog-web-1",))
    with pytest.raises(errors.ResourceFailed, match="dialog-web-1.*archive"):
        driver(fake).reconcile(plan_for("small"))


def test_a_droplet_that_never_boots_times_out(fake):
    fake.reset(boot_delay=60)
    with pytest.raises(errors.ResourceFailed, match="timed out"):
        driver(fake, droplet_timeout=0.05, poll_interval=0.01).reconcile(plan_for("mini"))


def test_waits_on_real_boot_time(fake):
    fake.reset(boot_delay=0.2)
    plan = plan_for("small")
    progress = []
    driver(fake, progress=progress.append, poll_interval=0.05).reconcile(plan)
    assert_matches_plan(fake, plan)
    assert "waiting for 7 droplets to become active" in progress


def test_plain_http_is_refused_except_on_loopback(fake):
    profile = {"endpoint_url": "http://api.example.com"}
    with pytest.raises(errors.ProviderError, match="https"):
        driver(fake, profile=profile).inventory("dialog")


def test_nothing_secret_reaches_results_or_progress(fake):
    progress = []
    do = driver(fake, progress=progress.append)
    everything = [do.reconcile(plan_for()), do.inventory("dialog"), do.calls.calls,
                  do.destroy("dialog"), progress]
    assert fake.token not in repr(everything)


def test_listings_follow_every_page(fake, monkeypatch):
    monkeypatch.setattr(digitalocean, "PAGE_SIZE", 4)
    plan = plan_for(with_storage=True)
    driver(fake).reconcile(plan)
    calls = base.CallLog()
    do = driver(fake, calls=calls)
    assert do.reconcile(plan) == [] and calls.mutating == []
    assert Counter(calls.reads)["GET /v2/droplets"] == math.ceil(len(plan["hosts"]) / 4)
    assert_inventory(do.inventory("dialog"), plan)


def completed(api, reply, timeout=10.0):
    """Polls GET /v2/actions/{id} until the action a POST answered is completed, as a client
    of DigitalOcean waits for one (its effect is not seen while it is in-progress)."""
    action = reply["action"]
    deadline = time.monotonic() + timeout
    while action["status"] == "in-progress" and time.monotonic() < deadline:
        time.sleep(0.01)
        action = api.actions.get(action_id=action["id"])["action"]
    assert action["status"] == "completed", action
    return action


def test_the_fake_assigns_and_unassigns_reserved_ips(fake):
    # DigitalOcean: "Droplets cannot have more than one Reserved IP address assigned to them
    # at a time" (Droplet limits); an assign or unassign is an action, done once completed.
    api = driver(fake).api
    driver(fake).reconcile(plan_for("mini"))
    [droplet] = fake.droplets.values()
    address = api.reserved_ips.create(body={"region": "fra1"})["reserved_ip"]["ip"]
    with pytest.raises(digitalocean.ApiError, match="already has a reserved IP"):
        api.reserved_ips_actions.post(reserved_ip=address,
                                      body={"type": "assign", "droplet_id": droplet["id"]})
    [held] = [a for a in fake.reserved_ips.values() if a["droplet"]]
    completed(api, api.reserved_ips_actions.post(reserved_ip=held["ip"],
                                                 body={"type": "unassign"}))
    completed(api, api.reserved_ips_actions.post(
        reserved_ip=address, body={"type": "assign", "droplet_id": droplet["id"]}))
    assert api.reserved_ips.get(reserved_ip=address)["reserved_ip"]["droplet"]["id"] == \
        droplet["id"]
    assert fake.reserved_ips[address]["droplet"]["id"] == droplet["id"]
    assert fake.reserved_ips[held["ip"]]["droplet"] is None
    page = api.droplets.list(tag_name="no-such-tag")
    assert page["droplets"] == [] and page["meta"]["total"] == 0


def test_rate_limit_wait_reads_the_headers():
    assert rate_limit_wait({"ratelimit-reset": "105"}, 100.0) == 5.0
    assert rate_limit_wait({"retry-after": "7"}, 100.0) == 7.0
    assert rate_limit_wait({"ratelimit-reset": "103", "retry-after": "7"}, 100.0) == 7.0
    assert rate_limit_wait({"ratelimit-reset": "90"}, 100.0) == 0.0
    assert rate_limit_wait({}, 100.0) is None


def test_only_idempotent_requests_are_repeated_after_a_server_error():
    assert _RateLimitRetry.retryable("POST", 429)
    assert not _RateLimitRetry.retryable("POST", 500)
    assert _RateLimitRetry.retryable("GET", 503) and _RateLimitRetry.retryable("DELETE", 502)
    assert not _RateLimitRetry.retryable("GET", 404)


def test_monitoring_networks_reach_prometheus_on_the_web_droplets_only(fake):
    prometheus = "9091"    # the catalog's web/prometheus port, as a user would check it
    monitoring = ["198.51.100.7/32"]
    plan = plan_for("small-failover", monitoring_networks=monitoring)
    driver(fake).reconcile(plan)
    opened = {f["name"] for f in fake.firewalls.values() for rule in f["inbound_rules"]
              if rule["ports"] == prometheus
              and rule["sources"].get("addresses") == monitoring}
    assert opened == {"dialog-web"}
    assert_rerun_is_quiet(fake, plan)


def test_spaces_bucket_through_the_s3_api_kept_unless_data_goes(fake, spaces):
    plan = plan_for("small-failover")
    driver(fake).reconcile(plan)
    spaces = spaces.client("s3")
    (name,) = [b["Name"] for b in spaces.list_buckets()["Buckets"]]
    assert name.startswith("dialog-dialog-")
    assert_rerun_is_quiet(fake, plan)
    settings = driver(fake).object_storage_settings("dialog")
    assert settings["bucket"] == name and settings["endpoint"] == fake.spaces_endpoint
    keep = driver(fake)
    assert "bucket" not in {c["kind"] for c in keep.destroy("dialog")}
    assert [b["Name"] for b in spaces.list_buckets()["Buckets"]] == [name] and keep.kept
    gone = driver(fake)
    assert [(c["action"], c["kind"]) for c in gone.destroy("dialog", delete_data=True)] == [
        ("delete", "bucket")]
    assert spaces.list_buckets()["Buckets"] == []


def test_missing_spaces_keys_stop_before_any_change(fake):
    calls = base.CallLog()
    with pytest.raises(errors.InputError) as caught:
        driver(fake, calls=calls, profile={"spaces_access_key_id": None}).reconcile(
            plan_for("small-failover"))
    assert "spaces_access_key_id" in str(caught.value)
    assert calls.mutating == [] and not fake.droplets
    driver(fake, profile={"spaces_access_key_id": None}).reconcile(plan_for("mini"))
