"""`solo-ncp reproduce` on digits at tiny scale: every step once, every step skipped on the second
call, and after kill -9 mid-step only what was left runs (the killed training resumes)."""
import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from solo_ncp.cli import main
from tests.conftest import ROOT

CONFIGS = ROOT / "zoo_configs/fashionmnist"
TINY = [
    "augmentations.0.crop_size=8", "data.subset=256", "data.num_workers=0", "data.val=false",
    "scheduler.warmup_epochs=0", "optimizer.batch_size=64", "max_epochs=1",
    "simclr:method_kwargs.proj_hidden_dim=64", "simclr:method_kwargs.proj_output_dim=32",
]
OPTIONS = [
    "--select-k-options=--k-min 5 --k-max 10 --k-step 5",
    "--eval-options=--epochs 2 --test-n 64 --aa-n 2 --aa-version custom --aa-attacks apgd-ce "
    "--cache-features --batch-size 128",
    "--poc-options=--epochs 2 --test-n 64 --cache-features",
]


def reproduce_argv(out: Path, *extra: str) -> list:
    return ["reproduce", "--dataset", "digits", "--config-dir", str(CONFIGS), "--out", str(out),
            *OPTIONS, *extra, *TINY]


def step_lines(printed: str) -> dict:
    """{step: verb} from the `[reproduce] <verb> <step> ...` lines."""
    steps = {}
    for line in printed.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "[reproduce]" and words[1] in ("skipped", "running", "resuming"):
            steps[words[2]] = words[1]
    return steps


