"""Checkpoint history (`checkpoint.keep_prev`, every `checkpoint.frequency` epochs): each kept
checkpoint holds the weights of its epoch and solo-ncp's metadata, `--resume` still continues
from last.ckpt, and `solo-ncp eval` evaluates any of them.

Oracles: an independent 1-epoch run of the same seed and thread count (its last.ckpt is epoch 0;
the session's stage-1 fixture may have run with other thread counts, which change the float
sums), the run's own last.ckpt for its last epoch, Lightning's own `epoch` counter in each file,
and the epochs a frequency selects, counted by hand."""
import json
from pathlib import Path

import pytest
import torch

from solo_ncp.cli import main
from solo_ncp.models.checkpoint import read_checkpoint
from tests.conftest import SMALL_BACKBONE, pretrain

pytestmark = pytest.mark.usefixtures("single_thread")

HISTORY = ["checkpoint.keep_prev=true", "checkpoint.frequency=1"]
TWO_STEPS = ["limit_train_batches=2", *SMALL_BACKBONE]
"""What a history keeps does not depend on the backbone: the small one (conftest's SMALL_BACKBONE)."""


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def epoch_files(run: Path) -> dict:
    """{epoch in the file's name: path} of a run's epoch checkpoints."""
    return {int(path.stem.rsplit("-ep=", 1)[1]): path for path in run.glob(f"{run.name}-ep=*.ckpt")}


@pytest.fixture(scope="module")
def history_run(tmp_path_factory) -> Path:
    """Two epochs of two steps of SimCLR on digits keeping a checkpoint after each epoch."""
    root = tmp_path_factory.mktemp("history")
    assert pretrain(root, "name=kept", "max_epochs=2", *TWO_STEPS, *HISTORY) == 0
    return root / "kept"


@pytest.fixture(scope="module")
def one_epoch_ckpt(tmp_path_factory) -> Path:
    """last.ckpt of one epoch of the same run, without history."""
    root = tmp_path_factory.mktemp("one_epoch")
    assert pretrain(root, "name=one", "max_epochs=1", *TWO_STEPS) == 0
    return root / "one" / "last.ckpt"


def test_each_epoch_checkpoint_holds_the_weights_of_its_epoch(history_run, one_epoch_ckpt):
    files = epoch_files(history_run)
    assert sorted(files) == [0, 1]
    kept = {epoch: read_checkpoint(path) for epoch, path in files.items()}
    assert [kept[epoch]["epoch"] for epoch in (0, 1)] == [0, 1]
    assert_same_state(kept[0]["state_dict"], read_checkpoint(one_epoch_ckpt)["state_dict"])
    assert_same_state(kept[1]["state_dict"], read_checkpoint(history_run / "last.ckpt")["state_dict"])


def test_each_epoch_checkpoint_carries_solo_ncps_metadata(history_run, one_epoch_ckpt):
    meta = read_checkpoint(one_epoch_ckpt)["solo_ncp"]
    assert meta["backbone"] and meta["normalization"]
    for path in epoch_files(history_run).values():
        assert read_checkpoint(path)["solo_ncp"] == meta


def test_no_history_keys_keep_only_last_ckpt(digits_small_simclr_ckpt):
    assert sorted(p.name for p in digits_small_simclr_ckpt.parent.glob("*.ckpt")) == ["last.ckpt"]


def test_eval_evaluates_an_epoch_checkpoint(history_run, one_epoch_ckpt, tmp_path):
    """Its SA and RA are those of the 1-epoch run's last.ckpt: the same weights."""
    tiny = ["--dataset", "digits", "--epochs", "1", "--test-n", "20", "--aa-n", "0"]
    metrics = {}
    for name, ckpt in (("kept", epoch_files(history_run)[0]), ("oracle", one_epoch_ckpt)):
        assert main(["eval", "--ckpt", str(ckpt), "--out", str(tmp_path / name), *tiny]) == 0
        metrics[name] = json.loads((tmp_path / name / "metrics.json").read_text())["metrics"]
    assert (metrics["kept"]["sa"], metrics["kept"]["ra"]) == (metrics["oracle"]["sa"],
                                                              metrics["oracle"]["ra"])
    assert metrics["kept"]["sa_n"] == 20


def test_a_frequency_keeps_every_nth_epoch_also_across_a_resume(tmp_path):
    """frequency 2: epochs 2 and 4 (counted from 1) are kept, named ep=1 and ep=3 (from 0);
    resumed from last.ckpt after epoch 2."""
    tiny = ["name=f2", "limit_train_batches=1", "checkpoint.keep_prev=true", "checkpoint.frequency=2",
            *SMALL_BACKBONE]
    assert pretrain(tmp_path, "max_epochs=3", *tiny) == 0
    run = tmp_path / "f2"
    assert sorted(epoch_files(run)) == [1]
    assert read_checkpoint(run / "last.ckpt")["epoch"] == 2
    first = (run / "f2-ep=1.ckpt").read_bytes()
    assert pretrain(tmp_path, "max_epochs=4", *tiny, resume=True) == 0
    files = epoch_files(run)
    assert sorted(files) == [1, 3]
    assert (run / "f2-ep=1.ckpt").read_bytes() == first  # not rewritten by the resumed attempt
    assert read_checkpoint(files[3])["epoch"] == 3 and read_checkpoint(files[3])["global_step"] == 4


def test_a_resume_that_changes_the_frequency_goes_on_in_last_ckpt(tmp_path):
    """Lightning keys the checkpoint callback's saved state by its frequency: with another one the
    state was not restored, and the resumed epochs went to last-v1.ckpt while last.ckpt, which
    eval, export and the next --resume read, stayed at the first attempt's epoch."""
    tiny = ["name=fq", "limit_train_batches=1", *SMALL_BACKBONE]
    assert pretrain(tmp_path, "max_epochs=1", *tiny) == 0
    assert pretrain(tmp_path, "max_epochs=2", "checkpoint.frequency=5", *tiny, resume=True) == 0
    run = tmp_path / "fq"
    assert sorted(path.name for path in run.glob("*.ckpt")) == ["last.ckpt"]
    assert read_checkpoint(run / "last.ckpt")["epoch"] == 1 and read_checkpoint(run / "last.ckpt")["global_step"] == 2


BAD_HISTORY = {
    "checkpoint.frequency=0": ["checkpoint.frequency: 0", "1 or more"],
    "checkpoint.keep_prev=yes": ["checkpoint.keep_prev: yes", "true or false"],
    "++checkpoint.keep_previous=true": ["checkpoint.keep_previous", "did you mean `checkpoint.keep_prev`"],
}


@pytest.mark.parametrize("override", BAD_HISTORY)
def test_a_bad_history_setting_is_one_error_line(override, tmp_path, capsys):
    assert pretrain(tmp_path, "name=bad", "max_epochs=1", "limit_train_batches=1", override) == 2
    out, err = capsys.readouterr()
    last = (out + err).rstrip("\n").splitlines()[-1]
    assert last.startswith("error:"), last
    for word in BAD_HISTORY[override]:
        assert word in last, (word, last)
    assert not any(tmp_path.iterdir())
