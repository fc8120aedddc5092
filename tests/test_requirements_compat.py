"""requirements.txt installs beside StackStorm without breaking StackStorm's code (issue 10).

StackStorm installs requirements.txt into the pack's virtualenv with a plain, unconstrained
`pip install -r requirements.txt` (st2common/util/virtualenvs.py), and a python action runs with
that virtualenv's packages before StackStorm's own on sys.path (st2common/util/sandboxing.py,
get_sandbox_python_path_for_python_action). Whatever pip puts there, listed or pulled in,
replaces StackStorm's copy in the action's process.

"StackStorm S can use version v of package P", for S in devtools/st2_compat/stackstorm.yaml (its
pins are S's fixed-requirements.txt, copied verbatim beside it), means:
- where stackstorm.yaml gives a window for P under S, v is in it. A window is the range that a
  package StackStorm keeps its own copy of declares for P (pyOpenSSL 25.1.0: cryptography<46),
  or a measurement, or "any" where no StackStorm code that a python action's process loads uses
  P; each names its source;
- otherwise, where S pins P to one version (P==X.Y.Z): v is in the pin's major series and not
  older than the pin, >=X.Y.Z,<X+1 (<0.Y+1 for a 0.x pin);
- otherwise, v satisfies S's pin as written (pyOpenSSL<25.2, typing-extensions>=4.13.2), where
  its environment marker holds.

The checks, all with the pip of the interpreter that runs the tests:
1. pip resolves requirements.txt the way StackStorm does (install --dry-run --ignore-installed
   --report, no constraints), once for each way the supported Pythons read its markers. None of
   the packages the pack leaves to StackStorm (jsonschema, PyYAML, Jinja2) is in the result.
2. Every resolved package that S pins is at a version S can use, for every S and every Python S
   runs on.
3. requirements.txt admits nothing outside those windows, so that a later release cannot become
   pip's pick: for each bound of a package's combined window, pip must refuse requirements.txt
   plus a constraint just past that bound (ResolutionImpossible).
4. The pack's code works with every version's copy of the packages it leaves to StackStorm:
   they are installed exactly as pinned into a throwaway directory put first on the path, and
   the pack's catalog and render tests run against them.

The resolution runs on this interpreter's Python: the markers of the pack's dependencies are
evaluated for it. A StackStorm version's other Pythons are represented by reading
requirements.txt's own markers for them (StackStorm 3.8 runs only on Python 3.8, so its
cryptography line applies there). pip must reach the package index: if it cannot, these tests
fail; they never skip.
"""

import concurrent.futures
import functools
import json
import os
import re
import subprocess
import sys
import tempfile

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import Specifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from test_conftest_st2 import HIDE_STACKSTORM, STANDIN_PATH

# pip resolves against the package index here (45 s for the slowest test on a loaded machine;
# pip's own calls are bounded at 600 s): the module's tests get more than the 60 s default.
pytestmark = pytest.mark.timeout(900)

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIREMENTS = os.path.join(PACK_ROOT, "requirements.txt")
COMPAT_DIR = os.path.join(PACK_ROOT, "devtools", "st2_compat")
PIP_TIMEOUT = 600
# A bound that requirements.txt states itself makes pip refuse a constraint past it in seconds.
# A probe that runs longer has pip backtracking through other packages' releases for a way
# around the constraint: reported as a bound requirements.txt does not hold.
PROBE_TIMEOUT = 90
# The pack's tests that exercise jsonschema, PyYAML and Jinja2 through the pack's own code.
CODE_TESTS = ["tests/test_catalog.py", "tests/test_render.py"]

with open(os.path.join(COMPAT_DIR, "stackstorm.yaml"), encoding="utf-8") as _handle:
    COMPAT = yaml.safe_load(_handle)
