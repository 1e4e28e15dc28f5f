"""Loggers: CSV always, W&B (offline, no network) and TensorBoard when the config's blocks enable
them; a resumed run keeps its W&B run; bad logger blocks are one `error:` line.

Oracles: W&B names its offline run folder `offline-run-<time>-<run id>` and its log
`run-<run id>.wandb` itself; TensorBoard's own EventAccumulator reads the event files back, and
the CSV log (Lightning's CSVLogger, read with the csv module) holds the same scalars."""
import csv
import fnmatch
import os
import subprocess
import sys
from pathlib import Path

import pytest

from solo_ncp.cli import main
from tests.conftest import DIGITS_SIMCLR, ROOT, SMALL_BACKBONE, pretrain

LOGGERS = ["wandb.enabled=true", "wandb.project=solo-ncp-tests", "wandb.offline=true",
           "tensorboard.enabled=true"]
SIMCLR = ["pretrain", "--config", str(ROOT / "zoo_configs/fashionmnist/simclr.yaml"), *DIGITS_SIMCLR]


def offline_wandb_env(root: Path) -> dict:
    """W&B offline with every folder it writes under `root`."""
    return {"WANDB_MODE": "offline", "WANDB_DIR": str(root / "wandb_dir"),
            "WANDB_CONFIG_DIR": str(root / "wandb_config"), "WANDB_CACHE_DIR": str(root / "wandb_cache"),
            "WANDB_DATA_DIR": str(root / "wandb_data")}


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory) -> Path:
    """The run folder of one epoch of SimCLR on digits with W&B (offline) and TensorBoard, then
    `--resume`d for a second epoch."""
    root = tmp_path_factory.mktemp("loggers")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in offline_wandb_env(root).items():
            patch.setenv(key, value)
        assert pretrain(root, "name=logged", "max_epochs=1", "limit_train_batches=2", *LOGGERS) == 0
        assert pretrain(root, "name=logged", "max_epochs=2", "limit_train_batches=2", *LOGGERS,
                        resume=True) == 0
    return root / "logged"


def test_a_resumed_run_keeps_its_wandb_run(resumed_run):
    folders = sorted((resumed_run / "wandb").glob("offline-run-*"))
    assert len(folders) == 2  # one per attempt, written inside the run folder
    ids = {folder.name.rsplit("-", 1)[1] for folder in folders}
    assert len(ids) == 1
    (run_id,) = ids
    for folder in folders:
        assert (folder / f"run-{run_id}.wandb").is_file()  # W&B's log of the run, named by W&B


def csv_scalars(run: Path, tag: str) -> dict:
    """{step: value} of column `tag` over every CSV log (one per attempt) of a run."""
    values = {}
    for path in sorted(run.glob("logs/version_*/metrics.csv")):
        with open(path) as f:
            values.update({int(row["step"]): float(row[tag]) for row in csv.DictReader(f) if row[tag]})
    return values


def tensorboard_scalars(run: Path, tag: str) -> dict:
    """{step: value} of scalar `tag` over every TensorBoard version of a run, read by
    TensorBoard's own EventAccumulator."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = {}
    for version in sorted(run.glob("tensorboard/version_*")):
        events = EventAccumulator(str(version))
        events.Reload()
        values.update({event.step: event.value for event in events.Scalars(tag)})
    return values


def csv_column(run: Path, pattern: str) -> str:
    """The CSV log's column matching `pattern` (the optimizer's name in `lr-<optimizer>/<group>`
    differs between the hosts' solo-learn)."""
    with open(run / "logs" / "version_0" / "metrics.csv") as f:
        (column,) = fnmatch.filter(next(csv.reader(f)), pattern)
    return column


@pytest.mark.parametrize("pattern", ["train_nce_loss_epoch", "lr-*/classifier"])
def test_tensorboard_holds_the_csv_scalars(resumed_run, pattern):
    tag = csv_column(resumed_run, pattern)
    logged = csv_scalars(resumed_run, tag)
    assert len(logged) == 2  # both epochs, one in each attempt's CSV log
    assert tensorboard_scalars(resumed_run, tag) == pytest.approx(logged, rel=1e-6)  # float32


def test_tensorboard_enabled_on_a_resume_numbers_its_log_by_the_attempt(tmp_path):
    """One epoch without TensorBoard, a second through --resume with it: its log is version_1,
    beside the CSV log of that attempt (was: version_0), and holds that attempt's epoch."""
    argv = ["name=tb", "limit_train_batches=1", *SMALL_BACKBONE]
    assert pretrain(tmp_path, *argv, "max_epochs=1") == 0
    assert pretrain(tmp_path, *argv, "max_epochs=2", "tensorboard.enabled=true", resume=True) == 0
    run = tmp_path / "tb"
    assert sorted(p.name for p in (run / "tensorboard").iterdir()) == ["version_1"]
    assert sorted(p.name for p in (run / "logs").iterdir()) == ["version_0", "version_1"]
    with open(run / "logs" / "version_1" / "metrics.csv") as f:
        epoch_2 = {int(row["step"]): float(row["train_nce_loss_epoch"])
                   for row in csv.DictReader(f) if row["train_nce_loss_epoch"]}
    assert tensorboard_scalars(run, "train_nce_loss_epoch") == pytest.approx(epoch_2, rel=1e-6)


def test_a_run_without_logger_blocks_writes_only_the_csv_log(digits_simclr_ckpt):
    run = digits_simclr_ckpt.parent
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "last.ckpt", "logs"]
    assert csv_scalars(run, "train_nce_loss_epoch")


BAD_BLOCKS = {  # override -> words the error line must hold
    "wandb.enabled=true": ["wandb.project", "wandb.enabled=false"],
    "++wandb.projet=x": ["wandb.projet", "did you mean `wandb.project`"],
    "wandb.offline=yes": ["wandb.offline: yes", "true or false"],
    "tensorboard.enable=true": ["tensorboard.enable", "did you mean `tensorboard.enabled`"],
    "++tensorboard=true": ["tensorboard: True", "block of keys"],
}


@pytest.mark.parametrize("override", BAD_BLOCKS)
def test_a_bad_logger_block_is_one_error_line(override, tmp_path, capsys):
    assert main([*SIMCLR, f"checkpoint.dir={tmp_path}", "max_epochs=1", "limit_train_batches=1",
                 override]) == 2
    out, err = capsys.readouterr()
    last = (out + err).rstrip("\n").splitlines()[-1]
    assert last.startswith("error:") and last.endswith("(solo-ncp pretrain)")
    for word in BAD_BLOCKS[override]:
        assert word in last, (word, last)
    assert "Traceback" not in out + err
    assert not any(tmp_path.iterdir())  # refused before any work


def test_wandb_without_a_login_is_one_error_line(tmp_path):
    """Online W&B with no API key: refused before training, naming both fixes. In a process of
    its own: W&B keeps the settings of a process's first run (offline, above)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path), NETRC=str(tmp_path / "netrc"), PYTHONPATH=str(ROOT),
               WANDB_CONFIG_DIR=str(tmp_path / "wandb_config"))
    proc = subprocess.run([sys.executable, "-W", "ignore", "-m", "solo_ncp.cli", *SIMCLR,
                           f"checkpoint.dir={tmp_path / 'runs'}", "name=online", "max_epochs=1",
                           "wandb.enabled=true", "wandb.project=solo-ncp-tests"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.rstrip("\n").splitlines()[-1]
    assert last.startswith("error: W&B could not start the run"), last
    assert "wandb login" in last and "wandb.offline=true" in last
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs" / "online" / "last.ckpt").exists()
