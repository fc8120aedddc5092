"""dialog.deploy run by orquesta's conductor (devtools/workflow_runner.py) with canned action
results: every host's bootstrap at once, each host starting only once what it needs runs (the
real start_order logic over a shared marker store), the one-at-a-time Cassandra joins, the
failure paths and the re-run that finishes the job.

The canned actions (CannedDialogActions) stand in for the pack's python actions only, with the
result shapes StackStorm's python runner stores (contrib/runners/python_runner in st2 3.9): a
returned error, a raised exception (result "None", the traceback on stderr, exit code 1) and a
timeout (status "timeout", result "None", the runner's "error", exit code -9). Every action
request the workflow makes is first validated against that action's metadata the way st2
validates it (local_runner.prepare_parameters), so a workflow that passes a parameter st2 would
refuse fails here too. dialog.explain_failure is not canned: the real action explains every
failure. The real actions run in test_deploy_sandbox.py.
"""

import json
import threading
import time
import traceback

import paramiko
import pytest
from st2tests.mocks.action import MockActionService, MockActionWrapper

import local_runner
import workflow_runner
from explain_failure import ExplainFailureAction
from lib.deployment_secrets import datastore_key
from bootstrap_order import BootstrapOrderAction
from dialog_action import DialogAction, _deployment
from lib import operation_lock
from lock import LockAction
from unlock import UnlockAction
from lib.errors import DialogError
from lib.hosts.start_order import RunGate
from lib.planner import build_plan
from lib.stages import dependencies

BOOT_SECONDS = 0.15
START_SECONDS = 0.05
# The canned order's dependency wait bound (the real one is hours).
WAIT_SECONDS = 5
# What the real bootstrap_host returns when a host's health check fails.
HEALTH_ERROR = ("%s (dialog-server): check 'dialog-server http' failed after 600s: "
                "connection refused")
POSTGRES_PASSWORD = "pg-Secret-0123456789"


# --- StackStorm's python runner result shapes ----------------------------------------------

def ok(value, stdout=""):
    """(status, result) of a run() that returned (True, value)."""
    return True, {"result": value, "stdout": stdout, "stderr": "", "exit_code": 0}


def returned_error(value, stdout=""):
    """A run() that returned (False, value): the runner logs nothing of it on its own."""
    return False, {"result": value, "stdout": stdout, "stderr": "", "exit_code": 0}


def raised(exc, stdout=""):
    """A run() that raised `exc`: the wrapper process dies with the traceback on stderr, and the
    runner stores the result as the string "None"."""
    return False, {"result": "None", "stdout": stdout, "stderr": traceback_of(exc),
                   "exit_code": 1}


def traceback_of(exc):
    """stderr of a python process that died of `exc`."""
    try:
        raise exc
    except Exception:  # pylint: disable=broad-except
        return traceback.format_exc()


def timed_out(seconds, stdout=""):
    """A run() the runner killed after `seconds` (its `timeout` parameter)."""
    return "timeout", {"result": "None", "stdout": stdout, "stderr": "", "exit_code": -9,
                       "error": "Action failed to complete in %d seconds" % seconds}


def inventory(plan):
    """What dialog.provision would report for a plan: every host with a private address."""
    hosts = []
    for number, host in enumerate(plan["hosts"], start=1):
        hosts.append({"name": host["name"], "group": host["group"], "index": host["index"],
                      "roles": host["roles"], "provider_id": "i-%d" % number,
                      "private_address": "10.0.0.%d" % number,
                      "public_addresses": ["198.51.100.%d" % number] if host["public"] else []})
    return hosts


class ExplainingActions(object):
    """dialog.explain_failure as StackStorm runs it: the real action, with the pack config and
    a datastore holding the deployment's secrets (to be masked in what it says)."""

    config = {"profiles": {"default": {"provider": "aws",
                                       "aws_secret_access_key": "aws-Secret-0123456789"}}}

    def explain_failure(self, **params):
        service = MockActionService(MockActionWrapper("dialog", "ExplainFailureAction"))
        for deployment in ("dialog", "chat2"):
            service.set_value(datastore_key(deployment), json.dumps(
                {"postgres_password": POSTGRES_PASSWORD}), local=False, encrypt=True)
        action = ExplainFailureAction(config=self.config, action_service=service)
        status, value = action.run(**params)
        return (ok if status else returned_error)(value)


