"""Run one of the pack's Orquesta workflows without StackStorm, the way StackStorm runs it.

    result = run_workflow("dialog.deploy", {"tier": "small"}, execute=execute)
    result.status, result.output, result.errors, result.trace, result.result

`execute(action_ref, input) -> (status, result)` runs one action execution: status is True /
False or an orquesta status ("succeeded", "failed", "timeout", ...), result is what StackStorm
would store as the execution's result (for a python action {"result": ..., "stdout": ...,
"exit_code": ...}, see local_runner). An exception from execute() is what StackStorm calls a
failed action request (unknown action, invalid parameters): it fails the whole workflow at once,
no transition can remediate it. Actions of this pack whose runner is `orquesta` are not passed
to execute(): they run here, recursively, and their result is {"output": ...} (+ "errors").

The loop follows st2common/services/workflows.py: inspect the definition, request the workflow
"requested" then "running", and whenever something completes ask the conductor for its next
tasks, mark every action of them running (one TaskItemActionExecutionEvent per with-items
item), start them, and feed each completion back with update_task_state(). The conductor itself
decides retries, transitions, joins, engine commands (fail, noop, continue) and with-items
concurrency (it hands out only as many items as the concurrency leaves free). An execution
that timed out ("timeout") fails its task there, as in st2, but orquesta logs no error entry
for it. Unlike StackStorm the engine lives in this process: action executions start from a
thread pool (local_runner's executor runs each python action in a process of its own), so
tasks that are ready together, and the items of a with-items task, run at the same time.
"""

import collections
import concurrent.futures
import copy
import glob
import os
import threading
import time
import uuid

import yaml

import orquesta_compat

orquesta_compat.install()

from orquesta import conducting  # noqa: E402
from orquesta import events  # noqa: E402
from orquesta import statuses  # noqa: E402
from orquesta.specs import native as native_specs  # noqa: E402

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What st2 puts in ctx().st2 of a workflow run by a single-host install as its default user.
ST2_USER = "stanley"
ST2_API_URL = "http://127.0.0.1:9101/v1"
# Runner parameters every action accepts on top of its own (contrib/runners/*/runner.yaml).
RUNNER_PARAMETERS = {"python-script": ("debug", "content_version", "env", "timeout", "log_level"),
                     "orquesta": ("notify",)}
MAX_WORKERS = 64
_PROGRESS_LOCK = threading.Lock()
# orquesta is not thread-safe (yaql shares one parser); st2 runs it in green threads. Every use
# of it here holds this lock, held only for the conductor's bookkeeping, never while actions run.
_ORQUESTA_LOCK = threading.RLock()

# The running action's progress line writer, per worker thread (see action_output()).
_CURRENT = threading.local()

TraceEntry = collections.namedtuple(
    "TraceEntry", "task_id route item_id action_ref start end status")
TraceEntry.__doc__ = """One action execution: item_id is None unless the task has items; start and
end are seconds since the outermost workflow started; task_id of a nested workflow's task is
"outer_task/inner_task". Action-less tasks appear with action_ref None and start == end."""


class WorkflowResult(object):
    """status: orquesta's final workflow status ("succeeded", "failed", ...); output: the
    rendered `output` (dict, or None); errors: orquesta's error entries; trace: TraceEntry list
    by start time; elapsed: wall seconds."""

    def __init__(self, status, output=None, errors=None, trace=None, elapsed=0.0):
        self.status, self.output, self.errors = status, output, list(errors or [])
        self.trace, self.elapsed = list(trace or []), elapsed

    @property
    def succeeded(self):
        return self.status == statuses.SUCCEEDED

    @property
    def result(self):
        """The execution result st2's orquesta runner stores: {"output": ...}, plus "errors"
        when the workflow failed."""
        result = {"output": self.output or None}
        if self.status in statuses.ABENDED_STATUSES:
            result["errors"] = self.errors
        return result

    def __repr__(self):
        return "WorkflowResult(status=%r, output=%r, errors=%r, %d trace entries)" % (
            self.status, self.output, self.errors, len(self.trace))


