"""The deployment's operation lock (actions/lib/operation_lock.py) over a datastore with st2's
TTL semantics (local_runner.MemoryDatastore: an item set with a TTL is gone once it expires),
the dialog.lock / dialog.unlock actions, the DialogAction hook every long step runs under, and
dialog.destroy taking the lock itself. The workflows' use of it: test_workflow_deploy.py and
test_workflow_scale.py."""
# run() of an action is wrapped by reports_errors: it returns (status, value) and takes
# lock_owner, which pylint cannot see through the decorator.
# pylint: disable=unexpected-keyword-arg,invalid-sequence-index

import json
import os
import time

import pytest
import yaml

import local_runner
from destroy import DestroyAction
from dialog_action import DialogAction, reports_errors
from lib import operation_lock
from lib.errors import InputError
from lib.operation_lock import LOCK_TTL, LockHeld, Renewer, acquire, release, renew
from lock import LockAction
from unlock import UnlockAction

T0 = 1700000000  # 2023-11-14T22:13:20+00:00
KEY = "dialog.prod.operation_lock"


class Clock(object):
    def __init__(self, now=T0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(clock):
    return local_runner.MemoryDatastore(clock=clock)


def service(store, class_name="LockAction"):
    return local_runner.LocalActionService("dialog", class_name, store)


def test_a_second_owner_is_refused_naming_the_holder_and_how_to_clear_a_dead_lock(store):
    datastore = service(store)
    acquire(datastore, "prod", "exec-scale", "scale", T0, detail="role cassandra")
    with pytest.raises(LockHeld) as refused:
        acquire(datastore, "prod", "exec-deploy", "deploy", T0 + 5)
    assert isinstance(refused.value, InputError) and refused.value.field == "deployment"
    message = str(refused.value)
    assert message.startswith("deployment: prod is busy: scale (role cassandra) is running, "
                              "execution exec-scale, since 2023-11-14T22:13:20+00:00")
    assert "st2 execution get exec-scale" in message
    assert "expires 900 s after its last renewal, or delete it now: st2 key delete " + KEY \
        in message
    assert json.loads(datastore.get_value(KEY, local=False))["owner"] == "exec-scale"


def test_the_same_owner_re_enters_and_keeps_the_first_operations_description(store, clock):
    datastore = service(store)
    acquire(datastore, "prod", "exec-scale", "scale", T0, detail="role cassandra")
    clock.now += 800
    holder = acquire(datastore, "prod", "exec-scale", "deploy", clock())  # the nested deploy
    assert (holder["operation"], holder["detail"]) == ("scale", "role cassandra")
    assert holder["since"] == "2023-11-14T22:13:20+00:00"
    assert holder["renewed"] == "2023-11-14T22:26:40+00:00"
    clock.now += 800  # 1600 s after the first take, 800 after the re-entry: still held
    assert operation_lock.holder_of(datastore, "prod")["owner"] == "exec-scale"


def test_only_the_owner_releases(store):
    datastore = service(store)
    acquire(datastore, "prod", "exec-scale", "scale", T0)
    assert release(datastore, "prod", "exec-other") is False
    assert operation_lock.holder_of(datastore, "prod")["owner"] == "exec-scale"
    assert release(datastore, "prod", "exec-scale") is True
    assert datastore.get_value(KEY, local=False) is None
    assert release(datastore, "prod", "exec-scale") is False  # already free


def test_renewing_keeps_it_past_the_ttl_and_without_renewal_it_expires(store, clock):
    datastore = service(store)
    acquire(datastore, "prod", "exec-scale", "scale", T0)
    for _ in range(20):  # 20 minutes of a long cleanup, renewed every minute
        clock.now += 60
        assert renew(datastore, "prod", "exec-scale", clock()) is True
    assert clock.now - T0 > LOCK_TTL
    assert operation_lock.holder_of(datastore, "prod")["owner"] == "exec-scale"
    clock.now += LOCK_TTL - 1
    with pytest.raises(LockHeld):
        acquire(datastore, "prod", "exec-deploy", "deploy", clock())
    clock.now += 1  # the runner died: nobody renews, the lock expires
    assert renew(datastore, "prod", "exec-scale", clock()) is False
    acquire(datastore, "prod", "exec-deploy", "deploy", clock())


def test_renew_by_another_owner_changes_nothing(store, clock):
    datastore = service(store)
    acquire(datastore, "prod", "exec-scale", "scale", T0)
    before = datastore.get_value(KEY, local=False)
    clock.now += 600
    assert renew(datastore, "prod", "exec-other", clock()) is False
    assert datastore.get_value(KEY, local=False) == before
    clock.now += 300
    assert datastore.get_value(KEY, local=False) is None, "its TTL was not pushed"


def test_an_unreadable_lock_value_counts_as_held(store):
    datastore = service(store)
    datastore.set_value(KEY, "held by hand", local=False)
    with pytest.raises(LockHeld, match="unknown .unreadable lock value 'held by hand'"):
        acquire(datastore, "prod", "exec-deploy", "deploy", T0)


def test_the_renewer_thread_keeps_a_short_ttl_lock_alive_and_stops_at_the_end():
    store = local_runner.MemoryDatastore()  # the real clock
    datastore = service(store)
    acquire(datastore, "prod", "exec-scale", "scale", time.time(), ttl=1)
    with Renewer(datastore, "prod", "exec-scale", every=0.1, ttl=1) as renewer:
        time.sleep(1.6)
        assert operation_lock.holder_of(datastore, "prod")["owner"] == "exec-scale"
    assert renewer.renewals >= 10 and renewer.lost is None
    time.sleep(1.1)
    assert operation_lock.holder_of(datastore, "prod") is None, "no renewal after the block"


def test_the_renewer_notices_another_owner_and_takes_back_a_vanished_lock(store, clock):
    datastore = service(store)
    acquire(datastore, "prod", "exec-scale", "scale", T0, detail="role cassandra")
    renewer = Renewer(datastore, "prod", "exec-scale", clock=clock)
    renewer._held = operation_lock.holder_of(datastore, "prod")  # what __enter__ reads
    datastore.delete_value(KEY, local=False)  # deleted by hand while it still ran
    assert renewer.tick() is True
    holder = operation_lock.holder_of(datastore, "prod")
    assert (holder["owner"], holder["operation"]) == ("exec-scale", "scale")
    release(datastore, "prod", "exec-scale")
    acquire(datastore, "prod", "exec-destroy", "destroy", T0)
    assert renewer.tick() is False
    assert renewer.lost.startswith("destroy is running, execution exec-destroy")
    assert operation_lock.holder_of(datastore, "prod")["owner"] == "exec-destroy"


# --- the actions ---------------------------------------------------------------------------

def test_lock_and_unlock_actions(store):
    lock = LockAction(config={}, action_service=service(store))
    unlock = UnlockAction(config={}, action_service=service(store, "UnlockAction"))
    status, value = lock.run(deployment="prod", owner="exec-1", operation="deploy")
    assert status and value["key"] == KEY and value["ttl"] == 900
    status, value = lock.run(deployment="prod", owner="exec-2", operation="scale")
    assert not status and value["field"] == "deployment"
    assert "deploy is running, execution exec-1" in value["error"]
    status, value = unlock.run(deployment="prod", owner="exec-2")
    assert status and value["released"] is False and value["held_by"]["owner"] == "exec-1"
    assert unlock.run(deployment="prod", owner="exec-1") == (
        True, {"deployment": "prod", "released": True, "held_by": None})
    status, value = lock.run(deployment="Prod!", owner="exec-1", operation="deploy")
    assert not status and value["field"] == "deployment"


class LongStep(DialogAction):
    """A long action of a workflow (provision, bootstrap_host, ...): `body` runs in run()."""

    body = None

    @reports_errors
    def run(self, deployment, host=None):
        return self.body()


def long_step(store, body):
    step = LongStep(config={}, action_service=service(store, "LongStep"))
    step.body = body
    return step


def test_a_step_whose_operation_no_longer_holds_the_lock_is_refused_before_it_runs(store):
    acquire(service(store), "prod", "exec-destroy", "destroy", T0)
    ran = []
    status, value = long_step(store, lambda: ran.append(1)).run(
        deployment="prod", host="dialog-proxy-1",
        lock_owner="exec-deploy")
    assert not status and not ran
    assert value["error"].startswith(
        "deployment: the operation this step belongs to (execution exec-deploy) no longer "
        "holds the lock of prod: destroy is running, execution exec-destroy")


def test_a_step_renews_the_lock_while_it_runs_and_fails_when_it_lost_it(store, monkeypatch):
    monkeypatch.setattr(operation_lock, "RENEW_EVERY", 0.05)
    datastore = service(store)
    acquire(datastore, "prod", "exec-scale", "scale", T0)
    writes = []
    original = store.set

    def counting_set(name, value, **kwargs):
        writes.append((name, kwargs.get("ttl")))
        return original(name, value, **kwargs)

    monkeypatch.setattr(store, "set", counting_set)
    status, value = long_step(store, lambda: time.sleep(0.5) or "done").run(
        deployment="prod", lock_owner="exec-scale")
    assert (status, value) == (True, "done")
    assert writes.count((KEY, 900)) >= 5, "renewed every RENEW_EVERY, each with the TTL"

    def stolen():
        datastore.delete_value(KEY, local=False)
        acquire(datastore, "prod", "exec-destroy", "destroy", T0)
        time.sleep(0.3)
        return "done"

    status, value = long_step(store, stolen).run(
        deployment="prod", lock_owner="exec-scale")
    assert not status
    assert value["error"].startswith("prod: the operation (execution exec-scale) lost the "
                                     "deployment's lock while this step ran")
    assert operation_lock.holder_of(datastore, "prod")["owner"] == "exec-destroy"


def test_a_step_without_lock_owner_runs_as_before(store):
    status, value = long_step(store, lambda: "done").run(deployment="prod")
    assert (status, value) == (True, "done")
    assert service(store).get_value(KEY, local=False) is None


# --- dialog.destroy ------------------------------------------------------------------------

class Destroy(DestroyAction):
    def __init__(self, store, driver):
        super(Destroy, self).__init__(config={}, action_service=service(store, "Destroy"))
        self._driver = driver

    def driver(self, settings, provider, region):
        return self._driver


class Driver(object):
    region, kept = "us-east-1", []

    def __init__(self, store):
        self.store, self.calls, self.held_by = store, [], None

    def destroy(self, deployment, dry_run=False, delete_data=False):
        self.calls.append(deployment)
        self.held_by = operation_lock.holder_of(service(self.store), deployment)
        return []


def test_destroy_is_refused_while_another_operation_runs_before_any_provider_call(store):
    acquire(service(store), "prod", "exec-scale", "scale", T0, detail="role cassandra")
    driver = Driver(store)
    status, value = Destroy(store, driver).run(deployment="prod", confirm="prod")
    assert not status and not driver.calls
    assert "scale (role cassandra) is running, execution exec-scale" in value["error"]
    assert operation_lock.holder_of(service(store), "prod")["owner"] == "exec-scale"


def test_destroy_holds_the_lock_under_its_execution_id_and_frees_it(store, monkeypatch):
    monkeypatch.setenv("ST2_ACTION_EXECUTION_ID", "exec-destroy-1")
    driver = Driver(store)
    status, value = Destroy(store, driver).run(deployment="prod", confirm="prod")
    assert status, value
    assert (driver.held_by["owner"], driver.held_by["operation"]) == ("exec-destroy-1",
                                                                      "destroy")
    assert service(store).get_value(KEY, local=False) is None


# --- the concurrency policies --------------------------------------------------------------

def load_policy(name):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "policies", name), encoding="utf-8") as fp:
        return yaml.safe_load(fp)


@pytest.mark.parametrize("name, ref, action", [
    ("scale_concurrency.yaml", "dialog.scale", "delay"),
    # Delay, never cancel: the deploy inside a scale must not be cancelled by another deploy
    # the lock is about to refuse.
    ("deploy_concurrency.yaml", "dialog.deploy", "delay"),
    # A destroy must never start later than asked.
    ("destroy_concurrency.yaml", "dialog.destroy", "cancel")])
def test_each_operation_has_a_per_deployment_concurrency_policy(name, ref, action):
    policy = load_policy(name)
    assert (policy["resource_ref"], policy["policy_type"]) == (ref, "action.concurrency.attr")
    assert policy["parameters"] == {"action": action, "threshold": 1,
                                    "attributes": ["deployment"]}
    assert policy["enabled"] is True and "coordination backend" in policy["description"]
