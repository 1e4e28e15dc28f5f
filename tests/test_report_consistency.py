"""`solo-ncp report` averages only seeds of one protocol: a result given twice, seeds of different
settings (PoC's K, steps, step size, test images; a head's training; a threat model) and two
evaluations of one checkpoint are refused with a sentence naming the setting or the folders, and
each legend names what its numbers were measured with (Table 1's K, steps, step and test images;
the RA attack's steps in how RA counts)."""
import hashlib
import json
import shutil
import statistics
from pathlib import Path
from typing import Optional

import pytest

from solo_ncp.cli import main
from tests.conftest import host_independent

pytestmark = [pytest.mark.usefixtures("single_thread"), host_independent]

FINE_TUNE = {"epochs": 25, "batch_size": 512, "lr": 0.1, "momentum": 0.9, "weight_decay": 2e-4,
             "milestones": [15, 20], "gamma": 0.1, "mode": "slf", "loss": "ce", "beta": None, "head": "paper",
             "norm": "Linf", "eps": 8 / 255, "alpha": 2 / 255, "steps": 10, "crop_padding": 4}
"""settings.fine_tune as eval and poc record it (without its seed, the run's)."""


def encoder_digest(name: str) -> str:
    """A checkpoint's sha256: one per encoder name."""
    return hashlib.sha256(name.encode()).hexdigest()


def write_metrics(folder: Path, seed: int, encoder: str, method: str = "ncp", mode: str = "slf", norm: str = "Linf",
                  eps: float = 8 / 255, pgd_steps: int = 20, train_n: int = 50000, sa: float = 80.0,
                  **fine_tune) -> Path:
    """An eval folder whose metrics.json is laid out as `solo-ncp eval` writes it: RA by PGD-`pgd_steps`
    in `norm` with `eps`, a head trained on `train_n` images with FINE_TUNE updated by `fine_tune`,
    of the checkpoint of digest `encoder_digest(encoder)`."""
    folder.mkdir(parents=True)
    metrics = {"sa": sa, "ra": 40.0, "aa": None, "sa_n": 10000, "ra_n": 10000, "aa_n": 0}
    record = {
        "schema": 2, "method": method, "dataset": "cifar10", "mode": mode, "loss": "ce", "beta": None,
        "head": "paper", "seed": seed, "branches": [{"bn": None, "metrics": metrics}], "bn": None,
        "metrics": metrics, "threat_model": norm,
        "settings": {"fine_tune": {**FINE_TUNE, "mode": mode, "seed": seed, **fine_tune}, "cache_features": False,
                     "ra": {"norm": norm, "eps": eps, "alpha": eps / 4, "steps": pgd_steps},
                     "aa": {"version": "standard", "attacks": None, "norm": norm, "eps": eps, "n": 0},
                     "train_n": train_n, "test_n": 10000},
        "checkpoint": {"path": f"{encoder}.ckpt", "sha256": encoder_digest(encoder)},
    }
    (folder / "metrics.json").write_text(json.dumps(record))
    return folder


def write_poc(folder: Path, seed: int, encoder: Optional[str] = None, n_total: int = 2000, prob_dec: float = 10.0,
              **settings) -> Path:
    """A poc folder whose poc.json is laid out as `solo-ncp poc` writes it (K 10, PGD-5 with step
    2/255, the paper's head) of `n_total` test images, 100 of them correct, with `settings` updated;
    of the stage-1 encoder of `seed` unless `encoder` names another."""
    folder.mkdir(parents=True)
    encoder = encoder or f"stage1-s{seed}"
    rows = {key: {"prob_dec": prob_dec, "attack_success": 20.0, "n": 100} for key in ("random_noise", "nbr")}
    record = {**rows, "n_correct": 100, "n_total": n_total, "settings": {
        "eps": 8 / 255, "alpha": 2 / 255, "steps": 5, "n": 2, "seed": seed, "k": 10, "dataset": "cifar10",
        "bn": None, "clustered_n": 50000, "checkpoint": {"path": f"{encoder}.ckpt", "sha256": encoder_digest(encoder)},
        "head": "paper", "fine_tune": {**FINE_TUNE, "seed": seed}, "cache_features": False, "train_n": 50000,
        "test_n": n_total, **settings}}
    (folder / "poc.json").write_text(json.dumps(record))
    return folder


