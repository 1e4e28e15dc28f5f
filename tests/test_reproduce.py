"""`solo-ncp reproduce` on digits at tiny scale: every step once, every step skipped on the second
call, and after kill -9 mid-step only what was left runs (the killed training resumes); a training
step is marked done only at its last epoch; a call naming fewer methods keeps the recorded ones in
the report; one reproduce at a time in an output folder."""
import csv
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from solo_ncp.cli import main
from solo_ncp.launch.reproduce import build_plan, compare_settings
from tests.conftest import KILLED_RUN_EPOCHS, ROOT, SMALL_BACKBONE, host_independent

pytestmark = host_independent

CONFIGS = ROOT / "zoo_configs/fashionmnist"
# ResNet-18, 4 steps an epoch: for the tests that stop a step mid-training or pass the suite's
# ResNet-18 stage 1 as --teacher
TINY_RESNET18 = [
    "augmentations.0.crop_size=8", "data.subset=256", "data.num_workers=0", "data.val=false",
    "scheduler.warmup_epochs=0", "optimizer.batch_size=64", "max_epochs=1",
    "simclr:method_kwargs.proj_hidden_dim=64", "simclr:method_kwargs.proj_output_dim=32",
]
# the others train the small backbone: what reproduce does with the steps does not depend on it
TINY = [*TINY_RESNET18, *SMALL_BACKBONE]
OPTIONS = [
    "--select-k-options=--k-min 5 --k-max 10 --k-step 5",
    # no AutoAttack (tested through `solo-ncp eval` in test_commands.py): APGD's 100 iterations on
    # two images cost more than the rest of an evaluation step here
    "--eval-options=--epochs 2 --test-n 32 --aa-n 0 --cache-features --batch-size 128",
    "--poc-options=--epochs 2 --test-n 64 --cache-features",
]


def reproduce_argv(out: Path, *extra: str, tiny: list = TINY) -> list:
    return ["reproduce", "--dataset", "digits", "--config-dir", str(CONFIGS), "--out", str(out),
            *OPTIONS, *extra, *tiny]


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
            label = method if bn is None else f"{method} ({bn} BN)" + (" †" if bn == "clean" else "")
            expected = f"| {label} | {statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} (n=2) |"
            assert expected in report, (expected, report)
    pocs = [json.loads((two_seeds / f"s{s}" / "poc" / "poc.json").read_text()) for s in (0, 1)]
    noise = [p["random_noise"]["attack_success"] for p in pocs]
    assert f"| {statistics.mean(noise):.2f} ± {statistics.stdev(noise):.2f} (n=2) |" in report
    assert all(p["settings"]["head"] == "paper" for p in pocs)  # Table 1 under the paper's protocol
    assert "## Table 1: proof of concept (stage-1 encoder with an SLF head)" in report


def test_the_same_command_again_skips_every_step(two_seeds, capsys):
    before = snapshot(two_seeds / "s0") | snapshot(two_seeds / "s1")
    assert main(reproduce_argv(two_seeds, "--seeds", "0,1", "--methods", "ncp,deacl")) == 0
    printed = capsys.readouterr().out
    steps = step_lines(printed)
    assert len(steps) == 17 and set(steps.values()) == {"skipped"}, steps
    assert "0 step(s) ran, 17 skipped" in printed
    assert snapshot(two_seeds / "s0") | snapshot(two_seeds / "s1") == before


def test_a_repeated_key_that_takes_the_recorded_effect_finds_every_step_done(two_seeds, capsys):
    """`max_epochs=2` before the recorded `max_epochs=1` trains as the record says (the last wins, and
    the folder took it): the finished trainings were listed as partial and resumed, with nothing to train."""
    argv = reproduce_argv(two_seeds, "--seeds", "0,1", "--methods", "ncp,deacl", "max_epochs=2", "--dry-run")
    assert main(argv) == 0
    assert "17 of 17 steps done (dry run: nothing ran)" in capsys.readouterr().out


@pytest.mark.parametrize("spelling", ["relative", "dot-dot", "link"])
def test_out_spelled_another_way_finds_every_step_done(two_seeds, capsys, monkeypatch, tmp_path, spelling):
    """`--out runs/x` and `--out /home/u/runs/x` (or a link to it) are one folder: each step's argv
    and inputs name it resolved (before: every result step partial and run again with --overwrite,
    the trainings resumed)."""
    monkeypatch.chdir(two_seeds.parent)
    out = {"relative": "run/", "dot-dot": f"../{two_seeds.parent.name}/./run"}.get(spelling)
    if spelling == "link":
        (tmp_path / "alias").symlink_to(two_seeds)
        out = str(tmp_path / "alias")
    argv = ["reproduce", "--dataset", "digits", "--config-dir", os.path.relpath(CONFIGS), "--out", out, *OPTIONS,
            "--seeds", "0,1", "--methods", "ncp,deacl", "--dry-run", *TINY]
    assert main(argv) == 0
    assert "17 of 17 steps done (dry run: nothing ran)" in capsys.readouterr().out