def snapshot(root: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    """2 seeds x (stage 1, select-k, PoC, ncp, deacl, SLF of the three encoders), then report."""
    out = tmp_path_factory.mktemp("reproduce") / "run"
    assert main(reproduce_argv(out, "--seeds", "0,1", "--methods", "ncp,deacl")) == 0
    return out


def test_every_step_ran_once_per_seed_with_its_own_stage1_and_k(two_seeds):
    out = two_seeds
    for seed in (0, 1):
        base = out / f"s{seed}"
        for step in ("simclr", "select-k", "poc", "ncp", "deacl", "eval-simclr-slf", "eval-ncp-slf",
                     "eval-deacl-slf"):
            assert (base / step / ".step-done.json").is_file(), (seed, step)
            assert (base / step / "step.log").is_file()
        k = json.loads((base / "select-k" / "k.json").read_text())["k"]
        ncp = torch.load(base / "ncp" / "last.ckpt", weights_only=True)
        assert ncp["state_dict"]["centroids"].shape[0] == k
        assert ncp["solo_ncp"]["teacher"]["path"] == str(base / "simclr" / "last.ckpt")
    first, second = (torch.load(out / f"s{s}" / "simclr" / "last.ckpt", weights_only=True)["state_dict"]
                     for s in (0, 1))
    conv = next(key for key in first if key.endswith("conv1.weight"))
    assert not torch.equal(first[conv], second[conv])  # each seed trains its own stage 1


def test_the_report_holds_the_mean_and_std_over_seeds(two_seeds):
    report = (two_seeds / "report" / "report.md").read_text()
    rows = {"simclr": [None], "ncp": ["adv", "clean"], "deacl": [None]}
    for method, branches in rows.items():
        for bn in branches:
            records = [json.loads((two_seeds / f"s{s}" / f"eval-{method}-slf" / "metrics.json").read_text())
                       for s in (0, 1)]
            values = [next(b["metrics"]["sa"] for b in r["branches"] if b["bn"] == bn) for r in records]
            label = method if bn is None else f"{method} ({bn} BN)"
            expected = f"| {label} | {statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} (n=2) |"
            assert expected in report, (expected, report)
    pocs = [json.loads((two_seeds / f"s{s}" / "poc" / "poc.json").read_text()) for s in (0, 1)]
    noise = [p["random_noise"]["attack_success"] for p in pocs]
    assert f"| {statistics.mean(noise):.2f} ± {statistics.stdev(noise):.2f} (n=2) |" in report
    assert "Table 1: proof of concept" in report


def test_the_same_command_again_skips_every_step(two_seeds, capsys):
    before = snapshot(two_seeds / "s0") | snapshot(two_seeds / "s1")
    assert main(reproduce_argv(two_seeds, "--seeds", "0,1", "--methods", "ncp,deacl")) == 0
    printed = capsys.readouterr().out
    steps = step_lines(printed)
    assert len(steps) == 17 and set(steps.values()) == {"skipped"}, steps
    assert "0 step(s) ran, 17 skipped" in printed
    assert snapshot(two_seeds / "s0") | snapshot(two_seeds / "s1") == before


def test_dry_run_lists_the_steps_and_which_are_done(two_seeds, capsys):
    argv = reproduce_argv(two_seeds, "--seeds", "0,1,2", "--methods", "ncp,deacl", "--dry-run")
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "[reproduce] done    s1/ncp: solo-ncp train" in printed
    assert "[reproduce] todo    s2/simclr: solo-ncp pretrain" in printed
    assert "16 of 25 steps done (dry run: nothing ran)" in printed  # the report would change
    assert not (two_seeds / "s2").exists()


def test_a_failed_step_is_one_error_line_naming_the_step_and_its_log(digits_simclr_ckpt, tmp_path, capsys):
    """select-k fails when it runs (K beyond the 256 training images): the error line names the
    step, the step's own error and its log; no later step starts."""
    out = tmp_path / "run"
    argv = reproduce_argv(out, "--seeds", "0", "--methods", "deacl", "--teacher", str(digits_simclr_ckpt),
                          "--select-k-options=--k-min 5 --k-max 500")
    assert main(argv) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    log = out / "s0" / "select-k" / "step.log"
    assert last.startswith("error: step s0/select-k failed (exit 2): --k-max=500 is larger than the 256 "
                           "training images"), last
    assert last.endswith(f"its log: {log} (solo-ncp reproduce)")
    assert sorted(p.name for p in (out / "s0").iterdir()) == ["select-k"]


def _cli(*args) -> list:
    return [sys.executable, "-W", "ignore", "-m", "solo_ncp.cli", *map(str, args)]


def _epochs_of_the_last_attempt(run: Path) -> list:
    """Epochs with a logged epoch loss (`*loss_epoch`) in the run's newest CSV log
    (logs/version_<attempt>)."""
    log = max(run.glob("logs/version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    with open(log) as f:
        return sorted({int(r["epoch"]) for r in csv.DictReader(f)
                       if any(key.endswith("loss_epoch") and value for key, value in r.items())})


def test_killed_mid_training_the_rerun_finishes_only_what_was_left(tmp_path, digits_simclr_ckpt):
    """Shared --teacher, 1 seed, ncp for 3 epochs: kill -9 reproduce once the first stage-2
    checkpoint exists; the same command then skips select-k and the PoC, resumes the training at
    the next epoch and runs the evaluation and the report."""
    out = tmp_path / "run"
    argv = _cli(*reproduce_argv(out, "--seeds", "0", "--methods", "ncp", "--eval", "slf=ncp",
                                "--teacher", digits_simclr_ckpt), "stage2:max_epochs=3")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    victim = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = out / "s0" / "ncp" / "last.ckpt"
    deadline = time.time() + 600
    while not last.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    killed_at = torch.load(last, weights_only=True)["epoch"]
    assert killed_at < 2 and not (out / "s0" / "ncp" / ".step-done.json").exists()
    time.sleep(1.0)  # the step's own process dies with reproduce (PR_SET_PDEATHSIG)
    assert not any(str(out) in " ".join(p.cmdline) for p in _processes())
    before = snapshot(out / "s0" / "select-k") | snapshot(out / "s0" / "poc")

    rerun = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert step_lines(rerun.stdout) == {"s0/select-k": "skipped", "s0/poc": "skipped",
                                        "s0/ncp": "resuming", "s0/eval-ncp-slf": "running",
                                        "report": "running"}
    assert snapshot(out / "s0" / "select-k") | snapshot(out / "s0" / "poc") == before
    log = (out / "s0" / "ncp" / "step.log").read_text()
    assert log.count("=== ") == 2 and "--resume" in log.split("=== ")[-1].splitlines()[0]
    assert _epochs_of_the_last_attempt(out / "s0" / "ncp") == list(range(killed_at + 1, 3))
    assert torch.load(last, weights_only=True)["epoch"] == 2


class _Process:
    def __init__(self, pid: int):
        self.cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")


def _processes() -> list:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.append(_Process(int(entry.name)))
            except OSError:
                pass
    return found
