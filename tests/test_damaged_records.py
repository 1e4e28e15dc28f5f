"""Result files whose JSON parses but whose records are damaged or wrongly typed (a hand edit, another
solo-ncp version): k.json of select-k, metrics.json of eval (read by report and by export --head) and
poc.json of poc are one `error:` line naming the file, the field and the fix, never a traceback nor a
number that was never measured; a PoC seed without a correctly classified test image is no 0.00."""
import json
import math
import shutil
import statistics
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from solo_ncp.cli import main
from tests.conftest import host_independent
from tests.test_eval import POC_CENTROIDS, ConstantEncoder, InkDetector
from tests.test_export import (  # noqa: F401 (eval_adv, exported, planted_dual_bn_ckpt: fixtures)
    EVAL,
    error_line,
    eval_adv,
    exported,
    planted_dual_bn_ckpt,
)
from tests.test_report_consistency import report, report_error, write_metrics, write_poc

pytestmark = pytest.mark.usefixtures("single_thread")

SELECT_K_AGAIN = "; run select-k again, or set method_kwargs.k"


def edit_json(path: Path, edit) -> Path:
    """Applies `edit(record)` to the JSON file at `path` in place."""
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))
    return path


def write_k_json(folder: Path, record: dict) -> Path:
    folder.mkdir()
    (folder / "k.json").write_text(json.dumps(record))
    return folder


# --- k.json -------------------------------------------------------------------------------------------

@host_independent
@pytest.mark.parametrize("record, problem", [
    ({"k": 5, "scores": {}}, "its 'scores' must be a non-empty object of silhouettes by K, not {}"),
    ({"k": 5, "scores": [0.5]}, "its 'scores' must be a non-empty object of silhouettes by K, not [0.5]"),
    ({"k": 5, "scores": {"3": 0.1, "4": 0.2}}, "its K ('k') 5 is none of the Ks its 'scores' hold (3, 4)"),
    ({"k": 5, "scores": {"5": math.nan, "6": 0.2}}, "its 'scores' hold silhouette nan for K 5, not a finite number"),
    ({"k": 5, "scores": {"5": "0.3"}}, "its 'scores' hold silhouette '0.3' for K 5, not a finite number"),
    ({"k": 5, "scores": {"5": 0.3, "5.5": 0.1}}, "its 'scores' hold a K '5.5' that is no whole number >= 2"),
    ({"k": 5, "scores": {"5": 0.3, "1": 0.1}}, "its 'scores' hold a K '1' that is no whole number >= 2"),
    ({"k": 5, "scores": {"5": 0.1, "6": 0.2}},
     "its K ('k') 5 (silhouette 0.1) is not the best-scoring K of its 'scores', 6 (silhouette 0.2)"),
    ({"k": 6, "scores": {"5": 0.2, "6": 0.2}},  # select-k takes the smallest K of a tie
     "its K ('k') 6 (silhouette 0.2) is not the best-scoring K of its 'scores', 5 (silhouette 0.2)"),
    ({"k": 5, "scores": {"5": 0.3}, "ckpt": 5}, "its 'ckpt' must be a string or null, not 5"),
    ({"k": 5, "scores": {"5": 0.3}, "ckpt_sha256": ["ab"]}, "its 'ckpt_sha256' must be a string or null, not ['ab']"),
    ({"k": 5, "scores": {"5": 0.3}, "dataset": {"name": "digits"}},
     "its 'dataset' must be a string or null, not {'name': 'digits'}"),
    ({"k": 5, "scores": {"5": 0.3}, "seed": "0"}, "its 'seed' must be a whole number or null, not '0'"),
    ({"k": 5, "scores": {"5": 0.3}, "n": 0}, "its 'n' must be a whole number >= 1 or null, not 0"),
    ({"k": 5, "scores": {"5": 0.3}, "n": True}, "its 'n' must be a whole number >= 1 or null, not True"),
], ids=["no scores", "a list", "k unscored", "NaN", "a string", "K 5.5", "K 1", "k not best", "tie",
        "ckpt 5", "digest a list", "dataset an object", "seed a string", "n 0", "n true"])
