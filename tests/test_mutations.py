"""devtools/mutations.py: every hand-made bug still applies to the code as it is, and a patch
whose snippet is gone is reported as not applied, never as caught."""

import mutations


def test_every_mutation_applies_to_the_current_tree():
    problems = [(m.name, p) for m, p in mutations.check(mutations.MUTATIONS) if p]
    assert not problems, "update these patches to the code: %s" % problems


def test_a_missing_snippet_is_named_and_nothing_is_written(tmp_path):
    (tmp_path / "lib.py").write_text("def ok():\n    return True\n")
    mutation = mutations.Mutation("gone", "a bug in code that changed",
                                  [mutations.Edit("lib.py", "return False", "return True")],
                                  [mutations.Edit("old.py", "x", "y")])
    edits, problem = mutation.choose(str(tmp_path))
    assert edits is None
    assert problem == ("lib.py: snippet found 0 times (expected 1): return False; "
                       "old.py: no such file")
    assert (tmp_path / "lib.py").read_text() == "def ok():\n    return True\n"


def test_only_tests_passing_unmutated_count_as_catching():
    baseline = {"a": "passed", "b": "failed", "c": "passed"}
    assert mutations.caught_by(baseline, {"a": "failed", "b": "failed", "c": "passed"}) == ["a"]
    assert mutations.caught_by(baseline, dict(baseline)) == []


def test_the_sandbox_modules_are_not_fast():
    fast = mutations.fast_tests(mutations.ROOT)
    assert "tests/test_deploy_sandbox.py" not in fast and "tests/test_bootstrap.py" not in fast
    assert "tests/test_bootstrap_health.py" in fast and "tests/test_workflow_scale.py" in fast
    assert "tests/test_mutations.py" not in fast