class _Step(DialogAction):
    def run(self, **_):
        raise NotImplementedError


class RealLocks(object):
    """dialog.lock and dialog.unlock as StackStorm runs them (the real actions) over one
    datastore with st2's TTL semantics (local_runner.MemoryDatastore), and every other action
    run under the real DialogAction hook: an action given lock_owner and a deployment is
    refused when that owner does not hold the deployment's lock."""

    def service(self, class_name):
        if getattr(self, "store", None) is None:
            self.store = local_runner.MemoryDatastore()
        return local_runner.LocalActionService("dialog", class_name, self.store)

    def real_lock_action(self, name, params):
        cls = {"lock": LockAction, "unlock": UnlockAction}[name]
        status, value = cls(config={}, action_service=self.service(cls.__name__)).run(**params)
        return (ok if status else returned_error)(value)

    def under_lock(self, params, call):
        """call() -> (status, result), as DialogAction's reports_errors runs it."""
        step = _Step(config={}, action_service=self.service("Step"))
        try:
            return step.holding_lock(params.get("lock_owner"), _deployment(params), call)
        except DialogError as exc:
            return returned_error(exc.to_result())

    def holder(self, deployment="dialog"):
        return operation_lock.holder_of(self.service("Test"), deployment)

    @property
    def locks(self):
        """Deployments whose lock is held."""
        self.service("Test")
        self.store.expire()
        return {name.split(".")[1] for name in self.store.items
                if name.endswith(".operation_lock")}