def test_a_damaged_k_json_is_one_error_line_naming_the_field(record, problem, tmp_path, capsys):
    """report's Fig. 2 raised IndexError on empty scores, KeyError on an unscored k, and printed
    silhouette nan; Table 1's K raised TypeError on a ckpt of a number; stage 2 read the same files
    as its K."""
    from solo_ncp.ncp.teacher import resolve_k

    folder = write_k_json(tmp_path / "k", record)
    says = f"{folder / 'k.json'}: not a k.json of `solo-ncp select-k`: {problem}{SELECT_K_AGAIN}"
    assert report_error([folder], capsys) == f"error: {says} (solo-ncp report)"
    with pytest.raises(ValueError) as caught:
        resolve_k(None, str(folder / "k.json"))
    assert str(caught.value) == f"method_kwargs.k_file: {says}"


@host_independent
@pytest.mark.parametrize("scores", [{4: 0.1, 6: 0.3, 8: 0.2}, {6: 0.25, 4: 0.25, 8: 0.1}], ids=["best", "tie"])
def test_every_k_json_select_k_writes_is_read_back(scores, tmp_path):
    from solo_ncp.cluster.select_k import write_k_selection
    from solo_ncp.eval.results import read_selection

    written = write_k_selection(scores, tmp_path, {"dataset": "digits", "seed": 0, "n": 50})
    read = read_selection(tmp_path)
    assert (read["k"], read["scores"]) == (written["k"], scores) and read["k"] == min(
        k for k, score in scores.items() if score == max(scores.values()))


# --- metrics.json and poc.json read by report ---------------------------------------------------------

def branch_metrics(key: str, value):
    """An edit of metrics.json putting `value` at `key` of its branch's metrics (and of their copy)."""
    def edit(record):
        for metrics in (record["metrics"], record["branches"][0]["metrics"]):
            metrics[key] = value
    return edit


EVAL_AGAIN = "restore the file, or run `solo-ncp eval` again"
POC_AGAIN = "restore the file, or run `solo-ncp poc` again"


@host_independent
@pytest.mark.parametrize("edit, says", [
    (branch_metrics("sa_n", [1]), f"branches[0].metrics.sa_n must be a whole number of test images (>= 0) or null, "
                                  f"not [1]: {EVAL_AGAIN}"),
    (branch_metrics("ra_n", -5), f"branches[0].metrics.ra_n must be a whole number of test images (>= 0) or null, "
                                 f"not -5: {EVAL_AGAIN}"),
    (branch_metrics("aa_n", True), f"branches[0].metrics.aa_n must be a whole number of test images (>= 0) or "
                                   f"null, not True: {EVAL_AGAIN}"),
    (lambda record: record["checkpoint"].update(sha256=["ab"]),
     f"checkpoint.sha256 must be a string or null, not ['ab']: {EVAL_AGAIN}"),
    (lambda record: record["checkpoint"].update(exported_from={"sha256": 7}),
     f"checkpoint.exported_from.sha256 must be a string or null, not 7: {EVAL_AGAIN}"),
], ids=["sa_n", "ra_n", "aa_n", "sha256", "exported_from"])
def test_a_wrongly_typed_metrics_json_is_one_error_line_naming_the_field(edit, says, tmp_path, capsys):
    """sa_n = [1] and a list digest were a TypeError traceback (unhashable list) in report."""
    folders = [write_metrics(tmp_path / f"s{seed}", seed, f"ncp-s{seed}") for seed in (0, 1)]
    path = edit_json(folders[1] / "metrics.json", edit)
    assert report_error(folders, capsys) == f"error: {path}: {says} (solo-ncp report)"


def poc_settings(key: str, value):
    """An edit of poc.json putting `value` at settings.`key`."""
    return lambda record: record["settings"].update({key: value})


def poc_checkpoint(key: str, value):
    """An edit of poc.json putting `value` at settings.checkpoint.`key`."""
    return lambda record: record["settings"]["checkpoint"].update({key: value})


