"""`--resume`: through the safe loader only (also with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1), one
`error:` line for any last.ckpt it cannot continue from, a run folder locked while a process
trains in it, and, after a kill -9, the same per-epoch losses as an uninterrupted run."""
import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from solo_ncp.io import LOCK_NAME
from solo_ncp.launch.trainer import LAST
from tests.conftest import DIGITS_SIMCLR, ROOT, pretrain, train_stage2

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


def test_resuming_with_another_k_names_the_centroids(tmp_path, capsys, digits_simclr_ckpt,
                                                     digits_ncp_ckpt):
    plant(tmp_path / "ncp", lambda path: shutil.copy(digits_ncp_ckpt, path))  # K = 10
    assert train_stage2(tmp_path, digits_simclr_ckpt, "name=ncp", *TINY, "method_kwargs.k=5",
                        resume=True) == 2
    (line,) = error_lines(capsys.readouterr())
    assert "another configuration" in line and "centroids (10, 512) vs (5, 512) here" in line


def test_a_live_processs_run_folder_is_refused_naming_its_pid(tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (tmp_path / "r").mkdir()
        (tmp_path / "r" / LOCK_NAME).write_text(f"{holder.pid}\n")
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
    """3 epochs uninterrupted; the same run killed (SIGKILL) once its first last.ckpt exists,
    then `--resume`d: every resumed epoch has the uninterrupted run's losses (CPU, seeded), with
    augmentations drawn in the main process (0 workers) or in a loader worker (1)."""
    config = ROOT / "zoo_configs/fashionmnist/simclr.yaml"
    common = [*DIGITS_SIMCLR, f"checkpoint.dir={tmp_path}", "max_epochs=3", "limit_train_batches=2",
              f"data.num_workers={workers}", "log_every_n_steps=1"]
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
    assert killed_at < 2 and (run / LOCK_NAME).read_text() == f"{victim.pid}\n"

    resumed = subprocess.run(_cli("pretrain", "--config", config, *common[:-1], "--resume",
                                  common[-1], "name=cut"),  # --resume among the overrides
                             env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"taking over the lock of process {victim.pid}, which is gone" in resumed.stdout
    assert not (run / LOCK_NAME).exists()

    expected, got = _epoch_losses(tmp_path / "full"), _epoch_losses(run)
    assert sorted(got) == list(range(killed_at + 1, 3))
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

    from solo_ncp.launch.trainer import EpochSeeds

    def draws(epoch: int, consumed: int):
        torch.rand(consumed), np.random.rand(consumed), [random.random() for _ in range(consumed)]
        EpochSeeds(5).on_train_epoch_start(SimpleNamespace(current_epoch=epoch), None)
        return torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random()

    assert draws(3, consumed=0) == draws(3, consumed=9) != draws(4, consumed=0)
