"""DigitalOcean ordering and exposure: firewalls exist before the droplets they cover, no droplet
is ever created without an SSH key, and a listing that mishandles pagination fails in seconds
(it used to show only as a droplet wait running into its 15-minute bound)."""

import pytest

from fake_digitalocean import FakeDigitalOcean
from lib import errors
from lib.cloud.preflight import check_ssh_keys
from lib.planner import build_plan
from lib.providers import base, digitalocean
from lib.providers.digitalocean import Driver, deployment_tag

ADMIN = ["203.0.113.0/24"]
# The operator's own object storage: no Spaces bucket in these tests (never contacted here).
STORAGE = {"endpoint": "https://s3.example.net", "bucket": "dialog-files",
           "access_key_id": "AKEXAMPLE", "secret_access_key": "not-used"}
CALL_BOUND = 400    # far more than one small-failover reconcile needs at two items a page


class Endless(Exception):
    """A listing kept asking for pages: the driver would never have stopped."""


class BoundedCalls(base.CallLog):
    def record(self, operation, mutating):
        super().record(operation, mutating)
        if len(self.calls) > CALL_BOUND:
            raise Endless("more than %d API calls; last %s" % (CALL_BOUND, operation))


@pytest.fixture(scope="module")
def server():
    with FakeDigitalOcean() as fake:
        yield fake


@pytest.fixture
def fake(server):
    server.reset()
    yield server
    server.reset()


def quick_driver(fake, calls=None, **profile):
    # A droplet that is never seen active fails after 5 s, not the real 900 s.
    profile.setdefault("object_storage", STORAGE)
    return Driver(fake.profile(**profile), "fra1", calls=calls, poll_interval=0.01,
                  droplet_timeout=5.0)


def plan_for(tier="small-failover", **options):
    return build_plan(tier, "digitalocean", admin_networks=ADMIN, **options)


def test_firewalls_exist_before_the_first_droplet(fake):
    plan = plan_for()
    quick_driver(fake).reconcile(plan)
    order = [(r["method"], r["template"]) for r in fake.requests if r["status"] < 300]
    first_droplet = order.index(("POST", "/v2/droplets"))
    created = [i for i, call in enumerate(order) if call == ("POST", "/v2/firewalls")]
    assert created and max(created) < first_droplet
    # Every role's firewall and the deployment-wide one, applied by tag.
    roles = {role for host in plan["hosts"] for role in host["roles"]}
    names = {f["name"] for f in fake.firewalls.values()}
    assert names == {"dialog-%s" % role for role in roles} | {"dialog-hosts"}


def test_a_rerun_creates_no_tag_or_firewall(fake):
    plan = plan_for("small")
    quick_driver(fake).reconcile(plan)
    calls = base.CallLog()
    assert quick_driver(fake, calls=calls).reconcile(plan) == []
    assert calls.mutating == []


@pytest.mark.parametrize("keys", [[], None, [""]])
def test_no_ssh_key_names_is_refused_before_any_call(fake, keys):
    with pytest.raises(errors.InputError) as caught:
        quick_driver(fake, ssh_key_names=keys).reconcile(plan_for("small"))
    assert caught.value.field == "ssh_key_names"
    assert "password" in str(caught.value)
    assert fake.requests == [] and fake.password_logins == set()


def test_preflight_names_empty_ssh_key_names(fake):
    problems = check_ssh_keys({"ssh_key_names": []}, plan_for("small"), None)
    assert len(problems) == 1 and problems[0].startswith("ssh_key_names: empty")


def test_the_fake_marks_a_droplet_made_without_keys(fake):
    """The stand-in does what DigitalOcean does with no key (a root password), so a test can
    see it; the driver never gets there."""
    api = quick_driver(fake).api
    api.droplets.create(body={"name": "bare", "region": "fra1", "size": "s-2vcpu-4gb",
                              "image": digitalocean.DEFAULT_IMAGE})
    assert len(fake.password_logins) == 1


def test_a_firewall_naming_a_missing_tag_is_refused_by_the_fake(fake):
    api = quick_driver(fake).api
    spec = digitalocean.firewall_specs(plan_for("small"))["dialog-proxy"]
    with pytest.raises(Exception) as caught:
        api.firewalls.create(body=spec)
    assert "does not exist" in str(caught.value)


def test_every_listing_follows_its_pages_and_fails_fast(fake, monkeypatch):
    """Two items a page: droplets, volumes, firewalls, tags and VPC listings all span pages.
    A driver that stops after page 1 or asks for page 1 forever fails here in seconds."""
    monkeypatch.setattr(digitalocean, "PAGE_SIZE", 2)
    plan = plan_for(with_storage=True)
    quick_driver(fake, calls=BoundedCalls()).reconcile(plan)
    counts = fake.resource_counts()
    assert counts["droplets"] > 2 and counts["volumes"] > 2 and counts["firewalls"] > 2
    calls = BoundedCalls()
    again = quick_driver(fake, calls=calls)
    assert again.reconcile(plan) == [] and calls.mutating == []
    hosts = again.inventory("dialog")
    assert [h["name"] for h in hosts] == sorted(h["name"] for h in plan["hosts"])
    assert sum(len(h["volumes"]) for h in hosts) == counts["volumes"]
    destroy_calls = BoundedCalls()
    quick_driver(fake, calls=destroy_calls).destroy("dialog")
    assert fake.resource_counts()["droplets"] == 0
    assert not [t for t in fake.tags if t.startswith(deployment_tag("dialog"))]
