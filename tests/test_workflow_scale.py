"""dialog.scale run by orquesta's conductor with canned actions (see test_workflow_deploy.py):
the order of a scale-out and a scale-in for dialog servers and Cassandra, the refusals, the
failures mid-way, and the lock released on every way the workflow ends.

dialog.scale_prepare is the real action, its provider and SSH faked at the boundary: the
inventory is the canned one, and its checks (dialog servers healthy, the Cassandra ring, the
survivors' free space) ask hosts faked at the channel (tests/fake_hosts.py). The canned
provision and deploy change that inventory the way the real ones do.
Results have the shapes StackStorm's python runner stores; failures are explained by the real
dialog.explain_failure.
"""

import threading
from unittest import mock

import paramiko
from st2tests.mocks.action import MockActionService, MockActionWrapper

import local_runner
import workflow_runner
from bootstrap_order import BootstrapOrderAction
from fake_hosts import FakeHosts
from lib import bootstrap, operation_lock
from lib.deployment_record import record_of, save_record
from lib.deployment_secrets import ensure_secrets
from lib.errors import DialogError
from lib.planner import build_plan
from scale_prepare import ScalePrepareAction
from test_workflow_deploy import (ExplainingActions, RealLocks, inventory, ok, raised,
                                  returned_error, timed_out)

# The profile the real scale_prepare reads: the hosts' checks are rendered from it, Dialog's
# images come from the operator's registry, and the runner reaches the hosts' private addresses
# (the canned inventory gives the proxies no public address to jump through).
PREPARE_CONFIG = {"profiles": {"default": dict(ExplainingActions.config["profiles"]["default"],
                                               ssh_address="private", images={
    "dialog_server": "registry.example.com/dialog/server:2.1",
    "web_app": "registry.example.com/dialog/web-app:2.1",
    "dashboard": "registry.example.com/dialog/dashboard:2.1",
    "push": "registry.example.com/dialog/push:2.1"})}}


class FakeProvider(object):
    """A provider driver that reports `hosts` as the deployment's inventory."""

    def __init__(self, hosts, deployment="dialog"):
        self.hosts, self.deployment = hosts, deployment

    def inventory(self, deployment):
        assert deployment == self.deployment
        return list(self.hosts)


