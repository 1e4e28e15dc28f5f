"""Files a run reads back, damaged (empty, zeroed, truncated, binary, or JSON of another type): a step
whose done-marker or result is damaged runs again; a damaged settings record of `reproduce`, and a
damaged file given to a command, are one `error:` line naming the file."""
import json
import re
from pathlib import Path

import pytest

from solo_ncp.cli import main
from solo_ncp.launch.steps import DONE, Step, fixed, result_file
from tests.conftest import host_independent
from tests.test_eval import write_poc, write_run, write_selection
from tests.test_reproduce import record_plan, reproduce_argv
from tests.test_resume import error_lines

pytestmark = host_independent

DAMAGED = {"empty": b"", "zeroed": b"\0" * 64, "truncated": b'{"argv": ["select-k", "--ck',
           "binary": b"\xff\xfe\x00\x81", "an array": b"[1, 2]", "null": b"null", "a string": b'"done"',
           "nested without end": b"[" * 100_000 + b"]" * 100_000}
"""What a power cut on a file system without ordered writes, a full disk or a stray edit leaves (the
last: JSON deeper than Python's recursion limit, a RecursionError traceback from json once)."""


def mark_done(step: Step) -> None:
    """The marker `Step.run` writes after the step's command succeeded."""
    (step.folder / DONE).write_text(json.dumps({"argv": step.argv(), "inputs": {}}))


@pytest.mark.parametrize("damage", DAMAGED.values(), ids=DAMAGED)
def test_a_damaged_done_marker_is_no_marker(damage, tmp_path):
    folder = write_selection(tmp_path / "select-k", "digits", 0, {5: 0.4, 10: 0.5})
    step = Step("s0/select-k", folder, fixed(["select-k", "--out", str(folder)]), result_file(folder / "k.json"))
    mark_done(step)
    assert step.state() == "done"
    (folder / DONE).write_bytes(damage)
    assert step.state() == "partial" and step.command("partial")[-1] == "--overwrite"


def plant_seed(out: Path) -> None:
    """Seed 0's results of `record_plan(out, ["ncp"])` as its steps would have written them."""
    write_selection(out / "s0" / "select-k", "digits", 0, {5: 0.4, 10: 0.5})
    write_poc(out / "s0" / "poc", 0, n_correct=50, random_noise=(1.0, 2.0), nbr=(10.0, 12.0))
    for method in ("simclr", "ncp"):
        write_run(out / "s0" / f"eval-{method}-slf", method, "digits", "slf", 0, 90.0, 40.0, None, head="paper")


@pytest.mark.parametrize("damage", ["empty", "truncated", "binary", "an array"])
@pytest.mark.parametrize("result, rerun", [
    ("select-k/k.json", {"s0/select-k", "s0/poc"}),  # poc's --k is read from k.json
    ("poc/poc.json", {"s0/poc"}),
    ("eval-ncp-slf/metrics.json", {"s0/eval-ncp-slf"}),
])
def test_a_damaged_result_makes_its_step_run_again(result, rerun, damage, tmp_path):
    out = tmp_path / "run"
    plan = record_plan(out, ["ncp"])
    plant_seed(out)
    steps = {step.name: step for step in plan.steps
             if step.name in ("s0/select-k", "s0/poc", "s0/eval-simclr-slf", "s0/eval-ncp-slf")}
    for step in steps.values():
        mark_done(step)
    assert {name: step.state() for name, step in steps.items()} == dict.fromkeys(steps, "done")
    (out / "s0" / result).write_bytes(DAMAGED[damage])
    assert {name for name, step in steps.items() if step.state() == "partial"} == rerun
    assert steps["s0/poc"].argv()[:3] == ["poc", "--k", "10" if "s0/select-k" not in rerun else
                                          f"<K of {out / 's0' / 'select-k' / 'k.json'}>"]


@pytest.mark.parametrize("damage", DAMAGED.values(), ids=DAMAGED)
def test_a_damaged_settings_record_is_one_error_line_naming_it(damage, tmp_path, capsys):
    out = tmp_path / "run"
    record_plan(out, ["ncp"])
    (out / "reproduce.json").write_bytes(damage)
    assert main(reproduce_argv(out, "--seeds", "0", "--methods", "ncp", "--dry-run")) == 2
    (line,) = error_lines(capsys.readouterr())
    assert line.startswith(f"error: {out / 'reproduce.json'} is not the settings record of a `solo-ncp "
                           "reproduce` folder: "), line
    assert line.endswith(": restore it, or remove it to record this call's settings (a finished step stays "
                         "finished: its .step-done.json holds its own command) (solo-ncp reproduce)"), line