def write_k(folder: Path, seed: int, k: int, encoder: Optional[str] = None) -> Path:
    """A select-k folder whose k.json chose `k` for `seed` on the encoder `encoder` (default: the
    stage-1 encoder of `seed`)."""
    folder.mkdir(parents=True)
    encoder = encoder or f"stage1-s{seed}"
    (folder / "k.json").write_text(json.dumps({
        "k": k, "scores": {str(k): 0.5, str(k + 5): 0.25}, "dataset": "cifar10", "seed": seed, "n": 500,
        "ckpt": f"{encoder}.ckpt", "ckpt_sha256": encoder_digest(encoder)}))
    return folder


def report_error(folders, capsys) -> str:
    """The one error line `solo-ncp report FOLDERS` prints (it must fail)."""
    assert main(["report", *map(str, folders)]) == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def report(folders, capsys) -> str:
    assert main(["report", *map(str, folders)]) == 0
    return capsys.readouterr().out


# --- one result given twice -----------------------------------------------------------------------

WRITERS = {"metrics.json": lambda folder: write_metrics(folder, 0, "ncp-s0"),
           "poc.json": lambda folder: write_poc(folder, 0),
           "k.json": lambda folder: write_k(folder, 0, 10)}


@pytest.mark.parametrize("result", WRITERS)
def test_a_folder_given_twice_is_refused_naming_it(result, tmp_path, capsys):
    """It counted as two seeds (Table 1: n=2 with std 0; Fig. 2: its row twice)."""
    folder = WRITERS[result](tmp_path / "run")
    assert report_error([folder, folder], capsys) == (
        f"error: {folder} is {folder} given again: pass each result folder once (its result would count as a "
        "second seed) (solo-ncp report)")


@pytest.mark.parametrize("result", WRITERS)
def test_a_copied_result_is_refused_naming_both_files(result, tmp_path, capsys):
    folder = WRITERS[result](tmp_path / "run")
    copy = Path(shutil.copytree(folder, tmp_path / "copy"))
    assert report_error([folder, copy], capsys) == (
        f"error: {folder / result} and {copy / result} are byte-identical: one result given twice would count "
        "as two seeds: pass one of them (a second seed is a run of its own, with another --seed) (solo-ncp report)")


# --- Table 1 ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("setting, change, values", [
    ("K", {"k": 20}, (10, 20)),
    ("PGD steps", {"steps": 10}, (5, 10)),
    ("step size alpha", {"alpha": 1 / 255}, (2 / 255, 1 / 255)),
    ("test images", {"n_total": 1000}, (2000, 1000)),
    ("training images (train_n)", {"train_n": 1000}, (50000, 1000)),
    ("fine_tune.lr", {"fine_tune": {**FINE_TUNE, "seed": 1, "lr": 10.0}}, (0.1, 10.0)),
])
def test_table_1_refuses_seeds_of_two_protocols_naming_the_setting(setting, change, values, tmp_path, capsys):
    """Each pair was averaged into one row (n=2) under a header that named neither value."""
    first = write_poc(tmp_path / "s0", 0)
    second = write_poc(tmp_path / "s1", 1, **change)
    assert report_error([first, second], capsys).startswith(
        f"error: Table 1 row CIFAR-10 8/255 δ_nbr toward the 2nd nearest cluster mixes {setting} {values[0]} ({first / 'poc.json'}) and "
        f"{values[1]} ({second / 'poc.json'}): a row averages seeds of one protocol")