def test_a_teacher_recorded_as_spelled_is_the_same_teacher_resolved(tmp_path, monkeypatch):
    """reproduce.json of a version that kept --teacher as given (`t/last.ckpt`) against this call's
    resolved path of the same file: the same setting; another file is refused naming both."""
    monkeypatch.chdir(tmp_path)
    teacher = {"path": "t/last.ckpt", "sha256": "ab"}
    now = {"teacher": {"path": str(tmp_path / "t" / "last.ckpt"), "sha256": "ab"}, "checkpoint": "last.ckpt"}
    compare_settings({"teacher": teacher}, now, tmp_path / "reproduce.json")
    with pytest.raises(ValueError) as caught:
        compare_settings({"teacher": {**teacher, "path": "u/last.ckpt"}}, now, tmp_path / "reproduce.json")
    assert f"teacher.path: recorded '{tmp_path / 'u' / 'last.ckpt'}', now '{tmp_path / 't' / 'last.ckpt'}'" in str(
        caught.value)


def test_a_call_naming_fewer_methods_keeps_the_recorded_ones_in_the_report(two_seeds, capsys):
    """--methods ncp on the folder of ncp and deacl: every step is done, the report (deacl's rows
    included) stays as it is."""
    before = snapshot(two_seeds)
    assert main(reproduce_argv(two_seeds, "--seeds", "0,1", "--methods", "ncp")) == 0
    assert "0 step(s) ran, 17 skipped" in capsys.readouterr().out
    assert snapshot(two_seeds) == before
    assert "| deacl |" in (two_seeds / "report" / "report.md").read_text()


def test_dry_run_lists_the_steps_and_which_are_done(two_seeds, capsys):
    argv = reproduce_argv(two_seeds, "--seeds", "0,1,2", "--methods", "ncp,deacl", "--dry-run")
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "[reproduce] done    s1/ncp: solo-ncp train" in printed
    assert "[reproduce] todo    s2/simclr: solo-ncp pretrain" in printed
    assert "16 of 25 steps done (dry run: nothing ran)" in printed  # the report would change
    assert not (two_seeds / "s2").exists()


def test_a_failed_step_is_one_error_line_naming_the_step_and_its_log(digits_simclr_ckpt, tmp_path, capsys):
    """select-k fails when it runs (its dataset's files are not in data.train_path): the error line
    names the step, the step's own error and its log; no later step starts."""
    out, data = tmp_path / "run", tmp_path / "no-data"
    data.mkdir()
    argv = ["reproduce", "--dataset", "fashionmnist", "--config-dir", str(CONFIGS), "--out", str(out), "--seeds", "0",
            "--methods", "deacl", "--teacher", str(digits_simclr_ckpt), *OPTIONS, f"data.train_path={data}",
            *TINY_RESNET18]
    assert main(argv) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    log = out / "s0" / "select-k" / "step.log"
    assert last.startswith("error: step s0/select-k failed (exit 2): dataset 'fashionmnist' not found: expected "
                           f"train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
                           f"t10k-labels-idx1-ubyte.gz in {data} or "), last
    assert last.endswith(f"; once that is mended, running reproduce again continues from this step (a mend that "
                         f"changes reproduce's settings needs another --out); its log: {log} (solo-ncp reproduce)")
    assert sorted(p.name for p in (out / "s0").iterdir()) == ["select-k"]


def test_a_sweep_beyond_the_training_images_stops_reproduce_before_any_step(digits_simclr_ckpt, tmp_path, capsys,
                                                                             monkeypatch):
    """select-k failed when it ran (after stage 1 where there is one): K=500 beyond the 256
    training images is now found from data.subset with the other step options."""
    monkeypatch.setattr(subprocess, "Popen", lambda argv, **kwargs: pytest.fail("a step started"))
    argv = reproduce_argv(tmp_path / "run", "--seeds", "0", "--methods", "deacl",
                          "--select-k-options=--k-min 5 --k-max 500")
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: step s0/select-k would fail: the sweep reaches K=500, and the silhouette needs K <= N-1 = 255 for the "
        "256 training images: pass --k-max <= 255, or more images (--train-n) (check --select-k-options) "
        "(solo-ncp reproduce)")


def _cli(*args) -> list:
    return [sys.executable, "-W", "ignore", "-m", "solo_ncp.cli", *map(str, args)]