VERSIONS = list(COMPAT["versions"])
PROVIDED = {canonicalize_name(name): name for name in COMPAT["provided_by_stackstorm"]}
WINDOWS = {canonicalize_name(name): per_version
           for name, per_version in COMPAT["windows"].items()}
THIS_PYTHON = "%d.%d" % sys.version_info[:2]


def _parse_requirements(path):
    """The requirements of a requirements file; comments and blank lines dropped."""
    found = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            line = re.sub(r"(^|\s)#.*", "", line).strip()
            if not line:
                continue
            # An option line (-r, -c, --index-url) would change what StackStorm's pip does in
            # ways these checks do not model.
            assert not line.startswith("-"), "%s:%d: option lines are not supported: %s" % (
                path, number, line)
            found.append(Requirement(line))
    return found


def _environment(python):
    env = default_environment()
    if python != THIS_PYTHON:
        env.update(python_version=python, python_full_version=python + ".0")
    return env


@functools.lru_cache(maxsize=None)
def _reading(python):
    """requirements.txt as pip on `python` reads it: the lines whose markers hold, unmarked."""
    lines = []
    for req in _parse_requirements(REQUIREMENTS):
        if req.marker is None or req.marker.evaluate(_environment(python)):
            req.marker = None
            lines.append(str(req))
    return tuple(lines)


@functools.lru_cache(maxsize=None)
def _pins(version, python):
    """{name: Requirement} that StackStorm `version` pins on `python`."""
    path = os.path.join(COMPAT_DIR, COMPAT["versions"][version]["pins"])
    pins = {}
    for req in _parse_requirements(path):
        if req.marker is not None and not req.marker.evaluate(_environment(python)):
            continue
        name = canonicalize_name(req.name)
        assert name not in pins, "%s pins %s twice" % (path, req.name)
        pins[name] = req
    return pins


def _default_window(pin):
    specs = list(pin.specifier)
    if len(specs) == 1 and specs[0].operator == "==" and not specs[0].version.endswith(".*"):
        version = Version(specs[0].version)
        upper = ("%d" % (version.major + 1) if version.major
                 else "0.%d" % (version.minor + 1))
        return SpecifierSet(">=%s,<%s" % (version, upper)), "the pin %s, major series" % pin
    return pin.specifier, "the pin %s" % pin


def _window(version, python, name):
    """(SpecifierSet, why) of the versions of `name` StackStorm `version` can use on `python`;
    None when it does not pin `name` there."""
    pin = _pins(version, python).get(name)
    if pin is None:
        return None
    override = WINDOWS.get(name, {}).get(version)
    if override is not None:
        return SpecifierSet(override["usable"]), override["source"]
    return _default_window(pin)


def _reading_groups():
    """[(label, reading, [(stackstorm version, python), ...])], one per distinct reading."""
    groups = {}
    for version in VERSIONS:
        for python in COMPAT["versions"][version]["pythons"]:
            groups.setdefault(_reading(python), []).append((version, python))
    labelled = []
    for reading, members in groups.items():
        pythons = sorted({python for _, python in members}, key=Version)
        labelled.append(("python" + "+".join(pythons), reading, members))
    return labelled


READING_GROUPS = _reading_groups()


def _pip(args, timeout=PIP_TIMEOUT):
    """(exit code, output) of pip; exit code None if it did not finish within `timeout`."""
    command = [sys.executable, "-m", "pip"] + args
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              cwd=PACK_ROOT)
    except subprocess.TimeoutExpired:
        return None, "pip did not finish within %d s: %s" % (timeout, " ".join(command))
    return done.returncode, done.stdout + done.stderr


