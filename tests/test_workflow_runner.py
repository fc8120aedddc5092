"""Tests for devtools/workflow_runner.py (and its use by local_runner.py) on a throwaway pack.

Needs orquesta (see requirements-tests.txt): without it this module fails to import, on purpose.
"""

import os
import re
import sys
import threading
import time

import pytest

DEVTOOLS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "devtools")
if DEVTOOLS_DIR not in sys.path:  # pytest.ini has it; st2-run-pack-tests may not
    sys.path.insert(0, DEVTOOLS_DIR)

import local_runner  # noqa: E402
import orquesta_compat  # noqa: E402
import workflow_runner  # noqa: E402

STEP_YAML = """
name: step
runner_type: python-script
entry_point: step.py
description: A step; canned in most tests, real in the local_runner ones.
parameters:
  name: {type: string, required: true}
  value: {}
  sleep: {type: number, default: 0}
  outcome: {type: string, enum: [ok, fail, raise], default: ok}
"""

STEP_PY = '''
import time

from st2common.runners.base_action import Action


class Step(Action):
    def run(self, name, value, sleep, outcome):
        print("step %s says hi" % name)
        time.sleep(sleep)
        if outcome == "raise":
            raise RuntimeError("step %s blew up" % name)
        seen = self.action_service.get_value("last", local=False)
        self.action_service.set_value("last", name, local=False)
        return outcome == "ok", {"name": name, "value": value, "previous": seen}
'''

WORKFLOWS = {
    "sequence": """
version: 1.0
input:
  - greeting: hello
tasks:
  first:
    action: dialog.step
    input: {name: first}
    next:
      - when: <% succeeded() %>
        publish:
          - from_first: <% result().result %>
        do: second
  second:
    action: dialog.step name="second" value=<% ctx(from_first) %>
    next:
      - do: third
  third:
    action: dialog.step
    input:
      name: third
      value: "{{ ctx('greeting') }} {{ ctx('from_first') }}"
output:
  - from_first: <% ctx(from_first) %>
""",
    "branches": """
version: 1.0
tasks:
  init:
    action: dialog.step name="init"
    next:
      - do: [left, right]
  left:
    action: dialog.step name="left"
    next:
      - publish: left=<% result().result %>
        do: merge
  right:
    action: dialog.step name="right"
    next:
      - publish: right=<% result().result %>
        do: merge
  merge:
    join: all
    action: dialog.step
    input:
      name: merge
      value: <% [ctx(left), ctx(right)] %>
output:
  - both: <% [ctx(left), ctx(right)] %>
""",
    "items": """
version: 1.0
input:
  - hosts: [h1, h2, h3, h4]
  - width: 2
tasks:
  each:
    with:
      items: host in <% ctx(hosts) %>
      concurrency: <% ctx(width) %>
    action: dialog.step
    input:
      name: <% item(host) %>
    next:
      - when: <% succeeded() %>
        publish: names=<% result().select($.result) %>
output:
  - names: <% ctx(names) %>
""",
    "failing": """
version: 1.0
tasks:
  boom:
    action: dialog.step name="boom"
    next:
      - when: <% succeeded() %>
        do: after
  after:
    action: dialog.step name="after"
""",
    "remediate": """
version: 1.0
tasks:
  boom:
    action: dialog.step name="boom"
    next:
      - when: <% failed() %>
        publish: why=<% result().error %>
        do: [cleanup, fail]
  cleanup:
    action: dialog.step name="cleanup" value=<% ctx(why) %>
output:
  - why: <% ctx(why) %>
""",
    "retry": """
version: 1.0
tasks:
  flaky:
    action: dialog.step name="flaky"
    retry:
      when: <% failed() %>
      count: 3
      delay: 1
    next:
      - when: <% succeeded() %>
        publish: attempt=<% result().attempt %>
output:
  - attempt: <% ctx(attempt) %>
""",
    "exprs": """
version: 1.0
input:
  - name
  - count: 2
vars:
  - greeting: <% 'hello ' + ctx(name) %>
tasks:
  get:
    action: dialog.step name="get"
    next:
      - when: <% succeeded() and result().value > 1 %>
        publish:
          - yaql_value: <% result().value * ctx(count) %>
          - jinja_value: "{{ result().value + ctx('count') }}"
        do: nothing
  nothing:
    next:
      - do: noop
output:
  - greeting: <% ctx(greeting) %>
  - yaql_value: <% ctx(yaql_value) %>
  - jinja_value: "{{ ctx('jinja_value') }}"
  - whole: <% ctx().keys().where($ != 'st2' and $ != 'parent').orderBy($) %>
  - st2_action: "{{ ctx().st2.action }}"
""",
    "outer": """
version: 1.0
input: [size]
tasks:
  prepare:
    with: i in <% range(ctx(size)) %>
    action: dialog.inner n=<% item(i) %>
    next:
      - publish: doubled=<% result().select($.output.doubled) %>
output:
  - doubled: <% ctx(doubled) %>
""",
    "inner": """
version: 1.0
input: [n, unset]
tasks:
  work:
    action: dialog.step name="work" value=<% ctx(n) %>
output:
  - doubled: <% ctx(n) * 2 %>
  - unset: <% ctx(unset) %>
""",
}

