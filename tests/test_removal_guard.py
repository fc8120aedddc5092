"""Deploy never removes a stateful host or changes a deployment's tier on its own
(lib.removal_guard): the guard's answers, dialog.provision against the fake DigitalOcean API
(refused before any mutating request), the deploy workflow's allow_removal path, and the chat
alias that cannot pass allow_removal."""

import contextlib
import copy
import io
import json

import pytest
from st2tests.base import BaseActionTestCase

import chat_examples as ce
from fake_digitalocean import FakeDigitalOcean
from lib.deployment_record import record_key, record_of
from lib.errors import InputError
from lib.planner import build_plan
from lib.providers import digitalocean
from lib.removal_guard import check_removals
from provision import ProvisionAction
from test_preflight import IMAGES, KEY
from test_workflow_deploy import CannedDialogActions, called, deploy, inventory, ok

ADMIN = ["198.51.100.0/24"]


def plan_for(tier="small-failover", **options):
    options.setdefault("admin_networks", ADMIN)
    options.setdefault("provider", "digitalocean")
    return build_plan(tier, **options)


def record_for(plan):
    return record_of(plan)


FOUR = plan_for(cassandra_nodes=4)
THREE = plan_for(cassandra_nodes=3)


# ---- the guard -------------------------------------------------------------------------------

def test_a_smaller_cassandra_count_is_refused_naming_the_host_and_the_scale_command():
    with pytest.raises(InputError) as caught:
        check_removals(THREE, inventory(FOUR), record_for(FOUR))
    assert caught.value.field == "cassandra_nodes"
    message = str(caught.value)
    assert message.startswith("cassandra_nodes: cassandra_nodes=3 would remove "
                              "dialog-cassandra-4 (a Cassandra node")
    assert "st2 run dialog.scale deployment=dialog role=cassandra count=3" in message
    assert "allow_removal=true" in message


def test_four_dialog_servers_fewer_points_to_one_scale_step():
    seven = plan_for(dialog_servers=7)
    with pytest.raises(InputError) as caught:
        check_removals(plan_for(dialog_servers=3), inventory(seven), record_for(seven))
    message = str(caught.value)
    assert caught.value.field == "dialog_servers"
    for index in (4, 5, 6, 7):
        assert "dialog-dialog-server-%d" % index in message
    # One topology change at a time: the first step, and where the steps end.
    assert "st2 run dialog.scale deployment=dialog role=dialog-server count=5" in message
    assert "down to 3" in message


def test_a_tier_change_is_refused_with_the_migration_path():
    production = plan_for("production", cassandra_nodes=4)
    with pytest.raises(InputError) as caught:
        check_removals(plan_for("small"), inventory(production), record_for(production))
    assert caught.value.field == "tier"
    message = str(caught.value)
    assert "dialog is production, not small" in message
    for step in ("deploy the new tier as another deployment", "copy the data",
                 "move DNS", "destroy the old one", "dialog.destroy deployment=dialog"):
        assert step in message
    # Not even allow_removal changes a tier in place.
    with pytest.raises(InputError, match="^tier: "):
        check_removals(plan_for("small"), inventory(production), record_for(production),
                       allow_removal=True)


def test_hosts_the_caller_drained_may_go_and_only_those():
    removal = check_removals(THREE, inventory(FOUR), record_for(FOUR),
                             remove_hosts=["dialog-cassandra-4"])
    assert removal["remove_hosts"] == ["dialog-cassandra-4"]
    assert removal["leaving"] == ["dialog-cassandra-4"]
    with pytest.raises(InputError, match="^remove_hosts: the plan keeps dialog-cassandra-3"):
        check_removals(THREE, inventory(FOUR), record_for(FOUR),
                       remove_hosts=["dialog-cassandra-3"])


def test_stateless_hosts_go_without_asking():
    plan = plan_for()
    more = copy.deepcopy(plan)
    extra = dict(next(h for h in plan["hosts"] if h["name"] == "dialog-voice-2"),
                 name="dialog-voice-3", index=3)
    more["hosts"].append(extra)
    removal = check_removals(plan, inventory(more), record_for(more))
    assert removal["leaving"] == ["dialog-voice-3"] and removal["remove_hosts"] == []


