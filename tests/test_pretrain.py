"""Stage 1 through `solo-ncp pretrain` on digits: checkpoint, metadata, resume, refusals."""
import csv

import pytest
import torch
from PIL import Image
from torchvision import transforms

from solo_ncp.config import load_config
from solo_ncp.data import build_dataset, get_spec, normalization_of
from solo_ncp.launch.compat import pretrain_transform
from solo_ncp.launch.trainer import LAST
from solo_ncp.models import BackboneSpec, CheckpointError, build_backbone, load_encoder
from solo_ncp.models.checkpoint import encoder_state_dict, read_checkpoint
from tests.conftest import DIGITS_SIMCLR, ROOT, pretrain


def test_pretrain_writes_a_safe_loadable_checkpoint(digits_simclr_ckpt):
    ckpt = torch.load(digits_simclr_ckpt, map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 1  # two epochs: 0 and 1
    meta = ckpt["solo_ncp"]
    assert meta["method"] == "simclr" and meta["dataset"] == "digits"
    assert meta["backbone"] == {"name": "resnet18", "cifar": True, "zero_init_residual": False}
    assert meta["normalization"]["mean"] == pytest.approx(list(get_spec("digits").mean))
    assert (digits_simclr_ckpt.parent / "config.yaml").is_file()

    encoder = load_encoder(digits_simclr_ckpt)
    features = encoder.model(torch.rand(4, 3, 8, 8))
    assert features.shape == (4, 512) and torch.isfinite(features).all()
    assert not any(p.requires_grad for p in encoder.model.parameters())
    # training moved the weights away from a fresh initialisation
    fresh = build_backbone(BackboneSpec()).state_dict()
    trained = encoder.model.backbone.state_dict()
    assert not torch.equal(fresh["layer1.0.conv1.weight"], trained["layer1.0.conv1.weight"])


def test_stage1_encoder_same_features_through_transform_or_model_normalisation(digits_simclr_ckpt):
    """solo-learn normalises in the transform; later stages put Normalize in the model."""
    cfg = load_config(ROOT / "zoo_configs/fashionmnist/simclr.yaml", DIGITS_SIMCLR)
    solo_normalize = transforms.Normalize(**normalization_of(pretrain_transform(cfg)))
    images = torch.stack([build_dataset("digits", "test")[i][0] for i in range(16)])

    raw = build_backbone(BackboneSpec()).eval()
    raw.load_state_dict(encoder_state_dict(read_checkpoint(digits_simclr_ckpt)))
    wrapped = load_encoder(digits_simclr_ckpt).model
    with torch.no_grad():
        through_transform = raw(torch.stack([solo_normalize(x) for x in images]))
        through_model = wrapped(images)
    torch.testing.assert_close(through_model, through_transform, rtol=1e-5, atol=1e-5)


def _logged_epochs(run_dir):
    """Epochs in the CSV logs of every attempt (logs/version_*/metrics.csv), in order."""
    epochs = []
    for attempt in sorted((run_dir / "logs").glob("version_*/metrics.csv")):
        with open(attempt) as f:
            epochs += sorted({int(row["epoch"]) for row in csv.DictReader(f) if row["epoch"]})
    return epochs


def test_resume_continues_at_the_next_epoch(tmp_path):
    assert pretrain(tmp_path, "max_epochs=1", "name=r", "limit_train_batches=2",
                    "log_every_n_steps=1") == 0
    run = tmp_path / "r"
    first = torch.load(run / LAST, weights_only=True)
    assert first["epoch"] == 0
    # starting again over an existing run is refused, nothing is overwritten
    assert pretrain(tmp_path, "max_epochs=2", "name=r", "limit_train_batches=2") == 2
    assert torch.load(run / LAST, weights_only=True)["epoch"] == 0

    assert pretrain(tmp_path, "max_epochs=2", "name=r", "limit_train_batches=2",
                    "log_every_n_steps=1", resume=True) == 0
    second = torch.load(run / LAST, weights_only=True)
    assert second["epoch"] == 1 and second["global_step"] == 4
    assert _logged_epochs(run) == [0, 1]


def test_resume_without_a_run_is_a_clear_error(tmp_path, capsys):
    assert pretrain(tmp_path, "max_epochs=1", "name=none", resume=True) == 2
    assert "no last.ckpt" in capsys.readouterr().err


def test_bad_config_inputs_are_clear_errors(tmp_path, capsys):
    assert pretrain(tmp_path, "optimizer.batch_size=5000") == 2
    assert "fewer than optimizer.batch_size" in capsys.readouterr().err
    assert pretrain(tmp_path, "method=nope") == 2
    assert "method='nope' is not registered" in capsys.readouterr().err
    assert pretrain(tmp_path, "backbone.name=resnet19") == 2  # an AssertionError traceback before
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: backbone.name='resnet19' is no backbone of solo-learn-") and "resnet18, " in line
    assert pretrain(tmp_path, "+backbone.kwargs.foo=1") == 2  # ResNet's TypeError traceback before
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: backbone.kwargs.foo is not an option of resnet18: remove it (its options: cifar, "
        "zero_init_residual) (solo-ncp pretrain)")


@pytest.mark.parametrize("command, config", [("pretrain", "ncp"), ("train", "simclr")])
def test_a_config_of_the_other_stage_says_which_command_runs_it(tmp_path, capsys, command, config):
    """Before: pretrain of an ncp config failed in its data code with a traceback, and train of a
    simclr config asked for a teacher, then said the teacher key is not read by simclr."""
    from solo_ncp.cli import main

    path = ROOT / f"zoo_configs/fashionmnist/{config}.yaml"
    assert main([command, "--config", str(path), f"checkpoint.dir={tmp_path}"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == {
        "pretrain": "error: method=ncp is stage 2, which `solo-ncp train` runs (from a stage-1 checkpoint); pretrain "
                    f"trains stage 1 (simclr, ...): solo-ncp train --config {path} ... (solo-ncp pretrain)",
        "train": f"error: method=simclr is no stage-2 method (ncp, deacl): run it with `solo-ncp pretrain --config "
                 f"{path}`, or pass an ncp / deacl config to train (solo-ncp train)"}[command]
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("command, config, override", [
    ("pretrain", "simclr", "method=ncp"), ("pretrain", "simclr", "++method=deacl"), ("train", "ncp", "method=simclr")])
def test_a_method_override_of_the_other_stage_says_to_drop_it(tmp_path, capsys, command, config, override):
    """The key check ran first and named a key of the config's own method (`method_kwargs.teacher_ckpt
    is not read by solo-ncp or simclr ...: remove it`), a fix that led to the next such key."""
    from solo_ncp.cli import main

    path = ROOT / f"zoo_configs/fashionmnist/{config}.yaml"
    assert main([command, "--config", str(path), f"checkpoint.dir={tmp_path}", override]) == 2
    method = override.split("=")[1]
    assert capsys.readouterr().err.strip().splitlines()[-1] == {
        "pretrain": f"error: method={method} is stage 2, which `solo-ncp train` runs (from a stage-1 checkpoint); "
                    f"pretrain trains stage 1 (simclr, ...): drop the override {override} (solo-ncp pretrain)",
        "train": f"error: method={method} is no stage-2 method (ncp, deacl): drop the override {override} "
                 "(solo-ncp train)"}[command]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible: accelerator=gpu trains")
def test_accelerator_gpu_without_cuda_is_a_clear_error(tmp_path, capsys):
    assert pretrain(tmp_path, "accelerator=gpu") == 2
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.parametrize("accelerator, on_cpu", [
    ("cpu", "accelerator=cpu"),
    pytest.param("auto", "accelerator=auto without a visible CUDA device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="auto picks the GPU here")),
])
def test_a_gpu_list_of_devices_on_the_cpu_is_a_clear_error(accelerator, on_cpu, tmp_path, capsys):
    """The CIFAR configs' `devices: [0]` with accelerator=cpu, or auto on a machine without CUDA
    (main's own configs): Lightning's TypeError traceback before."""
    assert pretrain(tmp_path, f"++accelerator={accelerator}", "++devices=[0]") == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: devices=[0] lists GPU indices, which {on_cpu} has none of: override with devices=1 (the "
        "number of CPU processes) (solo-ncp pretrain)")


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the run is mixed precision")
def test_cudas_mixed_precision_on_the_cpu_says_it_trains_in_32_bit(tmp_path, capsys):
    """precision=16-mixed on a CPU trained in 32-bit without a word (Lightning 2 alone would warn
    and switch to bf16)."""
    assert pretrain(tmp_path, "name=p16", "precision=16-mixed", "max_epochs=1", "limit_train_batches=1") == 0
    assert ("[solo-ncp] note: precision=16-mixed is CUDA's mixed precision: without a CUDA device this run "
            "trains in 32-bit (precision=bf16-mixed is the CPU's 16-bit)") in capsys.readouterr().out
    weights = read_checkpoint(tmp_path / "p16" / LAST)["state_dict"].values()
    assert {t.dtype for t in weights if t.is_floating_point()} == {torch.float32}


def test_loading_errors_name_the_problem(tmp_path, digits_simclr_ckpt):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_encoder(tmp_path / "missing.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_encoder(tmp_path / "junk.ckpt")
    torch.save({"state_dict": {"head.weight": torch.zeros(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        load_encoder(tmp_path / "other.ckpt")
    torch.save({"state_dict": {"x": Image.new("RGB", (1, 1))}}, tmp_path / "pickle.ckpt")
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        load_encoder(tmp_path / "pickle.ckpt")


def test_mismatched_backbone_is_a_clear_error(tmp_path, digits_simclr_ckpt):
    ckpt = torch.load(digits_simclr_ckpt, weights_only=True)
    ckpt["solo_ncp"]["backbone"]["name"] = "resnet50"
    torch.save(ckpt, tmp_path / "wrong.ckpt")
    with pytest.raises(CheckpointError) as caught:
        load_encoder(tmp_path / "wrong.ckpt")
    said = str(caught.value)
    assert said.startswith(f"encoder of {tmp_path / 'wrong.ckpt'} does not fit the backbone (")
    assert said.endswith(  # its fix was a config's backbone, which eval and export have none of
        ". The checkpoint records the backbone {'name': 'resnet50', 'cifar': True, 'zero_init_residual': False}, "
        "which its weights are not of: its record was edited, or it is damaged; pass the checkpoint as its "
        "training wrote it")


def test_plain_solo_learn_checkpoint_needs_normalisation(tmp_path, digits_simclr_ckpt):
    ckpt = torch.load(digits_simclr_ckpt, weights_only=True)
    del ckpt["solo_ncp"]
    torch.save(ckpt, tmp_path / "solo.ckpt")
    with pytest.raises(CheckpointError, match="normalisation"):
        load_encoder(tmp_path / "solo.ckpt")
    spec = get_spec("digits")
    encoder = load_encoder(tmp_path / "solo.ckpt", normalization={"mean": spec.mean, "std": spec.std})
    assert encoder.backbone == BackboneSpec("resnet18", cifar=True)


def method_overrides(method: str) -> list:
    """Overrides that turn the bundled SimCLR config into `method` (ResNet-18: 1.0.2 builds no
    momentum encoder for a WideResNet) on the installed host."""
    from solo_ncp._host import current_host

    own = ["~method_kwargs.temperature", "+method_kwargs.pred_hidden_dim=64", "data.subset=128"]
    if method == "byol":
        own += (["+momentum.base_tau=0.99", "+momentum.final_tau=1.0"] if current_host().is_main else
                ["+method_kwargs.base_tau_momentum=0.99", "+method_kwargs.final_tau_momentum=1.0",
                 "+method_kwargs.momentum_classifier=false"])
    return [f"method={method}", "backbone.name=resnet18", *own]


@pytest.mark.parametrize("method", ["byol", "simsiam"])
def test_a_momentum_or_fixed_lr_method_trains_and_resumes(method, tmp_path):
    """On solo-learn 1.0.2 BYOL (every momentum method) failed at its first step (its momentum
    update requires a `dataloader_idx` Lightning 1.9 no longer passes), and SimSiam trained an epoch,
    then failed to pickle its checkpoint (a functools.partial in its scheduler's state). Both train
    and resume; SimSiam's predictor (its last group) keeps its fixed lr, while the other groups follow
    the cosine (no warmup): half their first lr in the second of 2 epochs, (1 + cos(pi / 2)) / 2."""
    overrides = [*method_overrides(method), "name=m", "limit_train_batches=2"]
    assert pretrain(tmp_path, *overrides, "max_epochs=1") == 0
    assert pretrain(tmp_path, *overrides, "max_epochs=2", resume=True) == 0
    assert read_checkpoint(tmp_path / "m" / LAST)["epoch"] == 1
    if method == "simsiam":
        first, resumed = (epoch_lrs(tmp_path / "m" / "logs" / f"version_{v}" / "metrics.csv") for v in (0, 1))
        kept = [group for group in first if resumed[group] == first[group]]
        # the predictor: named on main; on 1.0.2 the 4th group (encoder, classifier, projector, predictor)
        assert len(kept) == 1 and kept[0].endswith(("/predictor", "/pg4")), kept
        assert {group: resumed[group] for group in first if group not in kept} == pytest.approx(
            {group: lr / 2 for group, lr in first.items() if group not in kept})


def epoch_lrs(metrics_csv) -> dict:
    """{column: lr} of every parameter group in the first row of a CSV log that has them (the
    columns' order differs from run to run on Lightning 2)."""
    with open(metrics_csv) as f:
        row = next(row for row in csv.DictReader(f) if any(k.startswith("lr-") and v for k, v in row.items()))
    return {key: float(value) for key, value in row.items() if key.startswith("lr-")}


@pytest.mark.parametrize("overrides, message", [
    (["+knn_eval.enabled=true"], "knn_eval.enabled=true scores the test split's features, which data.val=false leaves "
                                 "out: set data.val=true, or turn the k-NN off (knn_eval.enabled=false)"),
    (["checkpoint.enabled=false"], "checkpoint.enabled=false: solo-ncp always writes last.ckpt after every epoch "
                                   "(--resume, stage 2 and every later command read it); remove it, or set it to true"),
    (["checkpoint.enabled=abc"], "`checkpoint.enabled: abc` must be true or false"),
])
def test_a_stage1_setting_solo_ncp_would_not_honour_is_refused_before_the_run(overrides, message, tmp_path, capsys):
    """Each was taken in silence: a k-NN without validation data logged nothing, and last.ckpt was
    written whatever checkpoint.enabled said (DIGITS_SIMCLR sets data.val=false)."""
    assert pretrain(tmp_path, "name=r", "max_epochs=1", "limit_train_batches=1", *overrides) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {message} (solo-ncp pretrain)"
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("overrides, strategy, synced, note", [
    (["+num_nodes=2", "+sync_batchnorm=true"], "DDPStrategy", True, None),
    (["+strategy=ddp_spawn", "+sync_batchnorm=true"], "SingleDeviceStrategy", False,
     "strategy=ddp_spawn and sync_batchnorm=True are for several processes"),
    ([], "SingleDeviceStrategy", False, None),
])
def test_processes_count_nodes_and_a_single_process_notes_what_it_drops(overrides, strategy, synced, note,
                                                                       tmp_path, capsys):
    """Two nodes of one device each are two processes: sync_batchnorm was dropped there (only a
    device count above 1 counted). One process drops a strategy or sync_batchnorm given, now with a
    note (it was silent)."""
    from solo_ncp.launch.trainer import build_trainer

    cfg = load_config(ROOT / "zoo_configs/fashionmnist/simclr.yaml", [*DIGITS_SIMCLR, *overrides])
    trainer = build_trainer(cfg, tmp_path, {})
    assert type(trainer.strategy).__name__ == strategy
    assert (trainer._accelerator_connector._layer_sync is not None) == synced
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[solo-ncp] note:")]
    assert notes == ([f"[solo-ncp] note: {note}; this run trains in one (devices x num_nodes = 1), without it"]
                     if note else [])