class CannedDialogActions(RealLocks, ExplainingActions):
    """execute(ref, input) for workflow_runner: the pack's actions as canned, stateful fakes.

    Bootstrapping prepares for BOOT_SECONDS, then waits for the hosts it needs like the real
    action (lib.hosts.start_order over `markers`, the datastore's stand-in), then starts for
    START_SECONDS and marks itself ready or failed. A host in `fail_once` fails its first
    start: with the error the real action returns, or as `fail_once[host]` says: a callable
    giving the (status, result) pair (raised(...), timed_out(...); a timed-out action marks
    nothing, as StackStorm killed it). `done` remembers bootstrapped hosts, so a re-run reports
    them unchanged, like the real, idempotent action. `crash` maps an action name to the
    (status, result) it gives instead of running. `events`: (host, "prepare"|"start"|"ready",
    time)."""

    def __init__(self, fail_once=(), fail_plan=None, crash=None):
        self.fail_once = dict(fail_once) if isinstance(fail_once, dict) else {
            host: None for host in fail_once}
        self.fail_plan = fail_plan
        self.crash = dict(crash or {})
        self.done = set()
        self.calls = []
        self.events = []
        self.markers = {}
        self.lock = threading.Lock()
        self.provisioned = False

    def __call__(self, ref, params):
        meta = local_runner.load_action_metadata(ref)
        action_params, _ = local_runner.prepare_parameters(meta, params)  # st2 would refuse
        with self.lock:
            self.calls.append((ref, action_params))
        name = ref.split(".", 1)[1]
        if name in self.crash:
            return self.crash[name]()
        if name in ("lock", "unlock"):
            return self.real_lock_action(name, action_params)
        return self.under_lock(action_params, lambda: getattr(self, name)(**{
            k: v for k, v in action_params.items() if k != "lock_owner"}))

    _ok = staticmethod(ok)
    _failed = staticmethod(returned_error)

    def plan(self, tier, provider, **options):
        if self.fail_plan:
            return self._failed({"error": self.fail_plan, "field": "cassandra_nodes"})
        options.pop("profile", None)
        options.pop("replacing", None)  # the real plan checks it (test_cassandra_replace.py)
        return self._ok(build_plan(tier, provider=provider or "aws", **options))

    def cassandra_settle(self, deployment, profile=None, plan=None, **_):
        # Nothing owed in these runs (tests/test_cassandra_safety.py has the real action).
        return self._ok({"deployment": deployment, "owed": [], "cleaned": [], "ring": None})

    def provision(self, tier, provider, dry_run, profile, remove_hosts=(), **options):
        plan = build_plan(tier, provider=provider, **options)
        changes = [] if self.provisioned else [
            {"action": "create", "kind": "instance", "name": h["name"], "detail": h["size"]}
            for h in plan["hosts"]]
        if not dry_run:
            self.provisioned = True
        return self._ok({"changes": changes, "hosts": inventory(plan) if not dry_run or
                         self.provisioned else []})

    def register_deployment(self, plan, profile):
        deployment = plan["deployment"]
        return self._ok({"deployment": deployment, "datastore_key": "dialog.%s.secrets"
                         % deployment, "record_key": "dialog.%s.deployment" % deployment,
                         "secrets_created": [], "record_changed": False})

    def bootstrap_order(self, **params):
        """The real action, with short dependency waits."""
        status, value = BootstrapOrderAction(
            config={}, action_service=self.service("BootstrapOrderAction")).run(**params)
        assert status, value
        order = dict(value)
        order["wait"] = {name: min(wait, WAIT_SECONDS) for name, wait in order["wait"].items()}
        return self._ok(order)

    def _event(self, host, what):
        with self.lock:
            self.events.append((host, what, time.monotonic()))

    def prepare(self, host):
        """The slow part every host does at once."""
        time.sleep(BOOT_SECONDS)

    def bootstrap_host(self, deployment, host, hosts, run_id=None, needs=None,
                       dependency_timeout=0, **_):
        gate = None
        if run_id:
            gate = RunGate(self.markers.get, lambda key, value, ttl: self.markers.__setitem__(
                key, value), deployment, run_id, host, needs, dependency_timeout)
        self._event(host, "prepare")
        self.prepare(host)
        try:
            if gate:
                gate.wait(interval=0.01)
        except DialogError as exc:
            gate.failed(str(exc))
            return self._failed({"error": str(exc)})
        self._event(host, "start")
        time.sleep(START_SECONDS)
        with self.lock:
            if host in self.fail_once:
                outcome = self.fail_once.pop(host)
                status, result = outcome() if outcome is not None else self._failed(
                    {"error": HEALTH_ERROR % host})
                if gate and status != "timeout":
                    gate.failed("failed")
                return status, result
            changed = host not in self.done
            self.done.add(host)
        if gate:
            gate.ready()
        self._event(host, "ready")
        return self._ok({"host": host, "changed": changed, "checks": []})

    def create_admin(self, deployment, hosts, **_):
        return self._ok({"login": "admin", "created": True, "credentials":
                         "dialog.%s.secrets" % deployment})

    def status(self, deployment, hosts, **_):
        return self._ok({"deployment": deployment, "healthy": True,
                         "hosts": [{"name": h["name"], "roles": h["roles"], "healthy": True,
                                    "checks": []} for h in hosts],
                         "endpoints": {"web": "https://198.51.100.1/"}})


def deploy(actions, **params):
    params.setdefault("tier", "small")
    meta = local_runner.load_action_metadata("dialog.deploy")
    inputs, _ = local_runner.prepare_parameters(meta, params)
    return workflow_runner.run_workflow("dialog.deploy", inputs, execute=actions)


def called(actions, ref):
    return [p for r, p in actions.calls if r == ref]


def moments(actions, what):
    """{host: time of its `what` event} (the first one)."""
    result = {}
    for host, event, when in actions.events:
        if event == what:
            result.setdefault(host, when)
    return result