class CannedScaleActions(RealLocks, ExplainingActions):
    """The pack's actions around a deployment held in memory: `hosts` is the inventory;
    `fail` maps an action name (or "bootstrap_host:<host>") to what it gives once instead of
    running: an error text (returned the way the real actions return one) or a callable giving
    the (status, result) pair (raised(...), timed_out(...))."""

    def __init__(self, tier="small-failover", fail=None, **counts):
        self.tier = tier
        self.deployment = counts.get("deployment", "dialog")
        self.hosts = inventory(build_plan(tier, "aws", **counts))
        self.fail = dict(fail or {})
        self.calls = []
        self.lock = threading.Lock()
        # What the fake hosts answer the real scale_prepare's checks (see scale_prepare).
        self.sick, self.ring_states, self.free_bytes = set(), {}, {}
        self._datastore = None

    def __call__(self, ref, params):
        meta = local_runner.load_action_metadata(ref)
        action_params, _ = local_runner.prepare_parameters(meta, params)
        name = ref.split(".", 1)[1]
        with self.lock:
            self.calls.append((name, action_params))
        key = name + (":" + action_params["host"] if action_params.get("host") else "")
        for candidate in (key, name):
            if candidate in self.fail:
                outcome = self.fail.pop(candidate)
                if callable(outcome):
                    return outcome()
                return returned_error({"error": outcome})
        if name in ("lock", "unlock"):
            return self.real_lock_action(name, action_params)
        return self.under_lock(action_params, lambda: self._run(name, {
            k: v for k, v in action_params.items() if k != "lock_owner"}))

    def _run(self, name, action_params):
        if name in ("explain_failure", "scale_prepare"):  # real actions: (status, result)
            return getattr(self, name)(**action_params)
        try:
            return ok(getattr(self, name)(**action_params))
        except DialogError as exc:  # what the real action's reports_errors returns
            return returned_error(exc.to_result())

    def names(self, name):
        return [p for n, p in self.calls if n == name]

    # --- the canned actions

    def scale_prepare(self, **params):
        """The real dialog.scale_prepare, faked only at the provider (the inventory is
        self.hosts) and at SSH (tests/fake_hosts.py: hosts named in self.sick fail every check,
        self.ring_states gives a Cassandra node's state, self.free_bytes its free space)."""
        fleet = FakeHosts(self.hosts)
        for name in self.sick:
            fleet[name].failing = True
        for node in fleet.ring:
            host = next(h["name"] for h in self.hosts if h["private_address"] == node["address"])
            node["state"] = self.ring_states.get(host, node["state"])
            if host in self.free_bytes:
                fleet[host].free_bytes = self.free_bytes[host]
        hosts, deployment = self.hosts, self.deployment

        class Prepare(ScalePrepareAction):
            def driver(self, settings, provider, region):
                return FakeProvider(hosts, deployment)

        try:
            with mock.patch.object(bootstrap, "connect", fleet.connect):
                status, value = Prepare(config=PREPARE_CONFIG,
                                        action_service=self.datastore()).run(**params)
        except Exception as exc:  # pylint: disable=broad-except  # the runner's shape for it
            return raised(exc)
        return (ok if status else returned_error)(value)

    def datastore(self):
        """The deployment's record and secrets, as dialog.deploy left them."""
        if self._datastore is None:
            self._datastore = MockActionService(MockActionWrapper("dialog", "CannedScale"))
            save_record(self._datastore, record_of(build_plan(
                self.tier, "aws", deployment=self.deployment), "default"))
            ensure_secrets(self._datastore, self.deployment)
        return self._datastore

    def record_scaled(self, deployment, role, direction, before, after):
        return {"deployment": deployment, "role": role, "last_scaled": {
            "direction": direction, "from": before, "to": after, "completed_at": 0}}

    def _reconcile(self, dialog_servers=None, cassandra_nodes=None, **_):
        plan = build_plan(self.tier, "aws", dialog_servers=dialog_servers,
                          cassandra_nodes=cassandra_nodes)
        kept = {h["name"]: h for h in self.hosts}
        self.hosts = [kept.get(h["name"], h) for h in inventory(plan)]
        return self.hosts

    def provision(self, tier, provider, region, deployment, dialog_servers=None,
                  cassandra_nodes=None, **_):
        hosts = self._reconcile(dialog_servers, cassandra_nodes)
        return {"changes": [], "hosts": hosts}

    def plan(self, tier, provider, region=None, deployment="dialog", dialog_servers=None,
             cassandra_nodes=None, **_):
        return build_plan(tier, provider, region=region, deployment=deployment,
                          dialog_servers=dialog_servers, cassandra_nodes=cassandra_nodes)

    def register_deployment(self, plan, profile=None):
        return {"deployment": plan["deployment"], "datastore_key": "k", "record_key": "r",
                "secrets_created": [], "record_changed": True}

    def bootstrap_order(self, **params):
        status, value = BootstrapOrderAction(config={},
                                             action_service=self.datastore()).run(**params)
        assert status, value
        return value

    def bootstrap_host(self, deployment, host, hosts, **_):
        return {"host": host, "changed": False, "hosts_seen": [h["name"] for h in hosts]}

    def create_admin(self, deployment, hosts, **_):
        return {"login": "admin", "created": False}

    def status(self, deployment, hosts, **_):
        return {"healthy": True, "hosts": [], "endpoints": {}}

    # The cleanups a join left owed (the datastore's dialog.<deployment>.pending_cleanup).
    owed = ()

    def cassandra_settle(self, deployment, profile=None, plan=None, **_):
        cleaned, self.owed = list(self.owed), []
        return {"deployment": deployment, "owed": cleaned, "cleaned": cleaned, "ring": None}

    def cassandra_join(self, deployment, host, hosts, older=(), **_):
        self.owed = [name for name in older if name != host]
        return {"host": host, "state": "UN", "pending_cleanup": self.owed}

    def cassandra_cleanup(self, deployment, host, hosts, **_):
        self.owed = [name for name in self.owed if name != host]
        return {"host": host, "cleanup": "done"}

    def cassandra_decommission(self, deployment, host, hosts, **_):
        return {"host": host, "decommissioned": True}


def scale(actions, **params):
    params.setdefault("deployment", "dialog")
    meta = local_runner.load_action_metadata("dialog.scale")
    inputs, _ = local_runner.prepare_parameters(meta, params)
    return workflow_runner.run_workflow("dialog.scale", inputs, execute=actions)


def steps(actions):
    """The actions run, but the settling of owed Cassandra cleanups (a no-op here)."""
    return [n for n, _ in actions.calls if n != "cassandra_settle"]


def order(actions):
    return [(n, p.get("host")) for n, p in actions.calls]