@host_independent
@pytest.mark.parametrize("edit, says", [
    (poc_settings("seed", [0]), f"settings.seed must be a whole number or null, not [0]: {POC_AGAIN}"),
    (poc_checkpoint("sha256", ["ab"]), f"settings.checkpoint.sha256 must be a string or null, not ['ab']: {POC_AGAIN}"),
    (poc_checkpoint("path", ["a.ckpt"]),
     f"settings.checkpoint.path must be a string or null, not ['a.ckpt']: {POC_AGAIN}"),
    (lambda record: record.update(n_correct="100"),
     f"n_correct must be a whole number of test images (>= 0), not '100': {POC_AGAIN}"),
    (lambda record: record["nbr"].update(prob_dec=None),
     "rows random_noise, nbr need numbers prob_dec and attack_success (null only where n_correct is 0: no test "
     f"image measured): {POC_AGAIN}"),
], ids=["seed", "sha256", "path", "n_correct", "null with images"])
def test_a_wrongly_typed_poc_json_is_one_error_line_naming_the_field(edit, says, tmp_path, capsys):
    """settings.seed = [0] was a TypeError traceback (unhashable list) in report's Table 1."""
    folders = [write_poc(tmp_path / f"p{seed}", seed) for seed in (0, 1)]
    path = edit_json(folders[1] / "poc.json", edit)
    assert report_error(folders, capsys) == f"error: {path}: {says} (solo-ncp report)"


# --- a PoC row over no test image ---------------------------------------------------------------------

UNMEASURED = "n/a (no correctly classified test image)"


@host_independent
def test_poc_records_null_not_zero_for_a_row_without_a_correct_image():
    """InkDetector gets blank images of class 1 and gray ones of class 0 all wrong: nothing is
    measured, and poc.json recorded 0.0 for both rates."""
    from solo_ncp.eval.poc import format_poc_table, poc_table

    x = torch.cat([torch.zeros(3, 1, 4, 4), torch.full((2, 1, 4, 4), 0.5)])
    y = torch.tensor([1, 1, 1, 0, 0])
    result = poc_table(InkDetector(), ConstantEncoder(), POC_CENTROIDS, TensorDataset(x, y), eps=8 / 255,
                       alpha=2 / 255, steps=2, n=2, seed=0, device="cpu", batch_size=2, progress=False)
    unmeasured = {"prob_dec": None, "attack_success": None, "n": 0}
    assert (result["random_noise"], result["nbr"], result["n_correct"], result["n_total"]) == (
        unmeasured, unmeasured, 0, 5)
    assert format_poc_table(result).splitlines()[2:] == [
        f"| random noise | {UNMEASURED} | {UNMEASURED} | 0 |",
        f"| δ_nbr toward the 2nd nearest cluster | {UNMEASURED} | {UNMEASURED} | 0 |"]


def without_a_correct_image(rate):
    """An edit of poc.json to a seed with no correctly classified test image, its rates `rate`
    (None as poc writes it now, 0.0 as it wrote before)."""
    def edit(record):
        record["n_correct"] = 0
        for row in ("random_noise", "nbr"):
            record[row] = {"prob_dec": rate, "attack_success": rate, "n": 0}
    return edit


@host_independent
@pytest.mark.parametrize("rate", [None, 0.0], ids=["null", "older 0.0"])
def test_table_1_leaves_a_seed_without_a_correct_image_out_of_its_means_and_says_so(rate, tmp_path, capsys):
    measured = [write_poc(tmp_path / f"p{seed}", seed, prob_dec=value) for seed, value in ((0, 10.0), (1, 14.0))]
    empty = write_poc(tmp_path / "p2", 2)
    edit_json(empty / "poc.json", without_a_correct_image(rate))
    table = report([*measured, empty], capsys)
    cell = f"{statistics.mean([10.0, 14.0]):.2f} ± {statistics.stdev([10.0, 14.0]):.2f} (n=2)"
    row = f"| CIFAR-10 | 8/255 | 2nd nearest cluster | random noise | {cell} | 20.00 ± 0.00 (n=2) | 100, 100, 0 of 2000 |"
    assert row in table
    assert ("images padded 4 px, cropped, flipped. Left out of its means: seed 2 (no correctly classified test "
            "image: nothing measured).") in table