def test_allow_removal_decommissions_cassandra_highest_first_and_drains_dialog_servers():
    big = plan_for(cassandra_nodes=5, dialog_servers=5)
    removal = check_removals(THREE, inventory(big), record_for(big), allow_removal=True)
    assert removal["decommission"] == ["dialog-cassandra-5", "dialog-cassandra-4"]
    assert removal["drain"] == ["dialog-dialog-server-4", "dialog-dialog-server-5"]
    assert removal["remove_hosts"] == sorted(removal["leaving"])
    assert {h["name"] for h in removal["survivors"]} == {h["name"] for h in THREE["hosts"]}


def test_storage_is_never_removed_by_deploy_even_with_allow_removal():
    three = plan_for(with_storage=True, storage_nodes=3)
    for smaller, field in ((plan_for(with_storage=True, storage_nodes=1), "storage_nodes"),
                           (plan_for(), "with_storage")):
        with pytest.raises(InputError) as caught:
            check_removals(smaller, inventory(three), record_for(three), allow_removal=True)
        assert caught.value.field == field
        assert "no Ceph OSD drain" in str(caught.value)
        assert "dialog-storage-3" in str(caught.value)


def test_cassandra_never_goes_below_the_replication_factor():
    small3 = plan_for("small", cassandra_nodes=3)
    with pytest.raises(InputError, match="fewer than the replication factor"):
        check_removals(plan_for("small", cassandra_nodes=1), inventory(small3),
                       record_for(small3), allow_removal=True)


# ---- dialog.provision against DigitalOcean's API (the fake) --------------------------------

@pytest.fixture(scope="module")
def do_api():
    with FakeDigitalOcean() as running:
        yield running


@pytest.fixture(name="fake")
def fresh_fake(do_api):
    do_api.reset()
    yield do_api
    do_api.reset()


def four_node_ring(fake):
    """A small-failover deployment with 4 Cassandra nodes, made by the real driver."""
    plan = plan_for(cassandra_nodes=4, with_storage=True)
    digitalocean.Driver(fake.profile(admin_networks=ADMIN), "fra1",
                        poll_interval=0.001).reconcile(plan)
    fake.requests.clear()
    return plan


def run_provision(fake, record=None, **params):
    class Case(BaseActionTestCase):
        action_cls = ProvisionAction

        def runTest(self):
            """unused"""
    case = Case()
    case.setUp()
    action = case.get_action_instance(config={"default_profile": "do", "profiles": {
        "do": fake.profile(admin_networks=ADMIN, images=dict(IMAGES), ssh_private_key=KEY)}})
    if record:
        action.action_service.set_value(record_key(record["deployment"]), json.dumps(record),
                                        local=False)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        return action.run(**dict({"provider": "digitalocean", "region": "fra1",
                                  "with_storage": True}, **params))


def droplet_names(fake):
    return sorted(d["name"] for d in fake.droplets.values())


@pytest.mark.parametrize("dry_run", [False, True])
def test_provision_cassandra_nodes_3_on_a_4_node_ring_is_refused_and_deletes_nothing(
        fake, dry_run):
    plan = four_node_ring(fake)
    before = droplet_names(fake)
    assert "dialog-cassandra-4" in before
    status, result = run_provision(fake, record_of(plan), tier="small-failover",
                                   cassandra_nodes=3, dry_run=dry_run)
    assert status is False
    assert result["field"] == "cassandra_nodes"
    assert "dialog-cassandra-4" in result["error"]
    assert "st2 run dialog.scale deployment=dialog role=cassandra count=3" in result["error"]
    assert droplet_names(fake) == before
    assert {r["method"] for r in fake.requests} == {"GET"}


def test_provision_to_another_tier_is_refused_and_deletes_nothing(fake):
    plan = four_node_ring(fake)
    before = droplet_names(fake)
    status, result = run_provision(fake, record_of(plan), tier="small")
    assert status is False and result["field"] == "tier"
    assert "move DNS" in result["error"]
    assert droplet_names(fake) == before
    assert {r["method"] for r in fake.requests} == {"GET"}


def test_provision_removes_the_node_dialog_scale_decommissioned(fake):
    plan = four_node_ring(fake)
    status, result = run_provision(fake, record_of(plan), tier="small-failover",
                                   cassandra_nodes=3, remove_hosts=["dialog-cassandra-4"])
    assert status is True, result
    assert ("delete", "droplet", "dialog-cassandra-4") in {
        (c["action"], c["kind"], c["name"]) for c in result["changes"]}
    assert "dialog-cassandra-4" not in droplet_names(fake)