class _UniqueKeyLoader(yaml.SafeLoader):  # pylint: disable=too-many-ancestors
    """st2's orquesta refuses a definition with a duplicate key (orquesta 1.4); 1.2.0 kept the
    last one silently, so the check is made here."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(key_node, deep=deep) for key_node, _ in node.value]
        duplicates = sorted(set(str(k) for k in keys if keys.count(k) > 1))
        if duplicates:
            raise yaml.constructor.ConstructorError(
                None, None, 'found duplicate key "%s"' % duplicates[0], node.start_mark)
        return super(_UniqueKeyLoader, self).construct_mapping(node, deep=deep)


def load_pack_ref(pack_root=PACK_ROOT):
    """The pack's ref from pack.yaml; None when pack_root holds no pack."""
    if not os.path.isfile(os.path.join(pack_root, "pack.yaml")):
        return None
    with open(os.path.join(pack_root, "pack.yaml")) as fp:
        meta = yaml.safe_load(fp) or {}
    return meta.get("ref") or meta.get("name")


def load_action_metadata(ref, pack_root=PACK_ROOT):
    """Metadata of the pack's action `ref` (<pack>.<name>: actions/<name>.yaml, else the
    actions/*.yaml whose name is <name>); None for another pack's action or an unknown one."""
    pack, _, name = ref.partition(".") if isinstance(ref, str) else ("", "", "")
    if not name or not pack or pack != load_pack_ref(pack_root):
        return None
    actions_dir = os.path.join(pack_root, "actions")
    candidates = [os.path.join(actions_dir, name + ext) for ext in (".yaml", ".yml")]
    for path in candidates + sorted(glob.glob(os.path.join(actions_dir, "*.y*ml"))):
        if os.path.isfile(path):
            with open(path) as fp:
                meta = yaml.safe_load(fp) or {}
            if isinstance(meta, dict) and meta.get("name") == name:
                return meta
    return None


def action_input(meta, given, config=None):
    """The parameters st2 hands an action: each declared one, given or its default or None.
    ValueError for a missing required or an unexpected parameter, local_runner.RunnerError for
    any other value st2's request validation refuses (type, enum, immutable: the same check as
    for a python action, st2common/services/action.py create_request)."""
    params = {n: s or {} for n, s in (meta.get("parameters") or {}).items()}
    values = {n: given[n] if given.get(n) is not None else copy.deepcopy(s.get("default"))
              for n, s in params.items()}
    missing = sorted(n for n, s in params.items() if s.get("required") and values[n] is None)
    unexpected = sorted(set(given) - set(params)
                        - set(RUNNER_PARAMETERS.get(meta.get("runner_type"), ())))
    if missing:
        raise ValueError('Action "%s" is missing required input(s): %s.'
                         % (meta.get("name"), ", ".join(missing)))
    if unexpected:
        raise ValueError('Action "%s" has unexpected input(s): %s.'
                         % (meta.get("name"), ", ".join(unexpected)))
    # Imported here: local_runner imports this module to run workflows.
    import local_runner  # pylint: disable=import-outside-toplevel
    values, _ = local_runner.prepare_parameters(meta, given, config)
    return values


def _execution_id():
    """An id shaped like st2's (a MongoDB ObjectId: 24 hex digits)."""
    return uuid.uuid4().hex[:24]


def _inspect(spec, context, pack_root):
    """st2's workflows.inspect(): orquesta's inspection plus the "content" checks that st2 makes
    against its database, here only for this pack's own actions."""
    categories = {"context": "context", "expressions": "expression", "semantics": "semantic",
                  "syntax": "syntax"}
    errors = []
    for category, entries in spec.inspect(app_ctx=context, raise_exception=False).items():
        for entry in entries:
            if category in ("context", "expressions") and "language" not in entry:
                entry["language"] = entry.pop("type", None)
            entry["type"] = categories[category]
            errors.append(entry)
    schema_path = "properties.tasks.patternProperties.^\\w+$.properties."
    for task_name, task_spec in spec.tasks.items():
        ref = getattr(task_spec, "action", None)
        if not isinstance(ref, str) or "<%" in ref or "{{" in ref or not ref.startswith(
                "%s." % load_pack_ref(pack_root)):
            continue
        meta = load_action_metadata(ref, pack_root)
        path = "tasks.%s." % task_name
        if meta is None:
            errors.append({"type": "content", "spec_path": path + "action",
                           "schema_path": schema_path + "action",
                           "message": 'The action "%s" is not registered in the database.' % ref})
            continue
        given = getattr(task_spec, "input", None) or {}
        params = meta.get("parameters") or {}
        if not isinstance(given, dict):
            continue
        known = set(params) | set(RUNNER_PARAMETERS.get(meta.get("runner_type"), ()))
        for name in sorted(n for n, s in params.items() if (s or {}).get("required")
                           and "default" not in (s or {}) and n not in given):
            errors.append({"type": "content", "spec_path": path + "input",
                           "schema_path": schema_path + "input",
                           "message": 'Action "%s" is missing required input "%s".' % (ref, name)})
        for name in sorted(set(given) - known):
            errors.append({"type": "content", "spec_path": path + "input." + name,
                           "schema_path": schema_path + "input.patternProperties.^\\w+$",
                           "message": 'Action "%s" has unexpected input "%s".' % (ref, name)})
    return sorted(errors, key=lambda e: (e["type"], e.get("schema_path") or ""))