@host_independent
def test_table_1_says_a_row_no_seed_measured_is_not_available(tmp_path, capsys):
    folder = write_poc(tmp_path / "p0", 0)
    edit_json(folder / "poc.json", without_a_correct_image(None))
    table = report([folder], capsys)
    assert f"| CIFAR-10 | 8/255 | 2nd nearest cluster | δ_nbr | {UNMEASURED} | {UNMEASURED} | 0 of 2000 |" in table


# --- metrics.json read by export --head ---------------------------------------------------------------

def in_branch(key: str, value):
    """An edit of metrics.json putting `value` at `key` of branches[0] (eval_adv's one branch)."""
    return lambda record: record["branches"][0].update({key: value})


@pytest.mark.parametrize("edit, says", [
    (lambda record: record.update(checkpoint="x"), 'holds checkpoint "x", not an object'),
    (in_branch("files", None), "holds branches[0].files null, not an object"),
    (in_branch("files", {"head": 5}), "holds branches[0].files.head 5, not a file name (a string)"),
    (in_branch("files", {"head": "head_adv.pt", "encoder": None}),
     "holds branches[0].files.encoder null, not a file name (a string)"),
    (lambda record: record["settings"].update(aa=None), "holds settings.aa null, not an object"),
    (lambda record: record["settings"]["aa"].update(attacks=[1]),
     "holds settings.aa.attacks [1], not a list of attack names or null"),
], ids=["checkpoint", "files null", "head 5", "encoder null", "aa null", "attacks"])
def test_a_malformed_head_folder_is_one_error_line_naming_the_field(edit, says, eval_adv, planted_dual_bn_ckpt,
                                                                    tmp_path, capsys):
    """Before: AttributeError or TypeError tracebacks, or "lacks 'NoneType' object is not subscriptable"."""
    folder = Path(shutil.copytree(eval_adv, tmp_path / "eval"))
    edit_json(folder / "metrics.json", edit)
    assert main(["export", "--ckpt", str(planted_dual_bn_ckpt), "--bn", "adv", "--head", str(folder),
                 "--out", str(tmp_path / "export")]) == 2
    assert error_line(capsys) == (
        f"error: --head {folder}: its metrics.json {says} (damaged, or of another solo-ncp version): evaluate the "
        f"checkpoint again with `solo-ncp eval ... --out {folder} --overwrite` (solo-ncp export)")
    assert not (tmp_path / "export").exists()


@pytest.fixture(scope="module")
def eval_of_export(exported, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval_of_export") / "eval"
    assert main(["eval", "--ckpt", str(exported), "--bn", "adv", "--out", str(out), *EVAL]) == 0
    return out


@pytest.mark.parametrize("ckpt, head", [("exported", "eval_adv"), ("planted", "eval_of_export")],
                         ids=["an export with an eval of its checkpoint", "a checkpoint with an eval of its export"])
def test_an_export_and_its_checkpoint_are_one_encoder_to_export_head(ckpt, head, exported, eval_adv,
                                                                     planted_dual_bn_ckpt, eval_of_export, tmp_path):
    """export compared the sha256 of the files alone (`--head e evaluated ncp/digits/last.ckpt, not
    --ckpt x/encoder.pt`), where report knew an export by the checkpoint it was exported from. The
    classifier is the one exported from the checkpoint with its own eval, with the head of --head."""
    folders = {"exported": exported, "planted": planted_dual_bn_ckpt, "eval_adv": eval_adv,
               "eval_of_export": eval_of_export}
    out = tmp_path / "export"
    assert main(["export", "--ckpt", str(folders[ckpt]), "--bn", "adv", "--head", str(folders[head]),
                 "--out", str(out)]) == 0
    classifier = torch.load(out / "classifier.pt", weights_only=True)
    expected = torch.load(exported / "classifier.pt", weights_only=True)
    head_state = torch.load(folders[head] / "head_adv.pt", weights_only=True)
    assert list(classifier) == list(expected)
    for key, value in classifier.items():
        own = head_state[key[len("head."):]] if key.startswith("head.") else expected[key]
        torch.testing.assert_close(value, own, rtol=0, atol=0)