def _epochs_of_the_last_attempt(run: Path) -> list:
    """Epochs with a logged epoch loss (`*loss_epoch`) in the run's newest CSV log
    (logs/version_<attempt>)."""
    log = max(run.glob("logs/version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    with open(log) as f:
        return sorted({int(r["epoch"]) for r in csv.DictReader(f)
                       if any(key.endswith("loss_epoch") and value for key, value in r.items())})


def test_killed_mid_training_the_rerun_finishes_only_what_was_left(tmp_path, digits_small_simclr_ckpt):
    """Shared --teacher, 1 seed, ncp for `KILLED_RUN_EPOCHS` epochs on the small backbone: kill -9
    reproduce once the first stage-2 checkpoint exists; the same command then skips select-k and
    the PoC, resumes the training at the next epoch and runs the evaluation and the report."""
    epochs = KILLED_RUN_EPOCHS
    out = tmp_path / "run"
    argv = _cli(*reproduce_argv(out, "--seeds", "0", "--methods", "ncp", "--eval", "slf=ncp",
                                "--teacher", digits_small_simclr_ckpt, tiny=TINY), f"stage2:max_epochs={epochs}")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    victim = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = out / "s0" / "ncp" / "last.ckpt"
    deadline = time.time() + 600
    while not last.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    killed_at = torch.load(last, weights_only=True)["epoch"]
    assert killed_at < epochs - 1 and not (out / "s0" / "ncp" / ".step-done.json").exists()
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
    assert _epochs_of_the_last_attempt(out / "s0" / "ncp") == list(range(killed_at + 1, epochs))
    assert torch.load(last, weights_only=True)["epoch"] == epochs - 1


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


def record_plan(out: Path, methods: list, overrides: tuple = ()):
    """The plan of `reproduce_argv(out, "--seeds", "0", "--methods", ..., *overrides)`, its settings
    recorded in `out` as a run would record them (no step run)."""
    plan = build_plan(dataset="digits", seeds=[0], methods=methods, evals=["slf"], out=out,
                      overrides=[*overrides, *TINY],
                      teacher=None, config_dir=CONFIGS, select_k_options=OPTIONS[0].split("=", 1)[1],
                      eval_options=[OPTIONS[1].split("=", 1)[1]], poc_options=OPTIONS[2].split("=", 1)[1])
    out.mkdir()
    (out / "reproduce.json").write_text(json.dumps(plan.settings))
    return plan


def test_the_plan_of_a_call_naming_fewer_methods_keeps_the_recorded_ones(tmp_path, capsys):
    """--methods ncp on a folder recording ncp and deacl: the same steps with the same commands
    (deacl's evaluation in the report's)."""
    out = tmp_path / "run"
    recorded = record_plan(out, ["ncp", "deacl"])
    assert main(reproduce_argv(out, "--seeds", "0", "--methods", "ncp", "--dry-run")) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[reproduce] todo")]
    assert listed == [f"[reproduce] todo    {step.name}: solo-ncp {shlex.join(step.argv())}"
                      for step in recorded.steps]
    assert str(out / "s0" / "eval-deacl-slf") in recorded.steps[-1].argv()


@pytest.mark.parametrize("widen", ["+backbone.kwargs.widen_factor=1", "++backbone.kwargs.widen_factor=1",
                                   "+backbone.kwargs.widen_factor=2"])
def test_the_teacher_check_reads_every_backbone_option(tmp_path, capsys, digits_small_simclr_ckpt, widen):
    """--teacher of a WRN-28-1 against stage-2 configs of `widen`: accepted at widen factor 1 (as
    `+key` or `++key`: the dry run lists the steps), refused at 2 naming both widths."""
    tiny = [*TINY_RESNET18, "backbone.name=wide_resnet28_10", widen]
    argv = reproduce_argv(tmp_path / "run", "--seeds", "0", "--methods", "ncp", "--teacher",
                          str(digits_small_simclr_ckpt), "--dry-run", tiny=tiny)
    code, printed = main(argv), capsys.readouterr()
    if widen.endswith("=1"):
        assert code == 0, printed.err
        assert "[reproduce] todo    s0/ncp" in printed.out
    else:
        assert code == 2
        (line,) = printed.err.strip().splitlines()
        assert line.startswith(f"error: --teacher for method ncp: stage-1 checkpoint {digits_small_simclr_ckpt} "
                               "holds a wide_resnet28_10 (widen_factor: 1), but the config builds a "
                               "wide_resnet28_10 (widen_factor: 2)"), line


def test_a_refused_call_names_only_the_differing_override(tmp_path, capsys):
    out = tmp_path / "run"
    record_plan(out, ["deacl"])
    argv = [("max_epochs=4" if arg == "max_epochs=1" else arg)
            for arg in reproduce_argv(out, "--seeds", "0", "--methods", "deacl")]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {out} holds a reproduce run of other settings (overrides: recorded has "
        "'max_epochs=1', now 'max_epochs=4'): pass another --out, or the recorded settings "
        "(solo-ncp reproduce)")


def test_each_step_records_the_checkpoints_and_k_it_reads(tmp_path):
    """So that one whose input changed (a stage 1 trained again) is not skipped as done."""
    out = tmp_path / "run"
    plan = record_plan(out, ["ncp", "deacl"])
    stage1, k_file = out / "s0/simclr/last.ckpt", out / "s0/select-k/k.json"
    assert {step.name: step.inputs for step in plan.steps if step.name != "report"} == {
        "s0/simclr": (), "s0/select-k": (stage1,), "s0/poc": (stage1, k_file), "s0/ncp": (stage1, k_file),
        "s0/deacl": (stage1,), "s0/eval-simclr-slf": (stage1,), "s0/eval-ncp-slf": (out / "s0/ncp/last.ckpt",),
        "s0/eval-deacl-slf": (out / "s0/deacl/last.ckpt",)}


@pytest.mark.parametrize("recorded, given, refused", [
    (["max_epochs=3", "max_epochs=2"], ["max_epochs=2", "max_epochs=3"],
     "overrides: recorded has 'max_epochs=2', now 'max_epochs=3'"),
    (["ncp:max_epochs=3", "max_epochs=2"], ["ncp:max_epochs=2", "max_epochs=2"],
     "overrides: recorded has 'ncp:max_epochs=3', now 'ncp:max_epochs=2'"),
    (["max_epochs=2", "+data.subset=8"], ["+data.subset=8", "max_epochs=3", "max_epochs=2"], None),
    (["max_epochs=2", "ncp:max_epochs=3"], ["ncp:max_epochs=3", "max_epochs=2"], None),
])
def test_overrides_are_compared_by_what_takes_effect(tmp_path, recorded, given, refused):
    """Of repeated keys the last wins (as each step applies them), so the order of a key's
    overrides matters and that of different keys does not."""
    record = tmp_path / "reproduce.json"
    if refused is None:
        compare_settings({"overrides": recorded}, {"overrides": given, "checkpoint": "last.ckpt"}, record)
    else:
        with pytest.raises(ValueError) as caught:
            compare_settings({"overrides": recorded}, {"overrides": given, "checkpoint": "last.ckpt"}, record)
        assert f"of other settings ({refused})" in str(caught.value)


@pytest.mark.parametrize("key, recorded, given, refused", [
    ("poc_options", ["--epochs", "2", "--test-n", "64"], ["--epochs", "3", "--test-n", "64"],
     "--poc-options: recorded '--epochs 2 --test-n 64', now '--epochs 3 --test-n 64'"),
    ("eval_options", {"every mode": ["--epochs", "2"]}, {"every mode": ["--epochs", "2", "--epochs", "3"]},
     "--eval-options.every mode: recorded '--epochs 2', now '--epochs 2 --epochs 3'"),
])
def test_a_refused_call_shows_the_options_as_command_lines(tmp_path, key, recorded, given, refused):
    """Not `poc_options: recorded has '2', now '3'`, which named neither the option nor its flag."""
    with pytest.raises(ValueError) as caught:
        compare_settings({key: recorded}, {key: given, "checkpoint": "last.ckpt"}, tmp_path / "reproduce.json")
    assert f"of other settings ({refused})" in str(caught.value)


def test_a_dataset_without_bundled_configs_needs_config_dir(tmp_path, capsys):
    assert main(["reproduce", "--dataset", "digits", "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --dataset digits has no bundled configs (bundled: cifar10, cifar100, fashionmnist, "
        "stl10): pass --config-dir, a folder with simclr.yaml and the method configs (solo-ncp reproduce)")
    assert not (tmp_path / "run").exists()


class FakeSteps:
    """Stands for the steps' processes (subprocess.Popen): `pretrain` writes a last.ckpt holding
    `epoch` (counted from 0, as Lightning's) into its run folder and exits 0; any other command
    exits 1 at once."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def __call__(self, argv, **kwargs):
        command = argv[3]
        if command == "pretrain":
            options = dict(arg.split("=", 1) for arg in argv if arg.startswith(("checkpoint.dir=", "name=")))
            run = Path(options["checkpoint.dir"]) / options["name"]
            run.mkdir(parents=True, exist_ok=True)
            torch.save({"epoch": self.epoch, "state_dict": {}}, run / "last.ckpt")
        return FakeProcess(0 if command == "pretrain" else 1)


class FakeProcess:
    """A step's process that printed nothing and exits with `code`."""

    def __init__(self, code: int):
        self.code = code
        self.stdout = open(os.devnull, "rb")

    def wait(self) -> int:
        return self.code


@pytest.mark.parametrize("epoch, marked", [(1, False), (2, True)])
def test_a_training_step_is_marked_done_only_at_its_last_epoch(tmp_path, monkeypatch, capsys, epoch, marked):
    """Stage 1 of 3 epochs exits 0 with a last.ckpt of epoch 1 (2 done; what an interrupted
    training used to leave) or epoch 2 (all 3): only the second is marked done."""
    monkeypatch.setattr(subprocess, "Popen", FakeSteps(epoch))
    out = tmp_path / "run"
    assert main(reproduce_argv(out, "--seeds", "0", "--methods", "deacl", "simclr:max_epochs=3")) == 2
    stage1 = out / "s0" / "simclr"
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert (stage1 / ".step-done.json").is_file() == marked
    expected = ("step s0/select-k failed (exit 1)" if marked else
                f"step s0/simclr exited 0 but {stage1 / 'last.ckpt'} holds 2 of its 3 epochs: not "
                "marked done")
    assert last.startswith(f"error: {expected}"), last


@pytest.mark.parametrize("bad, words", [
    ("--eval-options=--bogus 1", ["eval-simclr-slf", "unrecognized arguments: --bogus 1", "--eval-options"]),
    ("--eval-options=--eps 8", ["eval-simclr-slf", "--eps=0.0313725", "--eval-options"]),
    ("--eval-options=slf=--epochs 0", ["eval-simclr-slf", "--epochs must be >= 1", "--eval-options"]),
    ("--select-k-options=--k-min 1", ["select-k", "--k-min", "--select-k-options"]),
    ("--poc-options=--test-n abc", ["poc", "'abc' is not a whole number", "--poc-options"]),
], ids=["unknown option", "eval value", "one mode's value", "select-k value", "poc type"])
def test_an_option_a_step_would_refuse_stops_reproduce_before_any_step(tmp_path, monkeypatch, capsys,
                                                                      bad, words):
    """The options reproduce passes through reach their commands only after the trainings: they are
    checked by those commands' own parsers and checks first, so no step process starts."""
    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda argv, **kwargs: started.append(argv))
    assert main(reproduce_argv(tmp_path / "run", "--seeds", "0", "--methods", "ncp", bad)) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: step s0/") and "would fail" in line
    for word in words:
        assert word in line, (word, line)
    assert started == []


@pytest.mark.parametrize("override, words, hinted", [
    ("stage2:method_kwargs.eps=8", ["ncp (ncp.yaml): method_kwargs.eps=8", "method_kwargs.eps=0.0313725"],
     False),
    ("ncp:method_kwargs.lam=-1", ["ncp (ncp.yaml): method_kwargs.lam=-1 must be a number >= 0"], False),
    ("method_kwargs.eps=8", ["simclr (simclr.yaml): override 'method_kwargs.eps=8'"], True),
    ("simclr:max_epoch=3", ["simclr (simclr.yaml): override 'max_epoch=3'", "max_epochs"], False),
], ids=["stage-2 budget", "method's lambda", "unscoped stage-2 key", "stage-1 typo"])
def test_a_config_the_training_would_refuse_stops_reproduce_before_stage1(tmp_path, monkeypatch, capsys,
                                                                         override, words, hinted):
    """Each step's config is loaded with its overrides and its stage-2 options are checked as the
    training checks them, before stage 1 trains; the error names the step's config, and says how
    to scope an override only when one without a scope was given."""
    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda argv, **kwargs: started.append(argv))
    assert main(reproduce_argv(tmp_path / "run", "--seeds", "0", "--methods", "ncp", override)) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    for word in words:
        assert word in line, (word, line)
    assert ("prefix one with simclr:, stage2: or a method's label" in line) == hinted
    assert started == []


def test_a_second_reproduce_on_the_same_out_is_refused(tmp_path, monkeypatch, capsys):
    """Another process holds the folder's lock (as a running reproduce does): the call is refused
    before any step runs (the steps would fail at once here)."""
    out = tmp_path / "run"
    code = ("import time; from solo_ncp.io import folder_lock\n"
            f"with folder_lock({str(out)!r}):\n    print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    monkeypatch.setattr(subprocess, "Popen", FakeSteps(0))
    try:
        assert holder.stdout.readline() == "held\n"
        assert main(reproduce_argv(out, "--seeds", "0", "--methods", "deacl")) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith(f"error: {out} is in use by process {holder.pid}"), last
        assert sorted(p.name for p in out.iterdir()) == [".lock"]
    finally:
        holder.kill()
        holder.wait()


def test_a_folder_of_one_solo_learn_refuses_a_call_on_another(tmp_path):
    """1.0.2 and main train differently (their own augmentations, optimisers): one table, one host."""
    record = tmp_path / "reproduce.json"
    compare_settings({"checkpoint": "last.ckpt"}, {"checkpoint": "last.ckpt", "solo_learn": "1.0.6"}, record)
    with pytest.raises(ValueError) as caught:
        compare_settings({"solo_learn": "1.0.2"}, {"checkpoint": "last.ckpt", "solo_learn": "1.0.6"}, record)
    assert "of other settings (solo_learn: recorded '1.0.2', now '1.0.6')" in str(caught.value)


@pytest.mark.parametrize("extra, message", [
    (["--methods", "select-k=deacl"], "method label 'select-k': use letters, digits, '-' and '_', not 'simclr', "
                                      "'stage2', 'select-k', 'poc' or eval-... (a step's folder or scope)"),
    (["--methods", "eval-ncp-slf=ncp"], "method label 'eval-ncp-slf': use letters, digits, '-' and '_', not "
                                        "'simclr', 'stage2', 'select-k', 'poc' or eval-... (a step's folder or scope)"),
    (["--methods", "ncp", "--eval", "slf=ncp,simclr,ncp"], "--eval 'slf=ncp,simclr,ncp' names ncp twice: name each "
                                                           "encoder once"),
    (["--methods", "ncp", "--eval-options=--hea whitened"], "--eval-options: --hea (--head) is set by reproduce "
                                                            "itself (use --dataset, --seeds, --out and overrides instead)"),
    (["--methods", "ncp", "--select-k-options=--ck other.ckpt --ove"],
     "--select-k-options: --ck (--ckpt), --ove (--overwrite) are set by reproduce itself (use --dataset, --seeds, "
     "--out and overrides instead)"),
    (["--methods", "ncp", "--eval-options=alf=--epochs 5"], "--eval-options alf=...: no evaluation runs alf (--eval: "
                                                            "slf): drop them, or add --eval alf"),
    (["--methods", "ncp", "--eval-options=--test-n '5"], "--eval-options \"--test-n '5\": No closing quotation (quote "
                                                         "values as a shell would)"),
], ids=["a step's folder", "an evaluation's folder", "an encoder twice", "abbreviated head", "abbreviated ckpt",
        "options of a mode not evaluated", "an unclosed quote"])
def test_a_plan_that_would_overwrite_or_drop_a_step_is_refused_before_any_step(tmp_path, capsys, extra, message):
    """A label `select-k` trained into select-k's folder, `slf=ncp,ncp` ran one evaluation twice (report
    then refused the folder given twice, after every step), `--hea` (argparse's abbreviation of
    --head) silently evaluated the paper's rows with another head."""
    assert main(reproduce_argv(tmp_path / "run", "--seeds", "0", *extra, "--dry-run")) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {message} (solo-ncp reproduce)"


def test_a_config_that_is_a_loop_of_links_is_named_not_a_traceback(tmp_path, capsys):
    """`Path.resolve` raised RuntimeError "Symlink loop" for --methods or --config-dir's simclr.yaml;
    the fault class of the --ckpt and --out loops mended in io.resolved."""
    (tmp_path / "a.yaml").symlink_to(tmp_path / "b.yaml")
    (tmp_path / "b.yaml").symlink_to(tmp_path / "a.yaml")
    assert main(reproduce_argv(tmp_path / "run", "--seeds", "0", "--methods", str(tmp_path / "a.yaml"),
                               "--dry-run")) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        f"error: method '{tmp_path / 'a.yaml'}': no config {tmp_path}/")
    configs = tmp_path / "configs"
    configs.mkdir()
    shutil.copy(CONFIGS / "ncp.yaml", configs)
    (configs / "simclr.yaml").symlink_to(tmp_path / "a.yaml")
    argv = reproduce_argv(tmp_path / "run", "--seeds", "0", "--methods", "ncp", "--dry-run")
    argv[argv.index("--config-dir") + 1] = str(configs)
    assert main(argv) == 2
    assert re.fullmatch(rf"error: no stage-1 config {re.escape(str(tmp_path))}/[ab]\.yaml: pass --config-dir, or "
                        r"--teacher \(solo-ncp reproduce\)", capsys.readouterr().err.strip().splitlines()[-1])


def test_a_stage1_override_with_a_teacher_is_noted_as_unused(tmp_path, capsys, digits_simclr_ckpt):
    """--teacher replaces stage 1: `simclr:max_epochs=5` was accepted and read by nothing, in silence."""
    argv = reproduce_argv(tmp_path / "run", "--seeds", "0", "--methods", "ncp", "--teacher", str(digits_simclr_ckpt),
                          "simclr:max_epochs=5", "--dry-run", tiny=TINY_RESNET18)
    assert main(argv) == 0
    note = "[reproduce] note: --teacher replaces stage 1, so no simclr step reads "
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(note) and "simclr:max_epochs=5" in first[len(note):].split(", ")


def test_an_override_of_a_recorded_method_the_call_does_not_name_is_refused(tmp_path, capsys):
    """--out records ncp and deacl; `--methods ncp deacl:max_epochs=4` appended the recorded
    deacl overrides after it, so the recorded value won in silence."""
    out = tmp_path / "run"
    record_plan(out, ["ncp", "deacl"])
    assert main(reproduce_argv(out, "--seeds", "0", "--methods", "ncp", "deacl:max_epochs=4", "--dry-run")) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: override 'deacl:max_epochs=4': deacl is a method {out / 'reproduce.json'} records but --methods "
        "does not name, so its recorded settings stand: name it in --methods (its settings are then compared with "
        "the record), or drop the override (solo-ncp reproduce)")


