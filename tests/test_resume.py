"""`--resume`: through the safe loader only (also with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1), one
`error:` line for any last.ckpt it cannot continue from, a run folder locked while a process
trains in it, and, after a kill -9, the same per-epoch losses as an uninterrupted run. A resume
with another config: the lrs of that config's schedule at the resumed epoch (against the cosine
computed here), a key that cannot change refused with one line and no file of the run changed,
and each key group of the README's "Resume semantics" under its rule. `train --trust-checkpoint`
trusts the stage-1 teacher too."""
import csv
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from solo_ncp.io import LOCK_NAME
from solo_ncp.launch.resume import APPLIED, REFUSED, SCHEDULE
from solo_ncp.launch.trainer import LAST
from tests.conftest import (DIGITS_SIMCLR, DIGITS_STAGE2, KILLED_RUN_EPOCHS, ROOT, SMALL_BACKBONE, pretrain,
                            train_stage2)

TINY = ["max_epochs=1", "limit_train_batches=1"]


class RunsCode:
    """Unpickling it creates the folder `marker`: what an unsafe load of a planted file does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def error_lines(captured) -> list:
    """The `error:` lines of a command's stderr, after checking it printed no traceback."""
    assert "Traceback" not in captured.err
    return [line for line in captured.err.splitlines() if "error:" in line]


def plant(run: Path, write) -> Path:
    """A run folder holding only a last.ckpt written by `write(path)`."""
    run.mkdir(parents=True)
    write(run / LAST)
    return run / LAST


def test_resume_never_unpickles_code_whatever_the_environment(tmp_path, monkeypatch, capsys):
    marker = tmp_path / "code-ran"
    plant(tmp_path / "r", lambda path: torch.save({"state_dict": RunsCode(marker)}, path))
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    assert pretrain(tmp_path, "name=r", *TINY, resume=True) == 2
    (line,) = error_lines(capsys.readouterr())
    assert "--trust-checkpoint" in line and "posix.mkdir" in line
    assert not marker.exists()


def test_lightning_itself_reads_through_the_safe_loader(tmp_path, monkeypatch):
    """Lightning's own read of --resume's checkpoint (after solo-ncp's check) is safe too."""
    from solo_ncp.config import load_config
    from solo_ncp.launch.trainer import build_trainer
    from solo_ncp.models import CheckpointError

    marker = tmp_path / "code-ran"
    torch.save({"state_dict": RunsCode(marker)}, tmp_path / LAST)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    cfg = load_config(ROOT / "zoo_configs/fashionmnist/simclr.yaml", [*DIGITS_SIMCLR, "accelerator=cpu"])
    trainer = build_trainer(cfg, tmp_path, meta={})
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        trainer.strategy.checkpoint_io.load_checkpoint(tmp_path / LAST)
    assert not marker.exists()


