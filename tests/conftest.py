"""pytest setup for the pack's tests.

The tests are written against StackStorm's real st2tests API so that they also run unchanged
under st2-run-pack-tests. When StackStorm's packages do not import (plain pytest on a developer
machine or in CI), devtools/st2_standin is put first on sys.path so that st2common, st2reactor
and st2tests resolve to the small stand-in instead.
"""

import os
import sys

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
PACK_ROOT = os.path.dirname(TESTS_DIR)
STANDIN_PATH = os.path.join(PACK_ROOT, "devtools", "st2_standin")
STANDIN_PACKAGES = ("st2common", "st2reactor", "st2tests")


def _use_standin_if_st2_missing():
    try:
        import st2tests.base  # noqa: F401
    except Exception:
        # A half-imported real package would shadow the stand-in: forget it first.
        for name in [m for m in sys.modules if m.split(".")[0] in STANDIN_PACKAGES]:
            del sys.modules[name]
        sys.path.insert(0, STANDIN_PATH)


def _ensure_pack_paths():
    # Same as pytest.ini's "pythonpath = actions actions/lib sensors tests", kept here in case
    # the tests run without that ini file.
    for rel in ("actions", os.path.join("actions", "lib"), "sensors", "tests"):
        path = os.path.join(PACK_ROOT, rel)
        if os.path.isdir(path) and path not in sys.path:
            sys.path.append(path)


_use_standin_if_st2_missing()
_ensure_pack_paths()
