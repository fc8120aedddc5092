"""A test that hangs fails in seconds, and the sandbox tests still clean up when one does.

pytest runs in a subprocess on a scratch directory holding copies of the pack's pytest.ini and
tests/conftest.py, with two xdist workers as ./dialog-local test runs the suite.
"""

import os
import shutil
import subprocess
import sys
import time

from conftest import SANDBOX_TIMEOUT

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HANGING = '''
import time

import pytest


@pytest.fixture
def host(tmp_path_factory):
    yield "booted"
    # What a sandbox fixture does at teardown: stop the hosts.
    with open(%(marker)r, "w") as handle:
        handle.write("stopped")


@pytest.mark.timeout(2)
def test_hangs(host):
    time.sleep(120)
'''

SETTINGS = '''
import pytest

pytestmark = %(mark)s


def test_settings(request):
    marker = request.node.get_closest_marker("timeout")
    print("TIMEOUT", request.module.__name__[len("test_"):],
          marker.args[0] if marker else request.config.getini("timeout"),
          request.config.getini("timeout_method"))
'''


def _scratch(tmp_path, files):
    shutil.copy(os.path.join(PACK_ROOT, "pytest.ini"), tmp_path / "pytest.ini")
    (tmp_path / "tests").mkdir()
    shutil.copy(os.path.join(PACK_ROOT, "tests", "conftest.py"), tmp_path / "tests")
    for name, text in files.items():
        (tmp_path / "tests" / name).write_text(text)


def _pytest(tmp_path, *args):
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup",
                           "-p", "no:cacheprovider", *args], cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=110, check=False)
    return done, time.monotonic() - started


def test_a_hanging_test_fails_in_seconds_and_its_fixtures_still_tear_down(tmp_path):
    marker = tmp_path / "stopped"
    _scratch(tmp_path, {"test_hang.py": HANGING % {"marker": str(marker)}})
    done, seconds = _pytest(tmp_path, "-q")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Timeout (>2.0s) from pytest-timeout" in done.stdout, done.stdout
    assert seconds < 60
    assert marker.read_text() == "stopped", "the fixture's teardown did not run"


MARKS = {"plain": ("[]", "60 signal"),
         "sandbox": ('[pytest.mark.xdist_group("netns")]', "%d signal" % SANDBOX_TIMEOUT),
         "sandbox_own": ('[pytest.mark.xdist_group("netns"), pytest.mark.timeout(3000)]',
                         "3000 signal"),
         "other_group": ('[pytest.mark.xdist_group("other")]', "60 signal")}


def test_each_test_gets_its_groups_timeout_through_xdist(tmp_path):
    _scratch(tmp_path, {"test_%s.py" % name: SETTINGS % {"mark": mark}
                        for name, (mark, _) in MARKS.items()})
    done, _ = _pytest(tmp_path, "-q", "-rP")
    assert done.returncode == 0, done.stdout + done.stderr
    for name, (_, expected) in MARKS.items():
        assert "TIMEOUT %s %s" % (name, expected) in done.stdout, done.stdout