def test_table_1_legend_states_k_steps_step_and_test_images(tmp_path, capsys):
    folders = [write_poc(tmp_path / f"s{seed}", seed, prob_dec=value) for seed, value in enumerate((10.0, 14.0))]
    table = report(folders, capsys)
    assert "| CIFAR-10 | 8/255 | 2nd nearest cluster | random noise | 12.00 ± 2.83 (n=2) |" in table  # sqrt(((10-12)^2 + (14-12)^2) / 1)
    assert ("Protocol per row: CIFAR-10 8/255 δ_nbr toward the 2nd nearest cluster: seeds 0, 1; K 10; δ_nbr by "
            "PGD-5 with step 2/255; 2000 test images per seed; stage-1 encoder (single BN); head: 25 epochs, SGD lr "
            "0.1, momentum 0.9, weight decay 0.0002, x0.1 at epochs 15, 20, batch 512, images padded 4 px, cropped, "
            "flipped.") in table


def test_table_1_legend_of_a_poc_that_records_no_branch_says_so(tmp_path, capsys):
    folder = write_poc(tmp_path / "s0", 0)
    record = json.loads((folder / "poc.json").read_text())
    del record["settings"]["bn"]
    (folder / "poc.json").write_text(json.dumps(record))
    assert "per seed; stage-1 encoder (BN branch not recorded); head:" in report([folder], capsys)


def test_table_1_legend_names_the_encoders_bn_branch_and_refuses_two(tmp_path, capsys):
    """A poc of a dual-BN stage-1 encoder measures one branch: the legend named none; seeds of two
    branches are refused naming both."""
    adv = [write_poc(tmp_path / f"adv{seed}", seed, bn="adv") for seed in (0, 1)]
    assert "2000 test images per seed; stage-1 encoder (adv BN branch); head: 25 epochs" in report(adv, capsys)
    clean = write_poc(tmp_path / "clean1", 1, encoder="other-s1", bn="clean")
    assert report_error([adv[0], clean], capsys).startswith(
        "error: Table 1 row CIFAR-10 8/255 δ_nbr toward the 2nd nearest cluster mixes encoder stage-1 encoder "
        f"(adv BN branch) ({adv[0] / 'poc.json'}) and stage-1 encoder (clean BN branch) ({clean / 'poc.json'})")


def test_each_seeds_own_silhouette_k_is_one_protocol_when_its_select_k_is_given(tmp_path, capsys):
    """As `reproduce` runs it: each seed's poc at the K of its own select-k (same encoder and seed)."""
    ks = {0: 10, 1: 20}
    selections = [write_k(tmp_path / f"k{seed}", seed, k) for seed, k in ks.items()]
    pocs = [write_poc(tmp_path / f"p{seed}", seed, k=k) for seed, k in ks.items()]
    assert ("CIFAR-10 8/255 δ_nbr toward the 2nd nearest cluster: seeds 0, 1; K 10, 20 (each seed's silhouette K); "
            "δ_nbr by PGD-5") in report(selections + pocs, capsys)
    assert report_error(pocs, capsys).startswith(  # without the select-k folders: two fixed Ks
        f"error: Table 1 row CIFAR-10 8/255 δ_nbr toward the 2nd nearest cluster mixes K 10 ({pocs[0] / 'poc.json'}) "
        f"and 20 ({pocs[1] / 'poc.json'})")
    other = write_poc(tmp_path / "p1-k30", 1, k=30)  # seed 1's select-k chose 20
    assert report_error([*selections, pocs[0], other], capsys).startswith(
        f"error: Table 1 row CIFAR-10 8/255 δ_nbr toward the 2nd nearest cluster mixes K each seed's silhouette K "
        f"({pocs[0] / 'poc.json'}) "
        f"and 30 ({other / 'poc.json'})")