def dialog_servers(actions):
    return sorted(h["name"] for h in actions.hosts if "dialog-server" in h["roles"])


def test_dialog_servers_out_new_servers_healthy_before_proxies_and_seed_lists():
    actions = CannedScaleActions()
    result = scale(actions, role="dialog-server", count=5, reason="cpu 85% for 3 polls")
    assert result.status == "succeeded", result.errors
    out = result.output
    assert (out["before"], out["after"]) == (3, 5)
    assert out["added"] == ["dialog-dialog-server-4", "dialog-dialog-server-5"]
    assert len(dialog_servers(actions)) == 5
    steps = order(actions)
    # The join task's bootstraps (told they are joining) end before any proxy's; the deploy
    # that follows starts the proxies only once every dialog server, new ones included, runs.
    joins = [i for i, (n, p) in enumerate(actions.calls)
             if n == "bootstrap_host" and p["host"] in out["added"] and p.get("joining")]
    proxies = [i for i, (n, p) in enumerate(steps)
               if n == "bootstrap_host" and p and "proxy" in p]
    assert joins and proxies and max(joins) < min(proxies)
    assert all(set(out["added"]) <= set(p["needs"]) for n, p in actions.calls
               if n == "bootstrap_host" and "proxy" in p["host"])
    # The new servers bootstrap first, told they are joining (current seed list).
    first = actions.names("bootstrap_host")[:2]
    assert {p["host"] for p in first} == set(out["added"])
    assert all(p["joining"] == out["added"] for p in first)
    assert not actions.locks, "lock released"


def test_dialog_servers_in_drains_the_proxies_before_removing_servers():
    actions = CannedScaleActions(dialog_servers=5)
    result = scale(actions, role="dialog-server", delta=-2)
    assert result.status == "succeeded", result.errors
    leaving = result.output["removed"]
    assert leaving == ["dialog-dialog-server-5", "dialog-dialog-server-4"]
    drains = actions.names("bootstrap_host")[:2]
    assert [p["host"] for p in drains] == ["dialog-proxy-1", "dialog-proxy-2"]
    for drain in drains:
        assert not set(leaving) & {h["name"] for h in drain["hosts"]}
    first_delete = [i for i, (n, _) in enumerate(actions.calls) if n == "provision"][0]
    last_drain = max(i for i, (n, p) in enumerate(actions.calls)
                     if n == "bootstrap_host" and p.get("host", "").startswith("dialog-proxy")
                     and i < first_delete)
    assert last_drain < first_delete
    assert len(dialog_servers(actions)) == 3 and not actions.locks


def test_cassandra_out_adds_one_node_then_cleans_up_older_nodes_one_by_one():
    actions = CannedScaleActions(tier="production")
    result = scale(actions, role="cassandra", delta=1)
    assert result.status == "succeeded", result.errors
    assert result.output["added"] == ["dialog-cassandra-4"]
    cleanups = [e for e in result.trace if e.task_id == "cleanup"]
    assert [p["host"] for p in actions.names("cassandra_cleanup")] == [
        "dialog-cassandra-1", "dialog-cassandra-2", "dialog-cassandra-3"]
    for before, after in zip(cleanups, cleanups[1:]):
        assert before.end <= after.start, "one node at a time"
    boot = [e for e in result.trace if e.action_ref == "dialog.bootstrap_host"]
    assert max(e.end for e in boot) <= min(e.start for e in cleanups), "cleanup after the join"
    assert result.output["cleaned"] == ["dialog-cassandra-1", "dialog-cassandra-2",
                                        "dialog-cassandra-3"]


def test_cassandra_out_starts_the_node_then_waits_for_un_before_the_reconcile():
    actions = CannedScaleActions(tier="production")
    result = scale(actions, role="cassandra", delta=1)
    assert result.status == "succeeded", result.errors
    names = [n for n, _ in actions.calls]
    start = [i for i, (n, p) in enumerate(actions.calls)
             if n == "bootstrap_host" and p["host"] == "dialog-cassandra-4"][0]
    assert actions.calls[start][1]["joining"] == ["dialog-cassandra-4"]
    assert names.index("cassandra_settle") < names.index("scale_prepare") \
        < names.index("provision") < start < names.index("cassandra_join") \
        < names.index("deploy" if "deploy" in names else "plan") \
        < names.index("cassandra_cleanup")
    assert actions.names("cassandra_join")[0]["older"] == [
        "dialog-cassandra-1", "dialog-cassandra-2", "dialog-cassandra-3"]
    assert actions.owed == []