def _truncated(source: Path):
    return lambda path: path.write_bytes(source.read_bytes()[: source.stat().st_size // 2])


BAD_CHECKPOINTS = {
    "truncated": (None, "truncated"),
    "text": (lambda path: path.write_text("not a checkpoint\n"), "not a PyTorch checkpoint"),
    "list": (lambda path: torch.save([1, 2, 3], path), "holds a list, not a checkpoint"),
    "weights only": (lambda path: torch.save({"conv1.weight": torch.zeros(1)}, path),
                     "not a training checkpoint"),
    "unsafe pickle": (lambda path: torch.save({"epoch": 0, "x": Image.new("RGB", (1, 1))}, path),
                      "--trust-checkpoint"),
    "another backbone": (None, "another configuration"),
}


@pytest.mark.parametrize("kind", BAD_CHECKPOINTS)
def test_a_bad_last_ckpt_is_one_error_line(kind, tmp_path, capsys, digits_simclr_ckpt):
    write, message = BAD_CHECKPOINTS[kind]
    if kind == "truncated":
        write = _truncated(digits_simclr_ckpt)
    if kind == "another backbone":
        write = lambda path: shutil.copy(digits_simclr_ckpt, path)  # noqa: E731
    extra = ["backbone.kwargs.cifar=false"] if kind == "another backbone" else []
    plant(tmp_path / "r", write)
    assert pretrain(tmp_path, "name=r", *TINY, *extra, resume=True) == 2
    (line,) = error_lines(capsys.readouterr())
    assert line.startswith("error:") and line.endswith("(solo-ncp pretrain)") and message in line
    assert not (tmp_path / "r" / LOCK_NAME).exists()  # released on the error


def test_resuming_with_another_k_names_both_ks(tmp_path, capsys, digits_simclr_ckpt, digits_ncp_ckpt):
    """A bare last.ckpt (no config.yaml to compare with): its metadata's K against the config's."""
    plant(tmp_path / "ncp", lambda path: shutil.copy(digits_ncp_ckpt, path))  # K = 10
    assert train_stage2(tmp_path, digits_simclr_ckpt, "name=ncp", *TINY, "method_kwargs.k=5",
                        resume=True) == 2
    (line,) = error_lines(capsys.readouterr())
    assert ("the run being resumed was trained with K=10 clusters, this run's config gives K=5: set "
            "method_kwargs.k=10") in line


def test_resuming_a_run_of_the_other_method_names_both_methods(tmp_path, capsys, digits_simclr_ckpt,
                                                                digits_ncp_ckpt):
    """An ncp last.ckpt under a deacl config was 'trained with K=10 clusters, this run's config gives
    K=0: set method_kwargs.k=10', a fix deacl refuses (and the other way round, K=0)."""
    plant(tmp_path / "d", lambda path: shutil.copy(digits_ncp_ckpt, path))
    assert train_stage2(tmp_path, digits_simclr_ckpt, "name=d", *TINY, method="deacl", resume=True) == 2
    (line,) = error_lines(capsys.readouterr())
    assert line == ("error: the run being resumed was trained by ncp, this run's config trains deacl: resume it "
                    "with a config of method: ncp, or train a new run (another name) (solo-ncp train)")


HOLD_LOCK = """
import sys, time
from pathlib import Path
from solo_ncp.io import folder_lock
with folder_lock(sys.argv[1]):
    Path(sys.argv[2]).write_text("held")
    time.sleep(120)
"""


def test_a_live_processs_run_folder_is_refused_naming_its_pid(tmp_path, capsys):
    """Another process holds the run folder's lock (its flock, not only its pid in the file)."""
    (tmp_path / "r").mkdir()
    ready = tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path / "r"), str(ready)],
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert holder.poll() is None and time.monotonic() < deadline, "the holder did not start"
            time.sleep(0.05)
        assert pretrain(tmp_path, "name=r", *TINY) == 2
        (line,) = error_lines(capsys.readouterr())
        assert f"in use by process {holder.pid}" in line
        assert (tmp_path / "r" / LOCK_NAME).read_text() == f"{holder.pid}\n"  # left to its holder
    finally:
        holder.kill()
        holder.wait()


def test_outputs_are_checked_before_any_work(tmp_path, capsys, monkeypatch):
    from solo_ncp.launch import methods

    monkeypatch.setattr(methods, "build_method", lambda *a, **k: pytest.fail("work started"))
    (tmp_path / "file").write_text("")
    assert pretrain(tmp_path / "file" / "runs", "name=r", *TINY) == 2
    (line,) = error_lines(capsys.readouterr())
    assert "cannot write to" in line and "is a file, not a folder" in line