@pytest.mark.parametrize("folder", ["lr=0.1", "a,b (c)#d", "it's"])
def test_paths_hydra_would_misread_reach_each_training_as_written(tmp_path, folder):
    """An --out holding `=`, `,`, brackets, `#` or a quote made the first training step fail
    ("override 'checkpoint.dir=...' is not key=value"), after the dry run accepted it. Each training
    step's overrides now load back the paths as written."""
    from solo_ncp.config import load_config

    out = tmp_path / folder / "run"
    plan = build_plan(dataset="digits", seeds=[0], methods=["ncp"], evals=["slf"], out=out, overrides=TINY,
                      teacher=None, config_dir=CONFIGS)
    steps = {step.name: step.argv() for step in plan.steps}
    configs = {name: load_config(steps[name][2], [arg for arg in steps[name][3:] if "=" in arg])
               for name in ("s0/simclr", "s0/ncp")}
    assert {name: cfg.checkpoint.dir for name, cfg in configs.items()} == dict.fromkeys(configs, str(out / "s0"))
    kwargs = configs["s0/ncp"].method_kwargs
    assert (kwargs.teacher_ckpt, kwargs.k_file) == (str(out / "s0/simclr/last.ckpt"), str(out / "s0/select-k/k.json"))


@pytest.mark.parametrize("value, written", [
    ("runs/x/s0", "k=runs/x/s0"),  # as before: earlier runs' steps keep their argv, so stay done
    ("a b/c", "k=a b/c"),
    ("lr=0.1", "k='lr=0.1'"),
    ("it's", "k='it\\'s'"),
    ("end\\", "k=end\\"),
    ("x'\\", "k='x\\'\\\\'"),
    ("1", "k='1'"),
    ("null", "k='null'"),
])
def test_an_override_of_a_path_is_quoted_only_where_hydra_would_misread_it(value, written):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from solo_ncp.config.overrides import override_of

    assert override_of("k", value) == written
    assert OverridesParser.create().parse_override(written).value() == value