def test_a_join_that_fails_fails_the_scale_naming_the_node_and_cleans_nothing():
    actions = CannedScaleActions(tier="production", fail={
        "cassandra_join:dialog-cassandra-4": "dialog-cassandra-4 (10.0.0.9) still UJ after "
                                             "43200s; the join keeps streaming"})
    result = scale(actions, role="cassandra", delta=1)
    assert result.status == "failed"
    assert "join_wait: dialog-cassandra-4" in result.output["failure"]
    assert "still UJ after 43200s" in result.output["failure"]
    assert not actions.names("cassandra_cleanup") and not actions.locks


def test_cleanups_a_failed_scale_left_owed_are_finished_first_by_the_next_one():
    actions = CannedScaleActions(tier="production", fail={
        "cassandra_cleanup:dialog-cassandra-2": "dialog-cassandra-2 (cassandra): nodetool "
                                                "cleanup failed: interrupted"})
    result = scale(actions, role="cassandra", delta=1)
    assert result.status == "failed" and actions.owed == ["dialog-cassandra-2",
                                                          "dialog-cassandra-3"]
    actions.calls.clear()
    result = scale(actions, role="dialog-server", delta=2)
    assert result.status == "succeeded", result.errors
    names = [n for n, _ in actions.calls]
    assert names.index("cassandra_settle") < names.index("scale_prepare")
    assert actions.names("cassandra_settle")[0]["deployment"] == "dialog"
    assert actions.owed == []


def test_cassandra_in_decommissions_before_the_host_goes():
    actions = CannedScaleActions(tier="production", cassandra_nodes=4)
    result = scale(actions, role="cassandra", count=3)
    assert result.status == "succeeded", result.errors
    names = [n for n, _ in actions.calls]
    assert names.index("cassandra_decommission") < names.index("provision")
    assert actions.names("cassandra_decommission")[0]["host"] == "dialog-cassandra-4"
    assert sum(1 for h in actions.hosts if "cassandra" in h["roles"]) == 3


def test_requests_the_tier_forbids_are_refused_with_the_reason_and_nothing_changes():
    cases = [({"role": "dialog-server", "count": 4}, "count: 4 dialog-server is not a count"),
             ({"role": "dialog-server", "count": 7}, "from 3 the next count is 5"),
             ({"role": "dialog-server", "count": 1}, "not a count the small-failover tier"),
             ({"role": "cassandra", "count": 5}, "from 3 the next count is 4"),
             ({"role": "cassandra", "count": 2}, "not a count"),
             ({"role": "postgres", "count": 3}, "role: postgres has 2 in the small-failover"),
             ({"role": "dialog-server"}, "give either count or delta")]
    for params, message in cases:
        actions = CannedScaleActions()
        before = list(actions.hosts)
        result = scale(actions, **params)
        assert result.status == "failed", params
        assert message in result.output["failure"], (params, result.output["failure"])
        assert steps(actions) == ["lock", "scale_prepare", "explain_failure", "unlock"]
        assert actions.hosts == before and not actions.locks


def test_a_failure_mid_way_fails_with_the_reason_and_releases_the_lock():
    actions = CannedScaleActions(fail={
        "bootstrap_host:dialog-dialog-server-5": "dialog-dialog-server-5 (dialog-server): "
                                                 "check 'dialog-server http' failed"})
    result = scale(actions, role="dialog-server", count=5)
    assert result.status == "failed"
    assert result.output["failure"] == ("join: dialog-dialog-server-5 (dialog-server): check "
                                        "'dialog-server http' failed")
    assert not actions.names("deploy") and not [
        p for p in actions.names("bootstrap_host") if "proxy" in p["host"]], \
        "proxies untouched while a new server is unhealthy"
    assert actions.names("unlock") and not actions.locks
    # The hosts were created; a re-run finds 5 and reconciles nothing further.
    again = scale(actions, role="dialog-server", count=5)
    assert again.status == "succeeded" and again.output["before"] == 5


def test_a_failed_cleanup_releases_the_lock_too():
    actions = CannedScaleActions(tier="production", fail={"cassandra_cleanup":
                                                          "nodetool cleanup failed: timeout"})
    result = scale(actions, role="cassandra", delta=1)
    assert result.status == "failed"
    assert result.output["failure"] == ("cleanup: dialog-cassandra-1: nodetool cleanup "
                                        "failed: timeout")
    assert not actions.locks