def _dry_run(reading, constraint=None, timeout=PIP_TIMEOUT):
    """(pip's exit code, its output, {name: version} it would install) for a reading of
    requirements.txt, optionally with one constraint added."""
    with tempfile.TemporaryDirectory(prefix="dialog-reqs-") as tmp:
        if reading == _reading(THIS_PYTHON):
            requirements = REQUIREMENTS  # the file itself, exactly as StackStorm's pip reads it
        else:
            requirements = os.path.join(tmp, "requirements.txt")
            with open(requirements, "w", encoding="utf-8") as handle:
                handle.write("\n".join(reading) + "\n")
        report = os.path.join(tmp, "report.json")
        args = ["install", "--dry-run", "--ignore-installed", "--quiet",
                "--disable-pip-version-check", "--no-input", "--root-user-action=ignore",
                "--report", report, "-r", requirements]
        if constraint:
            constraints = os.path.join(tmp, "constraints.txt")
            with open(constraints, "w", encoding="utf-8") as handle:
                handle.write(constraint + "\n")
            args += ["-c", constraints]
        code, output = _pip(args, timeout)
        installed = {}
        if code == 0:
            with open(report, encoding="utf-8") as handle:
                for item in json.load(handle)["install"]:
                    meta = item["metadata"]
                    installed[canonicalize_name(meta["name"])] = meta["version"]
        return code, output, installed


_RESOLVED = {}


def _resolved(reading):
    """{name: version} pip resolves for a reading; fails the test if pip cannot resolve."""
    if reading not in _RESOLVED:
        code, output, installed = _dry_run(reading)
        _RESOLVED[reading] = (code, output, installed)
    code, output, installed = _RESOLVED[reading]
    if code is None or code != 0 or not installed:
        pytest.fail("pip could not resolve requirements.txt (exit %s); it must reach the "
                    "package index:\n%s" % (code, output[-3000:]))
    return installed


def _complements(spec):
    """Specifiers that together hold exactly where `spec` does not."""
    op, version = spec.operator, spec.version
    simple = {">=": "<", ">": "<=", "<": ">=", "<=": ">", "==": "!=", "!=": "==", "===": "!="}
    if op in simple:
        return [Specifier(simple[op] + version)]
    assert op == "~=", op
    prefix = ".".join(str(part) for part in Version(version).release[:-1])
    return [Specifier("<" + version), Specifier("!=%s.*" % prefix)]


def _tightest(specs):
    """Drop lower and upper bounds implied by a tighter one; keep the rest."""
    lower = [s for s in specs if s.operator in (">=", ">")]
    upper = [s for s in specs if s.operator in ("<", "<=")]
    rest = [s for s in specs if s not in lower and s not in upper]
    keep = list(rest)
    if lower:
        keep.append(max(lower, key=lambda s: (Version(s.version), s.operator == ">")))
    if upper:
        keep.append(min(upper, key=lambda s: (Version(s.version), s.operator == "<=")))
    return keep


def _refused(name, output):
    """Did pip refuse for want of a version of `name` (a canonical name)?"""
    spelled = "[-_.]+".join(re.escape(part) for part in name.split("-"))
    pattern = r"ResolutionImpossible|No matching distribution found for %s\b" % spelled
    return re.search(pattern, output, re.IGNORECASE) is not None


# --- offline: the data the checks rely on -------------------------------------------------


def test_compat_data_is_complete():
    """Every StackStorm version has its pins, every Python it names is a version string, and
    every window names a package that version pins and says where it comes from."""
    for version, spec in COMPAT["versions"].items():
        path = os.path.join(COMPAT_DIR, spec["pins"])
        with open(path, encoding="utf-8") as handle:
            header = handle.readline()
        assert re.match(r"# StackStorm/st2 %s, commit [0-9a-f]{40}:" % re.escape(spec["ref"]),
                        header), "%s: header does not name %s and a commit" % (path, spec["ref"])
        assert spec["pythons"] and all(Version(p) for p in spec["pythons"])
    for name, per_version in WINDOWS.items():
        for version, window in per_version.items():
            assert version in COMPAT["versions"], "%s: unknown StackStorm %s" % (name, version)
            pythons = COMPAT["versions"][version]["pythons"]
            assert any(name in _pins(version, p) for p in pythons), (
                "window for %s under %s, which does not pin it" % (name, version))
            assert window["source"].strip(), "window for %s under %s has no source" % (
                name, version)
            SpecifierSet(window["usable"])