# ---- the deploy workflow with allow_removal ---------------------------------------------------

class RemovingActions(CannedDialogActions):
    """A deployment that has 5 Cassandra nodes and 5 dialog servers; dialog.removals is the
    real guard over that inventory, dialog.cassandra_decommission is recorded."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.existing = inventory(plan_for("small-failover", provider="aws",
                                           cassandra_nodes=5, dialog_servers=5))
        self.provisioned = True

    def removals(self, plan, allow_removal, remove_hosts, dry_run, **_):
        try:
            removal = check_removals(plan, self.existing, {"tier": plan["tier"]},
                                     allow_removal=allow_removal, remove_hosts=remove_hosts)
        except InputError as exc:
            return self._failed(exc.to_result())
        ring_of = {name: self.existing for name in removal["decommission"]}
        proxies = [h["name"] for h in removal["survivors"] if "proxy" in h["roles"]]
        return ok(dict(removal, hosts=self.existing, ring_of=ring_of,
                       proxies=proxies if removal["drain"] else []))

    def cassandra_decommission(self, deployment, host, hosts, **_):
        return ok({"host": host, "decommissioned": True})

    def cassandra_settle(self, **_):
        return ok({"cleaned": []})


def test_allow_removal_decommissions_and_drains_before_provisioning():
    actions = RemovingActions()
    result = deploy(actions, tier="small-failover", cassandra_nodes=3, dialog_servers=3,
                    allow_removal=True)
    assert result.status == "succeeded", result.errors
    refs = [ref for ref, _ in actions.calls]
    decommissioned = [p["host"] for p in called(actions, "dialog.cassandra_decommission")]
    assert decommissioned == ["dialog-cassandra-5", "dialog-cassandra-4"]
    provision_at = refs.index("dialog.provision")
    assert max(i for i, r in enumerate(refs) if r == "dialog.cassandra_decommission") \
        < provision_at
    assert refs.index("dialog.removals") < refs.index("dialog.cassandra_decommission")
    # The proxies, re-rendered without the leaving dialog servers, before those go.
    drained = [p for ref, p in actions.calls[:provision_at] if ref == "dialog.bootstrap_host"]
    assert sorted(p["host"] for p in drained) == ["dialog-proxy-1", "dialog-proxy-2"]
    for params in drained:
        names = {h["name"] for h in params["hosts"]}
        assert "dialog-dialog-server-3" in names and "dialog-dialog-server-4" not in names
    assert called(actions, "dialog.provision")[0]["remove_hosts"] == [
        "dialog-cassandra-4", "dialog-cassandra-5", "dialog-dialog-server-4",
        "dialog-dialog-server-5"]


def test_without_allow_removal_the_deploy_decommissions_nothing():
    actions = RemovingActions()
    deploy(actions, tier="small-failover", cassandra_nodes=3)
    assert called(actions, "dialog.cassandra_decommission") == []
    assert called(actions, "dialog.removals") == []
    assert called(actions, "dialog.provision")[0]["remove_hosts"] == []


def test_a_dry_run_with_allow_removal_only_lists_what_would_go():
    actions = RemovingActions()
    result = deploy(actions, tier="small-failover", cassandra_nodes=4, dialog_servers=5,
                    allow_removal=True, dry_run=True)
    assert result.status == "succeeded", result.errors
    assert called(actions, "dialog.cassandra_decommission") == []
    assert called(actions, "dialog.provision")[0]["remove_hosts"] == ["dialog-cassandra-5"]


# ---- chat ------------------------------------------------------------------------------------

ALIASES = ce.load_aliases()


def test_a_deploy_from_chat_never_allows_removal():
    params = ce.alias_execution(ALIASES["deploy"], "dialog deploy small on aws")["parameters"]
    assert params["allow_removal"] is False and params["remove_hosts"] == []
    for typed in ("allow_removal=true", "remove_hosts=dialog-cassandra-4"):
        with pytest.raises(ValueError, match="Immutable arguments cannot be overriden: %s"
                           % typed.split("=")[0]):
            ce.alias_execution(ALIASES["deploy"], "dialog deploy small on aws " + typed)