def test_a_select_k_of_before_its_digest_was_recorded_matches_its_poc_by_checkpoint_path(tmp_path, capsys):
    """k.json files of before fec12b0 hold no ckpt_sha256 (the proxy run in README's Table 1): report
    refused to tabulate that run's seeds (K 15, 10, 15) as mixing Ks. Such a select-k is the poc's when
    both name the same checkpoint path; another path is another encoder."""
    def old_k(folder, seed, k, encoder):
        path = write_k(folder, seed, k, encoder) / "k.json"
        record = json.loads(path.read_text())
        del record["ckpt_sha256"]
        path.write_text(json.dumps(record))
        return folder

    ks = {0: 10, 1: 20}
    pocs = [write_poc(tmp_path / f"p{seed}", seed, encoder=f"./runs/s{seed}/last", k=k) for seed, k in ks.items()]
    selections = [old_k(tmp_path / f"k{seed}", seed, k, f"runs/s{seed}/last") for seed, k in ks.items()]
    assert "K 10, 20 (each seed's silhouette K)" in report(selections + pocs, capsys)
    elsewhere = old_k(tmp_path / "k1-elsewhere", 1, 20, "runs/other/last")
    assert report_error([selections[0], elsewhere, *pocs], capsys).startswith(
        f"error: Table 1 row CIFAR-10 8/255 δ_nbr toward the 2nd nearest cluster mixes K each seed's silhouette K "
        f"({pocs[0] / 'poc.json'}) "
        f"and 20 ({pocs[1] / 'poc.json'})")


def test_two_pocs_of_one_seed_are_refused_naming_both_folders(tmp_path, capsys):
    first, second = (write_poc(tmp_path / name, 0, prob_dec=value) for name, value in (("a", 10.0), ("b", 11.0)))
    assert report_error([first, second], capsys) == (
        f"error: duplicate poc: {first} and {second} are both seed 0 of Table 1 row CIFAR-10 8/255 δ_nbr toward the 2nd nearest cluster: "
        "pass one of them (solo-ncp report)")


# --- Tables 2 and 3 -------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, column", [("slf", "CIFAR-10"), ("alf", "ALF (CE)")])
@pytest.mark.parametrize("setting, change, values", [
    ("fine_tune.lr", {"lr": 0.05}, (0.1, 0.05)),
    ("fine_tune.epochs", {"epochs": 10}, (25, 10)),
    ("training images (train_n)", {"train_n": 5000}, (50000, 5000)),
])
def test_a_column_refuses_heads_trained_two_ways(mode, column, setting, change, values, tmp_path, capsys):
    """The seeds were averaged into one cell whatever their heads' training."""
    first = write_metrics(tmp_path / "s0", 0, "ncp-s0", mode=mode)
    second = write_metrics(tmp_path / "s1", 1, "ncp-s1", mode=mode, **change)
    assert report_error([first, second], capsys).startswith(
        f"error: column {column} mixes {setting} {values[0]} ({first / 'metrics.json'}) and {values[1]} "
        f"({second / 'metrics.json'}): a column averages runs of one protocol")


@pytest.mark.parametrize("cached", [True, False])
def test_a_column_mixes_crop_paddings_only_where_the_heads_trained_on_cached_features(tmp_path, capsys, cached):
    """digits evaluated before and after eval padded 8-px images 1 px (4 before): with
    --cache-features neither head saw a crop, so the column is one protocol; without, it is two."""
    folders = [write_metrics(tmp_path / f"s{seed}", seed, f"ncp-s{seed}", crop_padding=padding)
               for seed, padding in ((0, 4), (1, 1))]
    for folder in folders:
        record = json.loads((folder / "metrics.json").read_text())
        record["settings"]["cache_features"] = cached
        (folder / "metrics.json").write_text(json.dumps(record))
    if cached:
        assert "(n=2)" in report(folders, capsys)
    else:
        assert report_error(folders, capsys).startswith(
            f"error: column CIFAR-10 mixes fine_tune.crop_padding 4 ({folders[0] / 'metrics.json'}) and 1 "
            f"({folders[1] / 'metrics.json'})")