@pytest.mark.parametrize("entry, value, says", [
    ("seeds", ["0"], "its 'seeds' is not a list of int"),
    ("evals", None, "its 'evals' is not a list of str"),
    ("methods", {"ncp": "zoo_configs/digits/ncp.yaml"}, "its 'methods' is not a mapping of labels to their configs"),
])
def test_a_settings_record_with_a_mistyped_entry_is_one_error_line(entry, value, says, tmp_path, capsys):
    out = tmp_path / "run"
    record_plan(out, ["ncp"])
    record = json.loads((out / "reproduce.json").read_text())
    (out / "reproduce.json").write_text(json.dumps({**record, entry: value}))
    assert main(reproduce_argv(out, "--seeds", "0", "--methods", "ncp", "--dry-run")) == 2
    (line,) = error_lines(capsys.readouterr())
    assert line.startswith(f"error: {out / 'reproduce.json'}: {says}: restore it"), line


@pytest.mark.parametrize("damage", DAMAGED.values(), ids=DAMAGED)
def test_a_damaged_k_file_is_one_line_naming_it(damage, tmp_path):
    from solo_ncp.ncp.teacher import resolve_k

    k_file = tmp_path / "k.json"
    k_file.write_bytes(damage)
    with pytest.raises(ValueError, match=f"^method_kwargs.k_file: {re.escape(str(k_file))}: not a k.json of "):
        resolve_k(None, str(k_file))


@pytest.mark.parametrize("k", [3.7, True, "12", [5], {"a": 1}, None, 1])
def test_a_k_file_whose_k_is_no_whole_number_of_at_least_2_is_refused_not_rounded(k, tmp_path):
    """The same file for training, `plot --embedding` and `report` (Fig. 2)."""
    from solo_ncp.eval.results import read_selection
    from solo_ncp.ncp.teacher import resolve_k

    k_file = tmp_path / "k.json"
    k_file.write_text(json.dumps({"k": k, "scores": {"5": 0.5}}))
    says = (f"{k_file}: not a k.json of `solo-ncp select-k`: its K ('k') must be a whole number >= 2, "
            f"not {k!r}; run select-k again, or set method_kwargs.k")
    with pytest.raises(ValueError) as caught:
        resolve_k(None, str(k_file))
    assert str(caught.value) == f"method_kwargs.k_file: {says}"
    with pytest.raises(ValueError) as caught:
        read_selection(tmp_path)
    assert str(caught.value) == says


def test_a_k_file_that_is_a_folder_says_so(tmp_path):
    from solo_ncp.ncp.teacher import resolve_k

    with pytest.raises(ValueError) as caught:
        resolve_k(None, str(tmp_path))
    assert str(caught.value) == (f"method_kwargs.k_file: {tmp_path} is a folder, not a file: pass a k.json of "
                                 "`solo-ncp select-k`, or run select-k first")


@pytest.mark.parametrize("damage", DAMAGED.values(), ids=DAMAGED)
def test_a_damaged_export_json_names_it_and_the_fix(damage, tmp_path):
    from solo_ncp.models.checkpoint import CheckpointError, read_export

    (tmp_path / "export.json").write_bytes(damage)
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(tmp_path / 'export.json'))} is not the export.json of "
                                              "`solo-ncp export`: .*: export the checkpoint again"):
        read_export(tmp_path)


@pytest.mark.parametrize("damage", DAMAGED.values(), ids=DAMAGED)
@pytest.mark.parametrize("name", ["metrics.json", "poc.json"])
def test_reports_readers_name_a_damaged_file(name, damage, tmp_path):
    from solo_ncp.eval.results import load_runs, read_poc

    (tmp_path / name).write_bytes(damage)
    with pytest.raises(ValueError, match=f"^{re.escape(str(tmp_path / name))}: "):
        (load_runs if name == "metrics.json" else read_poc)(tmp_path)
