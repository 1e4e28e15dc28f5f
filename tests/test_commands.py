"""`solo-ncp eval`, `report`, `poc` and `demo` end to end on digits, through the real stages."""
import hashlib
import json
import signal
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from solo_ncp.cli import main
from solo_ncp.eval.protocol import POC_ROWS
from tests.conftest import host_independent

QUICK = ["--dataset", "digits", "--epochs", "2", "--test-n", "64", "--cache-features"]


@pytest.fixture(scope="module")
def ncp_eval_dir(tmp_path_factory, digits_ncp_ckpt):
    out = tmp_path_factory.mktemp("eval")
    assert main(["eval", "--ckpt", str(digits_ncp_ckpt), "--out", str(out), "--aa-n", "8",
                 "--aa-version", "custom", "--aa-attacks", "apgd-ce",
                 "--bn", "clean", *QUICK]) == 0
    return out


def recomputed_metrics(eval_dir: Path, ckpt: Path, device: str = "cpu") -> dict:
    """SA, RA and AA of the head `solo-ncp eval` saved in eval_dir on the checkpoint's encoder
    (the branch metrics.json names), recomputed here on the first `test_n` digits test images: SA by
    a plain forward count, RA and AA by PGD and AutoAttack run directly on that classifier with the
    settings metrics.json records."""
    from solo_ncp.data import build_dataset
    from solo_ncp.eval import autoattack_accuracy, evaluate
    from solo_ncp.models import load_encoder

    record = json.loads((eval_dir / "metrics.json").read_text())
    settings, seed = record["settings"], record["seed"]
    weights = torch.load(eval_dir / f"head_{record['bn']}.pt", weights_only=True)
    head = nn.Linear(weights["weight"].shape[1], weights["weight"].shape[0])
    head.load_state_dict(weights)
    classifier = nn.Sequential(load_encoder(ckpt, bn=record["bn"]).model, head).to(device).eval()
    test = build_dataset("digits", "test")
    x = torch.stack([test[i][0] for i in range(settings["test_n"])]).to(device)
    y = torch.tensor([test[i][1] for i in range(settings["test_n"])]).to(device)
    with torch.no_grad():
        sa = 100.0 * (classifier(x).argmax(1) == y).sum().item() / len(y)
    ra, aa = settings["ra"], settings["aa"]
    attacked = evaluate(classifier, TensorDataset(x, y), eps=ra["eps"], alpha=ra["alpha"], steps=ra["steps"],
                        batch_size=ra["batch_size"], device=device, seed=seed, progress=False)
    auto = autoattack_accuracy(classifier, x, y, eps=aa["eps"], n=aa["n"], device=device, seed=seed,
                               version=aa["version"], attacks=aa["attacks"], batch_size=aa["batch_size"],
                               progress=False)
    return {"sa": sa, "ra": attacked["ra"], "aa": auto.accuracy}


@host_independent
def test_eval_writes_metrics_with_counts_settings_and_hash(ncp_eval_dir, digits_ncp_ckpt, capsys):
    record = json.loads((ncp_eval_dir / "metrics.json").read_text())
    metrics = record["metrics"]
    assert (record["method"], record["dataset"], record["mode"], record["bn"]) == (
        "ncp", "digits", "slf", "clean")
    assert (metrics["sa_n"], metrics["ra_n"], metrics["aa_n"]) == (64, 64, 8)
    recomputed = recomputed_metrics(ncp_eval_dir, digits_ncp_ckpt)
    assert metrics["sa"] == pytest.approx(recomputed["sa"])
    assert (metrics["ra"], metrics["aa"]) == (recomputed["ra"], recomputed["aa"])
    assert record["settings"]["ra"]["steps"] == 20 and record["settings"]["fine_tune"]["epochs"] == 2
    assert record["settings"]["fine_tune"]["head"] == "whitened" and record["settings"]["aa"]["n"] == 8
    assert [branch["bn"] for branch in record["branches"]] == ["clean"]
    assert (ncp_eval_dir / "head_clean.pt").is_file() and (ncp_eval_dir / "autoattack_clean.log").is_file()
    assert len(record["checkpoint"]["sha256"]) == 64


