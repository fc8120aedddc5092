"""StackStorm's event loop for the sandbox: the pack's health sensor polling in one thread, and
for every trigger it dispatches the pack's rules (devtools/rules_engine.py, as st2rulesengine)
starting their actions in threads of their own, as st2's action runners run executions side by
side. A repair workflow runs while the sensor keeps polling.

Chat: dialog.announce runs as written; its chatops.post_message (StackStorm's own action) is
printed instead of posted, and so is a rule's dialog.announce. core.noop is StackStorm's own
no-op. Every other action is the pack's, run by local_runner as in the sandbox deploy.
"""

import importlib
import json
import os
import queue
import threading
import time

import yaml

import local_runner
import rules_engine
import workflow_runner

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SENSOR_METADATA = os.path.join(PACK_ROOT, "sensors", "health_sensor.yaml")
ANNOUNCE = "dialog.announce"


def schemas_of(ref):
    return local_runner.parameter_schemas(local_runner.load_action_metadata(ref))


def sensor_class(metadata_path=SENSOR_METADATA):
    """The sensor class its metadata names (class_name in entry_point, under sensors/)."""
    with open(metadata_path, encoding="utf-8") as handle:
        meta = yaml.safe_load(handle)
    module_name = os.path.splitext(os.path.basename(meta["entry_point"]))[0]
    return getattr(importlib.import_module(module_name), meta["class_name"]), meta


def sensor_service(datastore, class_name, on_dispatch):
    """StackStorm's sensor service API (st2tests' mock, or the stand-in: both validate payloads
    against the registered trigger types and drop a bad one) over the sandbox's datastore;
    on_dispatch(trigger, payload) is called for every trigger that passed."""
    local_runner._action_base_class()  # pylint: disable=protected-access
    # pylint: disable=import-outside-toplevel
    from st2tests.mocks.sensor import MockSensorService, MockSensorWrapper

    class Service(MockSensorService):
        def __init__(self):
            super().__init__(MockSensorWrapper("dialog", class_name))
            self.store = local_runner.LocalActionService("dialog", class_name, datastore)

        def get_value(self, name, local=True, scope="system", decrypt=False):
            return self.store.get_value(name, local=local, scope=scope, decrypt=decrypt)

        def set_value(self, name, value, ttl=None, local=True, scope="system",
                      encrypt=False):
            return self.store.set_value(name, value, ttl=ttl, local=local, scope=scope,
                                        encrypt=encrypt)

        def delete_value(self, name, local=True, scope="system"):
            return self.store.delete_value(name, local=local, scope=scope)

        def list_values(self, local=True, prefix=None):
            return self.store.list_values(local=local, prefix=prefix)

        def dispatch_with_context(self, trigger, payload=None, trace_context=None):
            before = len(self.dispatched_triggers)
            result = super().dispatch_with_context(trigger, payload, trace_context)
            if len(self.dispatched_triggers) > before:
                on_dispatch(trigger, payload)
            return result

    return Service()


