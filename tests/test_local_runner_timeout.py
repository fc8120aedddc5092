"""The local runner runs a python action the way StackStorm's python runner does: in a process of
its own with st2's sys.path, killed when its `timeout` runs out, with st2's result shapes, and
with the datastore of the run reached from that process. On a throwaway pack.

The shapes asserted here are those st2 3.9.0's PythonRunner produces from
python_action_wrapper.py (contrib/runners/python_runner): a raise gives
{"result": "None", "exit_code": 1, "stderr": <traceback>}, a timeout status "timeout" with
{"result": "None", "exit_code": -9, "error": "Action failed to complete in N seconds"}.
"""

import json
import os
import signal
import sys
import sysconfig
import textwrap
import time

import pytest

import local_runner  # devtools/ is an import root (pytest.ini, tests/conftest.py)

# Sleeps past its 1 s timeout. Its pid and that of a helper it starts (an SSH client, say) go to
# a file first; a second file would appear once the sleep is over.
SLEEPER_YAML = """
name: sleeper
runner_type: python-script
entry_point: sleeper.py
parameters:
  workdir: {type: string, required: true}
  sleep: {type: number, default: 4}
  keep_output: {type: boolean, default: false}
  timeout: {default: 1}
"""

SLEEPER_PY = '''
import os
import subprocess
import time

from st2common.runners.base_action import Action


class Sleeper(Action):
    def run(self, workdir, sleep, keep_output=False):
        output = None if keep_output else subprocess.DEVNULL
        helper = subprocess.Popen(["sleep", "60"], stdout=output, stderr=output)
        with open(os.path.join(workdir, "pids"), "w") as fp:
            fp.write("%d %d" % (os.getpid(), helper.pid))
        print("sleeping %s s" % sleep, flush=True)
        time.sleep(sleep)
        open(os.path.join(workdir, "woke"), "w").close()
        return {"slept": sleep}
'''

RAISER_YAML = """
name: raiser
runner_type: python-script
entry_point: raiser.py
parameters: {}
"""

RAISER_PY = '''
from st2common.runners.base_action import Action


class Raiser(Action):
    def run(self):
        print("step 1 done")
        raise RuntimeError("boom at step 2")
'''

KEEPER_YAML = """
name: keeper
runner_type: python-script
entry_point: keeper.py
parameters: {}
"""

KEEPER_PY = '''
import os
import sys

from st2common.runners.base_action import Action


class Keeper(Action):
    def run(self):
        store = self.action_service
        store.set_value("plain", "p1")
        store.set_value("secret", "s3cret", encrypt=True)
        try:
            store.set_value("bad", "v", ttl="soon")
            refused = None
        except Exception as e:
            refused = str(e)
        return {"pid": os.getpid(), "path": sys.path, "refused": refused,
                "plain": store.get_value("plain"),
                "stored_secret": store.get_value("secret"),
                "secret": store.get_value("secret", decrypt=True),
                "names": sorted(kv.name for kv in store.list_values()),
                "not_global": store.get_value("plain", local=False),
                "deleted": store.delete_value("plain"),
                "after_delete": store.get_value("plain")}
'''

NAP_WORKFLOW = """
version: 1.0
input: [workdir]
tasks:
  nap:
    action: dialog.sleeper workdir=<% ctx(workdir) %>
    next:
      - when: <% succeeded() %>
        publish: [outcome: slept]
      - when: <% failed() %>
        publish:
          - outcome: failed
          - nap_result: <% result() %>
        do: noted
  noted:
    next: []
output:
  - outcome: <% ctx(outcome) %>
  - nap_result: <% ctx(nap_result) %>
"""