# --- pip: the requirements as StackStorm resolves them --------------------------------------


@pytest.mark.parametrize("label,reading,members", READING_GROUPS,
                         ids=[group[0] for group in READING_GROUPS])
def test_stackstorm_keeps_the_packages_the_pack_leaves_to_it(label, reading, members):
    """jsonschema, PyYAML and Jinja2 come from StackStorm: nothing in requirements.txt pulls
    them into the pack's virtualenv, where they would replace StackStorm's copy."""
    installed = _resolved(reading)
    shadowing = sorted("%s %s" % (PROVIDED[name], installed[name])
                       for name in PROVIDED if name in installed)
    assert not shadowing, "%s: requirements.txt installs %s into the pack's virtualenv" % (
        label, ", ".join(shadowing))


@pytest.mark.parametrize("version", VERSIONS)
def test_resolved_versions_are_usable_by_stackstorm(version):
    """Each package pip picks for requirements.txt that StackStorm `version` pins is at a
    version StackStorm can use (see the module docstring), on every Python it runs on."""
    problems = []
    for python in COMPAT["versions"][version]["pythons"]:
        installed = _resolved(_reading(python))
        for name, picked in sorted(installed.items()):
            window = _window(version, python, name)
            if window is None:
                continue
            usable, why = window
            if not usable.contains(Version(picked), prereleases=True):
                problems.append("Python %s: %s %s, but StackStorm %s can use %s (%s)" % (
                    python, name, picked, version, usable or "any", why))
    assert not problems, "\n".join(problems)


def _lines_naming(reading, name):
    return tuple(line for line in reading if canonicalize_name(Requirement(line).name) == name)


def test_requirements_admit_nothing_stackstorm_cannot_use():
    """For every pinned package in each resolution, pip refuses requirements.txt plus a
    constraint just past each bound of what all StackStorm versions on those Pythons can use.
    A bound that the same line states in two readings is asked about once."""
    probes, admitted, broken = {}, [], []
    for label, reading, members in READING_GROUPS:
        for name, picked in _resolved(reading).items():
            specs = []
            for version, python in members:
                window = _window(version, python, name)
                if window is not None:
                    specs.extend(window[0])
            for spec in _tightest(specs):
                for outside in _complements(spec):
                    constraint = "%s%s" % (name, outside)
                    if outside.contains(Version(picked), prereleases=True):
                        # pip's own pick is the witness; no need to ask again.
                        admitted.append("%s: %s (pip picks %s %s)" % (
                            label, constraint, name, picked))
                    elif not _lines_naming(reading, name):
                        # Only a dependency's own cap could refuse it, which the next release
                        # of that dependency may lift: the bound belongs in requirements.txt.
                        admitted.append("%s: %s (requirements.txt does not bound %s itself)" % (
                            label, constraint, name))
                    else:
                        key = (_lines_naming(reading, name), constraint)
                        probes.setdefault(key, (label, reading, name, constraint))
    assert probes or admitted, "no pinned package in any resolution: data or resolution wrong"
    # pip is mostly CPU-bound here, with some waiting on the index.
    workers = max(1, min(len(probes), 2 * (os.cpu_count() or 1)))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {key: pool.submit(_dry_run, reading, constraint, PROBE_TIMEOUT)
                   for key, (_, reading, _, constraint) in probes.items()}
        results = {key: future.result() for key, future in futures.items()}
    for key, (code, output, picked) in sorted(results.items()):
        label, _, name, constraint = probes[key]
        if code == 0:
            admitted.append("%s: %s (pip picks %s %s)" % (
                label, constraint, name, picked.get(name)))
        elif code is None:
            admitted.append("%s: %s (pip still searching after %d s: requirements.txt does not "
                            "hold %s to it)" % (label, constraint, PROBE_TIMEOUT, name))
        elif not _refused(name, output):
            broken.append("%s: %s: pip failed for another reason:\n%s" % (
                label, constraint, output[-2000:]))
    assert not broken, "\n".join(broken)
    assert not admitted, "requirements.txt admits versions StackStorm cannot use:\n" + "\n".join(
        sorted(admitted))