def test_each_host_starts_only_after_what_it_really_needs():
    actions = CannedDialogActions()
    result = deploy(actions, tier="production", cassandra_nodes=5, dialog_servers=3,
                    with_storage=True)
    assert result.status == "succeeded", result.output["failure"]
    refs = [ref for ref, _ in actions.calls]
    first, last = refs.index("dialog.bootstrap_host"), len(refs) - 1 - refs[::-1].index(
        "dialog.bootstrap_host")
    assert refs[:first] == ["dialog.plan", "dialog.lock", "dialog.cassandra_settle",
                            "dialog.provision",
                            "dialog.register_deployment", "dialog.bootstrap_order"]
    assert refs[last + 1:] == ["dialog.create_admin", "dialog.status", "dialog.unlock"]

    hosts = result.output["hosts"]
    booted = called(actions, "dialog.bootstrap_host")
    assert sorted(p["host"] for p in booted) == sorted(h["name"] for h in hosts), "each once"
    assert len({p["run_id"] for p in booted}) == 1 and booted[0]["run_id"]
    needs = dependencies(hosts, proxies_route_push=True)
    started, ready = moments(actions, "start"), moments(actions, "ready")
    for host, needed in needs.items():
        for other in needed:
            assert ready[other] <= started[host], "%s started before %s was up" % (host, other)
    servers = [h["name"] for h in hosts if "dialog-server" in h["roles"]]
    cassandra = [h["name"] for h in hosts if "cassandra" in h["roles"]]
    for server in servers:
        assert set(needs[server]) >= {"dialog-postgres-1", "dialog-s3-gateway-1"} | set(
            cassandra), "a dialog server needs Postgres, the whole ring and the S3 gateway"
    web = {h["name"] for h in hosts if "web" in h["roles"]}
    for proxy in ("dialog-proxy-1", "dialog-proxy-2"):
        assert set(needs[proxy]) >= set(servers) | web, "proxies need what they route to"
    # voice, push and web need nothing: they start as soon as they are prepared.
    for host in hosts:
        if set(host["roles"]) <= {"voice", "push", "web"}:
            assert needs[host["name"]] == [], host["name"]


class RendezvousActions(CannedDialogActions):
    """Each host's preparation waits until every host of the deployment has begun its own:
    with fewer bootstraps running at once the rendezvous times out and the bootstrap fails. No
    timing is asserted."""

    def __init__(self, count):
        super(RendezvousActions, self).__init__()
        self.barrier = threading.Barrier(count, timeout=30)

    def prepare(self, host):
        try:
            self.barrier.wait()
        except threading.BrokenBarrierError:
            raise AssertionError("%s prepared without every other host" % host) from None


def test_every_hosts_bootstrap_starts_at_once():
    plan = build_plan("production", provider="aws", dialog_servers=5, with_storage=True)
    actions = RendezvousActions(len(plan["hosts"]))
    result = deploy(actions, tier="production", dialog_servers=5, with_storage=True)
    assert result.status == "succeeded", result.output["failure"]
    runs = [e for e in result.trace if e.action_ref == "dialog.bootstrap_host"]
    assert len(runs) == len(plan["hosts"])
    # All of them were running at once: the last one started before the first one ended.
    assert max(e.start for e in runs) < min(e.end for e in runs)


def test_cassandra_nodes_beyond_the_seeds_join_one_at_a_time():
    actions = CannedDialogActions()
    result = deploy(actions, tier="production", cassandra_nodes=6)
    assert result.status == "succeeded", result.errors
    started, ready = moments(actions, "start"), moments(actions, "ready")
    nodes = ["dialog-cassandra-%d" % n for n in range(1, 7)]
    seeds_up = max(ready[n] for n in nodes[:2])
    for before, after in zip(nodes[2:], nodes[3:]):
        assert ready[before] <= started[after], "a node joins only once the previous one is UN"
    assert all(started[n] >= seeds_up for n in nodes[2:]), "joiners come after the seeds"
    # Seeds start together: neither is handed the other as a need (the only thing that makes a
    # host wait). Comparing moments here would measure the harness: the items' bootstraps begin
    # up to a few tenths of a second apart on a busy machine, more than START_SECONDS.
    needs = {p["host"]: p["needs"] for p in called(actions, "dialog.bootstrap_host")}
    assert needs["dialog-cassandra-1"] == [] and needs["dialog-cassandra-2"] == [], \
        "seeds start together"