def test_the_legend_says_how_each_column_trained_its_head(tmp_path, capsys):
    """The whitened head's legend said "trained to convergence" whatever --epochs was, and no legend
    said how a head was trained: here SLF 2 epochs (milestones 15, 20 never reached) beside ALF 25
    epochs on PGD-7 examples."""
    slf = [write_metrics(tmp_path / f"slf{seed}", seed, f"ncp-s{seed}", epochs=2) for seed in (0, 1)]
    alf = [write_metrics(tmp_path / f"alf{seed}", seed, f"ncp-s{seed}", mode="alf", steps=7) for seed in (0, 1)]
    table = report(slf + alf, capsys)
    assert ("Head training: SLF: 2 epochs, SGD lr 0.1, momentum 0.9, weight decay 0.0002, constant lr, batch 512, "
            "images padded 4 px, cropped, flipped; "
            "ALF (CE): 25 epochs, SGD lr 0.1, momentum 0.9, weight decay 0.0002, x0.1 at epochs 15, 20, batch 512, "
            "images padded 4 px, cropped, flipped, on PGD-7, L-inf eps 8/255, step 2/255 training examples. ") in table
    table_2 = table[table.index("## Table 2"):table.index("## Table 3")]
    assert ("Head training: 2 epochs, SGD lr 0.1, momentum 0.9, weight decay 0.0002, constant lr, batch 512, "
            "images padded 4 px, cropped, flipped. ") in table_2
    assert "convergence" not in table


@pytest.mark.parametrize("change, text", [
    ({"crop_padding": 1}, "images padded 1 px, cropped, flipped"),
    ({"crop_padding": 0}, "images flipped (no padding)"),
    ({"crop_padding": None}, "image augmentation not recorded"),
    ({"cache_features": True}, "unaugmented images (cached features)"),
])
def test_the_legend_says_what_images_the_head_trained_on(tmp_path, capsys, change, text):
    """A head trained on 8-px digits pads 1 px (eval's head_crop_padding), one of cached features on
    unaugmented images: the legend says which, as metrics.json records it."""
    folder = write_metrics(tmp_path / "slf", 0, "ncp-s0", epochs=2)
    record = json.loads((folder / "metrics.json").read_text())
    if "cache_features" in change:
        record["settings"]["cache_features"] = change["cache_features"]
    else:
        record["settings"]["fine_tune"]["crop_padding"] = change["crop_padding"]
    (folder / "metrics.json").write_text(json.dumps(record))
    assert f"batch 512, {text}. " in report([folder], capsys)


def test_two_evaluations_of_one_checkpoint_are_not_two_seeds(tmp_path, capsys):
    first, second = (write_metrics(tmp_path / f"s{seed}", seed, "ncp-s0", sa=sa) for seed, sa in ((0, 80.0), (1, 82.0)))
    assert report_error([first, second], capsys) == (
        f"error: {first} (seed 0) and {second} (seed 1) evaluate one encoder (checkpoint sha256 "
        f"{encoder_digest('ncp-s0')[:12]}...) in row ncp, column CIFAR-10: a cell averages training seeds, and one "
        "checkpoint is one seed: pass the evaluations of encoders trained with different seeds (`solo-ncp "
        "reproduce --seeds 0,1,2`) (solo-ncp report)")
    third = write_metrics(tmp_path / "s1-own", 1, "ncp-s1", sa=82.0)
    cell = f"{statistics.mean([80.0, 82.0]):.2f} ± {statistics.stdev([80.0, 82.0]):.2f} (n=2)"
    assert f"| ncp | {cell} |" in report([first, third], capsys)