@pytest.fixture
def pack(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    root = tmp_path / "pack"
    (root / "actions" / "lib").mkdir(parents=True)
    (root / "workflows").mkdir()
    (root / "actions" / "workflows").symlink_to("../workflows")
    (root / "pack.yaml").write_text("ref: dialog\nname: dialog\nversion: 0.1.0\n")
    for name, (meta, code) in {"sleeper": (SLEEPER_YAML, SLEEPER_PY),
                               "raiser": (RAISER_YAML, RAISER_PY),
                               "keeper": (KEEPER_YAML, KEEPER_PY)}.items():
        (root / "actions" / ("%s.yaml" % name)).write_text(meta)
        (root / "actions" / ("%s.py" % name)).write_text(code)
    (root / "workflows" / "nap.yaml").write_text(NAP_WORKFLOW)
    (root / "actions" / "nap.yaml").write_text(
        "name: nap\nrunner_type: orquesta\nentry_point: workflows/nap.yaml\n"
        "parameters: {workdir: {type: string, required: true}}\n")
    work = tmp_path / "work"
    work.mkdir()
    return root, work


def alive(pid):
    """True while the process exists and is not a zombie waiting to be reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open("/proc/%d/stat" % pid) as fp:
            return fp.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def gone_soon(pid, within=3.0):
    deadline = time.monotonic() + within
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_an_action_past_its_timeout_is_killed_and_times_out_like_st2(pack):
    root, work = pack
    started = time.monotonic()
    run = local_runner.run_action("dialog.sleeper", {"workdir": str(work)}, pack_root=str(root))
    took = time.monotonic() - started
    assert getattr(run, "status", None) == "timeout" and tuple(run)[0] is False
    assert run.output == {"result": "None", "exit_code": -9, "stderr": "",
                          "stdout": "sleeping 4 s\n",
                          "error": "Action failed to complete in 1 seconds"}
    assert took < 3.5, took  # killed at 1 s, not left to sleep its 4 s
    action_pid, helper_pid = [int(p) for p in (work / "pids").read_text().split()]
    assert not alive(action_pid)
    assert gone_soon(helper_pid)  # its process group went with it
    # Past the moment the sleep would have ended, nothing more happened.
    time.sleep(max(0.0, started + 4.5 - time.monotonic()))
    assert not (work / "woke").exists()


def test_a_given_timeout_wins_over_the_actions_default(pack):
    root, work = pack
    run = local_runner.run_action("dialog.sleeper", {"workdir": str(work), "sleep": 0.2,
                                                     "timeout": 20}, pack_root=str(root))
    os.kill(int((work / "pids").read_text().split()[1]), signal.SIGKILL)
    assert run.status == "succeeded" and run.output["result"] == {"slept": 0.2}
    assert (work / "woke").exists()


def test_a_process_left_holding_the_output_is_reported_not_waited_for(pack, capsys):
    """st2 would wait for it (its readers wait for the end of the output): say so."""
    root, work = pack
    run = local_runner.run_action("dialog.sleeper", {"workdir": str(work), "sleep": 0,
                                                     "keep_output": True, "timeout": 20},
                                  pack_root=str(root))
    helper = int((work / "pids").read_text().split()[1])
    assert alive(helper)
    os.kill(helper, signal.SIGKILL)
    assert run.status == "succeeded"
    assert "a process it started still holds its output" in capsys.readouterr().err


def test_dialog_local_run_prints_the_timeout(pack, capsys):
    root, work = pack
    code = local_runner.main(["run", "dialog.sleeper", "workdir=%s" % work, "sleep=3"],
                             pack_root=str(root))
    out, _ = capsys.readouterr()
    assert code == 1
    assert out.index("sleeping 3.0 s") < out.index("status: timeout")  # shown as printed
    result = json.loads(textwrap.dedent(out.split("result:\n", 1)[1]))
    assert result["error"] == "Action failed to complete in 1 seconds"
    assert (result["exit_code"], result["result"]) == (-9, "None")


def test_an_action_that_raises_gives_st2s_result(pack):
    root, _ = pack
    execute = local_runner.python_action_executor({}, str(root), local_runner.MemoryDatastore())
    status, result = execute("dialog.raiser", {})
    assert status == "failed"
    assert set(result) == {"result", "stdout", "stderr", "exit_code"}
    assert (result["result"], result["exit_code"]) == ("None", 1)
    assert result["stdout"] == "step 1 done\n"
    assert result["stderr"].startswith("Traceback (most recent call last):")
    assert result["stderr"].rstrip().splitlines()[-1] == "RuntimeError: boom at step 2"


def test_the_datastore_works_from_the_action_process(pack):
    root, _ = pack
    store = local_runner.MemoryDatastore()
    succeeded, result = local_runner.run_action("dialog.keeper", pack_root=str(root),
                                                datastore=store)
    assert succeeded, result
    assert result["pid"] != os.getpid()  # a process of its own
    assert (result["plain"], result["secret"]) == ("p1", "s3cret")
    assert result["stored_secret"] not in (None, "s3cret")  # ciphertext unless decrypt
    assert result["names"] == ["dialog.Keeper:plain", "dialog.Keeper:secret"]
    assert result["not_global"] is None
    assert (result["deleted"], result["after_delete"]) == (True, None)
    assert result["refused"] and "soon" in result["refused"]  # the API's refusal reaches it
    # The run's datastore is this process's.
    assert list(store.items) == ["dialog.Keeper:secret"]
    assert store.get("dialog.Keeper:secret", decrypt=True) == "s3cret"


def test_the_action_process_has_st2s_python_path(pack):
    """st2: the pack virtualenv's site-packages, actions/lib, then StackStorm's packages, and
    the action's own directory appended by the loader; nothing of the tools running it."""
    root, _ = pack
    _, result = local_runner.run_action("dialog.keeper", pack_root=str(root))
    path = [os.path.realpath(p) for p in result["path"]]
    import st2common  # pylint: disable=import-outside-toplevel
    st2_root = os.path.realpath(os.path.dirname(os.path.dirname(st2common.__file__)))
    first = path.index(os.path.realpath(sysconfig.get_path("platlib")))
    lib = path.index(os.path.realpath(str(root / "actions" / "lib")))
    assert first == 0 and lib < path.index(st2_root)
    assert path[-1] == os.path.realpath(str(root / "actions"))
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    for tool_dir in (local_runner.DEVTOOLS_DIR, tests_dir, os.path.dirname(tests_dir)):
        assert os.path.realpath(tool_dir) not in path


def test_a_timed_out_task_fails_and_its_result_reaches_the_workflow(pack):
    root, work = pack
    result = local_runner.run_workflow("dialog.nap", {"workdir": str(work)}, {}, str(root),
                                       local_runner.MemoryDatastore())
    assert result.succeeded, result.errors  # the failed() transition handled it
    assert result.output["outcome"] == "failed"
    assert result.output["nap_result"] == {
        "result": "None", "exit_code": -9, "stdout": "sleeping 4 s\n", "stderr": "",
        "error": "Action failed to complete in 1 seconds"}
    assert [(e.task_id, e.status) for e in result.trace] == [("nap", "timeout"),
                                                             ("noted", "succeeded")]


def test_an_unhandled_timeout_fails_the_workflow_as_orquesta_does(pack):
    """orquesta logs an error entry only for a task whose action failed, not for one that
    timed out: the workflow fails, and its result has no error naming the task."""
    root, work = pack
    (root / "workflows" / "nap.yaml").write_text(
        NAP_WORKFLOW.replace("        do: noted\n  noted:\n    next: []\n", ""))
    result = local_runner.run_workflow("dialog.nap", {"workdir": str(work)}, {}, str(root),
                                       local_runner.MemoryDatastore())
    assert result.status == "failed" and result.errors == []
    assert [(e.task_id, e.status) for e in result.trace] == [("nap", "timeout")]
    assert result.output["nap_result"]["error"] == "Action failed to complete in 1 seconds"
