"""`solo-ncp eval` / `report`: both BN branches, AFF, files written beside metrics.json, bad input.
What is checked does not depend on the backbone: the encoders are the small one's
(`digits_small_simclr_ckpt`)."""
import json
import re
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from solo_ncp.cli import main
from tests.conftest import host_independent

pytestmark = [pytest.mark.usefixtures("single_thread"), host_independent]

TINY = ["--dataset", "digits", "--epochs", "2", "--train-n", "256", "--test-n", "64", "--batch-size", "128"]
AA_TINY = ["--aa-n", "2", "--aa-version", "custom", "--aa-attacks", "apgd-ce"]


def plant_dual_bn(stage1: Path, path: Path) -> Path:
    """`stage1` (a single-BN SimCLR checkpoint) made dual-BN, saved at `path`: the clean branch keeps
    every BatchNorm's running statistics, the adversarial branch gets mean + 0.5 and variance x 4."""
    from solo_ncp.models.backbones import BackboneSpec, build_backbone
    from solo_ncp.models.dual_bn import convert_dual_bn

    ckpt = torch.load(stage1, map_location="cpu", weights_only=True)
    prefix = next(p for p in ("encoder.", "backbone.") if any(k.startswith(p) for k in ckpt["state_dict"]))
    single = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    dual_keys = convert_dual_bn(build_backbone(BackboneSpec(**ckpt["solo_ncp"]["backbone"]))).state_dict()
    state = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith(prefix)}
    for key in dual_keys:
        value = single[key.replace(".clean.", ".").replace(".adv.", ".")].clone()
        if ".adv.running_mean" in key:
            value += 0.5
        elif ".adv.running_var" in key:
            value *= 4.0
        state[prefix + key] = value
    ckpt["state_dict"] = state
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def planted_dual_bn_ckpt(digits_small_simclr_ckpt, tmp_path_factory) -> Path:
    """`plant_dual_bn` of the small backbone's digits SimCLR checkpoint."""
    return plant_dual_bn(digits_small_simclr_ckpt, tmp_path_factory.mktemp("planted") / "dual.ckpt")