def test_runs_of_two_threat_models_are_refused_naming_both(tmp_path, capsys):
    """One seed in L2 (eps 0.5), one in L-inf (eps 4/255): it said "duplicate run ('ncp', ...)"."""
    l2 = write_metrics(tmp_path / "ev_l2", 0, "ncp-s0", norm="L2", eps=0.5)
    linf = write_metrics(tmp_path / "ev_linf", 0, "ncp-s0", eps=4 / 255)
    assert report_error([l2, linf], capsys).startswith(
        f"error: column CIFAR-10 mixes threat model L2 eps 0.5 ({l2 / 'metrics.json'}) and L-inf eps 4/255 "
        f"({linf / 'metrics.json'}): a column averages runs of one protocol")


def test_a_duplicate_run_is_a_sentence_naming_both_folders_and_the_fix(tmp_path, capsys):
    first, second = (write_metrics(tmp_path / name, 0, name) for name in ("a", "b"))
    assert report_error([first, second], capsys) == (
        f"error: duplicate run: {first} and {second} are both seed 0 of row ncp, column CIFAR-10: pass one of "
        "them, or give the other its own row (`solo-ncp eval --method LABEL`) (solo-ncp report)")


# --- how RA counts ---------------------------------------------------------------------------------------

COUNTING = ("Counting: a test image counts as robust only if it is classified correctly both clean and under "
            "attack (PGD-{steps} for RA, AutoAttack for AA)")


def test_the_counting_names_the_recorded_pgd_steps(tmp_path, capsys):
    table = report([write_metrics(tmp_path / "run", 0, "ncp-s0", pgd_steps=7)], capsys)
    assert COUNTING.format(steps=7) in table and "PGD-20" not in table


def test_eval_records_the_counting_of_its_pgd_steps(digits_small_simclr_ckpt, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "--ckpt", str(digits_small_simclr_ckpt), "--dataset", "digits", "--epochs", "1",
                 "--train-n", "64", "--test-n", "16", "--aa-n", "0", "--pgd-steps", "1", "--out", str(out)]) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert "(PGD-1 for RA, AutoAttack for AA)" in record["ra_counting"]
    capsys.readouterr()
    table = report([out], capsys)
    assert COUNTING.format(steps=1) in table and "PGD-20" not in table


# --- report --out ------------------------------------------------------------------------------------

def test_report_out_replaces_only_an_earlier_report(tmp_path, capsys):
    """--out overwrote whatever file it named: an eval's own metrics.json, a checkpoint, notes."""
    evaluation = write_metrics(tmp_path / "eval", 0, "ncp-s0")
    record = (evaluation / "metrics.json").read_bytes()

    def refused(out: Path) -> str:
        assert main(["report", str(evaluation), "--out", str(out)]) == 2
        return capsys.readouterr().err.strip().splitlines()[-1]

    assert refused(evaluation / "metrics.json") == (
        f"error: --out {evaluation} holds the result of `solo-ncp eval` (metrics.json): `solo-ncp report` does not "
        "write into another command's folder; choose another --out (solo-ncp report)")
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.ckpt").write_bytes(b"PK\x03\x04 weights")
    assert refused(run / "report.md") == (
        f"error: --out {run} is a training run's folder (last.ckpt): `solo-ncp report` does not write into it; "
        "choose another --out (solo-ncp report)")
    others = {"copy.ckpt": b"PK\x03\x04 weights", "notes.md": b"# my notes\n", "empty.md": b""}
    for name, content in others.items():
        (tmp_path / name).write_bytes(content)
        assert refused(tmp_path / name) == (
            f"error: --out {tmp_path / name} exists and is no report of `solo-ncp report` (one starts with a "
            "'## Table' or '## Fig.' heading): it replaces only an earlier report; choose another --out "
            "(solo-ncp report)")
    assert (evaluation / "metrics.json").read_bytes() == record
    assert {name: (tmp_path / name).read_bytes() for name in others} == others

    out = tmp_path / "tables" / "report.md"
    for _ in range(2):  # a new report, then one replacing it
        assert main(["report", str(evaluation), "--out", str(out)]) == 0
        assert out.read_text().startswith("## Table 2")
    assert sorted(path.name for path in out.parent.iterdir()) == ["report.md"]