def _cli(*args: str) -> list:
    """`python -m solo_ncp.cli` with this checkout's solo_ncp first on the path."""
    return [sys.executable, "-W", "ignore", "-m", "solo_ncp.cli", *map(str, args)]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _epoch_losses(run: Path) -> dict:
    """{epoch: {metric: value}} of the epoch-level loss columns of the run's newest CSV log."""
    log = max(run.glob("logs/version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    with open(log) as f:
        rows = list(csv.DictReader(f))
    return {int(r["epoch"]): {k: float(v) for k, v in r.items() if k.endswith("loss_epoch") and v}
            for r in rows if any(k.endswith("loss_epoch") and v for k, v in r.items())}


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_after_kill_9_repeats_the_uninterrupted_losses(tmp_path, workers):
    """`KILLED_RUN_EPOCHS` epochs uninterrupted on the small backbone; the same run killed
    (SIGKILL) once its first last.ckpt exists, then `--resume`d: every resumed epoch has the
    uninterrupted run's losses (CPU, seeded), with augmentations drawn in the main process (0
    workers) or in a loader worker (1)."""
    config, epochs = ROOT / "zoo_configs/fashionmnist/simclr.yaml", KILLED_RUN_EPOCHS
    common = [*DIGITS_SIMCLR, *SMALL_BACKBONE, f"checkpoint.dir={tmp_path}", f"max_epochs={epochs}",
              "limit_train_batches=2", f"data.num_workers={workers}", "log_every_n_steps=1"]
    full = subprocess.run(_cli("pretrain", "--config", config, *common, "name=full"), env=_env(),
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert full.returncode == 0, full.stderr[-3000:]

    run = tmp_path / "cut"
    victim = subprocess.Popen(_cli("pretrain", "--config", config, *common, "name=cut"), env=_env(),
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (run / LAST).exists() and victim.poll() is None:
        time.sleep(0.05)
    victim.kill()
    victim.wait()
    killed_at = torch.load(run / LAST, weights_only=True)["epoch"]
    assert killed_at < epochs - 1 and (run / LOCK_NAME).read_text() == f"{victim.pid}\n"

    resumed = subprocess.run(_cli("pretrain", "--config", config, *common[:-1], "--resume",
                                  common[-1], "name=cut"),  # --resume among the overrides
                             env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"taking over the lock of process {victim.pid}, which is gone" in resumed.stdout
    assert not (run / LOCK_NAME).exists()

    expected, got = _epoch_losses(tmp_path / "full"), _epoch_losses(run)
    assert sorted(got) == list(range(killed_at + 1, epochs))
    for epoch, losses in got.items():
        assert losses and losses == pytest.approx(expected[epoch], rel=1e-6, abs=1e-6), epoch


def test_trust_checkpoint_resumes_from_a_trusted_pickle(tmp_path, capsys, digits_simclr_ckpt):
    """A real run's last.ckpt (written in another folder) carrying one Python object the safe
    loader refuses; resumed, it is replaced by the next epoch's (not put beside as last-v1)."""
    ckpt = torch.load(digits_simclr_ckpt, weights_only=True)
    plant(tmp_path / "r", lambda path: torch.save({**ckpt, "note": Image.new("RGB", (1, 1))}, path))
    args = ["name=r", "max_epochs=3", "limit_train_batches=1"]
    assert pretrain(tmp_path, *args, resume=True) == 2
    assert "--trust-checkpoint" in error_lines(capsys.readouterr())[0]
    assert pretrain(tmp_path, *args, "--trust-checkpoint", resume=True) == 0
    assert torch.load(tmp_path / "r" / LAST, weights_only=True)["epoch"] == 2
    assert not list((tmp_path / "r").glob("last-v*.ckpt"))


def test_each_epoch_restarts_the_global_rngs_from_seed_and_epoch():
    import random
    from types import SimpleNamespace

    import numpy as np

    from solo_ncp.launch.callbacks import EpochSeeds

    def draws(epoch: int, consumed: int):
        torch.rand(consumed), np.random.rand(consumed), [random.random() for _ in range(consumed)]
        EpochSeeds(5).on_train_epoch_start(SimpleNamespace(current_epoch=epoch), None)
        return torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random()

    assert draws(3, consumed=0) == draws(3, consumed=9) != draws(4, consumed=0)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """The folder of a finished 1-epoch SimCLR run on digits (lr 0.4 x 128 / 256 = 0.2, no
    warmup, so its cosine ends at lr 0)."""
    out = tmp_path_factory.mktemp("finished")
    assert pretrain(out, "name=done", "max_epochs=1", "limit_train_batches=1") == 0
    return out / "done"


def copied(run: Path, out: Path) -> Path:
    """A copy of the run folder `run` under `out` (so its checkpoint.dir is recorded otherwise)."""
    return Path(shutil.copytree(run, out / run.name))


def cosine(peak: float, epoch: int, max_epochs: int) -> float:
    """The lr of `epoch` on a cosine from `peak` to 0 over `max_epochs` epochs without warmup."""
    return peak * (1 + math.cos(math.pi * epoch / max_epochs)) / 2


@pytest.mark.parametrize("max_epochs, lr, classifier_lr", [(2, None, None), (3, 0.1, 0.3)])
def test_a_resume_trains_on_the_cosine_of_its_config(max_epochs, lr, classifier_lr, tmp_path,
                                                      capsys, finished_run):
    """A finished 1-epoch run resumed with more epochs (and new lrs) trains each further epoch at
    the lr this config's cosine gives it, as printed (was: lr 0, then rising)."""
    from tests.test_lr import lr_columns

    run = copied(finished_run, tmp_path)
    given = [f"optimizer.lr={lr}", f"optimizer.classifier_lr={classifier_lr}"] if lr else []
    capsys.readouterr()
    assert pretrain(tmp_path, "name=done", f"max_epochs={max_epochs}", "limit_train_batches=1",
                    *given, resume=True) == 0
    peak, classifier_peak = (lr or 0.4) * 128 / 256, classifier_lr or 0.1  # the config's rule
    epochs = range(1, max_epochs)
    lrs = lr_columns(run)
    assert lrs["encoder"] == pytest.approx([cosine(peak, e, max_epochs) for e in epochs])
    assert lrs["classifier"] == pytest.approx([cosine(classifier_peak, e, max_epochs) for e in epochs])
    out = capsys.readouterr().out
    assert f"max_epochs 1 -> {max_epochs} (applied, schedule rebuilt)" in out
    (line,) = [line for line in out.splitlines() if "resuming at epoch" in line]
    printed = dict(re.findall(r"(encoder|backbone|classifier) ([0-9.e-]+)", line))
    assert float(printed.pop("classifier")) == pytest.approx(lrs["classifier"][0])
    assert [float(v) for v in printed.values()] == pytest.approx(lrs["encoder"][:1])
    assert f"max_epochs: {max_epochs}" in (run / "config.yaml").read_text()


def snapshot(folder: Path) -> dict:
    """{path: bytes} of every file under `folder`."""
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


REFUSED_RESUMES = {  # case -> (overrides, words of the error line)
    "another dataset": (["data.dataset=cifar10"], ["data.dataset: digits recorded, cifar10 given"]),
    "another backbone": (["backbone.name=resnet50"],
                         ["backbone.name: resnet18 recorded, resnet50 given"]),
    "another batch size": (["optimizer.batch_size=64"],
                           ["optimizer.batch_size: 128 recorded, 64 given"]),
    "more devices": (["devices=2"], ["devices: 1 recorded, 2 given"]),
    "two keys": (["seed=1", "method_kwargs.temperature=0.2"],
                 ["method_kwargs.temperature: 0.5 recorded, 0.2 given", "seed: 5 recorded, 1 given"]),
    "an accelerator it lacks": (["accelerator=gpu"], ["accelerator=gpu", "no CUDA device"]),
}


def test_resuming_a_finished_run_trains_nothing_and_changes_no_file(tmp_path, capsys, finished_run):
    """The 1-epoch run resumed as it was: one line says so, exit 0, and no file of the run changes
    or is added (was: a logs/version_1 holding only hparams.yaml, and config.yaml rewritten)."""
    run = copied(finished_run, tmp_path)
    before = snapshot(run)
    capsys.readouterr()
    assert pretrain(tmp_path, "name=done", "max_epochs=1", "limit_train_batches=1", resume=True) == 0
    out = capsys.readouterr().out
    assert (f"[solo-ncp] {run / 'last.ckpt'} holds 1 epoch, max_epochs=1: nothing to train, no file "
            "changed (raise max_epochs to train on)") in out
    assert f"[solo-ncp] stage-1 checkpoint: {run / 'last.ckpt'}" in out
    assert snapshot(run) == before


@pytest.mark.parametrize("case", REFUSED_RESUMES)
def test_a_refused_resume_is_one_error_line_and_changes_no_file(case, tmp_path, capsys,
                                                                finished_run):
    overrides, words = REFUSED_RESUMES[case]
    if case == "an accelerator it lacks" and torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    run = copied(finished_run, tmp_path)
    before = snapshot(run)
    assert pretrain(tmp_path, "name=done", "max_epochs=2", "limit_train_batches=1", *overrides,
                    resume=True) == 2
    (line,) = error_lines(capsys.readouterr())
    assert all(word in line for word in words), line
    assert "accelerator" in case or "start a new run with another name=" in line
    assert snapshot(run) == before


def test_resuming_stage_2_with_another_k_is_refused_by_its_config(tmp_path, capsys,
                                                                  digits_simclr_ckpt,
                                                                  digits_ncp_ckpt):
    run = copied(digits_ncp_ckpt.parent, tmp_path)  # K = 10
    before = snapshot(run)
    assert train_stage2(tmp_path, digits_simclr_ckpt, "name=ncp", "max_epochs=2",
                        "method_kwargs.k=5", resume=True) == 2
    (line,) = error_lines(capsys.readouterr())
    assert "method_kwargs.k: 10 recorded, 5 given" in line and "another name=" in line
    assert snapshot(run) == before


def test_resuming_stage_2_from_a_changed_teacher_file_is_refused(tmp_path, capsys, digits_simclr_ckpt,
                                                                 digits_ncp_ckpt):
    """The teacher file the run was trained from, at the same path, now holds other weights: resuming
    would go on from the old teacher's weights in last.ckpt while its metadata named the new file."""
    import hashlib

    import yaml

    teacher = tmp_path / "teacher.ckpt"
    shutil.copy(digits_simclr_ckpt, teacher)
    run = copied(digits_ncp_ckpt.parent, tmp_path)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["method_kwargs"]["teacher_ckpt"] = str(teacher)  # as if trained from this copy
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    checkpoint = torch.load(teacher, weights_only=True)
    key = next(k for k, v in checkpoint["state_dict"].items() if v.is_floating_point() and v.dim() == 4)
    checkpoint["state_dict"][key] += 1
    torch.save(checkpoint, teacher)
    before = snapshot(run)
    assert train_stage2(tmp_path, teacher, "name=ncp", "max_epochs=2", resume=True) == 2
    (line,) = error_lines(capsys.readouterr())
    trained_from = hashlib.sha256(digits_simclr_ckpt.read_bytes()).hexdigest()
    given = hashlib.sha256(teacher.read_bytes()).hexdigest()
    assert (f"the run being resumed was trained from a teacher of sha256 {trained_from[:12]}..., but "
            f"method_kwargs.teacher_ckpt={teacher} is {given[:12]}...") in line
    assert snapshot(run) == before  # refused before the run folder is touched


def test_resuming_stage_2_from_its_teacher_moved_elsewhere_trains_on(tmp_path, capsys, digits_simclr_ckpt,
                                                                      digits_ncp_ckpt):
    """The same bytes at another path (the teacher's folder moved): refused before as a changed
    key; the run goes on, and its next checkpoint names the path given."""
    moved = tmp_path / "moved" / "teacher.ckpt"
    moved.parent.mkdir()
    shutil.copy(digits_simclr_ckpt, moved)
    run = copied(digits_ncp_ckpt.parent, tmp_path)
    assert train_stage2(tmp_path, moved, "name=ncp", "max_epochs=2", resume=True) == 0
    final = torch.load(run / LAST, weights_only=True)
    assert final["epoch"] == 1 and final["solo_ncp"]["teacher"]["path"] == str(moved)


RESUME_ROWS = {  # an override per key group of the README's "Resume semantics" -> its rule
    "max_epochs=5": SCHEDULE, "optimizer.lr=0.1": SCHEDULE, "optimizer.classifier_lr=0.3": SCHEDULE,
    "scheduler.min_lr=0.001": SCHEDULE,
    "name=moved": APPLIED, "checkpoint.dir=/elsewhere": APPLIED, "checkpoint.keep_prev=true": APPLIED,
    "auto_resume.enabled=true": APPLIED,
    "tensorboard.enabled=true": APPLIED, "wandb.offline=true": APPLIED, "log_every_n_steps=1": APPLIED,
    "data.train_path=/elsewhere": APPLIED, "data.num_workers=2": APPLIED, "data.val=true": APPLIED,
    "limit_train_batches=3": APPLIED, "limit_val_batches=3": APPLIED,
    "accelerator=cpu": APPLIED, "+strategy=ddp": APPLIED, "+method_kwargs.trust_teacher=true": APPLIED,
    "method_kwargs.teacher_ckpt=/elsewhere/last.ckpt": APPLIED,
    "devices=2": REFUSED, "data.dataset=cifar10": REFUSED, "backbone.name=resnet50": REFUSED,
    "method_kwargs.temperature=0.2": REFUSED, "optimizer.batch_size=64": REFUSED,
    "optimizer.weight_decay=0.1": REFUSED, "augmentations.0.crop_size=6": REFUSED, "seed=1": REFUSED,
    "precision=16": REFUSED, "+num_nodes=2": REFUSED, "+accumulate_grad_batches=2": REFUSED,
}

STAGE2_ROWS = {"+method_kwargs.trust_teacher=true", "method_kwargs.teacher_ckpt=/elsewhere/last.ckpt"}
"""Rows of keys only the stage-2 method reads (checked on its config; simclr refuses them)."""


@pytest.mark.parametrize("override", RESUME_ROWS)
def test_each_key_group_has_its_resume_rule(override):
    from solo_ncp.config import load_config
    from solo_ncp.launch.resume import config_changes, plain_config

    config, shared = ("ncp.yaml", DIGITS_STAGE2) if override in STAGE2_ROWS else ("simclr.yaml", DIGITS_SIMCLR)
    recorded = load_config(ROOT / "zoo_configs/fashionmnist" / config, shared)
    given = load_config(ROOT / "zoo_configs/fashionmnist" / config, [*shared, override])
    (change,) = config_changes(plain_config(recorded), plain_config(given))
    assert (change.key, change.rule) == (override.lstrip("+").split("=")[0], RESUME_ROWS[override])


def test_other_devices_of_the_same_count_are_no_change():
    from solo_ncp.config import load_config
    from solo_ncp.launch.resume import config_changes, plain_config

    one, other = (load_config(ROOT / "zoo_configs/fashionmnist/simclr.yaml", [*DIGITS_SIMCLR, d])
                  for d in ("devices=1", "devices=[3]"))
    assert config_changes(plain_config(one), plain_config(other)) == []


def unsafe_copy(ckpt: Path, path: Path) -> Path:
    """`ckpt` saved again at `path` with one Python object the safe loader refuses."""
    torch.save({**torch.load(ckpt, weights_only=True), "note": Image.new("RGB", (1, 1))}, path)
    return path


def test_an_unsafe_teacher_is_refused_naming_what_trusts_it(tmp_path, capsys, digits_simclr_ckpt):
    teacher = unsafe_copy(digits_simclr_ckpt, tmp_path / "teacher.ckpt")
    assert train_stage2(tmp_path, teacher, "name=t", "max_epochs=1", "limit_train_batches=1") == 2
    (line,) = error_lines(capsys.readouterr())
    assert "`solo-ncp train --trust-checkpoint`" in line
    assert "+method_kwargs.trust_teacher=true" in line and "main_pretrain.py" in line


def test_train_trust_checkpoint_trusts_the_teacher(tmp_path, digits_simclr_ckpt):
    """`train --trust-checkpoint` trusts the teacher as well as --resume's last.ckpt, through the
    method's own option (the one solo-learn main's main_pretrain.py takes), recorded in
    config.yaml."""
    from omegaconf import OmegaConf

    teacher = unsafe_copy(digits_simclr_ckpt, tmp_path / "teacher.ckpt")
    assert train_stage2(tmp_path, teacher, "name=t", "max_epochs=1", "limit_train_batches=1",
                        "--trust-checkpoint") == 0
    assert torch.load(tmp_path / "t" / LAST, weights_only=True)["epoch"] == 0
    assert OmegaConf.load(tmp_path / "t" / "config.yaml").method_kwargs.trust_teacher is True


@pytest.mark.parametrize("data, reason", [
    (b"a: [unclosed\n", "while parsing a flow sequence"), (b"- a list\n", "holds a list, not a block of keys"),
    (b"", "empty"), (b"\xff\xfe\x00\x81", "'utf-8' codec can't decode byte 0xff"),
    (b"5\n", "holds a single value ('5'), not a block of keys"),
    (b"hello\n", "holds a single value ('hello'), not a block of keys"),
    (b"a: &x\n  b: *x\n", "it nests without end (a YAML alias inside its own anchor)"),
], ids=["truncated", "a list", "empty", "binary", "a number", "a word", "an alias inside itself"])
def test_an_unreadable_recorded_config_is_one_error(data, reason, tmp_path):
    """A word was read as {word: None} (OmegaConf reads a lone string so), and --resume listed
    every key of the config as changed; a number and a recursive alias were tracebacks."""
    from solo_ncp.config import ConfigError, load_config
    from solo_ncp.launch.resume import check_resume_config

    path = tmp_path / "config.yaml"
    path.write_bytes(data)
    cfg = load_config(ROOT / "zoo_configs/fashionmnist/simclr.yaml", DIGITS_SIMCLR)
    with pytest.raises(ConfigError) as caught:
        check_resume_config(tmp_path, cfg)
    assert str(caught.value).startswith(f"--resume: cannot read the run's recorded config {path} ({reason}")
    assert str(caught.value).endswith("): restore it, or remove it to resume with the keys unchecked")


@pytest.mark.parametrize("written, here", [("encoder", "backbone"), ("backbone", "encoder")])
def test_resuming_a_checkpoint_of_the_other_host_names_both_hosts(tmp_path, written, here):
    """solo-learn 1.0.2 keeps the encoder as `encoder.`, main as `backbone.`: the same config's run
    resumed on the other host said only that the weights' names differ."""
    from torch import nn

    from solo_ncp.launch.trainer import check_resumable
    from solo_ncp.models.checkpoint import CheckpointError

    hosts = {"encoder": "solo-learn 1.0.2", "backbone": "solo-learn main"}
    model = nn.Module()
    setattr(model, here, nn.Linear(2, 2))
    torch.save({"epoch": 0, "state_dict": {f"{written}.weight": torch.zeros(2, 2), f"{written}.bias": torch.zeros(2)}},
               tmp_path / "last.ckpt")
    with pytest.raises(CheckpointError) as caught:
        check_resumable(tmp_path / "last.ckpt", model)
    assert str(caught.value) == (
        f"{tmp_path / 'last.ckpt'} was written on {hosts[written]}, which names the encoder's weights `{written}.`; "
        f"this host ({hosts[here]}) cannot resume it: resume with the {hosts[written]} environment, or start a "
        "new run with another name=... (checkpoints cross hosts for eval, select-k, poc and as a teacher, not "
        "for --resume)")


@pytest.mark.parametrize("options", [["method_kwargs.cluster_features=memory_bank"],
                                     ["method_kwargs.assign=index", "method_kwargs.cluster_every=2"]],
                         ids=["memory bank", "assign index every 2 epochs"])
def test_a_resumed_stage2_clusters_as_the_run_it_continues(tmp_path, monkeypatch, digits_small_simclr_ckpt, options):
    """3 epochs uninterrupted; the same run stopped (SIGINT) as epoch 1 starts, then resumed: epochs 1
    and 2 have the uninterrupted run's losses. The memory bank (epoch 1 clusters the features epoch 0
    remembered) and the per-sample clusters of assign=index (epoch 1 clusters nothing) were not in
    the checkpoint: the resumed epoch 1 clustered a full pass, or clustered when not due."""
    import solo_ncp.methods.stage2_hooks as hooks
    from solo_ncp.interrupt import Interrupted

    common = ["max_epochs=3", "limit_train_batches=2", "log_every_n_steps=1", *SMALL_BACKBONE, *options]
    assert train_stage2(tmp_path, digits_small_simclr_ckpt, "name=full", *common) == 0
    real = hooks.Stage2Hooks.on_train_epoch_start

    def stop_at_epoch_1(self):
        if self.current_epoch == 1:
            raise Interrupted()
        return real(self)

    with monkeypatch.context() as patched:
        patched.setattr(hooks.Stage2Hooks, "on_train_epoch_start", stop_at_epoch_1)
        assert train_stage2(tmp_path, digits_small_simclr_ckpt, "name=cut", *common) == 130
    assert torch.load(tmp_path / "cut" / LAST, weights_only=True)["epoch"] == 0
    assert train_stage2(tmp_path, digits_small_simclr_ckpt, "name=cut", *common, resume=True) == 0
    expected, got = _epoch_losses(tmp_path / "full"), _epoch_losses(tmp_path / "cut")
    assert sorted(got) == [1, 2]
    for epoch, losses in got.items():
        assert losses and losses == pytest.approx(expected[epoch], rel=1e-6, abs=1e-6), epoch
