"""Options a command would otherwise ignore in silence: `--bn` on a single-BN encoder (select-k,
poc, plot --embedding note it as eval does; k.json records the branch clustered), export's
`--dataset` against the dataset a solo-ncp checkpoint records (a note, as eval's on a checkpoint of
another dataset), and plot's embedding options without `--embedding` (refused).

Oracles: the note and error lines written out here; the branch and the normalisation read from the
checkpoint with torch.load; the dataset's registered statistics typed in from its source."""
import json
from pathlib import Path

import pytest
import torch

from solo_ncp.cli import main
from solo_ncp.commands.plot import CURVES_PNG
from tests.conftest import host_independent
from tests.test_eval_cli import plant_dual_bn

pytestmark = pytest.mark.usefixtures("single_thread")

CIFAR10_MEAN = [0.4914, 0.4822, 0.4465]
"""solo-learn's CIFAR-10 mean, the --dataset cifar10 export must not fold in."""


def single_bn_note(ckpt: Path, bn: str) -> str:
    """The start of eval's note on a --bn naming no branch of a single-BN encoder."""
    return f"[solo-ncp] note: {ckpt} is a single-BN encoder: --bn {bn} names no branch of it; "


def notes(out: str):
    return [line for line in out.splitlines() if line.startswith("[solo-ncp] note:")]


@pytest.fixture(scope="module")
def dual_bn_ckpt(digits_small_simclr_ckpt, tmp_path_factory) -> Path:
    return plant_dual_bn(digits_small_simclr_ckpt, tmp_path_factory.mktemp("dual") / "dual.ckpt")


SELECT_K = ["--dataset", "digits", "--k-min", "2", "--k-max", "4", "--k-step", "1", "--train-n", "100",
            "--device", "cpu"]


def select_k(ckpt: Path, out: Path, *extra: str) -> dict:
    assert main(["select-k", "--ckpt", str(ckpt), "--out", str(out), *SELECT_K, *extra]) == 0
    return json.loads((out / "k.json").read_text())


# ---------------------------------------------------------------- --bn of a single-BN encoder


@host_independent
@pytest.mark.parametrize("bn", ["adv", "clean"])
def test_select_k_notes_a_bn_naming_no_branch_and_records_none(bn, digits_small_simclr_ckpt, tmp_path, capsys):
    selection = select_k(digits_small_simclr_ckpt, tmp_path / "k", "--bn", bn)
    assert notes(capsys.readouterr().out) == [
        single_bn_note(digits_small_simclr_ckpt, bn) + "its features are those of its one BN (k.json: bn null)"]
    assert "bn" in selection and selection["bn"] is None


@host_independent
def test_select_k_without_bn_on_a_single_bn_encoder_says_nothing(digits_small_simclr_ckpt, tmp_path, capsys):
    assert select_k(digits_small_simclr_ckpt, tmp_path / "k")["bn"] is None
    assert notes(capsys.readouterr().out) == []


@host_independent
@pytest.mark.parametrize("bn, recorded", [(None, "adv"), ("clean", "clean"), ("adv", "adv")])
def test_select_k_records_the_branch_of_a_dual_bn_encoder_it_clustered(bn, recorded, dual_bn_ckpt, tmp_path,
                                                                      capsys):
    """A dual-BN encoder's branches cluster differently (the adversarial one's running statistics
    are shifted): k.json says which was swept, its default the adversarial one."""
    assert any(key.endswith(".adv.running_mean") for key in torch.load(dual_bn_ckpt, weights_only=True)["state_dict"])
    selection = select_k(dual_bn_ckpt, tmp_path / "k", *(["--bn", bn] if bn else []))
    assert selection["bn"] == recorded
    assert notes(capsys.readouterr().out) == []


@host_independent
def test_poc_notes_a_bn_naming_no_branch_of_a_single_bn_encoder(digits_small_simclr_ckpt, tmp_path, capsys):
    assert main(["poc", "--ckpt", str(digits_small_simclr_ckpt), "--bn", "adv", "--k", "3", "--dataset", "digits",
                 "--train-n", "100", "--test-n", "16", "--epochs", "1", "--cache-features", "--device", "cpu",
                 "--out", str(tmp_path / "poc")]) == 0
    assert notes(capsys.readouterr().out) == [
        single_bn_note(digits_small_simclr_ckpt, "adv") + "the PoC runs through its one BN (poc.json: settings.bn null)"]
    assert json.loads((tmp_path / "poc" / "poc.json").read_text())["settings"]["bn"] is None


