"""The robust monitor's held-out training images and the best robust checkpoint
(`checkpoint.save_best`), on digits through `solo-ncp train`, `eval`, `export`, `report` and
`reproduce`.

Oracles: the datasets `solo-ncp train` hands the method (which images are held out, which are
trained on and clustered), a scripted sequence of held-out accuracies whose best epoch is known in
advance (earlier and later epochs worse or tied), compared with the per-epoch history
checkpoints (`checkpoint.keep_prev`) tensor by tensor, across a `--resume`."""
import json
import shlex

import pytest
import torch

import solo_ncp.launch.trainer as trainer_module
import solo_ncp.methods.stage2_hooks as hooks
from solo_ncp.cli import main
from solo_ncp.eval.results import load_runs
from solo_ncp.launch.data import held_out_split
from solo_ncp.launch.callbacks import epoch_checkpoint_name
from solo_ncp.models.checkpoint import BEST_META, META_KEY, read_checkpoint
from tests.conftest import ROOT, SMALL_BACKBONE, train_stage2
from tests.test_reproduce import record_plan, reproduce_argv

pytestmark = pytest.mark.usefixtures("single_thread")

HELD_OUT = 40
MONITOR = ["+method_kwargs.val_robust_every=1", f"+method_kwargs.val_robust_n={HELD_OUT}",
           "+method_kwargs.val_robust_seed=3"]