@pytest.fixture(scope="module")
def both_dir(planted_dual_bn_ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("both")
    assert main(["eval", "--ckpt", str(planted_dual_bn_ckpt), "--out", str(out), "--cache-features",
                 *TINY, *AA_TINY]) == 0
    return out


def direct_accuracy(ckpt: Path, bn: str, head_file: Path, n: int = 64) -> float:
    """SA by hand: the branch's encoder from the checkpoint, the saved Linear, the first n test images."""
    from solo_ncp.data import build_dataset
    from solo_ncp.models import load_encoder

    encoder = load_encoder(ckpt, bn=bn).model
    state = torch.load(head_file, weights_only=True)
    head = nn.Linear(*state["weight"].shape[::-1])
    head.load_state_dict(state)
    test = build_dataset("digits", "test")
    x = torch.stack([test[i][0] for i in range(n)])
    y = torch.tensor([test[i][1] for i in range(n)])
    with torch.no_grad():
        return 100.0 * (head(encoder(x)).argmax(1) == y).float().mean().item()


def test_bn_both_evaluates_each_branch_through_its_own_bn(both_dir, planted_dual_bn_ckpt):
    record = json.loads((both_dir / "metrics.json").read_text())
    assert [branch["bn"] for branch in record["branches"]] == ["adv", "clean"]
    assert (record["bn"], record["metrics"]) == ("adv", record["branches"][0]["metrics"])
    for branch in record["branches"]:
        files = branch["files"]
        assert files == {"head": f"head_{branch['bn']}.pt", "autoattack_log": f"autoattack_{branch['bn']}.log"}
        assert "robust accuracy" in (both_dir / files["autoattack_log"]).read_text()
        assert branch["metrics"]["sa"] == pytest.approx(direct_accuracy(planted_dual_bn_ckpt, branch["bn"],
                                                                        both_dir / files["head"]))
        assert branch["metrics"]["aa_n"] == 2 and len(branch["history"]) == 2
        assert branch["metrics"]["train_loss"] == branch["history"][-1]["loss"]
    # both heads train from one seed: different losses mean they saw different features (SA on 64
    # images can tie: both branches scored 53/64 on a machine with AVX-512)
    assert record["branches"][0]["metrics"]["train_loss"] != record["branches"][1]["metrics"]["train_loss"]
    assert record["head"] == "whitened" and record["loss"] == "ce" and record["beta"] is None
    assert "correctly both clean and under attack" in record["ra_counting"]


def test_report_shows_both_branches_and_the_autoattack_subset(both_dir, tmp_path, capsys):
    assert main(["report", str(both_dir)]) == 0
    table = capsys.readouterr().out
    record = json.loads((both_dir / "metrics.json").read_text())
    for branch in record["branches"]:
        mark = " †" if branch["bn"] == "clean" else ""
        row = next(line for line in table.splitlines() if line.startswith(f"| simclr ({branch['bn']} BN){mark} |"))
        assert f"| {branch['metrics']['sa']:.2f} (n=1) |" in row
    assert "digits AA (%) [n=2]" in table and "± 0.00" not in table

    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "metrics.json").write_text(json.dumps({
        "method": "old", "dataset": "digits", "mode": "slf", "seed": 0, "bn": "adv",
        "metrics": {"sa": 50.0, "ra": 20.0, "aa": None, "sa_n": 64, "ra_n": 64, "aa_n": 0}}))
    assert main(["report", str(legacy)]) == 0
    legacy_table = capsys.readouterr().out
    assert "| old (adv BN) | 50.00 (n=1) | 20.00 (n=1) | n/a |" in legacy_table
    assert "## Table 2: standard" in legacy_table and "RA: not recorded." in legacy_table


@pytest.mark.parametrize("bn", ["adv", "clean"])
def test_a_branch_named_for_a_single_bn_encoder_is_noted(bn, digits_small_simclr_ckpt, tmp_path, capsys):
    """export refuses --bn on a single-BN encoder; eval evaluates it once, as with --bn both, and says so."""
    assert main(["eval", "--ckpt", str(digits_small_simclr_ckpt), "--bn", bn, "--out", str(tmp_path),
                 "--cache-features", "--aa-n", "0", *TINY]) == 0
    assert (f"[solo-ncp] note: {digits_small_simclr_ckpt} is a single-BN encoder: --bn {bn} names no branch of "
            "it; it is evaluated once (metrics.json: bn null)") in capsys.readouterr().out
    assert json.loads((tmp_path / "metrics.json").read_text())["bn"] is None


def test_bn_both_on_a_single_bn_encoder_evaluates_once(digits_small_simclr_ckpt, tmp_path, capsys):
    assert main(["eval", "--ckpt", str(digits_small_simclr_ckpt), "--out", str(tmp_path), "--cache-features",
                 "--aa-n", "0", "--head", "paper", *TINY]) == 0
    printed = capsys.readouterr().out
    assert printed.count("single-BN encoder: --bn both evaluates it once") == 1
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert [branch["bn"] for branch in record["branches"]] == [None] and record["head"] == "paper"
    assert record["branches"][0]["files"] == {"head": "head.pt"} and (tmp_path / "head.pt").is_file()
    assert record["metrics"]["aa"] is None and record["metrics"]["aa_n"] == 0