def test_plot_embedding_notes_a_bn_naming_no_branch_of_a_single_bn_encoder(digits_small_simclr_ckpt, tmp_path,
                                                                           capsys):
    ckpt = digits_small_simclr_ckpt.parent / "last.ckpt"  # the path plot takes from the run folder
    assert main(["plot", str(digits_small_simclr_ckpt.parent), "--embedding", "--bn", "adv", "--k", "3",
                 "--test-n", "40", "--device", "cpu", "--out", str(tmp_path)]) == 0
    assert notes(capsys.readouterr().out) == [
        single_bn_note(ckpt, "adv") + "the embedding is of its one BN's features (the title names no branch)"]
    assert (tmp_path / "embedding.png").is_file()


# ---------------------------------------------------------------- export --dataset


def test_export_notes_a_dataset_other_than_the_recorded_one_and_exports_the_recorded(digits_small_simclr_ckpt,
                                                                                      tmp_path, capsys):
    recorded = torch.load(digits_small_simclr_ckpt, weights_only=True)["solo_ncp"]
    assert recorded["dataset"] == "digits" and list(recorded["normalization"]["mean"]) != CIFAR10_MEAN
    out = tmp_path / "export"
    assert main(["export", "--ckpt", str(digits_small_simclr_ckpt), "--dataset", "cifar10", "--out", str(out)]) == 0
    assert notes(capsys.readouterr().out) == [
        f"[solo-ncp] note: {digits_small_simclr_ckpt} was trained on digits and records its normalisation: "
        "--dataset cifar10 is not used (it is for a plain solo-learn checkpoint); export.json: dataset digits"]
    info = json.loads((out / "export.json").read_text())
    assert info["dataset"] == "digits"
    assert info["normalization"]["mean"] == pytest.approx(list(recorded["normalization"]["mean"]))
    # the recorded dataset itself: nothing to say
    assert main(["export", "--ckpt", str(digits_small_simclr_ckpt), "--dataset", "digits",
                 "--out", str(tmp_path / "same")]) == 0
    assert notes(capsys.readouterr().out) == []


# ---------------------------------------------------------------- plot without --embedding


def logged_run(folder: Path) -> Path:
    """A run folder holding only a Lightning CSV log (epoch 0's train_loss): enough for curves.png."""
    attempt = folder / "logs" / "version_0"
    attempt.mkdir(parents=True)
    (attempt / "metrics.csv").write_text("epoch,step,train_loss_epoch\n0,0,2.25\n")
    return folder


@host_independent
@pytest.mark.parametrize("options, named", [
    (["--ckpt", "CORRUPT"], "--ckpt"),
    (["--device", "cuda"], "--device"),
    (["--bn", "adv"], "--bn"),
    (["--dataset", "cifar10"], "--dataset"),
    (["--test-n", "5"], "--test-n"),
    (["--k", "3"], "--k"),
    (["--seed", "0"], "--seed"),  # its default is None (the run's seed): 0 is seen as given
    (["--batch-size", "7"], "--batch-size"),
    (["--trust-checkpoint"], "--trust-checkpoint"),
    (["--data-dir", "x"], "--data-dir"),
    (["--image-size", "8"], "--image-size"),
], ids=lambda value: value if isinstance(value, str) else None)
def test_plot_without_embedding_refuses_an_embedding_option(options, named, tmp_path, capsys):
    run = logged_run(tmp_path / "run")
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"not a checkpoint")
    options = [str(corrupt) if value == "CORRUPT" else value for value in options]
    assert main(["plot", str(run), *options]) == 2
    out, err = capsys.readouterr()
    assert (out + err).splitlines() == [
        f"error: {named}: only --embedding (embedding.png) reads it, and curves.png is drawn from the run's logs "
        "alone: add --embedding, or drop it (solo-ncp plot)"]
    assert not (run / CURVES_PNG).exists()


@host_independent
def test_plot_without_embedding_names_every_embedding_option_given(tmp_path, capsys):
    """All of them in one line; --out, and --device auto (the default: it changes nothing), are
    none: dropping the others draws the curves."""
    run, figures = logged_run(tmp_path / "run"), tmp_path / "figures"
    assert main(["plot", str(run), "--k", "3", "--device", "cuda", "--out", str(figures)]) == 2
    out, err = capsys.readouterr()
    assert (out + err).splitlines() == [
        "error: --k, --device: only --embedding (embedding.png) reads them, and curves.png is drawn from the "
        "run's logs alone: add --embedding, or drop them (solo-ncp plot)"]
    assert not figures.exists()
    assert main(["plot", str(run), "--device", "auto", "--out", str(figures)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"[solo-ncp] wrote {figures / CURVES_PNG}"
