"""tests/conftest.py: the stand-in replaces StackStorm only where StackStorm is not installed.

Each case runs one of the pack's st2tests-based tests in a fresh pytest process, as a developer
would run it: with a broken StackStorm first on PYTHONPATH the run must stop and say why (a
silent fallback would test the stand-in and pass), and with no StackStorm at all the test must
run on the stand-in.
"""

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STANDIN_PATH = os.path.join(ROOT, "devtools", "st2_standin")
PROBE_TEST = ("tests/test_devtools_local_runner.py::TestBaseActionTestCase::"
              "test_datastore_round_trip")
STOP_MESSAGE = "StackStorm is installed here but does not import"

# Makes StackStorm's packages unfindable, as on a machine without StackStorm, wherever they are
# installed (site-packages, PYTHONPATH, editable finders): only the stand-in's copies are found,
# once the conftest has put the stand-in on sys.path.
HIDE_STACKSTORM = """
import importlib.abc
import importlib.machinery

class OnlyTheStandIn(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in ("st2common", "st2reactor", "st2tests"):
            return None
        if path is None:
            path = [STANDIN_PATH] if STANDIN_PATH in sys.path else []
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None:
            raise ModuleNotFoundError("No module named %r" % name, name=name)
        return spec

sys.meta_path.insert(0, OnlyTheStandIn())
"""

RUN_PYTEST = """
import sys
STANDIN_PATH = {standin!r}
{bootstrap}
import pytest
code = pytest.main(["-q", "-p", "no:cacheprovider", {probe!r}])
print("st2tests.base from:", getattr(sys.modules.get("st2tests.base"), "__file__", None))
sys.exit(code)
"""

# Packages named st2tests that are installed but break on import, as a half-upgraded or
# half-installed StackStorm does: (st2tests/__init__.py, what the run must report).
BROKEN_ST2TESTS = {
    "a dependency missing": ("import dialog_probe_missing_dependency  # noqa\n",
                             "No module named 'dialog_probe_missing_dependency'"),
    "an error at import": ("raise RuntimeError('duplicate option: base_path')\n",
                           "RuntimeError: duplicate option: base_path"),
}


def run_pytest(tmp_path, bootstrap="", pythonpath=None):
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(
            [pythonpath] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    script = RUN_PYTEST.format(standin=STANDIN_PATH, bootstrap=bootstrap, probe=PROBE_TEST)
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("init,error", list(BROKEN_ST2TESTS.values()),
                         ids=list(BROKEN_ST2TESTS))
def test_a_broken_stackstorm_stops_the_run(tmp_path, init, error):
    package = tmp_path / "site" / "st2tests"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(init)
    (package / "base.py").write_text("")
    run = run_pytest(tmp_path, pythonpath=str(tmp_path / "site"))
    output = run.stdout + run.stderr
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, output
    assert STOP_MESSAGE in output, output
    assert error in output, output
    assert str(package / "__init__.py") in output, output
    assert "passed" not in output and "st2tests.base from: None" in output, output


def test_without_stackstorm_the_tests_run_on_the_stand_in(tmp_path):
    run = run_pytest(tmp_path, bootstrap=textwrap.dedent(HIDE_STACKSTORM))
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "1 passed" in output, output
    assert "st2tests.base from: %s" % os.path.join(STANDIN_PATH, "st2tests", "base.py") \
        in output, output