def test_eval_over_an_earlier_eval_leaves_its_own_files_and_the_users(both_dir, digits_small_simclr_ckpt,
                                                                    tmp_path):
    """A single-BN eval --overwrite into the folder of a dual-BN eval with AutoAttack: the earlier
    branch heads and logs go, a file of the user's stays."""
    out = tmp_path / "eval"
    shutil.copytree(both_dir, out)
    (out / "notes.txt").write_text("my notes\n")
    earlier = {"metrics.json", "head_adv.pt", "head_clean.pt", "autoattack_adv.log", "autoattack_clean.log"}
    assert earlier <= {p.name for p in out.iterdir()}
    assert main(["eval", "--ckpt", str(digits_small_simclr_ckpt), "--out", str(out), "--cache-features",
                 "--aa-n", "0", "--overwrite", *TINY]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["head.pt", "metrics.json", "notes.txt"]
    assert (out / "notes.txt").read_text() == "my notes\n"
    assert json.loads((out / "metrics.json").read_text())["branches"][0]["files"] == {"head": "head.pt"}


def files_in(folder: Path) -> dict:
    """{name: bytes} of the files directly in `folder`."""
    return {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}


def test_eval_overwrite_stopped_midway_keeps_the_earlier_result(both_dir, digits_small_simclr_ckpt, tmp_path,
                                                               monkeypatch, capsys):
    """SIGTERM after the new head was saved, in its attacks: the earlier metrics.json, heads and
    logs stay byte for byte (before, --overwrite removed them first and left the folder empty);
    the new head, staged in .unfinished, goes with it."""
    from solo_ncp.interrupt import Interrupted

    out = tmp_path / "eval"
    shutil.copytree(both_dir, out)
    earlier = files_in(out)
    argv = ["eval", "--ckpt", str(digits_small_simclr_ckpt), "--out", str(out), "--cache-features", "--aa-n", "0",
            "--overwrite", *TINY]

    def stopped(*args, **kwargs):
        raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr("solo_ncp.eval.evaluate", stopped)
    assert main(argv) == 143
    assert files_in(out) == earlier
    assert not (out / ".unfinished").exists()
    monkeypatch.undo()
    assert main(argv) == 0
    assert sorted(path.name for path in out.iterdir()) == ["head.pt", "metrics.json"]


def test_aff_saves_its_fine_tuned_encoder(digits_small_simclr_ckpt, tmp_path):
    from solo_ncp.models import load_encoder

    assert main(["eval", "--ckpt", str(digits_small_simclr_ckpt), "--out", str(tmp_path), "--mode", "aff",
                 "--dataset", "digits", "--epochs", "1", "--train-n", "64", "--test-n", "16", "--batch-size", "32",
                 "--aa-n", "0"]) == 0
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert (record["mode"], record["loss"], record["beta"]) == ("aff", "trades", 6.0)
    assert record["settings"]["fine_tune"]["lr"] == 0.01
    assert record["branches"][0]["files"] == {"head": "head.pt", "encoder": "encoder.pt"}
    tuned = torch.load(tmp_path / "encoder.pt", weights_only=True)
    original = load_encoder(digits_small_simclr_ckpt).model.state_dict()
    assert set(tuned) == set(original)
    assert not torch.equal(tuned["backbone.conv1.weight"], original["backbone.conv1.weight"])


@pytest.mark.parametrize("options, message", [
    (["--beta", "3"], "--beta needs --mode alf or aff (with --loss trades)"),
    (["--mode", "alf", "--beta", "3"], "--beta is the TRADES weight: pass --loss trades"),
    (["--mode", "aff", "--loss", "ce", "--beta", "3"], "--beta is the TRADES weight: pass --loss trades"),
    (["--loss", "trades"], "--loss trades needs --mode alf or aff: SLF trains on clean images only"),
    (["--mode", "aff", "--cache-features"], "--cache-features is SLF only"),
    (["--mode", "alf", "--cache-features"], "--cache-features is SLF only"),
    (["--eps", "-0.1"], "--eps and --alpha"),
    (["--alpha", "-0.01"], "--eps and --alpha"),
    (["--pgd-steps", "0"], "--pgd-steps must be >= 1"),
    (["--pgd-batch-size", "0"], "--pgd-batch-size must be >= 1 (or auto), got 0"),
    (["--aa-batch-size", "-1"], "--aa-batch-size must be >= 1 (or auto), got -1"),
    (["--aa-n", "-1"], "--aa-n must be >= 0"),
    (["--test-n", "64", "--aa-n", "65"], "--aa-n=65 is larger than the test set (64 images)"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--crop-padding", "-1"], "--crop-padding must be >= 0 (0: flip only), got -1"),
    (["--crop-padding", "2", "--cache-features"], "--crop-padding and --cache-features exclude each other"),
    (["--aa-version", "custom"], "--aa-attacks"),
    (["--aa-attacks", "square"], "--aa-attacks"),
])
def test_bad_options_are_refused_before_any_loading(tmp_path, capsys, options, message):
    out = tmp_path / "run"
    argv = ["eval", "--ckpt", str(tmp_path / "missing.ckpt"), "--dataset", "digits", "--out", str(out), *options]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "does not exist" not in err  # refused before the checkpoint is read
    assert not out.exists()


def test_an_unwritable_out_folder_is_refused_before_any_loading(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    argv = ["eval", "--ckpt", str(tmp_path / "missing.ckpt"), "--dataset", "digits"]
    assert main(argv + ["--out", str(blocker / "run")]) == 2
    assert f"cannot write to {blocker / 'run'}" in capsys.readouterr().err

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", denied)  # the probe file (tests run as root: chmod is no test)
    out = tmp_path / "new" / "run"
    assert main(argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"cannot write to {out}: Permission denied" in err and "--out" in err and "does not exist" not in err
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("options, padding", [([], 1), (["--crop-padding", "0"], 0), (["--crop-padding", "3"], 3)])
def test_the_head_trains_on_images_padded_for_their_size(digits_small_simclr_ckpt, tmp_path, monkeypatch, options,
                                                         padding):
    """digits are 8 px: by default their head's crops pad 1 px (4 px of 32), not the 4 px that
    shift a digit by half its width; --crop-padding sets it. The padding the crops were made with
    is the one metrics.json records."""
    from solo_ncp.eval import linear

    used = []
    crop = linear.pad_crop_flip
    monkeypatch.setattr(linear, "pad_crop_flip", lambda x, pad, rng: used.append(pad) or crop(x, pad, rng))
    assert main(["eval", "--ckpt", str(digits_small_simclr_ckpt), "--out", str(tmp_path), "--dataset", "digits",
                 "--epochs", "1", "--train-n", "64", "--test-n", "8", "--batch-size", "32", "--aa-n", "0",
                 "--pgd-steps", "1", *options]) == 0
    assert used == [padding] * 2
    assert json.loads((tmp_path / "metrics.json").read_text())["settings"]["fine_tune"]["crop_padding"] == padding


def test_readme_lists_deacls_evaluation_values_beside_ours():
    from solo_ncp.eval.protocol import DEACL_VALUES
    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    for setting, (ours, deacl) in DEACL_VALUES.items():
        assert f"| {setting} | {ours} | {deacl} |" in readme, setting


def test_attack_batch_sizes_fill_a_gpu_and_keep_the_head_batch_elsewhere():
    from solo_ncp.eval.batch_sizes import CUDA_AA_BATCH, CUDA_PGD_BATCH, attack_batch_size

    assert CUDA_PGD_BATCH >= 1024 and CUDA_AA_BATCH >= 512
    assert attack_batch_size("auto", torch.device("cuda"), CUDA_PGD_BATCH, 128) == CUDA_PGD_BATCH
    assert attack_batch_size("auto", torch.device("cuda:1"), CUDA_AA_BATCH, 128) == CUDA_AA_BATCH
    assert attack_batch_size("auto", torch.device("cpu"), CUDA_PGD_BATCH, 128) == 128
    assert attack_batch_size(7, torch.device("cuda"), CUDA_PGD_BATCH, 128) == 7


def test_a_batch_size_that_is_no_integer_is_an_argparse_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--ckpt", "x.ckpt", "--dataset", "digits", "--out", str(tmp_path), "--aa-batch-size", "big"])
    assert exit_info.value.code == 2
    assert "--aa-batch-size: expected auto or an integer batch size, got 'big'" in capsys.readouterr().err


AA_FIVE = ["--aa-n", "5", "--aa-version", "custom", "--aa-attacks", "apgd-ce"]


@pytest.fixture(scope="module")
def batch_runs(digits_small_simclr_ckpt, tmp_path_factory):
    """Two tiny evaluations of one encoder, the second with small attack batches: for each,
    (metrics.json record, printed lines, wall seconds of the call, AutoAttack log lines)."""
    import contextlib
    import io

    runs = {}
    for name, options in (("default", []), ("small", ["--pgd-batch-size", "7", "--aa-batch-size", "2"])):
        out = tmp_path_factory.mktemp(name)
        printed = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(printed):
            assert main(["eval", "--ckpt", str(digits_small_simclr_ckpt), "--out", str(out), "--cache-features",
                         *TINY, *AA_FIVE, *options]) == 0
        wall = time.perf_counter() - start
        runs[name] = (json.loads((out / "metrics.json").read_text()), printed.getvalue().splitlines(), wall,
                      (out / "autoattack.log").read_text().splitlines())
    return runs


def test_attack_batch_sizes_change_no_result_and_are_recorded(batch_runs):
    default, small = batch_runs["default"][0], batch_runs["small"][0]
    assert default["metrics"]["ra_n"] == 64 and default["metrics"]["aa_n"] == 5
    for key in ("sa", "ra", "aa"):
        assert small["metrics"][key] == default["metrics"][key], key
    assert (default["settings"]["ra"]["batch_size"], default["settings"]["aa"]["batch_size"]) == (128, 128)
    assert (small["settings"]["ra"]["batch_size"], small["settings"]["aa"]["batch_size"]) == (7, 2)

    def batches(log):  # AutoAttack logs "apgd-ce - <batch>/<batches> - ..." per batch it attacks
        return {int(m.group(1)) for line in log for m in [re.search(r"apgd-ce - \d+/(\d+) -", line)] if m}

    initial = next(float(m.group(1)) for line in batch_runs["small"][3]
                   for m in [re.match(r"initial accuracy: ([\d.]+)%", line)] if m)
    correct = round(initial * 5 / 100)  # AutoAttack attacks only these, in batches of --aa-batch-size
    assert correct >= 3
    assert batches(batch_runs["default"][3]) == {1} and batches(batch_runs["small"][3]) == {-(-correct // 2)}


def test_eval_prints_and_records_the_seconds_of_each_part(batch_runs):
    record, printed, wall, _ = batch_runs["default"]
    timings = record["branches"][0]["timings_s"]
    assert set(timings) == {"fine_tune", "pgd", "autoattack"}
    assert all(seconds > 0 for seconds in timings.values()) and sum(timings.values()) <= wall
    line = next(line for line in printed if line.startswith("[solo-ncp] encoder: seconds "))
    assert line == (f"[solo-ncp] encoder: seconds fine-tune {timings['fine_tune']:.2f}, "
                    f"PGD-20 {timings['pgd']:.2f}, AutoAttack {timings['autoattack']:.2f}")


def test_each_branch_is_timed_and_skipped_autoattack_is_not(both_dir, tmp_path, digits_small_simclr_ckpt):
    record = json.loads((both_dir / "metrics.json").read_text())
    assert [set(branch["timings_s"]) for branch in record["branches"]] == [{"fine_tune", "pgd", "autoattack"}] * 2
    assert main(["eval", "--ckpt", str(digits_small_simclr_ckpt), "--out", str(tmp_path), "--cache-features",
                 "--aa-n", "0", *TINY]) == 0
    assert set(json.loads((tmp_path / "metrics.json").read_text())["branches"][0]["timings_s"]) == {"fine_tune", "pgd"}
