"""pytest setup for the pack's tests.

The tests are written against StackStorm's real st2tests API so that they also run unchanged
under st2-run-pack-tests. Where StackStorm's packages are not installed at all (plain pytest on
a developer machine or in CI), devtools/st2_standin is put first on sys.path so that st2common,
st2reactor and st2tests resolve to the small stand-in instead.

An installed StackStorm that does not import is not "absent": the run stops with the error
instead of quietly testing the stand-in, which would prove nothing about that StackStorm.
"""

import os
import sys
import traceback

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
PACK_ROOT = os.path.dirname(TESTS_DIR)
STANDIN_PATH = os.path.join(PACK_ROOT, "devtools", "st2_standin")
STANDIN_PACKAGES = ("st2common", "st2reactor", "st2tests")
# Their absence, and only theirs, means that StackStorm is not installed.
ST2_TOP_LEVEL_PACKAGES = ("st2tests", "st2common")

# The import roots st2-run-pack-tests (st2common/bin/st2-run-pack-tests) puts on PYTHONPATH, in
# its order, then the tests' own; pytest.ini's "pythonpath" says why each is there.
PACK_IMPORT_ROOTS = ("lib", "sensors", "actions", os.path.join("actions", "lib"), "etc",
                     "tests", "devtools")

BROKEN_ST2_MESSAGE = """\
StackStorm is installed here but does not import, so the pack's tests will not run.
  {error}
  (raised at {where})
The tests fall back to the stand-in in devtools/st2_standin only where st2tests and st2common
are not installed at all. Repair this installation (python -c "import st2tests.base" shows the
whole traceback), or run the tests with a Python that has no StackStorm packages."""

_broken_st2 = None


def _use_standin_if_st2_missing():
    global _broken_st2
    try:
        import st2tests.base  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name in ST2_TOP_LEVEL_PACKAGES:
            # A half-imported real package would shadow the stand-in: forget it first.
            for name in [m for m in sys.modules if m.split(".")[0] in STANDIN_PACKAGES]:
                del sys.modules[name]
            sys.path.insert(0, STANDIN_PATH)
        else:
            _broken_st2 = _describe(exc)
    except Exception as exc:
        _broken_st2 = _describe(exc)


def _describe(exc):
    frames = traceback.extract_tb(exc.__traceback__)
    where = "%s:%s" % (frames[-1].filename, frames[-1].lineno) if frames else "?"
    error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return BROKEN_ST2_MESSAGE.format(error=error, where=where)


def _ensure_pack_paths():
    # The same roots as pytest.ini's "pythonpath", in case the tests run without that file.
    for rel in PACK_IMPORT_ROOTS:
        path = os.path.join(PACK_ROOT, rel)
        if os.path.isdir(path) and path not in sys.path:
            sys.path.append(path)


def pytest_configure(config):
    # A usage error ends the run before any test module is imported, with just this message.
    if _broken_st2:
        raise pytest.UsageError(_broken_st2)


_use_standin_if_st2_missing()
_ensure_pack_paths()


# Tests that boot sandbox hosts (network namespaces, sshd, Docker stand-ins: the xdist group
# "netns") legitimately take minutes: a module's first test also boots its hosts, its last one
# tears them down. They get this bound instead of pytest.ini's default, unless the test or its
# module carries its own timeout mark. The signal method (pytest.ini) fails the test from
# inside, so the fixtures' teardown still stops the hosts; the thread method would end the
# whole process and leave them running.
SANDBOX_TIMEOUT = 1200


def _in_sandbox_group(item):
    return any(mark.args[:1] == ("netns",) for mark in item.iter_markers("xdist_group"))


def pytest_collection_modifyitems(items):
    for item in items:
        if _in_sandbox_group(item) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(SANDBOX_TIMEOUT))


# The AWS emulator (moto's server in a thread) shared by a module's tests: `emu` gives each test
# a new, empty account (devtools/aws_emulator.py's reset), as a fresh AWS account is.
@pytest.fixture(scope="module")
def emulator():
    from aws_emulator import AwsEmulator  # pylint: disable=import-outside-toplevel
    with AwsEmulator() as running:
        yield running


@pytest.fixture(name="emu")
def fresh_emulator(emulator):
    emulator.reset()
    return emulator