def test_output_names_endpoints_hosts_and_where_the_admin_credentials_are():
    actions = CannedDialogActions()
    result = deploy(actions, deployment="chat")
    assert result.status == "succeeded", result.errors
    output = result.output
    assert output["admin_credentials"] == "dialog.chat.secrets"
    assert output["endpoints"] == {"web": "https://198.51.100.1/"}
    assert {h["name"] for h in output["hosts"]} == {h["name"] for h in output["health"]}
    assert all(b["changed"] for b in output["bootstrapped"])
    assert output["failure"] is None and output["changes"]


def test_a_failed_host_stops_the_hosts_that_need_it_at_once_naming_it():
    actions = CannedDialogActions(fail_once={"dialog-dialog-server-1"})
    result = deploy(actions, tier="small")
    assert result.status == "failed"
    failure = result.output["failure"]
    assert failure == (
        "bootstrap: dialog-dialog-server-1 (dialog-server): check 'dialog-server http' failed "
        "after 600s: connection refused"
        "; dialog-proxy-1: not started: dialog-dialog-server-1, which it needs, failed"
        "; dialog-proxy-2: not started: dialog-dialog-server-1, which it needs, failed")
    assert "dialog-proxy-1" not in moments(actions, "start"), "a proxy never started"
    assert not called(actions, "dialog.create_admin")
    # The proxies gave up at once, not after their wait bound.
    runs = {e.item_id: e for e in result.trace if e.action_ref == "dialog.bootstrap_host"}
    assert max(e.end - e.start for e in runs.values()) < WAIT_SECONDS
    # What finished is still reported.
    assert {b["host"] for b in result.output["bootstrapped"]} == {
        "dialog-postgres-1", "dialog-cassandra-1", "dialog-voice-push-1", "dialog-web-1"}


SSH_BANNER = paramiko.SSHException("Error reading SSH protocol banner")


def test_a_bootstrap_that_raises_names_the_host_and_the_exception():
    """The issue's case: StackStorm stores result "None" and the traceback on stderr, where
    result().result.error cannot even be evaluated."""
    actions = CannedDialogActions(fail_once={"dialog-dialog-server-1": lambda: raised(
        SSH_BANNER, stdout="dialog-dialog-server-1: waiting for SSH\n")})
    result = deploy(actions, tier="small")
    assert result.status == "failed", result.errors
    assert result.output["failure"].startswith(
        "bootstrap: dialog-dialog-server-1: crashed: paramiko.ssh_exception.SSHException: "
        "Error reading SSH protocol banner; dialog-proxy-1: not started: ")
    assert not called(actions, "dialog.create_admin")


def test_a_bootstrap_that_times_out_names_the_host_and_the_runners_error():
    actions = CannedDialogActions(fail_once={"dialog-proxy-2": lambda: timed_out(
        3600, stdout="dialog-proxy-2: uploaded 4 files\ndialog-proxy-2: pulling images\n")})
    result = deploy(actions, tier="small-failover")
    assert result.status == "failed", result.errors
    assert result.output["failure"] == (
        "bootstrap: dialog-proxy-2: Action failed to complete in 3600 seconds; its last output: "
        "dialog-proxy-2: pulling images")


def test_a_host_killed_by_its_timeout_holds_its_dependents_only_up_to_their_bound():
    """A killed action marks nothing: the hosts needing it wait out their own bound and say
    for what."""
    actions = CannedDialogActions(fail_once={"dialog-web-1": lambda: timed_out(3600)})
    result = deploy(actions, tier="small")
    assert result.status == "failed", result.errors
    assert result.output["failure"] == (
        "bootstrap: dialog-web-1: Action failed to complete in 3600 seconds"
        "; dialog-proxy-1: not started: still waiting for dialog-web-1 after %ds (its "
        "dependency_timeout)"
        "; dialog-proxy-2: not started: still waiting for dialog-web-1 after %ds (its "
        "dependency_timeout)" % (WAIT_SECONDS, WAIT_SECONDS))