ORQUESTA_ACTION = """
name: {name}
runner_type: orquesta
entry_point: workflows/{name}.yaml
parameters: {parameters}
"""

PARAMETERS = {"sequence": "{greeting: {type: string, default: hello}}",
              "items": "{hosts: {type: array, default: [h1, h2, h3, h4]}, width: {default: 2}}",
              "outer": "{size: {type: integer, default: 2}}",
              "inner": "{n: {type: integer, required: true}, unset: {type: string}}",
              "exprs": "{name: {type: string, default: world}, count: {type: integer}}"}


@pytest.fixture
def pack(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # local_runner extends sys.path
    (tmp_path / "actions").mkdir()
    (tmp_path / "workflows").mkdir()
    (tmp_path / "actions" / "workflows").symlink_to("../workflows")  # as in the pack
    (tmp_path / "pack.yaml").write_text("ref: dialog\nname: dialog\nversion: 0.1.0\n")
    (tmp_path / "actions" / "step.yaml").write_text(STEP_YAML)
    (tmp_path / "actions" / "step.py").write_text(STEP_PY)
    for name, definition in WORKFLOWS.items():
        (tmp_path / "workflows" / ("%s.yaml" % name)).write_text(definition)
        (tmp_path / "actions" / ("%s.yaml" % name)).write_text(ORQUESTA_ACTION.format(
            name=name, parameters=PARAMETERS.get(name, "{}")))
    return tmp_path


class Canned(object):
    """execute() with canned results: respond(input) -> (status, result), after `sleep` s."""

    def __init__(self, respond=None, sleep=0.0):
        self.respond = respond or (lambda params: (True, {"result": "did " + params["name"]}))
        self.sleep, self.calls, self.lock = sleep, [], threading.Lock()

    def __call__(self, ref, params):
        with self.lock:
            self.calls.append((ref, params))
        time.sleep(self.sleep(params) if callable(self.sleep) else self.sleep)
        return self.respond(params)

    def names(self):
        return [params["name"] for _, params in self.calls]


def run(pack, workflow, execute, inputs=None, **kwargs):
    return workflow_runner.run_workflow(workflow, inputs, execute, pack_root=str(pack), **kwargs)


def entries(result, task_id):
    return [e for e in result.trace if e.task_id == task_id]


def most_at_once(trace):
    """The largest number of trace entries running at the same moment."""
    points = sorted([(e.start, 1) for e in trace] + [(e.end, -1) for e in trace])
    running = peak = 0
    for _, step in points:
        running += step
        peak = max(peak, running)
    return peak


def test_sequence_runs_in_order_and_passes_published_values(pack):
    execute = Canned()
    result = run(pack, "dialog.sequence", execute)
    assert result.status == "succeeded" and result.succeeded
    assert execute.calls == [
        ("dialog.step", {"name": "first"}),
        ("dialog.step", {"name": "second", "value": "did first"}),
        ("dialog.step", {"name": "third", "value": "hello did first"})]
    assert [e.task_id for e in result.trace] == ["first", "second", "third"]
    assert all(a.end <= b.start for a, b in zip(result.trace, result.trace[1:]))
    assert result.output == {"from_first": "did first"}
    assert result.result == {"output": {"from_first": "did first"}}
    assert result.errors == []


def test_a_definition_file_runs_too(pack):
    result = run(pack, str(pack / "workflows" / "sequence.yaml"), Canned(), {"greeting": "hi"})
    assert result.succeeded and result.output == {"from_first": "did first"}


def test_branches_ready_together_run_in_parallel_and_join_waits_for_both(pack):
    execute = Canned(sleep=lambda params: 0.3 if params["name"] in ("left", "right") else 0)
    result = run(pack, "dialog.branches", execute)
    assert result.succeeded
    (left,), (right,), (merge,) = (entries(result, t) for t in ("left", "right", "merge"))
    assert max(left.start, right.start) < min(left.end, right.end)  # they overlapped
    assert merge.start >= max(left.end, right.end)
    assert execute.names().count("merge") == 1
    assert execute.calls[-1] == ("dialog.step", {"name": "merge",
                                                 "value": ["did left", "did right"]})
    assert result.output == {"both": ["did left", "did right"]}


def test_with_items_runs_at_most_concurrency_items_at_once(pack):
    # h1 is slow, so the items complete out of order; results stay in item order.
    execute = Canned(sleep=lambda params: 0.4 if params["name"] == "h1" else 0.2)
    result = run(pack, "dialog.items", execute)
    assert result.succeeded
    items = entries(result, "each")
    assert sorted(e.item_id for e in items) == [0, 1, 2, 3]
    assert most_at_once(items) == 2
    by_item = {e.item_id: e for e in items}
    assert by_item[2].start >= by_item[1].end  # h3 waited for a free slot
    assert result.output == {"names": ["did h1", "did h2", "did h3", "did h4"]}


def test_with_items_without_limit_and_with_no_items(pack):
    execute = Canned(sleep=0.2)
    result = run(pack, "dialog.items", execute, {"width": 10})
    assert result.succeeded and most_at_once(entries(result, "each")) == 4
    result = run(pack, "dialog.items", execute, {"hosts": []})
    assert result.succeeded and result.output == {"names": []}
    assert [(e.task_id, e.action_ref) for e in result.trace] == [("each", None)]


def test_a_failing_task_fails_the_workflow_with_its_result_in_the_errors(pack):
    execute = Canned(respond=lambda params: (False, {"error": "it broke"}))
    result = run(pack, "dialog.failing", execute)
    assert result.status == "failed" and not result.succeeded
    assert execute.names() == ["boom"]  # "after" needs success
    assert result.errors == [{"type": "error", "message": "Execution failed. See result for "
                              "details.", "task_id": "boom", "result": {"error": "it broke"}}]
    assert result.result == {"output": None, "errors": result.errors}
    assert [(e.task_id, e.status) for e in result.trace] == [("boom", "failed")]


def test_fail_command_still_runs_the_remediation_task(pack):
    execute = Canned(respond=lambda params: (params["name"] != "boom", {"error": "disk full"}))
    result = run(pack, "dialog.remediate", execute)
    assert result.status == "failed"
    assert execute.calls[-1] == ("dialog.step", {"name": "cleanup", "value": "disk full"})
    assert result.output == {"why": "disk full"}


def test_retry_succeeds_on_the_second_attempt_after_the_delay(pack):
    attempts = []

    def respond(params):
        attempts.append(1)
        return ("succeeded" if len(attempts) == 2 else "failed"), {"attempt": len(attempts)}

    result = run(pack, "dialog.retry", Canned(respond=respond))
    assert result.status == "succeeded"
    first, second = entries(result, "flaky")
    assert (first.status, second.status) == ("failed", "succeeded")
    assert second.start - first.end >= 1.0  # retry delay
    assert result.output == {"attempt": 2}


def test_output_expressions_yaql_and_jinja(pack):
    execute = Canned(respond=lambda params: (True, {"value": 5}))
    result = run(pack, "dialog.exprs", execute, {"name": "dialog", "count": 2})
    assert result.succeeded, result.errors
    assert result.output == {
        "greeting": "hello dialog", "yaql_value": 10, "jinja_value": 7,
        "whole": ["count", "greeting", "jinja_value", "name", "yaql_value"],
        "st2_action": "dialog.exprs"}
    assert [e.task_id for e in result.trace] == ["get", "nothing"]  # "nothing" has no action
    # As in st2, the action's parameter defaults apply, and a declared parameter without one
    # arrives as None, hiding the workflow's own input default (count: 2).
    result = run(pack, "dialog.exprs", execute, {"count": 3})
    assert result.output["greeting"] == "hello world" and result.output["yaql_value"] == 15
    result = run(pack, "dialog.exprs", execute)
    assert result.status == "failed" and "ctx(count)" in result.errors[0]["message"]


def test_a_nested_workflow_runs_recursively(pack):
    execute = Canned(sleep=0.2)
    result = run(pack, "dialog.outer", execute, {"size": 3})
    assert result.succeeded, result.errors
    assert result.output == {"doubled": [0, 2, 4]}
    assert sorted(p["value"] for _, p in execute.calls) == [0, 1, 2]
    assert {e.task_id for e in result.trace} == {"prepare", "prepare/work"}
    assert most_at_once(entries(result, "prepare/work")) == 3
    assert {e.action_ref for e in entries(result, "prepare")} == {"dialog.inner"}
    assert {ref for ref, _ in execute.calls} == {"dialog.step"}  # not given to execute()


PICKY = {
    "picky": ("{n: {type: integer, required: true}, "
              "size: {type: string, enum: [small, large], default: small}}", """
version: 1.0
input: [n, size]
tasks:
  work:
    action: dialog.step name="work" value=<% ctx(n) %>
output:
  - size: <% ctx(size) %>
"""),
    "calls_picky": ("{n: {default: 1}, size: {default: small}}", """
version: 1.0
input: [n, size]
tasks:
  call:
    action: dialog.picky
    input:
      n: <% ctx(n) %>
      size: <% ctx(size) %>
    next:
      - publish: size=<% result().output.size %>
output:
  - size: <% ctx(size) %>
"""),
}


def add_workflows(pack, workflows):
    for name, (parameters, definition) in workflows.items():
        (pack / "workflows" / ("%s.yaml" % name)).write_text(definition)
        (pack / "actions" / ("%s.yaml" % name)).write_text(ORQUESTA_ACTION.format(
            name=name, parameters=parameters))


@pytest.mark.parametrize("inputs, field", [
    ({"n": "two"}, '"n": \'two\' is not of type \'integer\''),
    ({"n": 2.5}, '"n": 2.5 is not of type \'integer\''),
    ({"n": 2, "size": "huge"}, '"size": \'huge\' is not one of [\'small\', \'large\']'),
])
def test_a_nested_workflows_input_is_type_and_enum_checked(pack, inputs, field):
    """st2 validates a subworkflow's input like any execution request (create_request), so a
    bad type or enum value fails the calling task before the subworkflow starts."""
    add_workflows(pack, PICKY)
    execute = Canned()
    result = run(pack, "dialog.calls_picky", execute, inputs)
    assert result.status == "failed" and execute.calls == []
    [error] = [e for e in result.errors if e.get("task_id")]  # the other: output unrendered
    assert error["task_id"] == "call" and field in error["message"], error
    assert [(e.task_id, e.status) for e in result.trace] == [("call", "failed")]
    good = run(pack, "dialog.calls_picky", execute, {"n": 2, "size": "large"})
    assert good.succeeded and good.output == {"size": "large"}, good.errors


ST2_CTX = {
    "probe": ("{}", """
version: 1.0
tasks:
  look:
    action: dialog.step
    input:
      name: look
      value: <% ctx(st2).workflow_execution_id %>
  nested:
    action: dialog.probe_inner
    next:
      - publish: inner=<% result().output %>
output:
  - st2: <% ctx(st2) %>
  - inner: <% ctx(inner) %>
"""),
    "probe_inner": ("{}", """
version: 1.0
tasks:
  nothing:
    next:
      - do: noop
output:
  - st2: <% ctx(st2) %>
  - parent: <% ctx(parent) %>
"""),
}


def test_ctx_st2_carries_the_workflow_execution_id_like_st2(pack):
    """st2 (orquesta runner + workflows.request()) sets ctx().st2 to these keys, the last one
    once the workflow execution record exists, before any task runs."""
    add_workflows(pack, ST2_CTX)
    execute = Canned(respond=lambda params: (True, {"result": None}))
    result = run(pack, "dialog.probe", execute)
    assert result.succeeded, result.errors
    st2 = result.output["st2"]
    assert set(st2) == {"action_execution_id", "api_url", "user", "pack", "action", "runner",
                        "workflow_execution_id"}
    assert (st2["action"], st2["runner"], st2["pack"]) == ("dialog.probe", "orquesta", "dialog")
    assert re.match(r"^[0-9a-f]{24}$", st2["workflow_execution_id"])
    assert st2["workflow_execution_id"] != st2["action_execution_id"]
    [(_, params)] = [c for c in execute.calls if c[0] == "dialog.step"]
    assert params["value"] == st2["workflow_execution_id"]  # tasks see it
    inner = result.output["inner"]
    assert inner["st2"]["workflow_execution_id"] not in (None, st2["workflow_execution_id"])
    # A subworkflow's execution context names the workflow execution that requested it.
    orquesta = inner["parent"]["orquesta"]
    assert orquesta["workflow_execution_id"] == st2["workflow_execution_id"]
    assert (orquesta["task_id"], orquesta["task_name"]) == ("nested", "nested")
    assert re.match(r"^[0-9a-f]{24}$", orquesta["task_execution_id"])


def test_an_execute_exception_fails_the_workflow_at_once(pack):
    def respond(params):
        raise LookupError("no canned result for %s" % params["name"])

    execute = Canned(respond=respond)
    result = run(pack, "dialog.remediate", execute)
    assert result.status == "failed" and execute.names() == ["boom"]  # no cleanup
    assert result.errors[0] == {"type": "error", "task_id": "boom", "route": 0,
                                "message": "LookupError: no canned result for boom"}


def test_definition_problems_fail_before_anything_runs(pack):
    execute = Canned()
    (pack / "workflows" / "failing.yaml").write_text(
        WORKFLOWS["failing"].replace('dialog.step name="after"', "dialog.stpe name=1")
        .replace('name="boom"', 'nmae="boom"'))
    result = run(pack, "dialog.failing", execute)
    assert result.status == "failed" and execute.calls == []
    assert sorted(e["message"] for e in result.errors) == [
        'Action "dialog.step" has unexpected input "nmae".',
        'Action "dialog.step" is missing required input "name".',
        'The action "dialog.stpe" is not registered in the database.']
    (pack / "workflows" / "failing.yaml").write_text(
        WORKFLOWS["failing"] + '  boom:\n    action: dialog.step name="again"\n')
    result = run(pack, "dialog.failing", execute)
    assert result.status == "failed" and 'duplicate key "boom"' in result.errors[0]["message"]
    assert run(pack, "dialog.nope", execute).status == "failed"
    result = run(pack, "dialog.inner", execute, {"m": 1})
    assert result.status == "failed" and "missing required input(s): n" in str(result.errors)
    assert execute.calls == []


def test_progress_lines(pack):
    lines = []
    run(pack, "dialog.items", Canned(), {"width": 1}, progress=lines.append)
    text = "\n".join(lines)
    assert re.search(r"workflow +started +dialog\.items", text)
    assert re.search(r"each\[3\] +started +dialog\.step", text)
    assert re.search(r"each\[3\] +succeeded +in ", text)
    assert re.search(r"workflow +succeeded +in ", text)


def test_compat_install_is_idempotent():
    from orquesta.utils import parameters  # pylint: disable=import-outside-toplevel

    orquesta_compat.install()
    orquesta_compat.install()
    assert parameters.parse_inline_params('a=true b=1 c="x y" d=null', preserve_order=False) == {
        "a": True, "b": 1, "c": "x y", "d": None}


# --- local_runner: `run dialog.<workflow>` with the pack's real python actions --------------

def run_cli(pack, capsys, *argv):
    code = local_runner.main(["run"] + list(argv), pack_root=str(pack))
    out, err = capsys.readouterr()
    return code, out, err


def test_local_runner_runs_a_workflow_with_real_python_actions(pack, capsys):
    code, out, err = run_cli(pack, capsys, "dialog.outer", "size=2")
    assert code == 0, err
    assert re.search(r"prepare\[1\]/work +succeeded", out)
    assert "status: succeeded" in out and '"doubled": [\n' in out
    # An action's stdout is shown as it is printed, under its task (like `st2 execution tail`),
    # and never mixed into the rest of the output.
    assert re.search(r"prepare\[1\]/work +\| step work says hi\n", out)
    assert not re.search(r"^step work says hi", out, re.M)
    assert run_cli(pack, capsys, "dialog.outer", "size=many")[0] == 2  # checked before running


def test_local_runner_workflow_results_look_like_st2s(pack):
    (pack / "workflows" / "sequence.yaml").write_text(WORKFLOWS["sequence"].replace(
        "        do: second", "        do: second\n      - publish: raw=<% result() %>")
        .replace("output:", "output:\n  - raw: <% ctx(raw) %>"))
    store = local_runner.MemoryDatastore()
    result = local_runner.run_workflow("dialog.sequence", {}, {}, str(pack), store)
    assert result.succeeded, result.errors
    assert result.output["raw"] == {
        "exit_code": 0, "stdout": "step first says hi\n", "stderr": "",
        "result": {"name": "first", "value": None, "previous": None}}
    assert result.output["from_first"]["name"] == "first"
    assert store.items == {"last": "third"}  # one datastore for the whole run


def test_local_runner_failed_action_and_refused_request(pack, capsys):
    (pack / "workflows" / "failing.yaml").write_text(
        WORKFLOWS["failing"].replace('name="boom"', 'name="boom" outcome="raise"'))
    code, out, _ = run_cli(pack, capsys, "dialog.failing")
    assert code == 1 and "status: failed" in out
    assert '"exit_code": 1' in out and "RuntimeError: step boom blew up" in out
    (pack / "actions" / "shell.yaml").write_text(
        "name: shell\nrunner_type: local-shell-cmd\nparameters: {}\n")
    (pack / "workflows" / "failing.yaml").write_text(
        WORKFLOWS["remediate"].replace('dialog.step name="boom"', "dialog.shell"))
    code, out, _ = run_cli(pack, capsys, "dialog.failing")
    assert code == 1 and "cannot run here" in out and "cleanup" not in out.split("status:")[0]
