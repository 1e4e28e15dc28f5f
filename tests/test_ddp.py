"""Stage 2 under DDP end to end: `solo-ncp train accelerator=cpu devices=2 strategy=ddp` (gloo, two
processes) on digits for 2 epochs.

Oracles: the features each rank clustered against the encoders' own features of the training set
in dataset order (epoch 0: the stage-1 teacher, which f2 starts as; epoch 1: the kept checkpoint
of epoch 0, through the clean branch), computed here in one process; centroids compared across
ranks bit for bit; the checkpoint through `solo-ncp eval`."""
import os
import subprocess
import sys

import pytest
import torch

from solo_ncp.cli import main
from solo_ncp.config import load_config
from solo_ncp.launch.data import config_dataset
from solo_ncp.models import load_encoder
from tests.conftest import DIGITS_STAGE2, ROOT

CONFIG = ROOT / "zoo_configs/fashionmnist/ncp.yaml"
EPOCHS = 2


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, digits_simclr_ckpt):
    """{"folder": run folder, "record": the ranks' clusterings, "output": stdout + stderr}."""
    out = tmp_path_factory.mktemp("ddp")
    record = out / "record"
    record.mkdir()
    args = [str(CONFIG), *DIGITS_STAGE2, f"checkpoint.dir={out}", "name=ddp",
            f"method_kwargs.teacher_ckpt={digits_simclr_ckpt}", f"max_epochs={EPOCHS}",
            "++accelerator=cpu", "++devices=2", "++strategy=ddp", "checkpoint.keep_prev=true"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "tests/ddp_train.py"), str(record),
                           "--config", *args], env=env, cwd=out, capture_output=True, text=True,
                          timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    return {"folder": out / "ddp", "record": record, "output": output, "args": args}


def clusterings(record, rank):
    return [torch.load(record / f"rank{rank}-clustering{n}.pt", weights_only=True)
            for n in range(EPOCHS)]


def encoded(ckpt, cfg) -> torch.Tensor:
    """(N, D) features of the training set in dataset order, through the clean branch."""
    encoder = load_encoder(ckpt, bn="clean").model.eval()
    data = config_dataset(cfg, "pretrain", None)
    with torch.no_grad():
        return torch.cat([encoder(torch.stack([data[i][0] for i in range(start, min(start + 64, len(data)))]))
                          for start in range(0, len(data), 64)])


def test_both_ranks_hold_the_same_centroids_every_epoch(ddp_run):
    rank0, rank1 = (clusterings(ddp_run["record"], rank) for rank in (0, 1))
    for epoch in range(EPOCHS):
        assert torch.equal(rank0[epoch]["centroids"], rank1[epoch]["centroids"])
        assert torch.equal(rank0[epoch]["features"], rank1[epoch]["features"])
    assert not torch.equal(rank0[0]["centroids"], rank0[1]["centroids"])


def test_clustered_features_are_the_whole_training_set_in_dataset_order(ddp_run, digits_simclr_ckpt):
    cfg = load_config(*ddp_run["args"][:1], ddp_run["args"][1:])
    rank0 = clusterings(ddp_run["record"], 0)
    sources = [digits_simclr_ckpt, ddp_run["folder"] / "ddp-ep=0.ckpt"]
    for epoch, source in enumerate(sources):
        expected = encoded(source, cfg)
        assert rank0[epoch]["features"].shape == expected.shape == (256, 512)
        torch.testing.assert_close(rank0[epoch]["features"], expected, rtol=1e-4, atol=1e-5)


def test_epoch_level_logs_do_not_ask_for_sync_dist(ddp_run):
    assert "sync_dist" not in ddp_run["output"]


def test_the_ddp_checkpoint_loads_and_evaluates(ddp_run, tmp_path):
    assert main(["eval", "--ckpt", str(ddp_run["folder"] / "last.ckpt"), "--dataset", "digits",
                 "--epochs", "1", "--test-n", "20", "--aa-n", "0", "--bn", "adv",
                 "--out", str(tmp_path / "eval")]) == 0
    assert (tmp_path / "eval" / "metrics.json").is_file()
