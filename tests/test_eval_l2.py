"""`solo-ncp eval --norm L2`: PGD-20 RA against torchattacks' PGDL2 (transcribed) on the saved head,
AutoAttack in the L2 ball, the threat model in metrics.json, report, export and model_info.json;
stage 2's `method_kwargs.norm` reaching its PGD."""
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import solo_ncp.ncp.step
from solo_ncp.attacks import pgd
from solo_ncp.cli import main
from solo_ncp.threat_model import budget_warning, check_budget, check_l2_reach
from tests.conftest import host_independent, train_stage2
from tests.test_attacks_l2 import torchattacks_pgdl2
from tests.test_monitors import true_class_margin

pytestmark = pytest.mark.usefixtures("single_thread")

TEST_N = 32
SEED = 3
EVAL = ["--dataset", "digits", "--epochs", "1", "--train-n", "256", "--test-n", str(TEST_N),
        "--batch-size", "64", "--aa-n", "4", "--aa-version", "custom", "--aa-attacks", "apgd-ce",
        "--seed", str(SEED)]


@pytest.fixture(scope="module")
def l2_eval(digits_simclr_ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval_l2")
    assert main(["eval", "--ckpt", str(digits_simclr_ckpt), "--out", str(out), "--norm", "L2",
                 "--eps", "0.5", "--cache-features", *EVAL]) == 0
    return out


def first_test_images(n: int):
    from solo_ncp.data import build_dataset

    test = build_dataset("digits", "test")
    return torch.stack([test[i][0] for i in range(n)]), torch.tensor([test[i][1] for i in range(n)])


@host_independent
def test_metrics_json_records_the_l2_threat_model_and_its_step(l2_eval):
    record = json.loads((l2_eval / "metrics.json").read_text())
    assert record["threat_model"] == "L2"
    ra, aa = record["settings"]["ra"], record["settings"]["aa"]
    assert (ra["norm"], ra["eps"], ra["alpha"], ra["steps"]) == ("L2", 0.5, 0.125, 20)
    assert (aa["norm"], aa["eps"]) == ("L2", 0.5)


@host_independent
def test_ra_is_torchattacks_pgdl2_on_the_saved_head(l2_eval, digits_simclr_ckpt):
    """The one batch of 32 images (--batch-size 64) starts where eval's generator (seeded by --seed)
    puts it; from there torchattacks' PGDL2, transcribed, on the encoder and the saved head gives
    the same robust count (robust = right clean and attacked)."""
    from solo_ncp.models import load_encoder

    record = json.loads((l2_eval / "metrics.json").read_text())
    head = nn.Linear(512, 10)
    head.load_state_dict(torch.load(l2_eval / "head.pt", weights_only=True))
    classifier = nn.Sequential(load_encoder(digits_simclr_ckpt).model, head).eval()
    x, y = first_test_images(TEST_N)
    start = pgd(lambda z: z.flatten(1).sum(1), x, eps=0.5, alpha=0.125, steps=0, norm="L2",
                generator=torch.Generator().manual_seed(SEED)) - x
    x_adv = torchattacks_pgdl2(classifier, x, y, 0.5, 0.125, 20, start)
    with torch.no_grad():
        clean_logits, adv_logits = classifier(x), classifier(x_adv)
    clean = clean_logits.argmax(1) == y
    robust = clean & (adv_logits.argmax(1) == y)
    assert round(record["metrics"]["sa"] * TEST_N / 100) == clean.sum().item()
    assert round(record["metrics"]["ra"] * TEST_N / 100) == robust.sum().item()
    assert (true_class_margin(adv_logits, y) < true_class_margin(clean_logits, y))[clean].all()


@host_independent
def test_autoattack_ran_in_the_l2_ball(l2_eval):
    """AutoAttack's own log reports the largest perturbation it found in the norm it attacked in."""
    log = (l2_eval / "autoattack.log").read_text()
    lines = [line for line in log.splitlines() if "max L2 perturbation" in line]
    assert lines, log
    assert float(lines[0].split("max L2 perturbation:")[1].split(",")[0]) <= 0.5 + 1e-4


@host_independent
def test_report_names_the_l2_attacks_and_refuses_a_column_mixing_threat_models(l2_eval, digits_simclr_ckpt,
                                                                              tmp_path, capsys):
    assert main(["report", str(l2_eval)]) == 0
    table = capsys.readouterr().out
    assert "PGD-20, L2 eps 0.5, step 0.125" in table
    assert "AutoAttack custom (apgd-ce), L2 eps 0.5" in table
    linf = tmp_path / "linf"
    assert main(["eval", "--ckpt", str(digits_simclr_ckpt), "--out", str(linf), "--cache-features",
                 "--aa-n", "0", *EVAL[:-8], "--seed", str(SEED + 1)]) == 0
    capsys.readouterr()
    assert main(["report", str(l2_eval), str(linf)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error:") and "L2 eps 0.5" in error and "L-inf eps 8/255" in error


@host_independent
def test_export_and_model_info_carry_the_threat_model(l2_eval, digits_simclr_ckpt, tmp_path):
    out = tmp_path / "export"
    assert main(["export", "--ckpt", str(digits_simclr_ckpt), "--head", str(l2_eval), "--out", str(out)]) == 0
    info = json.loads((out / "export.json").read_text())
    assert info["classifier"]["threat_model"] == "L2"
    assert "model_info/digits/L2/" in info["classifier"]["robustbench"]
    assert json.loads((out / "model_info.json").read_text())["eps"] == "0.5"


@pytest.mark.parametrize("norm, eps, warned", [("L2", 8 / 255, True), ("L2", 0.5, False), ("L2", 0.1, False),
                                               ("Linf", 8 / 255, False), ("Linf", 0.5, True)])
def test_a_budget_of_the_other_norms_size_is_warned(norm, eps, warned):
    assert (budget_warning(norm, eps) is not None) == warned


@pytest.mark.parametrize("command, fix", [
    (["eval", "--dataset", "digits"], "pass --norm L2 for an L2 budget"),
    (["poc", "--dataset", "digits", "--k", "5"], "this command attacks in L-inf only (the paper's budget: 8/255)"),
])
def test_eval_and_poc_warn_of_an_l2_sized_linf_budget_before_any_work(command, fix, tmp_path, capsys):
    """The warning comes first (here the missing checkpoint stops the command after it), with the
    fix the command has: poc has no --norm."""
    assert main([*command, "--ckpt", str(tmp_path / "none.ckpt"), "--eps", "0.5", "--out", str(tmp_path / "o")]) == 2
    out = capsys.readouterr().out
    assert out.startswith("[solo-ncp] warning: L-inf eps 0.5 (128/255) is an L2-sized budget: it lets every "
                          f"pixel move by a quarter of its range or more; {fix}\n"), out


def test_stage2_warns_of_an_l2_sized_linf_eps_naming_its_norm_key(digits_simclr_ckpt, tmp_path, capsys):
    """K=5000 stops the command once the method is built, after the warning."""
    assert train_stage2(tmp_path, digits_simclr_ckpt, "name=big", "method_kwargs.eps=0.5", "method_kwargs.k=5000") == 2
    assert ("[solo-ncp] warning: method_kwargs.eps: L-inf eps 0.5 (128/255) is an L2-sized budget: it lets every "
            "pixel move by a quarter of its range or more; pass method_kwargs.norm=L2 for an L2 budget"
            ) in capsys.readouterr().out


@pytest.mark.parametrize("norm, eps, refused", [("Linf", 8, True), ("Linf", 1.0, True), ("Linf", 0.99, False),
                                                ("Linf", 8 / 255, False), ("L2", 8, False)])
def test_an_linf_size_spanning_the_whole_pixel_range_is_refused_with_its_255th(norm, eps, refused):
    if refused:
        with pytest.raises(ValueError, match=rf"--eps={eps:g} .* pass --eps={eps / 255:.6g}$"):
            check_budget(norm, eps, "--eps")
    else:
        check_budget(norm, eps, "--eps")


DIGITS_REACH = torch.dist(torch.zeros(3, 8, 8, dtype=torch.float64), torch.ones(3, 8, 8, dtype=torch.float64)).item()
"""The L2 distance between the two farthest 3x8x8 images in [0, 1] pixels: black and white."""


@pytest.mark.parametrize("norm, eps, refused", [("L2", DIGITS_REACH, True), ("L2", 128, True),
                                                ("L2", DIGITS_REACH * 0.999, False), ("Linf", 0.9, False)])
def test_an_l2_budget_reaching_every_image_is_refused_with_its_255th(norm, eps, refused):
    if refused:
        with pytest.raises(ValueError, match=rf"--eps={eps:g} .* \({DIGITS_REACH:.1f}\).* pass --eps={eps / 255:.6g}$"):
            check_l2_reach(norm, eps, (3, 8, 8), "--eps")
    else:
        check_l2_reach(norm, eps, (3, 8, 8), "--eps")


@pytest.mark.parametrize("command", ["eval", "train"])
def test_eval_and_stage2_refuse_an_l2_budget_reaching_every_image_before_any_work(command, digits_simclr_ckpt,
                                                                                  tmp_path, capsys):
    """`--eps 14` / `method_kwargs.eps=14` on digits (8x8, farthest images 13.9 apart in L2): meant
    as 14/255. Refused with no output folder or run folder written."""
    if command == "eval":
        code = main(["eval", "--ckpt", str(digits_simclr_ckpt), "--out", str(tmp_path / "o"), "--norm", "L2",
                     "--eps", "14", *EVAL])
        option = "--eps"
    else:
        code = train_stage2(tmp_path, digits_simclr_ckpt, "name=reach", "+method_kwargs.norm=L2", "method_kwargs.eps=14")
        option = "method_kwargs.eps"
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {option}=14 is an L2 budget at least the distance between the two farthest 3x8x8 images in "
        f"[0, 1] pixel units (13.9): its ball holds every image; for 14/255 pass {option}=0.054902 "
        f"(solo-ncp {command})")
    assert list(tmp_path.iterdir()) == []


def test_stage2_norm_reaches_its_pgd(digits_simclr_ckpt, tmp_path, monkeypatch, capsys):
    """`method_kwargs.norm=L2` (with an L2 eps and step) is what stage 2's PGD attacks in, and an
    L-inf-sized eps with it is warned about before training."""
    calls = []

    def recording_pgd(*args, **kwargs):
        calls.append((kwargs["norm"], kwargs["eps"], kwargs["alpha"]))
        return pgd(*args, **kwargs)

    monkeypatch.setattr(solo_ncp.ncp.step, "pgd", recording_pgd)
    assert train_stage2(tmp_path, digits_simclr_ckpt, "max_epochs=1", "limit_train_batches=1", "name=l2",
                        "+method_kwargs.norm=L2", "method_kwargs.eps=0.5", "method_kwargs.alpha=0.125") == 0
    assert calls and set(calls) == {("L2", 0.5, 0.125)}
    calls.clear()
    assert train_stage2(tmp_path, digits_simclr_ckpt, "max_epochs=1", "limit_train_batches=1", "name=tiny",
                        "+method_kwargs.norm=L2") == 0
    assert set(calls) == {("L2", 8 / 255, 2 / 255)}
    assert "warning: method_kwargs.eps: L2 eps 0.03137 is an L-inf-sized budget (8/255)" in capsys.readouterr().out
