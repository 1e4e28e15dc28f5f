"""Learning rates on either host: solo-learn main's rule (lr x batch x devices / 256, as its
main_pretrain.py applies it), printed and logged; the lrs the optimizer trains with, and
`optimizer.classifier_lr` honoured with and without warmup (read back from the CSV log of tiny
digits runs)."""
import csv
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from solo_ncp._host import current_host
from solo_ncp.config import ConfigError, LearningRates, learning_rates, load_config
from tests.conftest import ROOT, SMALL_BACKBONE, pretrain

ZOO = ROOT / "zoo_configs"
BASE_LR, CLASSIFIER_LR = 0.4, 0.1


@pytest.mark.parametrize(
    "overrides, lr, classifier_lr",
    [
        (["optimizer.batch_size=256"], 0.4, 0.1),
        (["optimizer.batch_size=512"], 0.8, 0.1),  # the CIFAR SimCLR batch
        (["optimizer.batch_size=512", "devices=[0,1]"], 1.6, 0.1),
        (["optimizer.batch_size=128", "devices=2", "+num_nodes=2"], 0.8, 0.1),
        (["optimizer.batch_size=512", "+data.val_path=./datasets"], 0.8, 0.2),  # main's condition
    ],
)
def test_the_rule_of_solo_learn_mains_parse_cfg(overrides, lr, classifier_lr):
    cfg = load_config(ZOO / "cifar10/simclr.yaml", [f"optimizer.lr={BASE_LR}",
                                                    f"optimizer.classifier_lr={CLASSIFIER_LR}", *overrides])
    rates = learning_rates(cfg)
    assert (rates.lr, rates.classifier_lr) == pytest.approx((lr, classifier_lr))
    assert cfg.optimizer.lr == BASE_LR  # the config keeps the base value as written


@pytest.mark.skipif(not current_host().is_main, reason="solo-learn main's parse_cfg only")
def test_solo_learn_mains_own_parse_cfg_agrees():
    """The rule against the code that main_pretrain.py runs."""
    from solo.args.pretrain import parse_cfg

    cfg = load_config(ZOO / "cifar10/simclr.yaml", ["optimizer.batch_size=512", "devices=[0,1]",
                                                    "+data.val_path=./datasets", "data.dataset=cifar10"])
    rates = learning_rates(cfg)
    main = parse_cfg(OmegaConf.create(OmegaConf.to_container(cfg)))
    assert (main.optimizer.lr, main.optimizer.classifier_lr) == pytest.approx(
        (rates.lr, rates.classifier_lr))


def test_a_device_count_the_rule_cannot_read_is_refused():
    cfg = load_config(ZOO / "cifar10/simclr.yaml", ["devices=auto"])
    with pytest.raises(ConfigError, match="devices='auto'.*count"):
        learning_rates(cfg)


def test_the_line_names_base_batch_devices_and_result():
    line = LearningRates(0.4, 0.1, 512, 1, 1, scale_classifier=False).describe()
    assert "optimizer.lr 0.4 x batch 512 x 1 device(s)" in line and "= 0.8;" in line
    assert "classifier_lr 0.1 -> 0.1" in line


def lr_columns(run_dir: Path):
    """{"encoder": [lr of each epoch], "classifier": [...]} of the run's newest attempt, from its
    CSV log (LearningRateMonitor's `lr-<optimizer>/<group>` columns, the lrs the optimizer
    trained with; the encoder is `backbone` on main)."""
    log = max(run_dir.glob("logs/version_*/metrics.csv"), key=lambda p: int(p.parent.name[8:]))
    with open(log) as f:
        rows = [row for row in csv.DictReader(f) if any(k.startswith("lr-") and row[k] for k in row)]
    columns = {}
    for key in rows[0]:
        group = key.rsplit("/", 1)[-1]
        if key.startswith("lr-") and group in ("encoder", "backbone", "classifier"):
            columns["classifier" if group == "classifier" else "encoder"] = [float(r[key]) for r in rows]
    return columns


def test_training_starts_at_the_scaled_lr(tmp_path):
    """Batch 64 on either host: the first epoch trains the encoder at 0.4 x 64 / 256 = 0.1 and the
    classifier at its own classifier_lr 0.3, not at the scheduler's warmup_start_lr (0.003 here,
    unused without warmup)."""
    assert pretrain(tmp_path, "name=lr", "max_epochs=1", "limit_train_batches=1",
                    "optimizer.batch_size=64", f"optimizer.lr={BASE_LR}",
                    "optimizer.classifier_lr=0.3", "scheduler.warmup_start_lr=0.003", *SMALL_BACKBONE) == 0
    lrs = lr_columns(tmp_path / "lr")
    assert (lrs["encoder"], lrs["classifier"]) == (pytest.approx([0.1]), pytest.approx([0.3]))


@pytest.mark.parametrize("warmup", [0, 1])
def test_encoder_and_classifier_lrs_in_the_csv_log(tmp_path, capsys, warmup):
    """Batch 512, 2 epochs: the encoder at 0.4 x 2 = 0.8, the online classifier at its own
    classifier_lr (main scales it only with data.val_path). Without warmup: the cosine from the
    first epoch; with one warm-up epoch from warmup_start_lr 0, each group reaches its own lr."""
    assert pretrain(tmp_path, "name=lr", "max_epochs=2", "limit_train_batches=1",
                    "optimizer.batch_size=512", f"optimizer.lr={BASE_LR}",
                    f"optimizer.classifier_lr={CLASSIFIER_LR}", f"scheduler.warmup_epochs={warmup}",
                    "scheduler.warmup_start_lr=0.0", *SMALL_BACKBONE) == 0
    assert ("[solo-ncp] learning rate (solo-learn main's rule): optimizer.lr 0.4 x batch 512 x "
            "1 device(s) x 1 node(s) / 256 = 0.8; classifier_lr 0.1 -> 0.1") in capsys.readouterr().out
    cosine = [1.0, (1 + math.cos(math.pi / 2)) / 2]
    shape = cosine if warmup == 0 else [0.0, 1.0]
    lrs = lr_columns(tmp_path / "lr")
    assert lrs["encoder"] == pytest.approx([2 * BASE_LR * s for s in shape])
    assert lrs["classifier"] == pytest.approx([CLASSIFIER_LR * s for s in shape])
    hparams = OmegaConf.load(next((tmp_path / "lr").glob("logs/version_*/hparams.yaml")))
    assert (hparams.learning_rate.lr, hparams.learning_rate.factor) == (0.8, 2.0)