def test_a_joining_server_that_raises_is_named_and_the_lock_released():
    actions = CannedScaleActions(fail={"bootstrap_host:dialog-dialog-server-4": lambda: raised(
        paramiko.SSHException("Error reading SSH protocol banner"))})
    result = scale(actions, role="dialog-server", count=5)
    assert result.status == "failed", result.errors
    assert result.output["failure"] == (
        "join: dialog-dialog-server-4: crashed: paramiko.ssh_exception.SSHException: Error "
        "reading SSH protocol banner")
    assert actions.names("unlock") and not actions.locks
    assert not [p for p in actions.names("bootstrap_host") if "proxy" in p["host"]]


def test_a_joining_server_that_times_out_is_named_and_the_lock_released():
    actions = CannedScaleActions(fail={"bootstrap_host:dialog-dialog-server-5": lambda: timed_out(
        3600, stdout="dialog-dialog-server-5: waiting for health checks\n")})
    result = scale(actions, role="dialog-server", count=5)
    assert result.status == "failed", result.errors
    assert result.output["failure"] == (
        "join: dialog-dialog-server-5: Action failed to complete in 3600 seconds; its last "
        "output: dialog-dialog-server-5: waiting for health checks")
    assert not actions.locks


def test_a_decommission_that_times_out_names_the_node():
    actions = CannedScaleActions(tier="production", cassandra_nodes=4, fail={
        "cassandra_decommission": lambda: timed_out(7200)})
    result = scale(actions, role="cassandra", count=3)
    assert result.status == "failed", result.errors
    assert result.output["failure"] == (
        "decommission: dialog-cassandra-4: Action failed to complete in 7200 seconds")
    assert not actions.locks and not actions.names("provision"), "the node stays"


def test_a_crash_inside_the_reconcile_deploy_is_passed_up_with_its_host():
    actions = CannedScaleActions(fail={"bootstrap_host:dialog-proxy-1": lambda: raised(
        TimeoutError("timed out"))})
    result = scale(actions, role="dialog-server", count=5)
    assert result.status == "failed", result.errors
    assert result.output["failure"] == (
        "reconcile: bootstrap: dialog-proxy-1: crashed: TimeoutError: timed out")
    assert not actions.locks


def test_a_prepare_that_raises_is_explained_and_the_lock_released():
    actions = CannedScaleActions(fail={"scale_prepare": lambda: raised(
        ConnectionRefusedError(111, "Connection refused"))})
    result = scale(actions, role="dialog-server", count=5)
    assert result.status == "failed"
    assert result.output["failure"] == (
        "prepare: crashed: ConnectionRefusedError: [Errno 111] Connection refused")
    assert actions.names("unlock") and not actions.locks


def test_a_scale_while_another_operation_holds_the_lock_is_refused_and_leaves_it():
    actions = CannedScaleActions()
    operation_lock.acquire(actions.service("Test"), "dialog", "deploy-exec-1", "deploy",
                           1700000000, detail="tier small-failover")
    result = scale(actions, role="dialog-server", count=5)
    assert result.status == "failed"
    assert result.output["failure"].startswith(
        "deployment: dialog is busy: deploy (tier small-failover) is running, execution "
        "deploy-exec-1, since 2023-11-14T22:13:20+00:00"), result.output["failure"]
    assert [n for n, _ in actions.calls] == ["lock", "explain_failure"], "nothing checked"
    assert actions.holder()["owner"] == "deploy-exec-1"


def test_a_refused_decommission_releases_the_lock():
    actions = CannedScaleActions(tier="production", cassandra_nodes=4, fail={
        "cassandra_decommission": "dialog-cassandra-4: nodetool decommission failed: "
                                  "Unsupported operation: Not enough live nodes"})
    result = scale(actions, role="cassandra", count=3)
    assert result.status == "failed", result.errors
    assert result.output["failure"].startswith("decommission: dialog-cassandra-4: nodetool")
    owner = actions.names("lock")[0]["owner"]
    assert actions.names("unlock") == [{"deployment": "dialog", "owner": owner}]
    assert not actions.locks and not actions.names("provision")