@pytest.mark.parametrize("extra, error", [
    (["--checkpoint", "best"], "method_kwargs.val_robust_n=512 training images held out for the robust monitor "
                               "leave 0 of the 256 to train on: lower method_kwargs.val_robust_n"),
    (["stage2:+method_kwargs.val_robust_every=1"], "method_kwargs.val_robust_n=512 training images held out for the "
                                                   "robust monitor leave 0 of the 256 to train on: lower "
                                                   "method_kwargs.val_robust_n"),
    (["ncp:method_kwargs.k=300"], "K=300 clusters (method_kwargs.k) but the training set has only 256 images: lower K"),
    (["--checkpoint", "best", "stage2:+method_kwargs.val_robust_n=200", "ncp:method_kwargs.k=100"],
     "K=100 clusters (method_kwargs.k) but the training set has only 56 images after method_kwargs.val_robust_n=200 "
     "held out for the robust monitor: lower K or method_kwargs.val_robust_n"),
    (["stage2:optimizer.batch_size=512"], "the training set has 256 images, fewer than optimizer.batch_size=512: "
                                          "lower the batch size"),
], ids=["best checkpoint", "robust monitor", "K", "K after the held-out images", "batch size"])
def test_a_stage_2_setting_its_training_images_cannot_hold_stops_reproduce_before_stage_1(extra, error, tmp_path,
                                                                                        monkeypatch, capsys):
    """These were found by the stage-2 training, after stage 1, select-k and the PoC had run, and the
    fix, a changed setting, was then refused in the same --out."""
    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda argv, **kwargs: started.append(argv))
    assert main(reproduce_argv(tmp_path / "run", "--seeds", "0", "--methods", "ncp", *extra)) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: ncp (ncp.yaml): {error} (solo-ncp reproduce)"
    assert started == []