class Reactor:  # pylint: disable=too-many-instance-attributes
    """The sensor loop and the rule dispatcher. See the module docstring.

    executions: [{"rule", "ref", "params", "host", "started", "ended", "status", "result"}]
    (times from the timeline's clock); announcements: [(time, message)]."""

    def __init__(self, box, timeline, config, say, log, sensor_factory=None,
                 poll_interval=2.0, enforce=rules_engine.enforce):
        self.box, self.timeline, self.config = box, timeline, config
        self.say, self.log = say, log
        self.sensor_factory = sensor_factory
        self.poll_interval = poll_interval
        self.enforce = enforce
        self.executions, self.announcements = [], []
        self.sensor = self.service = None
        self.polls = 0
        self.poll_errors = []
        self._queue = queue.Queue()
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._threads, self._workers = [], []
        self._warned = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self):
        if self.sensor_factory is None:
            cls, meta = sensor_class()
            self.service = sensor_service(self.box.datastore, meta["class_name"], self.dispatched)
            self.sensor = cls(self.service, config=self.config)
        else:
            self.sensor, self.service = self.sensor_factory(self.dispatched)
        self.sensor.setup()
        for target, name in ((self._poll_loop, "chaos-sensor"),
                             (self._dispatch_loop, "chaos-rules")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, wait=600.0):
        """Stop polling; wait (bounded) for running repairs to end."""
        self._halt.set()
        self._queue.put(None)
        for thread in self._threads:
            thread.join(30)
        deadline = time.monotonic() + wait
        for worker in list(self._workers):
            worker.join(max(0.0, deadline - time.monotonic()))
        if self.sensor is not None:
            try:
                self.sensor.cleanup()
            except Exception as exc:  # pylint: disable=broad-except
                self.say("sensor cleanup failed: %s" % exc)

    def running(self):
        with self._lock:
            return [e for e in self.executions if e["ended"] is None]

    def since(self, start):
        with self._lock:
            return [e for e in self.executions if e["started"] >= start]

    # ------------------------------------------------------------------ sensor side

    def dispatched(self, trigger, payload):
        """The sensor service's callback: mark the dispatch time, queue it for the rules."""
        self.timeline.mark("trigger", trigger=trigger, host=(payload or {}).get("host"),
                           payload=payload)
        self._queue.put((trigger, payload))

    def _poll_loop(self):
        while not self._halt.is_set():
            started = time.monotonic()
            try:
                self.sensor.poll()
            except Exception as exc:  # pylint: disable=broad-except
                # The contract says poll() never raises: a harness-visible bug.
                self.poll_errors.append(repr(exc))
                self.say("SENSOR RAISED: %s: %s" % (type(exc).__name__, exc))
            self.polls += 1
            self._report_dropped()
            self._halt.wait(max(0.0, self.poll_interval - (time.monotonic() - started)))

    def _report_dropped(self):
        """Triggers the sensor service refused (payload not matching the trigger type)."""
        logger = getattr(self.service, "_logger", None)
        calls = getattr(getattr(logger, "warning", None), "call_args_list", None)
        if calls is None:
            return
        for call in calls[self._warned:]:
            text = str(call.args[0]) if call.args else str(call)
            if "not dispatching" in text:
                self.say("TRIGGER DROPPED: %s" % text)
        self._warned = len(calls)

    # ------------------------------------------------------------------ rules side

    def _dispatch_loop(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            self.handle(*item)

    def handle(self, trigger, payload):
        """What st2rulesengine does with one trigger instance."""
        shown = {k: payload[k] for k in ("host", "group", "service", "reason", "source",
                                         "down_for") if k in (payload or {})}
        self.say("sensor: %s %s" % (trigger, json.dumps(shown, sort_keys=True)))
        for rule, ref, params in self.enforce(trigger, payload, schemas_of):
            if ref == ANNOUNCE:
                self.chat(params["message"])
                continue
            self.say("rule %s -> %s %s" % (rule, ref, json.dumps(params, sort_keys=True)))
            record = {"rule": rule, "ref": ref, "params": params,
                      "host": params.get("host") or (payload or {}).get("host"),
                      "trigger": trigger, "started": self.timeline.clock(), "ended": None,
                      "status": None, "result": None}
            with self._lock:
                self.executions.append(record)
            self.timeline.mark("repair_started", host=record["host"], ref=ref)
            worker = threading.Thread(target=self._execute, args=(record,), daemon=True,
                                      name="chaos-%s" % ref)
            self._workers.append(worker)
            worker.start()

    def chat(self, message):
        self.announcements.append((self.timeline.clock(), message))
        self.timeline.mark("announce", message=message)
        self.say("[chat] %s" % message)

    def _execute(self, record):
        try:
            ok, result = self.run_action(record["ref"], record["params"])
        except Exception as exc:  # pylint: disable=broad-except
            ok, result = False, {"error": "%s: %s" % (type(exc).__name__, exc)}
        record.update(ended=self.timeline.clock(), status="succeeded" if ok else "failed",
                      result=result)
        self.timeline.mark("repair_finished", host=record["host"], ref=record["ref"],
                           status=record["status"])
        seconds = record["ended"] - record["started"]
        failure = (result.get("output") or {}).get("failure") if isinstance(result, dict) \
            else None
        self.say("%s %s after %.1f s%s" % (record["ref"], record["status"], seconds,
                                           (": %s" % failure) if failure else ""))
        finished = {"action_name": record["ref"].split(".", 1)[-1], "action_ref": record["ref"],
                    "status": record["status"], "execution_id": "local", "result": result}
        for _, ref, params in self.enforce("core.st2.generic.actiontrigger", finished,
                                           schemas_of):
            if ref == ANNOUNCE:
                self.chat(params["message"])

    def run_action(self, ref, params):
        """(succeeded, result) of one execution of the pack's action `ref`."""
        meta = local_runner.load_action_metadata(ref)
        # As st2 creates the execution: config_context defaults rendered from the pack config.
        action_params, _ = local_runner.prepare_parameters(meta, params, self.config)
        if meta["runner_type"] != "orquesta":
            return local_runner.execute(meta, action_params, self.config,
                                        datastore=self.box.datastore)
        result = workflow_runner.run_workflow(ref, action_params, self.executor(),
                                              PACK_ROOT, progress=self.log)
        return result.succeeded, result.result

    def executor(self):
        """execute(ref, input) for workflow_runner: StackStorm's own core.noop and
        chatops.post_message here, the pack's python actions as local_runner runs them."""
        pack = local_runner.python_action_executor(self.config, PACK_ROOT, self.box.datastore,
                                                   echo=workflow_runner.action_output)

        def execute(ref, params):
            if ref == "core.noop":
                return "succeeded", {"result": None, "stdout": "", "stderr": "",
                                     "exit_code": 0}
            if ref == "chatops.post_message":
                self.chat(params.get("message", ""))
                return "succeeded", {"result": None, "stdout": "", "stderr": "",
                                     "exit_code": 0}
            return pack(ref, params)

        # The workflow runner renders its child workflows' config_context defaults with it.
        execute.config = self.config
        return execute