def test_the_nested_deploy_re_enters_the_scales_lock_and_only_the_scale_releases_it():
    actions = CannedScaleActions()
    result = scale(actions, role="dialog-server", count=5)
    assert result.status == "succeeded", result.errors
    scale_lock, deploy_lock = actions.names("lock")
    assert (scale_lock["operation"], deploy_lock["operation"]) == ("scale", "deploy")
    owner = scale_lock["owner"]
    assert deploy_lock["owner"] == owner, "the nested deploy re-enters, not refused"
    long_steps = ("provision", "bootstrap_host", "create_admin", "status",
                  "register_deployment")
    assert {p["lock_owner"] for n, p in actions.calls if n in long_steps} == {owner}
    assert actions.names("unlock") == [{"deployment": "dialog", "owner": owner}]
    assert not actions.locks


def test_a_failed_release_is_reported():
    actions = CannedScaleActions(fail={"unlock": lambda: timed_out(600)})
    result = scale(actions, role="dialog-server", count=5)
    assert result.status == "failed", result.errors
    assert result.output["failure"] == "release: Action failed to complete in 600 seconds"


def test_a_misspelled_role_is_refused_in_one_line_before_anything_changes():
    actions = CannedScaleActions()
    result = scale(actions, role="dialog-servers", count=5)
    assert result.status == "failed"
    assert result.output["failure"].startswith(
        "role: unknown value 'dialog-servers'; allowed values: ")
    assert "dialog-server," in result.output["failure"]
    assert steps(actions) == ["lock", "scale_prepare", "explain_failure", "unlock"]


def test_dry_run_checks_without_changing_or_locking():
    actions = CannedScaleActions()
    result = scale(actions, role="dialog-server", count=5, dry_run=True)
    assert result.status == "succeeded"
    assert [n for n, _ in actions.calls] == ["scale_prepare"]
    assert (result.output["before"], result.output["after"]) == (3, 5)
    assert not actions.locks


def test_a_failed_announcement_is_explained():
    """dialog.announce, which the autoscaling rules run: chatops.post_message is StackStorm's
    own action; when it crashes, the workflow's failure still says why."""
    explaining = ExplainingActions()

    def execute(ref, params):
        if ref == "chatops.post_message":
            return raised(ConnectionRefusedError(111, "Connection refused"))
        if ref == "dialog.explain_failure":
            meta = local_runner.load_action_metadata(ref)
            return explaining.explain_failure(**local_runner.prepare_parameters(meta, params)[0])
        return ok(None)

    result = workflow_runner.run_workflow("dialog.announce", {
        "message": "Scaled chat: dialog-server 3 -> 5.", "channel": "#dialog-ops"},
        execute=execute)
    assert result.status == "failed"
    assert result.output == {"failure": "chat: crashed: ConnectionRefusedError: [Errno 111] "
                                        "Connection refused"}


# --- the real scale_prepare's gate stops the workflow before anything changes -----------------

def _changed_nothing(actions, before):
    assert actions.hosts == before
    assert not [n for n, _ in actions.calls
                if n in ("provision", "deploy", "bootstrap_host", "cassandra_decommission",
                         "cassandra_cleanup")]
    assert not actions.locks, "lock released"


def test_dialog_servers_in_while_one_is_unhealthy_is_refused_naming_it():
    actions = CannedScaleActions(dialog_servers=5)
    actions.sick.add("dialog-dialog-server-2")
    before = list(actions.hosts)
    result = scale(actions, role="dialog-server", delta=-2)
    assert result.status == "failed", result.errors
    assert result.output["failure"].startswith(
        "prepare: no scale-in while a dialog server is unhealthy: dialog-dialog-server-2: "), \
        result.output["failure"]
    _changed_nothing(actions, before)


def test_cassandra_out_while_a_node_still_joins_is_refused_naming_it():
    actions = CannedScaleActions(tier="production")
    actions.ring_states["dialog-cassandra-3"] = "UJ"
    before = list(actions.hosts)
    result = scale(actions, role="cassandra", delta=1)
    assert result.status == "failed", result.errors
    assert "dialog-cassandra-3" in result.output["failure"]
    assert "UJ" in result.output["failure"]
    _changed_nothing(actions, before)


def test_cassandra_in_without_room_on_a_survivor_is_refused_naming_it():
    actions = CannedScaleActions(tier="production", cassandra_nodes=4)
    actions.free_bytes["dialog-cassandra-2"] = 1024 ** 3  # the leaver holds 10 GiB, RF 3
    before = list(actions.hosts)
    result = scale(actions, role="cassandra", count=3)
    assert result.status == "failed", result.errors
    survivor = next(h["private_address"] for h in actions.hosts
                    if h["name"] == "dialog-cassandra-2")
    assert "lack the free space" in result.output["failure"]
    assert survivor in result.output["failure"]
    _changed_nothing(actions, before)