def test_several_hosts_failing_at_once_are_each_named():
    actions = CannedDialogActions(fail_once={
        "dialog-dialog-server-1": None,
        "dialog-dialog-server-2": lambda: raised(KeyError("hosts")),
        "dialog-dialog-server-3": lambda: timed_out(3600)})
    result = deploy(actions, tier="small-failover")
    assert result.status == "failed", result.errors
    assert result.output["failure"].startswith(
        "bootstrap: " + HEALTH_ERROR % "dialog-dialog-server-1"
        + "; dialog-dialog-server-2: crashed: KeyError: 'hosts'"
        + "; dialog-dialog-server-3: Action failed to complete in 3600 seconds"
        + "; dialog-proxy-1: not started: dialog-dialog-server-")


@pytest.mark.parametrize("task,action", [
    ("plan", "plan"), ("provision", "provision"), ("secrets", "register_deployment"),
    ("order", "bootstrap_order"), ("admin", "create_admin"), ("health", "status")])
def test_every_single_step_explains_a_crash_and_a_timeout(task, action):
    for outcome, reason in (
            (lambda: raised(ConnectionResetError(104, "Connection reset by peer")),
             "crashed: ConnectionResetError: [Errno 104] Connection reset by peer"),
            (lambda: timed_out(600), "Action failed to complete in 600 seconds")):
        actions = CannedDialogActions(crash={action: outcome})
        result = deploy(actions, tier="small")
        assert result.status == "failed", result.errors
        assert result.output["failure"] == "%s: %s" % (task, reason)


def test_a_reason_never_carries_a_secret():
    leak = RuntimeError("psql: FATAL: password authentication failed; PGPASSWORD=%s, key "
                        "aws-Secret-0123456789" % POSTGRES_PASSWORD)
    actions = CannedDialogActions(fail_once={"dialog-postgres-1": lambda: raised(leak)})
    result = deploy(actions, tier="small")
    failure = result.output["failure"]
    assert failure.startswith("bootstrap: dialog-postgres-1: crashed: RuntimeError: psql: ")
    assert POSTGRES_PASSWORD not in failure and "aws-Secret-0123456789" not in failure
    assert "PGPASSWORD=********" in failure


def test_a_task_st2_refuses_to_start_is_still_named():
    """An input StackStorm cannot cast or validate fails the request itself (an exception from
    execute()): no transition runs and the workflow keeps no context; the output still says
    where it stopped."""
    class Refusing(CannedDialogActions):
        def create_admin(self, deployment, hosts, **_):
            raise local_runner.RunnerError('Failed to cast value "x" for parameter "hosts"')

    result = deploy(Refusing(), tier="small")
    assert result.status == "failed"
    assert result.output["failure"].startswith(
        "admin: the workflow stopped here without a result to explain")
    assert any("Failed to cast value" in e["message"] for e in result.errors)


def test_when_the_explanation_fails_the_task_is_still_named():
    actions = CannedDialogActions(fail_once={"dialog-web-1"}, crash={
        "explain_failure": lambda: raised(MemoryError())})
    result = deploy(actions, tier="small")
    assert result.status == "failed"
    assert result.output["failure"].startswith(
        "bootstrap: failed, and its failure could not be explained: st2 execution get ")


def test_a_rerun_after_a_failure_finishes_the_job_and_changes_only_what_was_left():
    actions = CannedDialogActions(fail_once={"dialog-dialog-server-1"})
    assert deploy(actions, tier="small").status == "failed"
    result = deploy(actions, tier="small")
    assert result.status == "succeeded", result.errors
    changed = {b["host"] for b in result.output["bootstrapped"] if b["changed"]}
    assert "dialog-postgres-1" not in changed and "dialog-dialog-server-1" in changed
    assert result.output["changes"] == [], "the provider already matched the plan"
    assert called(actions, "dialog.create_admin")
    again = deploy(actions, tier="small")
    assert not any(b["changed"] for b in again.output["bootstrapped"])