def test_two_reports_in_one_folder_keep_their_own_figures(tmp_path, capsys):
    """The defect: each report drew fig2.png, and a second report (of inputs without a select-k
    result) removed the first's as "an earlier report's figure"; one drawing it replaced it."""
    folder = tmp_path / "tables"
    first = [write_metrics(tmp_path / "eval", 0, "ncp-s0"), write_k(tmp_path / "k", 0, 10)]
    second = [write_metrics(tmp_path / "eval-b", 1, "ncp-s1"), write_k(tmp_path / "k-b", 1, 15)]
    assert main(["report", *map(str, first), "--out", str(folder / "a.md")]) == 0
    figure = (folder / "a_fig2.png").read_bytes()
    for inputs in (second[:1], second):
        assert main(["report", *map(str, inputs), "--out", str(folder / "b.md")]) == 0
        assert (folder / "a_fig2.png").read_bytes() == figure
    assert sorted(path.name for path in folder.iterdir()) == ["a.md", "a_fig2.png", "b.md", "b_fig2.png"]
    assert "removed" not in capsys.readouterr().out


def test_an_out_ending_in_a_slash_is_refused_as_a_folder(tmp_path, capsys):
    """The defect: `--out newdir/` wrote the markdown as a file named newdir."""
    out = f"{tmp_path / 'newdir'}/"
    assert main(["report", str(write_metrics(tmp_path / "eval", 0, "ncp-s0")), "--out", out]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: --out {out} ends in '/', so it names a folder: pass the markdown file's path, e.g. "
        f"{tmp_path / 'newdir' / 'report.md'} (solo-ncp report)")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["eval"]


def test_an_interrupted_report_leaves_the_earlier_report_and_figures_as_they_were(tmp_path, capsys, monkeypatch):
    """The markdown was written before the figures were drawn: an interruption among them left the
    new markdown beside the earlier figures (or none), and said the earlier results were kept."""
    import signal

    from solo_ncp.commands import report as report_command
    from solo_ncp.interrupt import Interrupted

    out = tmp_path / "tables" / "report.md"
    inputs = [write_metrics(tmp_path / "eval", 0, "ncp-s0"), write_k(tmp_path / "k", 0, 10)]
    assert main(["report", *map(str, inputs), "--out", str(out)]) == 0
    earlier = {path.name: path.read_bytes() for path in out.parent.iterdir()}
    assert sorted(earlier) == ["report.md", "report_fig2.png"]
    capsys.readouterr()

    def interrupted(inputs, folder, stem):
        (folder / f"{stem}_fig2.png").write_bytes(b"half a figure")
        raise Interrupted(signal.SIGINT)

    monkeypatch.setattr(report_command, "draw_figures", interrupted)
    changed = [write_metrics(tmp_path / "eval-b", 1, "ncp-s1", sa=60.0), inputs[1]]
    assert main(["report", *map(str, changed), "--out", str(out)]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "interrupted: solo-ncp report stopped by SIGINT before writing its results (earlier ones in its output are "
        "kept)")
    assert {path.name: path.read_bytes() for path in out.parent.iterdir()} == earlier


def test_two_pocs_of_one_checkpoint_are_not_two_seeds(tmp_path, capsys):
    """poc --seed 0 and --seed 1 of one stage-1 checkpoint were averaged as two seeds of a Table 1 row
    (eval's evaluations of one checkpoint were refused)."""
    first, second = (write_poc(tmp_path / f"p{seed}", seed, encoder="stage1-s0") for seed in (0, 1))
    assert report_error([first, second], capsys) == (
        f"error: {first} (seed 0) and {second} (seed 1) evaluate one encoder (checkpoint sha256 "
        f"{encoder_digest('stage1-s0')[:12]}...) in Table 1 row CIFAR-10 8/255 δ_nbr toward the 2nd nearest cluster: a cell averages "
        "training seeds, and one checkpoint is one seed: pass the evaluations of encoders trained with different "
        "seeds (`solo-ncp reproduce --seeds 0,1,2`) (solo-ncp report)")