@pytest.mark.parametrize("holds, says", [
    ("last.ckpt", "is a training run's folder (last.ckpt): `solo-ncp reproduce` does not write into it"),
    ("metrics.json", "holds the result of `solo-ncp eval` (metrics.json): `solo-ncp reproduce` does not write into "
                     "another command's folder")])
def test_reproduce_writes_into_no_training_run_and_no_result_folder(holds, says, tmp_path, capsys):
    """It put reproduce.json, s0/ and report/ into either, where every other command refuses to."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / holds).write_text("{}")
    assert main(reproduce_argv(folder, "--seeds", "0", "--methods", "ncp", "--dry-run")) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: --out {folder} {says}; choose another --out (solo-ncp reproduce)")
    assert [path.name for path in folder.iterdir()] == [holds]


@pytest.mark.parametrize("null", ["ncp:method_kwargs.k=null", "ncp:++method_kwargs.k=null"])
def test_a_runs_own_k_of_null_stops_reproduce_before_stage_1(null, tmp_path, monkeypatch, capsys):
    """A method's own K replaces select-k's: null passed every check and the dry run, and the
    training said it needs K, after stage 1, select-k and the PoC had run."""
    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda argv, **kwargs: started.append(argv))
    assert main(reproduce_argv(tmp_path / "run", "--seeds", "0", "--methods", "ncp", null)) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: ncp:method_kwargs.k=null gives ncp no K, as the scope replaces select-k's: set a whole number (the "
        "run's own K), or drop it (each run gets select-k's K) (solo-ncp reproduce)")
    assert started == []


def test_an_slf_only_option_aimed_at_alf_is_refused_and_one_given_to_all_is_left_out_of_alf(tmp_path, monkeypatch,
                                                                                             capsys):
    """`--eval-options=alf=--cache-features` was dropped in silence (eval refuses it for ALF)."""
    monkeypatch.setattr(subprocess, "Popen", lambda argv, **kwargs: pytest.fail("a step started"))
    common = ["--seeds", "0", "--methods", "ncp", "--eval", "slf", "--eval", "alf=ncp"]  # OPTIONS: --cache-features
    assert main(reproduce_argv(tmp_path / "a", *common, "--eval-options=alf=--cache-features")) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: step s0/eval-ncp-alf would fail: --cache-features is SLF only: --mode alf attacks images through the "
        "encoder; drop --cache-features (check --eval-options) (solo-ncp reproduce)")
    assert main(reproduce_argv(tmp_path / "b", *common, "--dry-run")) == 0
    commands = [line for line in capsys.readouterr().out.splitlines() if "solo-ncp eval " in line]
    assert [("--mode slf" in line, "--cache-features" in line) for line in commands] == [
        (True, True), (True, True), (False, False)], commands


def test_a_strong_augmentation_of_a_stage_2_config_stops_reproduce_before_stage_1(tmp_path, monkeypatch, capsys):
    """solo-ncp train would have trained without it, in silence."""
    monkeypatch.setattr(subprocess, "Popen", lambda argv, **kwargs: pytest.fail("a step started"))
    assert main(reproduce_argv(tmp_path / "run", "--seeds", "0", "--methods", "ncp",
                               "stage2:augmentations.0.solarization.prob=1.0")) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: ncp (ncp.yaml): augmentations.0.solarization.prob=1.0: stage 2 trains on the paper's weak augmentation "
        "only (pad_crop, a crop of crop_size, horizontal_flip), one view, so solo-ncp train would not apply it: switch "
        "it off (its prob 0, rrc.enabled false) (solo-ncp reproduce)")


@pytest.mark.parametrize("methods, config, method", [("ncp=deacl,deacl", "deacl.yaml", "deacl"),
                                                     ("deacl=ncp", "ncp.yaml", "ncp")])
def test_a_label_that_names_another_stage_2_method_is_refused(methods, config, method, tmp_path, capsys):
    """`--methods ncp=deacl,deacl` ran, and Table 2's row `ncp` held a DeACL encoder."""
    assert main(reproduce_argv(tmp_path / "run", "--seeds", "0", "--methods", methods, "--dry-run")) == 2
    label = methods.split("=")[0]
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: method label {label!r} is the name of the {label} method, but {config} trains method={method}, whose "
        f"rows would read as {label}'s: give it another label, e.g. {method}-b={config[:-5]} (solo-ncp reproduce)")
    assert main(reproduce_argv(tmp_path / "ok", "--seeds", "0", "--methods", f"{method}-b={config[:-5]}",
                               "--dry-run")) == 0


@pytest.mark.parametrize("methods", ["ncp,,deacl", ",ncp", "ncp,"])
def test_an_empty_item_of_methods_is_refused(methods, tmp_path, capsys):
    """It was dropped in silence."""
    with pytest.raises(SystemExit):
        main(reproduce_argv(tmp_path / "run", f"--methods={methods}", "--dry-run"))
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        f"argument --methods: {methods!r} has an empty item: separate the items by single commas, e.g. ncp,deacl")


@pytest.mark.parametrize("seeds", ["-1", "0,4294967296", "0,a", "0,,1", "0,"])
def test_seeds_outside_a_configs_seed_range_are_refused_naming_seeds(seeds, tmp_path, capsys):
    """`--seeds -1` was refused by select-k's check, naming --select-k-options; an empty item
    ("0,,1") was dropped in silence."""
    with pytest.raises(SystemExit):
        main(reproduce_argv(tmp_path / "run", f"--seeds={seeds}", "--methods", "ncp", "--dry-run"))
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        f"argument --seeds: --seeds takes comma-separated whole numbers from 0 to 4294967295, e.g. 0,1,2; "
        f"got {seeds!r}")