def test_dry_run_stops_after_the_plan_and_the_change_set():
    actions = CannedDialogActions()
    result = deploy(actions, tier="small-failover", dry_run=True)
    assert result.status == "succeeded", result.errors
    assert [ref for ref, _ in actions.calls] == ["dialog.plan", "dialog.provision"]
    assert called(actions, "dialog.provision")[0]["dry_run"] is True
    assert result.output["plan"]["tier"] == "small-failover"
    assert len(result.output["changes"]) == len(result.output["plan"]["hosts"])
    assert result.output["bootstrapped"] == []


def test_bad_input_fails_at_the_plan_with_the_field_named():
    error = "cassandra_nodes: 2 is not allowed for tier small; allowed values: 1, 3"
    actions = CannedDialogActions(fail_plan=error)
    result = deploy(actions, tier="small", cassandra_nodes=2)
    assert result.status == "failed"
    # An error in the operator's input reads as the action's own answer: no task in front.
    assert result.output["failure"] == error
    assert [ref for ref, _ in actions.calls] == ["dialog.plan", "dialog.explain_failure"]


class RealPlan(CannedDialogActions):
    """The deploy workflow with the real dialog.plan (it refuses what the operator mistyped)."""

    def plan(self, **options):
        from plan import PlanAction  # pylint: disable=import-outside-toplevel
        action = PlanAction(config={})
        action.record = lambda deployment: {}
        status, value = action.run(**options)
        return (ok if status else returned_error)(value)


@pytest.mark.parametrize("field,params", [
    ("tier", {"tier": "huge"}), ("provider", {"provider": "azure"}),
    ("droplet_class", {"provider": "digitalocean", "droplet_class": "optimised"})])
def test_a_misspelled_value_is_refused_by_the_plan_in_one_line(field, params):
    """st2 lets the value through (no enum: it would answer with a JSON-schema dump); the
    plan, run for real here, names the field, the value and the allowed values."""
    actions = RealPlan()
    result = deploy(actions, **dict({"tier": "small"}, **params))
    assert result.status == "failed"
    failure = result.output["failure"]
    assert failure.startswith("%s: unknown value %r; allowed values: " % (field, params[field]))
    assert "\n" not in failure
    assert [ref for ref, _ in actions.calls] == ["dialog.plan", "dialog.explain_failure"]


def test_unset_inputs_are_left_out_so_the_profile_decides():
    """The plan gets only what the operator gave: its own defaults and the profile decide the
    rest (the canned executor validates every request like st2)."""
    actions = CannedDialogActions()
    result = deploy(actions, tier="mini")
    assert result.status == "succeeded", result.errors
    plan_input = called(actions, "dialog.plan")[0]
    assert plan_input["provider"] is None  # left out, st2 fills nothing in
    assert called(actions, "dialog.provision")[0]["provider"] == "aws"


def test_a_larger_count_grows_the_role_on_rerun():
    actions = CannedDialogActions()
    assert deploy(actions, tier="small-failover").status == "succeeded"
    result = deploy(actions, tier="small-failover", dialog_servers=5)
    assert result.status == "succeeded", result.errors
    changed = sorted(b["host"] for b in result.output["bootstrapped"] if b["changed"])
    assert changed == ["dialog-dialog-server-4", "dialog-dialog-server-5"]


@pytest.mark.parametrize("tier", ["mini", "small", "small-failover", "production"])
def test_every_tier_deploys_every_host_once(tier):
    actions = CannedDialogActions()
    result = deploy(actions, tier=tier, with_storage=tier != "mini")
    assert result.status == "succeeded", result.errors
    booted = sorted(p["host"] for p in called(actions, "dialog.bootstrap_host"))
    assert booted == sorted(h["name"] for h in result.output["hosts"])


# --- the deployment's operation lock -------------------------------------------------------