def last_error(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_held_out_split_partitions_the_training_set_by_its_seed():
    trained, held_out = held_out_split(100, 10, seed=3)
    assert len(held_out) == len(set(held_out)) == 10
    assert sorted(trained + held_out) == list(range(100)) and trained == sorted(trained)
    assert held_out_split(100, 10, seed=3) == (trained, held_out)
    assert set(held_out_split(100, 10, seed=4)[1]) != set(held_out)


def test_the_monitor_scores_images_that_are_neither_trained_on_nor_clustered(
        tmp_path, digits_small_simclr_ckpt, monkeypatch):
    seen = {}
    real_cluster, real_robust = hooks.Stage2Hooks.set_cluster_data, hooks.Stage2Hooks.set_val_robust_data

    def keep_cluster(self, dataset, *args):
        seen["clustered"] = dataset
        return real_cluster(self, dataset, *args)

    def keep_robust(self, dataset, *args):
        seen["held_out"] = dataset
        return real_robust(self, dataset, *args)

    real_fit = trainer_module.fit

    def keep_train_set(cfg, model, train_set, *args, **kwargs):
        seen["trained"] = train_set
        return real_fit(cfg, model, train_set, *args, **kwargs)

    monkeypatch.setattr(hooks.Stage2Hooks, "set_cluster_data", keep_cluster)
    monkeypatch.setattr(hooks.Stage2Hooks, "set_val_robust_data", keep_robust)
    monkeypatch.setattr(trainer_module, "fit", keep_train_set)
    assert train_stage2(tmp_path, digits_small_simclr_ckpt, "name=m", "max_epochs=1", *MONITOR,
                        *SMALL_BACKBONE) == 0
    held_out = set(seen["held_out"].indices)
    clustered = set(seen["clustered"].indices)
    trained = set(seen["trained"].dataset.indices)  # IndexedDataset(Subset(augmented set, ...))
    assert len(held_out) == HELD_OUT and not held_out & clustered
    assert trained == clustered and held_out | clustered == set(range(256))  # data.subset=256
    meta = read_checkpoint(tmp_path / "m" / "last.ckpt")[META_KEY]
    assert meta["val_robust"] == {"every": 1, "n": HELD_OUT, "seed": 3,
                                  "images": "held out of the training set"}


def scripted_accuracies(monkeypatch, values):
    """Makes the robust monitor report the PGD-20 accuracies `values`, one per measurement (it
    still measures and logs the real ones)."""
    values = iter(values)
    real = hooks.Stage2Hooks.measure_val_robust

    def measure(self):
        return {**real(self), "ra": next(values)}

    monkeypatch.setattr(hooks.Stage2Hooks, "measure_val_robust", measure)


def same_weights(a, b) -> bool:
    a, b = read_checkpoint(a)["state_dict"], read_checkpoint(b)["state_dict"]
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def best_run(tmp_path_factory, digits_small_simclr_ckpt):
    """3 epochs of `ncp` with save_best whose held-out PGD-20 accuracies read 30, 50 (epochs 0, 1),
    then, after a `--resume` to 3 epochs, 50 again (a tie: epoch 1 stays the best)."""
    out = tmp_path_factory.mktemp("best")
    run = ["name=b", *MONITOR, *SMALL_BACKBONE, "++checkpoint.save_best=true", "++checkpoint.keep_prev=true"]
    with pytest.MonkeyPatch.context() as patch:
        scripted_accuracies(patch, [30.0, 50.0])
        assert train_stage2(out, digits_small_simclr_ckpt, *run, "max_epochs=2") == 0
    with pytest.MonkeyPatch.context() as patch:
        scripted_accuracies(patch, [50.0])
        assert train_stage2(out, digits_small_simclr_ckpt, *run, "max_epochs=3", resume=True) == 0
    return out / "b"


def test_best_ckpt_holds_the_epoch_of_the_best_held_out_accuracy_across_a_resume(best_run):
    best = best_run / "best.ckpt"
    assert same_weights(best, best_run / epoch_checkpoint_name("b", 1))
    assert not same_weights(best, best_run / epoch_checkpoint_name("b", 2))
    assert not same_weights(best, best_run / epoch_checkpoint_name("b", 0))
    checkpoint = read_checkpoint(best)
    assert checkpoint["epoch"] == 1
    assert checkpoint[META_KEY][BEST_META]["epoch"] == 1
    assert checkpoint[META_KEY][BEST_META]["pgd20_acc"] == 50.0
    assert read_checkpoint(best_run / "last.ckpt")[META_KEY][BEST_META]["epoch"] == 1


def test_export_and_eval_record_a_best_checkpoint_and_report_marks_its_rows(best_run, tmp_path, capsys):
    assert main(["export", "--ckpt", str(best_run / "best.ckpt"), "--out", str(tmp_path / "x")]) == 0
    source = json.loads((tmp_path / "x" / "export.json").read_text())["source"]
    assert source[BEST_META]["epoch"] == 1 and source["path"].endswith("best.ckpt")
    assert main(["eval", "--ckpt", str(best_run / "best.ckpt"), "--dataset", "digits", "--bn", "adv",
                 "--method", "ncp", "--epochs", "1", "--test-n", "32", "--aa-n", "0",
                 "--out", str(tmp_path / "e")]) == 0
    recorded = json.loads((tmp_path / "e" / "metrics.json").read_text())["checkpoint"]
    assert recorded[BEST_META]["epoch"] == 1
    (run,) = load_runs(tmp_path / "e")
    assert run.best and run.label == "ncp [best.ckpt] (adv BN)"
    assert main(["report", str(tmp_path / "e"), "--out", str(tmp_path / "report.md")]) == 0
    assert "`[best.ckpt]`: the stage-2 epoch of the best PGD-20 accuracy" in (tmp_path / "report.md").read_text()


def test_save_best_without_the_robust_monitor_is_one_error_line(tmp_path, digits_simclr_ckpt, capsys):
    assert train_stage2(tmp_path, digits_simclr_ckpt, "name=n", "++checkpoint.save_best=true") == 2
    line = last_error(capsys)
    assert line.startswith("error: checkpoint.save_best=true keeps best.ckpt by the held-out robust "
                           "accuracy that only stage 2 (solo-ncp train) measures")
    assert "method_kwargs.val_robust_every=1" in line and not (tmp_path / "n").exists()


def test_save_best_in_stage_1_names_only_the_fix_stage_1_takes():
    """It named method_kwargs.val_robust_every=1, which a stage-1 method refuses as a key it does
    not read."""
    from solo_ncp.config import ConfigError, load_config

    with pytest.raises(ConfigError) as caught:
        load_config(ROOT / "zoo_configs/fashionmnist/simclr.yaml", ["++checkpoint.save_best=true"])
    assert str(caught.value) == (
        "checkpoint.save_best=true keeps best.ckpt by the held-out robust accuracy that only stage 2 (solo-ncp "
        "train) measures, every method_kwargs.val_robust_every epochs: simclr trains stage 1, which keeps "
        "last.ckpt only: drop checkpoint.save_best")


def test_holding_out_the_whole_training_set_is_one_error_line(tmp_path, digits_simclr_ckpt, capsys):
    assert train_stage2(tmp_path, digits_simclr_ckpt, "name=n", "+method_kwargs.val_robust_every=1",
                        "+method_kwargs.val_robust_n=256") == 2
    assert last_error(capsys).startswith(
        "error: method_kwargs.val_robust_n=256 training images held out for the robust monitor leave "
        "0 of the 256 to train on: lower method_kwargs.val_robust_n")


def test_a_best_ckpt_asked_for_when_none_was_kept_is_one_error_line(digits_ncp_ckpt, tmp_path, capsys):
    missing = digits_ncp_ckpt.parent / "best.ckpt"
    assert main(["eval", "--ckpt", str(missing), "--dataset", "digits", "--out", str(tmp_path / "e")]) == 2
    assert last_error(capsys) == (
        f"error: {digits_ncp_ckpt.parent} holds no best.ckpt: a stage-2 run keeps one only with "
        "checkpoint.save_best=true and method_kwargs.val_robust_every >= 1; pass its last.ckpt, or "
        "train with both set (solo-ncp eval)")


FITS = "stage2:++method_kwargs.val_robust_n=64"
"""The robust monitor's held-out images that the tiny runs' 256 training images leave room for."""


def test_reproduce_best_trains_with_save_best_evaluates_best_ckpt_and_records_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(reproduce_argv(out, "--methods", "ncp", "--checkpoint", "best", FITS, "--dry-run")) == 0
    steps = {line.split()[2].rstrip(":"): shlex.split(line.split(": solo-ncp ", 1)[1])
             for line in capsys.readouterr().out.splitlines() if line.startswith("[reproduce] todo")}
    train = steps["s0/ncp"]
    assert "++checkpoint.save_best=true" in train and "++method_kwargs.val_robust_every=1" in train
    assert "++checkpoint.save_best=true" not in steps["s0/simclr"]
    assert steps["s0/eval-ncp-slf"][steps["s0/eval-ncp-slf"].index("--ckpt") + 1] == str(out / "s0/ncp/best.ckpt")
    assert steps["s0/eval-simclr-slf"][steps["s0/eval-simclr-slf"].index("--ckpt") + 1] == str(
        out / "s0/simclr/last.ckpt")


def test_a_reproduce_folder_recorded_before_the_option_evaluated_last_ckpt(tmp_path, capsys):
    out = tmp_path / "run"
    record_plan(out, ["deacl"], (FITS,))
    settings = json.loads((out / "reproduce.json").read_text())
    assert settings.pop("checkpoint") == "last.ckpt"
    (out / "reproduce.json").write_text(json.dumps(settings))
    argv = reproduce_argv(out, "--seeds", "0", "--methods", "deacl", FITS, "--dry-run")
    assert main(argv) == 0
    assert main(argv + ["--checkpoint", "best"]) == 2
    assert "(checkpoint: recorded 'last.ckpt', now 'best.ckpt')" in last_error(capsys)