def _status(value):
    if value is True:
        return statuses.SUCCEEDED
    if value is False:
        return statuses.FAILED
    if value in statuses.COMPLETED_STATUSES:
        return value
    raise ValueError("execute() returned status %r; expected True, False or one of %s"
                     % (value, ", ".join(statuses.COMPLETED_STATUSES)))


def _delay(task, action):
    """st2's eval_action_execution_delay: a with-items task with concurrency delays only the
    first batch of items."""
    delay = task.get("delay") or 0
    if delay and task["spec"].has_items() and task.get("concurrency"):
        return delay if action["item_id"] < task["concurrency"] else 0
    return delay


class _TaskExecution(object):
    """One run of a task (st2's TaskExecutionDB): collects the results of its items."""

    def __init__(self, items_count):
        self.id = _execution_id()
        self.items = [None] * (items_count or 0)
        self.done = False


_Dispatch = collections.namedtuple(
    "_Dispatch", "seq task_id route item_id action_ref input delay execution")
_Outcome = collections.namedtuple("_Outcome", "start end status result error nested")


class _WorkflowRun(object):
    def __init__(self, spec, inputs, context, execute, pack_root, progress, max_workers,
                 clock_start, prefix):
        self.conductor = conducting.WorkflowConductor(spec, context=context, inputs=inputs)
        self.context, self.execute, self.pack_root = context, execute, pack_root
        self.progress, self.max_workers = progress, max_workers
        self.clock_start, self.prefix = clock_start, prefix
        self.trace, self.executions, self.seq = [], {}, 0

    def now(self):
        return time.monotonic() - self.clock_start

    def say(self, label, text):
        if self.progress:
            with _PROGRESS_LOCK:
                self.progress("%8.2fs  %-30s %s" % (self.now(), self.prefix + label, text))

    def fail(self, error, task_id=None, route=None):
        """st2's fail_workflow_execution()."""
        if self.conductor.get_workflow_status() not in statuses.COMPLETED_STATUSES:
            self.conductor.request_workflow_status(statuses.FAILED)
        self.conductor.log_error(error, task_id=task_id, route=route)

    def run(self):
        conductor = self.conductor
        with _ORQUESTA_LOCK:
            if conductor.get_workflow_status() not in statuses.COMPLETED_STATUSES:  # bad input
                conductor.request_workflow_status(statuses.REQUESTED)
                # st2's workflows.request(): the id of the workflow execution record, put in the
                # context once the record exists (after inputs and vars were rendered), and in
                # the initial context every task starts from.
                wf_ex_id = _execution_id()
                self.context["st2"]["workflow_execution_id"] = wf_ex_id
                conductor.workflow_state.contexts[0]["st2"]["workflow_execution_id"] = wf_ex_id
                conductor.request_workflow_status(statuses.RUNNING)
        inflight = {}
        with concurrent.futures.ThreadPoolExecutor(self.max_workers) as pool:
            while True:
                with _ORQUESTA_LOCK:
                    if self.start_next_tasks(pool, inflight):
                        continue  # some task completed at once: look again
                if not inflight:
                    break
                done, _ = concurrent.futures.wait(
                    list(inflight), return_when=concurrent.futures.FIRST_COMPLETED)
                with _ORQUESTA_LOCK:
                    for future in sorted(done, key=lambda f: inflight[f].seq):
                        self.complete(inflight.pop(future), future.result())
        with _ORQUESTA_LOCK:
            if conductor.get_workflow_status() not in statuses.COMPLETED_STATUSES:
                self.fail(RuntimeError(
                    "No task can run next but the workflow is %s (StackStorm would leave it "
                    "running)." % conductor.get_workflow_status()))
            conductor.render_workflow_output()
            return conductor.get_workflow_status(), conductor.get_workflow_output(), copy.deepcopy(
                conductor.errors)

    def start_next_tasks(self, pool, inflight):
        """One round of st2's request_next_tasks(); True if a task completed synchronously."""
        next_tasks = self.conductor.get_next_tasks()
        completed = False
        for task in next_tasks:
            try:
                empty = task["spec"].has_items() and task.get("items_count") == 0
                if empty:
                    self.update(task["id"], task["route"],
                                events.ActionExecutionEvent(statuses.RUNNING))
                for action in task["actions"]:
                    self.update(task["id"], task["route"], events.ActionExecutionEvent(
                        statuses.RUNNING) if action.get("item_id") is None else
                        events.TaskItemActionExecutionEvent(action["item_id"], statuses.RUNNING))
            except Exception as e:  # pylint: disable=broad-except
                self.fail(e, task["id"], task["route"])
                return False
        for task in next_tasks:
            key = (task["id"], task["route"])
            execution = self.executions.get(key)
            if execution is None or execution.done:
                execution = self.executions[key] = _TaskExecution(task.get("items_count"))
            if task["spec"].action is None or (task["spec"].has_items()
                                               and task.get("items_count") == 0):
                self.say(task["id"], "succeeded (%s)" % (
                    "no action" if task["spec"].action is None else "no items"))
                self.trace.append(TraceEntry(task["id"], task["route"], None, None, self.now(),
                                             self.now(), statuses.SUCCEEDED))
                self.update(task["id"], task["route"],
                            events.ActionExecutionEvent(statuses.SUCCEEDED))
                execution.done = completed = True
                continue
            for action in task["actions"]:
                self.seq += 1
                dispatch = _Dispatch(self.seq, task["id"], task["route"], action.get("item_id"),
                                     action["action"], action["input"] or {},
                                     _delay(task, action), execution)
                inflight[pool.submit(self.call, dispatch)] = dispatch
        return completed

    def update(self, task_id, route, event):
        try:
            self.conductor.update_task_state(task_id, route, event)
        except Exception as e:  # pylint: disable=broad-except
            self.fail(e, task_id, route)

    def label(self, dispatch):
        item = "" if dispatch.item_id is None else "[%d]" % dispatch.item_id
        return dispatch.task_id + item

    def call(self, dispatch):
        """Worker thread: run one action execution (a nested workflow runs right here)."""
        if dispatch.delay:
            self.say(self.label(dispatch), "delayed %ss" % dispatch.delay)
            time.sleep(dispatch.delay)
        start, nested = self.now(), []
        self.say(self.label(dispatch), "started    %s" % dispatch.action_ref)
        try:
            meta = load_action_metadata(dispatch.action_ref, self.pack_root)
            if meta is not None and meta.get("runner_type") == "orquesta":
                # Refused: the request fails.
                inputs = action_input(meta, dispatch.input,
                                      getattr(self.execute, "config", None))
                # st2's request_action_execution(): the subworkflow's execution context.
                parent = {"execution_id": self.context["st2"]["action_execution_id"],
                          "workflow_execution_id": self.context["st2"]["workflow_execution_id"],
                          "task_execution_id": dispatch.execution.id,
                          "task_name": dispatch.task_id,
                          "task_id": dispatch.task_id, "task_route": dispatch.route}
                if dispatch.item_id is not None:
                    parent["item_id"] = dispatch.item_id
                sub = _run(dispatch.action_ref, inputs, self.execute, self.pack_root,
                           self.progress, self.max_workers, self.clock_start,
                           self.prefix + self.label(dispatch) + "/", parent)
                status, result, nested = sub.status, sub.result, sub.trace
            else:
                _CURRENT.say = lambda line: self.say(self.label(dispatch), "| " + line)
                try:
                    status, result = self.execute(dispatch.action_ref, dispatch.input)
                finally:
                    _CURRENT.say = None
                status = _status(status)
            return _Outcome(start, self.now(), status, result, None, nested)
        except Exception as e:  # pylint: disable=broad-except
            return _Outcome(start, self.now(), statuses.FAILED, None, e, nested)

    def complete(self, dispatch, outcome):
        """Main thread: st2's handle_action_execution_completion()."""
        self.trace.append(TraceEntry(dispatch.task_id, dispatch.route, dispatch.item_id,
                                     dispatch.action_ref, outcome.start, outcome.end,
                                     outcome.status))
        self.trace.extend(e._replace(task_id=dispatch.task_id + "/" + e.task_id)
                          for e in outcome.nested)
        self.say(self.label(dispatch), "%-10s in %.2fs" % (
            outcome.status, outcome.end - outcome.start))
        if outcome.error is not None:
            self.fail(outcome.error, dispatch.task_id, dispatch.route)
            return
        if dispatch.item_id is None:
            event = events.ActionExecutionEvent(outcome.status, result=outcome.result)
        else:
            dispatch.execution.items[dispatch.item_id] = outcome.result
            event = events.TaskItemActionExecutionEvent(
                dispatch.item_id, outcome.status, result=outcome.result,
                accumulated_result=list(dispatch.execution.items))
        self.update(dispatch.task_id, dispatch.route, event)
        entry = self.conductor.get_task_state_entry(dispatch.task_id, dispatch.route)
        if not entry or entry.get("status") not in statuses.ACTIVE_STATUSES:
            dispatch.execution.done = True