# --- the pack's code with StackStorm's copies of what it leaves to StackStorm ---------------


def _code_cases():
    cases = []
    for version in VERSIONS:
        spec = COMPAT["versions"][version]
        if THIS_PYTHON in spec["pythons"]:
            python, names = THIS_PYTHON, list(PROVIDED)
        else:
            # This StackStorm never runs on this Python, and its PyYAML and Jinja2 pins (5.4.1,
            # 2.11.3 with MarkupSafe<2.1) publish no wheels for it. jsonschema is the one whose
            # behaviour differs between the versions (2.6 knows drafts 3-4 only; 3.2 up to 7;
            # 4.x up to 2020-12) and it is pure Python, so it is checked here too; the pack uses
            # only yaml.safe_load and Jinja2 API that 5.4 and 2.11 already have.
            python, names = spec["pythons"][0], [canonicalize_name("jsonschema")]
        pins = _pins(version, python)
        cases.append(pytest.param(version, [str(pins[name]) for name in names],
                                  id="%s-%s" % (version, "+".join(
                                      str(pins[name]) for name in names))))
    return cases


@pytest.mark.parametrize("version,pins", _code_cases())
def test_pack_code_works_with_stackstorm_copies(version, pins, tmp_path):
    """The pack's catalog and render tests pass with StackStorm `version`'s copies of the
    packages the pack leaves to it, installed as pinned and first on the path."""
    target = str(tmp_path / "site")
    # StackStorm's other pins hold for their dependencies too. pip takes no extras in a
    # constraint (3.8 pins requests[security]).
    constraints = str(tmp_path / "constraints.txt")
    with open(constraints, "w", encoding="utf-8") as handle:
        for pin in _parse_requirements(os.path.join(COMPAT_DIR,
                                                    COMPAT["versions"][version]["pins"])):
            pin.extras = set()
            handle.write("%s\n" % pin)
    code, output = _pip(["install", "--quiet", "--disable-pip-version-check", "--no-input",
                         "--root-user-action=ignore", "--no-warn-conflicts",
                         "--only-binary=:all:", "--target", target, "-c", constraints] + pins)
    assert code == 0, "pip could not install %s:\n%s" % (" ".join(pins), output[-3000:])
    env = dict(os.environ, PYTHONPATH=target)
    names = [Requirement(pin).name for pin in pins]
    probe = ("import importlib.metadata as m, json, sys; "
             "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))")
    seen = subprocess.run([sys.executable, "-c", probe] + names, env=env, cwd=PACK_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert seen.returncode == 0, seen.stdout + seen.stderr
    expected = {Requirement(pin).name: next(iter(Requirement(pin).specifier)).version
                for pin in pins}
    assert json.loads(seen.stdout) == expected
    # A StackStorm installed beside these tests (st2-run-pack-tests) is of one version and would
    # not import with another version's copies: the pack's code is what is tested here, so it
    # runs on the stand-in, as on a machine without StackStorm.
    script = "import sys\nSTANDIN_PATH = %r\n%s\nimport pytest\nsys.exit(pytest.main(%r))" % (
        STANDIN_PATH, HIDE_STACKSTORM, ["-q", "-p", "no:cacheprovider"] + CODE_TESTS)
    tests = subprocess.run([sys.executable, "-c", script], env=env, cwd=PACK_ROOT,
                           capture_output=True, text=True, timeout=600)
    assert tests.returncode == 0, "with %s:\n%s" % (" ".join(pins), tests.stdout[-4000:])