LONG_STEPS = ("dialog.provision", "dialog.register_deployment", "dialog.bootstrap_host",
              "dialog.create_admin", "dialog.status")


def test_a_deploy_takes_the_lock_after_the_plan_renews_it_in_every_long_step_and_frees_it():
    actions = CannedDialogActions()
    result = deploy(actions, tier="small")
    assert result.status == "succeeded", result.errors
    owner = called(actions, "dialog.lock")[0]["owner"]
    assert called(actions, "dialog.lock")[0]["operation"] == "deploy"
    for ref in LONG_STEPS:
        assert {p["lock_owner"] for p in called(actions, ref)} == {owner}, ref
    assert called(actions, "dialog.unlock") == [{"deployment": "dialog", "owner": owner}]
    assert not actions.locks


def test_a_deploy_while_a_scale_holds_the_lock_is_refused_before_any_provider_call():
    actions = CannedDialogActions()
    operation_lock.acquire(actions.service("ScalePrepareAction"), "dialog", "scale-exec-1",
                           "scale", 1700000000, detail="role cassandra")
    result = deploy(actions, tier="small")
    assert result.status == "failed"
    assert [ref for ref, _ in actions.calls] == ["dialog.plan", "dialog.lock",
                                                 "dialog.explain_failure"]
    failure = result.output["failure"]
    assert failure.startswith("deployment: dialog is busy: scale (role cassandra) is running, "
                              "execution scale-exec-1, since 2023-11-14T22:13:20+00:00"), failure
    assert "st2 key delete dialog.dialog.operation_lock" in failure
    assert actions.holder()["owner"] == "scale-exec-1", "the scale's lock stays"


def test_a_failed_deploy_frees_its_lock():
    actions = CannedDialogActions(fail_once={"dialog-dialog-server-1"})
    result = deploy(actions, tier="small")
    assert result.status == "failed"
    assert result.output["failure"].startswith("bootstrap: dialog-dialog-server-1")
    refs = [ref for ref, _ in actions.calls]
    assert refs[-2:] == ["dialog.explain_failure", "dialog.unlock"]
    assert not actions.locks


def test_a_deploy_given_lock_owner_re_enters_that_lock_and_leaves_it_held():
    """What dialog.scale's reconcile does: the nested deploy runs under the scale's lock."""
    actions = CannedDialogActions()
    operation_lock.acquire(actions.service("Test"), "dialog", "scale-exec-1", "scale",
                           1700000000)
    result = deploy(actions, tier="small", lock_owner="scale-exec-1")
    assert result.status == "succeeded", result.errors
    assert called(actions, "dialog.lock")[0]["owner"] == "scale-exec-1"
    assert {p["lock_owner"] for ref in LONG_STEPS for p in called(actions, ref)} == {
        "scale-exec-1"}
    assert not called(actions, "dialog.unlock")
    assert actions.holder()["owner"] == "scale-exec-1"
    assert actions.holder()["operation"] == "scale", "the outer operation still named"


def test_a_step_of_a_deploy_that_lost_its_lock_is_refused_and_the_other_lock_stays():
    """The lock expired (a stalled runner) and another operation took it: the next step
    refuses to run, and the failed deploy does not free the other operation's lock."""
    class Stolen(CannedDialogActions):
        def provision(self, *args, **kwargs):
            service = self.service("Other")
            service.delete_value(operation_lock.lock_key("dialog"), local=False)
            operation_lock.acquire(service, "dialog", "destroy-exec-9", "destroy", 1700000000)
            return super(Stolen, self).provision(*args, **kwargs)

    actions = Stolen()
    result = deploy(actions, tier="small")
    assert result.status == "failed"
    refs = [ref for ref, _ in actions.calls]
    assert refs[-3:] == ["dialog.register_deployment", "dialog.explain_failure",
                         "dialog.unlock"]
    assert "no longer holds the lock of dialog: destroy is running, execution destroy-exec-9" \
        in result.output["failure"]
    assert actions.holder()["owner"] == "destroy-exec-9"