def _run(workflow, inputs, execute, pack_root, progress, max_workers, clock_start, prefix,
         parent=None):
    pack = load_pack_ref(pack_root)
    ref, inputs = None, dict(inputs or {})
    context = {"st2": {"action_execution_id": _execution_id(), "api_url": ST2_API_URL,
                       "user": ST2_USER, "pack": pack, "action": None, "runner": "orquesta"},
               "parent": {"user": ST2_USER, "pack": pack}}
    if parent:  # what st2 puts in the context of a subworkflow's execution
        context["parent"]["parent"] = {"execution_id": parent["execution_id"],
                                       "user": ST2_USER, "pack": pack}
        context["parent"]["orquesta"] = {k: v for k, v in parent.items() if k != "execution_id"}
    started = time.monotonic()

    def failed(message):
        if progress:
            progress("%8.2fs  %-30s failed: %s" % (
                started - clock_start, prefix + "workflow", message))
        return WorkflowResult(statuses.FAILED, errors=[{"message": message}],
                              elapsed=time.monotonic() - started)

    try:
        path = workflow
        if not os.path.isfile(workflow):
            meta = load_action_metadata(workflow, pack_root)
            if meta is None or meta.get("runner_type") != "orquesta":
                return failed('Action "%s" is not an orquesta workflow of the pack at %s.'
                              % (workflow, pack_root))
            ref, path = workflow, os.path.join(pack_root, "actions", meta["entry_point"])
            inputs = action_input(meta, inputs, getattr(execute, "config", None))
            context["st2"]["action"] = ref
        with open(path) as fp:
            try:
                definition = yaml.load(fp, Loader=_UniqueKeyLoader)  # nosec: a SafeLoader
            except yaml.YAMLError as e:
                raise ValueError("Failed to load workflow definition because %s." % e)
        with _ORQUESTA_LOCK:
            spec = native_specs.WorkflowSpec(definition)
            errors = _inspect(spec, context, pack_root)
    except Exception as e:  # pylint: disable=broad-except
        return failed("%s: %s" % (type(e).__name__, e))
    if errors:
        for error in errors:
            failed("%s error at %s: %s" % (error["type"], error.get("spec_path"),
                                           error["message"]))
        return WorkflowResult(statuses.FAILED, errors=errors, elapsed=time.monotonic() - started)
    run = _WorkflowRun(spec, inputs, context, execute, pack_root, progress, max_workers,
                       clock_start, prefix)
    run.say("workflow", "started    %s" % (ref or os.path.relpath(path, pack_root)))
    status, output, errors = run.run()
    for error in errors if status in statuses.ABENDED_STATUSES else []:
        run.say(error.get("task_id") or "workflow", "error: %s" % error.get("message"))
    run.say("workflow", "%-10s in %.2fs" % (status, time.monotonic() - started))
    return WorkflowResult(status, output, errors,
                          sorted(run.trace, key=lambda e: (e.start, e.end, e.task_id)),
                          time.monotonic() - started)


def action_output(line):
    """Show a line an action prints, under its task's label, while it runs (st2 streams action
    output the same way: `st2 execution tail`). Outside a running action: ignored."""
    say = getattr(_CURRENT, "say", None)
    if say is not None:
        say(line)


def run_workflow(workflow, inputs=None, execute=None, pack_root=PACK_ROOT, progress=None,
                 max_workers=MAX_WORKERS):
    """Run `workflow` (a definition file, or the ref of an orquesta action of the pack at
    pack_root, whose parameters then get st2's defaults and checks) with `inputs`.

    execute(action_ref, input) -> (status, result) runs every action execution but those of
    the pack's orquesta actions (see the module docstring); it is called from worker threads,
    up to max_workers at once. progress(line), if given, gets a line per task start and end."""
    if execute is None:
        raise ValueError("run_workflow() needs an execute(action_ref, input) callback")
    return _run(workflow, inputs, execute, pack_root, progress, max_workers, time.monotonic(),
                "")
