"""The mutation check's table stays applicable to this tree: CI runs it after the suite, so a
refactor that moves a snippet must fail here, in seconds, not 20 minutes into CI."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_mutation_check():
    spec = importlib.util.spec_from_file_location("mutation_check", ROOT / "scripts" / "mutation_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MUTATION_CHECK = load_mutation_check()


@pytest.mark.parametrize("mutation", MUTATION_CHECK.MUTATIONS, ids=lambda m: m.name)
def test_each_mutation_applies_once_and_names_tests_that_exist(mutation):
    assert (ROOT / mutation.path).read_text().count(mutation.old) == 1, (
        f"{mutation.old!r} does not occur exactly once in {mutation.path}")
    assert mutation.old != mutation.new
    for test in mutation.tests:
        path, _, name = test.partition("::")
        assert (ROOT / path).is_file(), test
        if name:
            assert f"def {name.split('[')[0]}(" in (ROOT / path).read_text(), test


def test_a_moved_snippet_is_reported_before_any_test_runs(tmp_path):
    mutation = MUTATION_CHECK.MUTATIONS[0]
    (tmp_path / mutation.path).parent.mkdir(parents=True)
    (tmp_path / mutation.path).write_text("nothing of the snippet here\n")
    assert MUTATION_CHECK.snippet_error(tmp_path, mutation) == (
        f"mutation {mutation.name!r}: its snippet occurs 0 times in {mutation.path} "
        "(expected once): update scripts/mutation_check.py")


@pytest.mark.parametrize("flags, baseline_runs", [([], 1), (["--no-baseline"], 0)])
def test_the_baseline_runs_unless_the_caller_has_just_run_the_suite(flags, baseline_runs, monkeypatch, capsys):
    """Each mutant's run recorded instead of made; the mutants are judged either way."""
    calls = []
    monkeypatch.setattr(MUTATION_CHECK, "run", lambda mutation, tests, *args: calls.append(mutation) or
                        (mutation is not None, 0.0))
    first, second = MUTATION_CHECK.MUTATIONS[:2]
    monkeypatch.setattr("sys.argv", ["mutation_check.py", "--only", first.name, second.name, "--jobs", "1", *flags])
    assert MUTATION_CHECK.main() == 0
    assert calls.count(None) == baseline_runs and calls[baseline_runs:] == [first, second]
    printed = capsys.readouterr().out
    assert ("| none (baseline) |" in printed) == bool(baseline_runs)
    assert printed.count("| caught |") == 2


def test_skip_training_runs_exactly_the_mutations_whose_tests_train_nothing(monkeypatch, capsys):
    """`.ci/run`'s selection: every mutation with trains=False, none with trains=True."""
    ran = []
    monkeypatch.setattr(MUTATION_CHECK, "run", lambda mutation, tests, *args: ran.append(mutation) or (True, 0.0))
    monkeypatch.setattr("sys.argv", ["mutation_check.py", "--no-baseline", "--skip-training", "--jobs", "1"])
    assert MUTATION_CHECK.main() == 0
    trained = [m for m in MUTATION_CHECK.MUTATIONS if m.trains]
    assert trained and ran == [m for m in MUTATION_CHECK.MUTATIONS if m not in trained]
    assert capsys.readouterr().out.count("| caught |") == len(ran)