def test_an_export_and_its_checkpoint_are_one_encoder(tmp_path, capsys):
    """An eval of an export records the export's encoder.pt; of its checkpoint, the checkpoint: two
    digests, averaged as two seeds. The export's record names the checkpoint it came from."""
    first = write_metrics(tmp_path / "s0", 0, "ncp-s0")
    export = write_metrics(tmp_path / "s1-export", 1, "export-of-ncp-s0")
    record = json.loads((export / "metrics.json").read_text())
    record["checkpoint"]["exported_from"] = {"path": "ncp-s0.ckpt", "sha256": encoder_digest("ncp-s0")}
    (export / "metrics.json").write_text(json.dumps(record))
    assert report_error([first, export], capsys).startswith(
        f"error: {first} (seed 0) and {export} (seed 1) evaluate one encoder (checkpoint sha256 "
        f"{encoder_digest('ncp-s0')[:12]}...) in row ncp, column CIFAR-10")


@pytest.mark.parametrize("method", ["ncp", "deacl"])
def test_a_poc_of_a_stage_2_encoder_is_no_row_of_table_1(method, tmp_path, capsys):
    """poc ran on a stage-2 checkpoint, said "stage-1 encoder" and recorded nothing else, and report
    filed it under Table 1's stage-1 proof of concept."""
    stage1 = write_poc(tmp_path / "p0", 0, method="simclr")
    stage2 = write_poc(tmp_path / "p1", 1, method=method)
    assert report_error([stage1, stage2], capsys) == (
        f"error: {stage2} is a poc of a stage-2 ({method}) encoder, and Table 1 is the proof of concept on the "
        "stage-1 encoder (the paper's SimCLR): pass the poc of the stage-1 checkpoint its training started from "
        "(solo-ncp report)")
    assert "| CIFAR-10 | 8/255 | 2nd nearest cluster | random noise |" in report([stage1, write_poc(tmp_path / "plain", 2)], capsys)


def test_a_poc_whose_checkpoint_record_is_no_object_names_no_encoder(tmp_path, capsys):
    """The one-encoder check read `settings.checkpoint` as a mapping: a hand-edited poc.json holding
    text there was an AttributeError traceback (the K lookup already took it as unrecorded)."""
    pocs = []
    for seed in (0, 1):
        folder = write_poc(tmp_path / f"p{seed}", seed)
        record = json.loads((folder / "poc.json").read_text())
        record["settings"]["checkpoint"] = "stage1.ckpt"
        (folder / "poc.json").write_text(json.dumps(record))
        pocs.append(folder)
    assert "| CIFAR-10 | 8/255 | 2nd nearest cluster | random noise |" in report(pocs, capsys)


@pytest.mark.parametrize("method, cell", [("a|b", "a\\|b"), ("x\n## Table 9", "x ## Table 9"),
                                          ("tab\there\r", "tab here ")])
def test_a_row_label_adds_no_column_and_no_line(method, cell, tmp_path, capsys):
    """`eval --method 'a|b'` put five cells under four headers; a line break in it split the row
    and began a heading of its own."""
    table = report([write_metrics(tmp_path / "eval", 0, "ncp-s0", method=method)], capsys)
    lines = table.splitlines()
    rows = [line for line in lines if line.startswith("| ") and "(n=1)" in line]
    assert rows == [f"| {cell} | 80.00 (n=1) | 40.00 (n=1) | n/a |"]
    assert sum(line.startswith("## ") for line in lines) == 1