@host_independent
def test_eval_refuses_to_overwrite_and_checks_its_input(ncp_eval_dir, digits_ncp_ckpt, tmp_path, capsys):
    before = (ncp_eval_dir / "metrics.json").read_text()
    assert main(["eval", "--ckpt", str(digits_ncp_ckpt), "--out", str(ncp_eval_dir), *QUICK]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (ncp_eval_dir / "metrics.json").read_text() == before

    assert main(["eval", "--ckpt", str(digits_ncp_ckpt), "--out", str(tmp_path / "a"),
                 "--aa-n", "65", *QUICK]) == 2
    assert "--aa-n=65 is larger than the test set (64 images)" in capsys.readouterr().err
    assert main(["eval", "--ckpt", str(tmp_path / "none.ckpt"), "--out", str(tmp_path / "b"), *QUICK]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@host_independent
def test_report_aggregates_eval_runs(ncp_eval_dir, tmp_path, capsys):
    out = tmp_path / "table.md"
    assert main(["report", str(ncp_eval_dir), "--out", str(out)]) == 0
    record = json.loads((ncp_eval_dir / "metrics.json").read_text())["metrics"]
    assert f"| {record['sa']:.2f} (n=1) |" in out.read_text()
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert f"{tmp_path / 'nothing'} does not exist" in capsys.readouterr().err


@host_independent
def test_poc_writes_the_two_row_table(digits_simclr_ckpt, tmp_path):
    assert main(["poc", "--ckpt", str(digits_simclr_ckpt), "--k", "10", "--out", str(tmp_path),
                 *QUICK]) == 0
    result = json.loads((tmp_path / "poc.json").read_text())
    assert result["random_noise"]["n"] == result["nbr"]["n"] == result["n_correct"] > 0
    assert result["n_total"] == 64
    for row in POC_ROWS:  # a whole number of the correctly classified images flipped
        flipped = result[row]["attack_success"] * result["n_correct"] / 100
        assert flipped == pytest.approx(round(flipped), abs=1e-9)
    assert result["settings"]["k"] == 10
    assert "δ_nbr toward the 2nd nearest cluster" in (tmp_path / "poc.md").read_text()
    settings = result["settings"]  # the head's protocol beside the numbers: poc's default head, QUICK's
    assert (settings["head"], settings["fine_tune"]["head"], settings["fine_tune"]["epochs"]) == ("whitened",) * 2 + (2,)
    assert (settings["cache_features"], settings["test_n"], settings["train_n"]) == (True, 64, 1437)  # 1,797 digits less every 5th (360): test images
    assert (tmp_path / "poc.md").read_text().splitlines()[-1] == (  # its protocol under the table, from QUICK
        f"Measured: digits, stage-1 encoder (single BN), whitened head (SLF); K 10 spherical k-means on 1437 "
        f"training images; δ_nbr: PGD-5, L-inf eps 8/255, step 2/255, uniform random noise in the same ball; "
        f"over the {result['n_correct']} of 64 test images classified correctly.")


@host_independent
def test_poc_of_a_stage_2_checkpoint_names_and_records_its_method(digits_ncp_ckpt, tmp_path):
    """It said "stage-1 encoder" and recorded nothing that showed otherwise (report then filed it
    under Table 1)."""
    assert main(["poc", "--ckpt", str(digits_ncp_ckpt), "--k", "10", "--out", str(tmp_path), *QUICK]) == 0
    assert json.loads((tmp_path / "poc.json").read_text())["settings"]["method"] == "ncp"
    assert (tmp_path / "poc.md").read_text().splitlines()[-1].startswith(
        "Measured: digits, stage-2 encoder (ncp, adv BN branch), whitened head (SLF); ")


@host_independent
def test_eval_prints_how_its_numbers_were_measured_under_its_table(digits_simclr_ckpt, tmp_path, capsys):
    """The printed table gave SA/RA/AA without head or attack (metrics.json and report have them)."""
    assert main(["eval", "--ckpt", str(digits_simclr_ckpt), "--out", str(tmp_path), "--pgd-steps", "3",
                 "--aa-n", "0", "--head", "paper", *QUICK]) == 0
    out = capsys.readouterr().out.splitlines()
    measured = [line for line in out if line.startswith("[solo-ncp] measured:")]
    assert measured == ["[solo-ncp] measured: SLF, paper head; RA PGD-3, L-inf eps 8/255, step 2/255; AA not run"]
    assert out[out.index(measured[0]) - 1].startswith("| simclr |")  # right under the table


def test_select_k_writes_curve_and_k_json_that_train_reads(digits_simclr_ckpt, tmp_path, capsys):
    from tests.conftest import train_stage2

    out = tmp_path / "k"
    assert main(["select-k", "--ckpt", str(digits_simclr_ckpt), "--dataset", "digits",
                 "--k-min", "5", "--k-max", "25", "--k-step", "5", "--out", str(out)]) == 0
    selection = json.loads((out / "k.json").read_text())
    assert set(selection["scores"]) == {"5", "10", "15", "20", "25"}
    assert selection["scores"][str(selection["k"])] == max(selection["scores"].values())
    assert (out / "silhouette.csv").read_text().splitlines()[0] == "k,silhouette"
    assert (out / "silhouette.png").read_bytes()[:4] == b"\x89PNG"
    assert f"best K = {selection['k']}" in capsys.readouterr().out
    assert selection["ckpt_sha256"] == hashlib.sha256(digits_simclr_ckpt.read_bytes()).hexdigest()

    assert train_stage2(tmp_path, digits_simclr_ckpt, "max_epochs=1", "name=kf",
                        "method_kwargs.k=null", f"method_kwargs.k_file={out / 'k.json'}") == 0
    meta = torch.load(tmp_path / "kf" / "last.ckpt", weights_only=True)["solo_ncp"]
    assert meta["k"] == selection["k"]
    assert "chose K" not in capsys.readouterr().out  # its own teacher's K: no note


def test_poc_refuses_more_clusters_than_images_before_training_its_head(digits_simclr_ckpt, tmp_path, capsys,
                                                                        monkeypatch):
    """It trained the head and encoded the images first, then failed in k-means naming neither option."""
    import solo_ncp.commands.poc as poc

    monkeypatch.setattr(poc, "train_head", lambda *args, **kwargs: pytest.fail("the head was trained"))
    assert main(["poc", "--ckpt", str(digits_simclr_ckpt), "--k", "500", "--train-n", "200",
                 "--out", str(tmp_path / "p"), *QUICK]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --k 500 is more clusters than the 200 training images clustered: pass --k <= 200, or more "
        "images (--train-n) (solo-ncp poc)")


@host_independent
@pytest.mark.parametrize("k_range, message", [
    (["--k-min", "1"], "--k-min"),
    (["--k-min", "10", "--k-max", "5000"], "the sweep reaches K=5000, and the silhouette needs K <= N-1 = 1436 for "
                                           "the 1437 training images: pass --k-max <= 1436, or more images (--train-n)"),
    # K = N: every image its own cluster, which scikit-learn's silhouette_score refuses (2 <= labels <= N-1)
    (["--train-n", "200", "--k-min", "195", "--k-max", "200"], "the sweep reaches K=200, and the silhouette needs "
                                                               "K <= N-1 = 199 for the 200 training images"),
    (["--train-n", "200", "--k-min", "195", "--k-max", "203"], "reaches K=200,"),  # step 5: 203 is not swept
    (["--backend", "kmcuda", "--device", "cpu"], "--backend kmcuda clusters on a CUDA GPU, and --device is cpu: pass "
                                                 "--device cuda, or --backend torch"),
])
def test_select_k_bad_range(digits_simclr_ckpt, tmp_path, capsys, k_range, message):
    assert main(["select-k", "--ckpt", str(digits_simclr_ckpt), "--dataset", "digits",
                 "--out", str(tmp_path), *k_range]) == 2
    assert message in capsys.readouterr().err


def test_demo_falls_back_to_digits_and_writes_a_summary_of_existing_artefacts(tmp_path, monkeypatch,
                                                                              capsys):
    """`solo-ncp demo` end to end at a tiny scale, with Fashion-MNIST made unavailable; AutoAttack
    as APGD-CE alone (the standard version's four attacks: tests/test_eval_robust.py)."""
    import re

    from solo_ncp import data
    from solo_ncp.commands import demo

    real_build = data.build_dataset

    def no_fashion_mnist(name, split, **kwargs):
        if name == "fashionmnist":
            raise data.DatasetNotFoundError("no Fashion-MNIST here")
        return real_build(name, split, **kwargs)

    monkeypatch.setattr("solo_ncp.data.build_dataset", no_fashion_mnist)
    monkeypatch.setitem(demo.SCALES, "digits",
                        demo.DemoScale("digits", 8, 512, 1, 1, (5, 10, 5), 64, 4, 2, ("apgd-ce",)))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "using scikit-learn's digits instead" in printed
    summary = (out / "summary.md").read_text()
    assert summary in printed and "# solo-ncp demo on digits" in summary
    assert re.search(r"K = (5|10) chosen by silhouette over K = 5\.\.10 step 5", summary)
    assert "AA (AutoAttack custom: apgd-ce) on the first 4; the whitened head" in summary
    branches = json.loads((out / "eval-slf" / "metrics.json").read_text())["branches"]
    assert [b["bn"] for b in branches] == ["adv", "clean"]
    for b in branches:
        m = b["metrics"]
        assert (f"| ncp ({b['bn']} BN), SLF | {m['sa']:.2f} | {m['ra']:.2f} | {m['aa']:.2f} | "
                f"{b['history'][-1]['loss']:.3f} / {b['history'][-1]['acc']:.1f} |") in summary
    paths = re.findall(r"(/\S+\.(?:ckpt|png|csv|json))", summary)
    assert len(paths) == 6 and all(Path(p).is_file() for p in paths), paths
    assert main(["demo", "--out", str(out)]) == 2  # never over an earlier run


def test_a_failed_demo_stage_says_to_run_the_demo_again_elsewhere(tmp_path, monkeypatch, capsys):
    """The stage's own error line (a full disk's, say) may name its command's `--resume`, which runs
    no demo."""
    from solo_ncp.launch import pipeline

    def stage(title, argv):
        if argv[0] == "train":
            raise pipeline.StageFailed(f"stage '{title}' failed (its error is printed above)")
        return 0.0

    monkeypatch.setattr(pipeline, "run_stage", stage)
    out = tmp_path / "demo"
    assert main(["demo", "--dataset", "digits", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: stage 'stage 2: NCP adversarial training' failed (its error is printed above): a demo does not "
        f"resume; once that is mended, run it again with another --out ({out} keeps what its finished stages wrote) "
        "(solo-ncp demo)")


@pytest.mark.parametrize("kind", ["under a file", "a link to nothing"])
def test_a_demo_out_it_cannot_use_is_one_line_before_any_stage(kind, tmp_path, monkeypatch, capsys):
    """Stage 1 failed on it (naming checkpoint.dir, no demo option), then the demo's own line said
    the stage failed and the folder kept what finished stages wrote. (`--out ''`, which ran a demo in
    runs/demo-<time>: test_cli.test_an_empty_path_is_refused_as_its_options_usage_error.)"""
    from solo_ncp.launch import pipeline

    started = []
    monkeypatch.setattr(pipeline, "run_stage", lambda title, argv: started.append(title) or 0.0)
    (tmp_path / "afile").write_text("")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    out = {"under a file": tmp_path / "afile" / "sub", "a link to nothing": tmp_path / "dangling"}[kind]
    assert main(["demo", "--dataset", "digits", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == {
        "under a file": f"error: cannot write to {out}: {tmp_path / 'afile'} is a file, not a folder: choose another "
                        "--out (solo-ncp demo)",
        "a link to nothing": f"error: cannot write to {out}: {out} is a link to nothing (its target is missing, or a "
                             "loop of links): choose another --out (solo-ncp demo)"}[kind]
    assert started == []


def test_an_interrupted_demo_says_to_run_it_again_elsewhere(tmp_path, monkeypatch, capsys):
    """Its stage's own line named that stage's command (`solo-ncp pretrain ... --resume`), which runs
    no demo, and the demo refuses its existing --out."""
    from solo_ncp.interrupt import Interrupted
    from solo_ncp.launch import pipeline

    def stage(title, argv):
        if argv[0] == "select-k":
            raise Interrupted(signal.SIGTERM, "in its sweep", "start again with")
        return 0.0

    monkeypatch.setattr(pipeline, "run_stage", stage)
    out = tmp_path / "demo"
    assert main(["demo", "--dataset", "digits", "--out", str(out)]) == 143
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"interrupted: solo-ncp demo stopped by SIGTERM: a demo does not resume; run it again with another --out "
        f"({out} keeps what its finished stages wrote)")
