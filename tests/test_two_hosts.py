"""solo-ncp on its two hosts, solo-learn 1.0.2 (Lightning 1.9) and solo-learn main (Lightning 2):
host detection, the one config read by both, checkpoints that cross hosts, and solo-learn main's
own Hydra main_pretrain.py driving `ncp`.

The suite runs once per host (`make test`, `make test-solo-main`); tests that only make sense on
one host are marked `only_solo_102` / `only_solo_main`. Cross-host tests run the other host's
interpreter (`SOLO_NCP_OTHER_PYTHON`, default the other venv of this repository) and are skipped
without it.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader, Subset
from torchvision import transforms

import solo_ncp
from solo_ncp import _host
from solo_ncp._host import API_102, API_MAIN, HostError, current_host
from solo_ncp.cli import main
from solo_ncp.config import ConfigError, load_config, to_solo102_kwargs, to_solo_main_cfg
from solo_ncp.data import (
    ArrayImageDataset,
    IndexedDataset,
    build_dataset,
    find_normalization,
    get_spec,
    normalization_of,
    weak_augmentation,
)
from solo_ncp.io import file_sha256
from solo_ncp.methods.stage2_hooks import to_pixels
from solo_ncp.methods.stage2_options import OPTIONS
from solo_ncp.models import BackboneSpec, build_backbone, load_encoder
from solo_ncp.models.checkpoint import read_checkpoint
from tests.conftest import DIGITS_SIMCLR, DIGITS_STAGE2, ROOT, train_stage2, write_image_folder

HOST = current_host()
PREFIX = {API_102: "encoder.", API_MAIN: "backbone."}  # where each BaseMethod keeps the encoder
ENCODER_PREFIX = PREFIX[HOST.api]
OTHER_VENV = ROOT / (".venv" if HOST.is_main else ".venv-solo-main")
OTHER_PYTHON = Path(os.environ.get("SOLO_NCP_OTHER_PYTHON", OTHER_VENV / "bin" / "python"))
OTHER_API = API_102 if HOST.is_main else API_MAIN
ZOO = ROOT / "zoo_configs"

only_solo_102 = pytest.mark.skipif(HOST.is_main, reason="solo-learn 1.0.2's API only")
only_solo_main = pytest.mark.skipif(not HOST.is_main, reason="solo-learn main's API only")
needs_other_host = pytest.mark.skipif(
    not OTHER_PYTHON.is_file(),
    reason=f"the other host's interpreter {OTHER_PYTHON} is absent (`make test` builds .venv, "
           "`make test-solo-main` .venv-solo-main; or set SOLO_NCP_OTHER_PYTHON)",
)


def fake_base_method(lightning: str, *hooks: str):
    """A stand-in for solo-learn's BaseMethod: a LightningModule of `lightning` with `hooks`."""
    module = type("LightningModule", (), {"__module__": f"{lightning}.core.module"})
    return type("BaseMethod", (module,), {hook: staticmethod(lambda cfg: cfg) for hook in hooks})


@pytest.mark.parametrize(
    "lightning, hook, api",
    [
        ("lightning.pytorch", "add_and_assert_specific_cfg", API_MAIN),
        ("pytorch_lightning", "add_model_specific_args", API_102),
    ],
)
def test_host_is_read_from_solo_learns_api_not_its_version(monkeypatch, lightning, hook, api):
    # solo-learn main's setup.py says 1.0.6 and 1.0.2 is 1.0.x too: the version cannot tell them apart
    monkeypatch.setattr(_host, "_version", lambda dist: "1.0.2")
    host = _host._api_of(fake_base_method(lightning, hook))
    assert (host.api, host.lightning) == (api, lightning)


@pytest.mark.parametrize(
    "base",
    [
        fake_base_method("pytorch_lightning", "add_and_assert_specific_cfg"),
        fake_base_method("lightning.pytorch", "add_model_specific_args"),
        type("BaseMethod", (), {}),
    ],
    ids=["cfg-api-on-lightning-1", "kwargs-api-on-lightning-2", "no-lightning"],
)
def test_unknown_api_is_refused_naming_both_installs(base):
    with pytest.raises(HostError, match="an API solo-ncp does not know") as err:
        _host._api_of(base)
    assert _host.INSTALL_102 in str(err.value) and _host.INSTALL_MAIN in str(err.value)


@pytest.mark.parametrize(
    "api, versions, message",
    [
        (API_MAIN, {"lightning": "1.9.5"}, "lightning 1.9.5 is installed; solo-learn main needs"),
        (API_MAIN, {}, "no lightning"),
        (API_102, {"pytorch-lightning": "2.1.2"}, "pytorch-lightning 2.1.2 is installed"),
        (API_102, {}, "no pytorch-lightning"),
    ],
)
def test_untested_lightning_is_refused(monkeypatch, api, versions, message):
    monkeypatch.setattr(_host, "_version", lambda dist: versions.get(dist, ""))
    lightning = "lightning.pytorch" if api == API_MAIN else "pytorch_lightning"
    with pytest.raises(HostError, match=message) as err:
        _host._check_versions(_host.Host(api, lightning, "1.0.2"))
    assert "pip install --no-deps solo-learn==1.0.2" in str(err.value)
    assert "solo-learn @ git+https://github.com/vturrisi/solo-learn@9187ea3" in str(err.value)


def test_without_any_host_the_version_line_names_both_installs():
    """A Python without site-packages has neither solo-learn: `import solo_ncp` still works (it needs
    only the standard library), and `solo-ncp --version` says how to get a host."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import solo_ncp\n"
            "from solo_ncp.cli import version_line; print(version_line())")
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.splitlines()
    assert line.startswith(f"solo-ncp {solo_ncp.__version__} (no host: solo-learn is not installed.")
    assert "pip install --no-deps solo-learn==1.0.2" in line
    assert ("pip install --no-deps --no-build-isolation "
            "\"solo-learn @ git+https://github.com/vturrisi/solo-learn@9187ea3\"") in line


def test_adapter_compat_and_registry_follow_the_installed_solo_learn():
    from solo.methods import METHODS
    from solo.methods.base import BaseMethod

    from solo_ncp.launch import compat

    assert HOST.is_main == hasattr(BaseMethod, "add_and_assert_specific_cfg")
    # the shim hands out the Lightning that solo-learn's methods are built on (solo-learn main's
    # stack also installs pytorch_lightning 2.x, a different package)
    assert issubclass(BaseMethod, compat.pl.LightningModule)
    adapter = "solo_ncp.methods.ncp_main" if HOST.is_main else "solo_ncp.methods.ncp"
    for name in ("ncp", "deacl"):
        assert METHODS[name].__module__ == adapter and issubclass(METHODS[name], BaseMethod)


@only_solo_102
def test_solo_102_command_line_carries_every_option_with_its_default():
    import argparse

    from solo.methods import METHODS

    parser = METHODS["ncp"].add_model_specific_args(argparse.ArgumentParser())
    required = ["--optimizer", "sgd", "--teacher_ckpt", "t.ckpt"]
    args = vars(parser.parse_args(required))
    for option in OPTIONS:
        if option.type is not dict:
            assert args[option.name] == (option.default if option.name != "teacher_ckpt" else "t.ckpt")
    flags = vars(parser.parse_args([*required, "--no_dual_bn", "--trust_teacher", "--k", "7"]))
    assert (flags["dual_bn"], flags["trust_teacher"], flags["k"]) == (False, True, 7)


@only_solo_main
def test_solo_main_cfg_gets_every_default_and_refuses_unknown_keys():
    from solo.methods import METHODS

    cfg = OmegaConf.create({"method": "ncp", "backbone": {"name": "resnet18"}, "optimizer": {},
                            "scheduler": {}, "method_kwargs": {"teacher_ckpt": "t.ckpt", "k": 7}})
    filled = METHODS["ncp"].add_and_assert_specific_cfg(cfg).method_kwargs
    expected = {o.name: o.default for o in OPTIONS} | {"teacher_ckpt": "t.ckpt", "k": 7}
    assert OmegaConf.to_container(filled) == expected
    cfg.method_kwargs.lamda = 3.0
    with pytest.raises(ValueError, match=r"`method_kwargs.lamda` is not read by ncp \(did you mean "
                                         r"`method_kwargs.lam`\?\)"):
        METHODS["ncp"].add_and_assert_specific_cfg(cfg)


@pytest.mark.parametrize("path", sorted(ZOO.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}-{p.stem}")
def test_one_config_maps_onto_both_hosts_alike(path):
    cfg = load_config(path)
    before = OmegaConf.to_yaml(cfg)
    kwargs = to_solo102_kwargs(cfg)
    main_cfg = to_solo_main_cfg(cfg, normalization={"mean": [0.5] * 3, "std": [0.2] * 3})
    assert OmegaConf.to_yaml(cfg) == before  # the run's own config is left as written
    opt = main_cfg.optimizer
    assert (opt.lr, opt.classifier_lr, opt.weight_decay, opt.batch_size) == (
        kwargs["lr"], kwargs["classifier_lr"], kwargs["weight_decay"], kwargs["batch_size"])
    assert opt.kwargs.momentum == kwargs["extra_optimizer_args"]["momentum"]
    if opt.name == "lars":
        assert (opt.kwargs.eta, opt.kwargs.clip_lr, opt.kwargs.exclude_bias_n_norm) == (
            kwargs["eta_lars"], kwargs["grad_clip_lars"], kwargs["exclude_bias_n_norm"])
    assert (main_cfg.scheduler.name, main_cfg.scheduler.warmup_epochs) == (
        kwargs["scheduler"], kwargs["warmup_epochs"])
    assert main_cfg.scheduler.interval == "epoch"  # as solo-learn 1.0.2 steps its schedulers
    assert main_cfg.data.num_classes == kwargs["num_classes"] == get_spec(cfg.data.dataset).num_classes
    assert (main_cfg.data.num_large_crops, main_cfg.data.num_small_crops) == (2, 0)
    for key, value in OmegaConf.to_container(cfg.method_kwargs).items():
        assert main_cfg.method_kwargs[key] == kwargs[key] == value
    assert main_cfg.method_kwargs.normalization.std == [0.2] * 3


def test_solo_102_mapping_refuses_a_per_step_scheduler():
    cfg = load_config(ZOO / "fashionmnist/simclr.yaml", ["+scheduler.interval=step"])
    with pytest.raises(ConfigError, match="scheduler.interval='step'"):
        to_solo102_kwargs(cfg)


@pytest.mark.parametrize(
    "dataset, overrides, cifar",
    [
        ("digits", [], True),  # solo-learn main alone would build the ImageNet stem
        ("digits", ["backbone.kwargs.cifar=false"], False),
        ("cifar10", ["backbone.kwargs.cifar=false"], False),  # main alone: the CIFAR stem
        ("stl10", [], False),
    ],
)
def test_a_config_builds_the_same_network_on_either_host(dataset, overrides, cifar):
    from solo_ncp.launch.methods import backbone_meta, build_method

    cfg = load_config(ZOO / "fashionmnist/simclr.yaml", [f"data.dataset={dataset}", *overrides])
    model = build_method(cfg)
    encoder = model.backbone if HOST.is_main else model.encoder
    reference = build_backbone(BackboneSpec("resnet18", cifar)).state_dict()
    assert {k: v.shape for k, v in encoder.state_dict().items()} == {
        k: v.shape for k, v in reference.items()}
    assert backbone_meta(model) == {"name": "resnet18", "cifar": cifar, "zero_init_residual": False}


@pytest.mark.parametrize("name", ["digits", "fashionmnist", "cifar10", "stl10"])
def test_stage1_transform_of_this_host_makes_the_crops_and_records_its_normalisation(name):
    from solo_ncp.launch.compat import pretrain_transform

    spec = get_spec(name)
    cfg = load_config(ZOO / "fashionmnist/simclr.yaml",
                      [f"data.dataset={name}", f"augmentations.0.crop_size={spec.image_size}"])
    transform = pretrain_transform(cfg)
    views = transform(Image.new("RGB", (spec.image_size, spec.image_size)))
    assert len(views) == 2 and views[0].shape == (3, spec.image_size, spec.image_size)
    # solo-learn main keeps its own statistics for its datasets (CIFAR std 0.2470 vs 0.247)
    tolerance = 1e-3 if HOST.is_main and name in ("cifar10", "stl10") else 1e-6
    assert normalization_of(transform) == {"mean": pytest.approx(spec.mean, abs=tolerance),
                                           "std": pytest.approx(spec.std, abs=tolerance)}
    # each image's Normalize gets Python floats, not the config's ListConfig (read through Python)
    assert len(normalizers(transform)) == 1
    for normalize in normalizers(transform):
        assert {type(value) for value in (*normalize.mean, *normalize.std)} == {float}
        assert type(normalize.mean) is tuple and type(normalize.std) is tuple


def normalizers(node) -> list:
    """Every transforms.Normalize in a stage-1 transform (pipelines of crops of Composes)."""
    if isinstance(node, transforms.Normalize):
        return [node]
    children = node if isinstance(node, (list, tuple)) else [
        getattr(node, attr) for attr in ("transform", "transforms") if hasattr(node, attr)]
    return [found for child in children for found in normalizers(child)]


def test_normalised_batches_are_found_and_mapped_back_to_pixels():
    """solo-learn main's pipelines end in Normalize; the stage-2 methods undo it (PGD's budget is
    in pixels); solo-ncp's own loaders already give pixels."""
    images = (np.random.default_rng(0).random((8, 6, 6, 3)) * 255).astype(np.uint8)
    labels = np.zeros(8, dtype=np.int64)
    stats = {"mean": (0.4, 0.5, 0.6), "std": (0.2, 0.25, 0.3)}
    pixels = ArrayImageDataset(images, labels, transforms.ToTensor())
    normalised = ArrayImageDataset(images, labels, transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(**stats)]))
    loader = DataLoader(IndexedDataset(Subset(normalised, range(8))), batch_size=8)
    found = find_normalization([loader])
    assert {k: pytest.approx(v) for k, v in stats.items()} == found
    _, x, _ = next(iter(loader))
    torch.testing.assert_close(to_pixels([x], stats)[0], torch.stack([pixels[i][0] for i in range(8)]),
                               atol=1e-6, rtol=0)
    weak = ArrayImageDataset(images, labels, weak_augmentation(6))
    assert find_normalization(DataLoader(IndexedDataset(weak))) is None


def test_ncp_checkpoint_of_this_host_is_native_and_eval_loads_it(digits_ncp_ckpt, tmp_path):
    """1 epoch of `ncp` on digits under this host (the session fixture) -> `solo-ncp eval`."""
    state = read_checkpoint(digits_ncp_ckpt)["state_dict"]
    assert "conv1.weight" in {k[len(ENCODER_PREFIX):] for k in state if k.startswith(ENCODER_PREFIX)}
    assert main(["eval", "--ckpt", str(digits_ncp_ckpt), "--dataset", "digits", "--out", str(tmp_path),
                 "--epochs", "1", "--train-n", "128", "--test-n", "32", "--aa-n", "0",
                 "--cache-features"]) == 0
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["method"] == "ncp" and record["metrics"]["sa_n"] == 32


def test_stage2_validates_its_online_classifier_on_pixels(tmp_path, digits_simclr_ckpt):
    assert train_stage2(tmp_path, digits_simclr_ckpt, "name=val", "max_epochs=1", "data.subset=64",
                        "limit_train_batches=1", "data.val=true", "limit_val_batches=1") == 0
    logged = (tmp_path / "val" / "logs" / "version_0" / "metrics.csv").read_text()
    assert "val_acc1" in logged.splitlines()[0]


def _run_other_host(*commands) -> None:
    """Runs `solo-ncp` commands (argument lists) with the other host's interpreter."""
    code = "\n".join(
        ["from solo_ncp.cli import main", "from solo_ncp._host import current_host",
         f"assert current_host().api == {OTHER_API!r}, current_host()"]
        + [f"assert main({list(map(str, c))!r}) == 0, {c[0]!r}" for c in commands]
    )
    proc = subprocess.run([str(OTHER_PYTHON), "-W", "ignore", "-c", code], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def other_host_checkpoints(tmp_path_factory, digits_simclr_ckpt):
    """The other host's stage 1 (1 epoch, 2 steps) and its 1-step `ncp` run whose teacher is this
    host's stage-1 checkpoint."""
    out = tmp_path_factory.mktemp("other_host")
    config = ROOT / "zoo_configs/fashionmnist"
    _run_other_host(
        ["pretrain", "--config", config / "simclr.yaml", *DIGITS_SIMCLR, f"checkpoint.dir={out}",
         "name=stage1", "max_epochs=1", "limit_train_batches=2"],
        ["train", "--config", config / "ncp.yaml", *DIGITS_STAGE2, f"checkpoint.dir={out}",
         f"method_kwargs.teacher_ckpt={digits_simclr_ckpt}", "name=ncp", "max_epochs=1",
         "data.subset=128", "limit_train_batches=1"],
    )
    return out / "stage1" / "last.ckpt", out / "ncp" / "last.ckpt"


@needs_other_host
def test_this_hosts_stage1_teaches_on_the_other_host(other_host_checkpoints, digits_simclr_ckpt):
    _, ncp = other_host_checkpoints
    ckpt = read_checkpoint(ncp)
    assert ckpt["solo_ncp"]["teacher"]["sha256"] == file_sha256(digits_simclr_ckpt)
    teacher = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("teacher.backbone.")}
    stage1 = read_checkpoint(digits_simclr_ckpt)["state_dict"]
    for key, value in teacher.items():
        assert torch.equal(value, stage1[ENCODER_PREFIX + key[len("teacher.backbone."):]])
    assert any(k.startswith(PREFIX[OTHER_API]) for k in ckpt["state_dict"])  # written there


@needs_other_host
def test_other_hosts_checkpoints_serve_select_k_train_and_eval_here(other_host_checkpoints, tmp_path):
    stage1, ncp = other_host_checkpoints
    assert any(k.startswith(PREFIX[OTHER_API]) for k in read_checkpoint(stage1)["state_dict"])
    assert main(["select-k", "--ckpt", str(stage1), "--dataset", "digits", "--out", str(tmp_path / "k"),
                 "--k-min", "2", "--k-max", "4", "--k-step", "1", "--train-n", "64"]) == 0
    k = json.loads((tmp_path / "k" / "k.json").read_text())["k"]
    assert train_stage2(tmp_path, stage1, "name=here", "max_epochs=1", "data.subset=128",
                        "limit_train_batches=1", f"method_kwargs.k_file={tmp_path / 'k' / 'k.json'}",
                        "method_kwargs.k=null") == 0
    here = read_checkpoint(tmp_path / "here" / "last.ckpt")
    assert here["solo_ncp"]["k"] == k and here["solo_ncp"]["teacher"]["sha256"] == file_sha256(stage1)
    assert main(["eval", "--ckpt", str(ncp), "--dataset", "digits", "--out", str(tmp_path / "eval"),
                 "--epochs", "1", "--train-n", "128", "--test-n", "32", "--aa-n", "0",
                 "--cache-features"]) == 0
    for bn in ("clean", "adv"):
        assert load_encoder(ncp, bn=bn).model(torch.rand(2, 3, 8, 8)).shape == (2, 512)


MAIN_PRETRAIN = textwrap.dedent('''
    """solo-learn main's main_pretrain.py (non-DALI, no wandb/UMAP, no validation set), plus the
    one line an existing user adds: `import solo_ncp`."""
    import inspect
    import os

    import hydra
    import torch
    from lightning.pytorch import Trainer, seed_everything
    from omegaconf import DictConfig, OmegaConf
    from solo.args.pretrain import parse_cfg
    from solo.data.pretrain_dataloader import (
        FullTransformPipeline,
        NCropAugmentation,
        build_transform_pipeline,
        prepare_dataloader,
        prepare_datasets,
    )
    from solo.methods import METHODS
    from solo.utils.checkpointer import Checkpointer
    from solo.utils.misc import make_contiguous

    import solo_ncp  # noqa: F401  registers ncp and deacl into METHODS


    @hydra.main(version_base="1.2")
    def main(cfg: DictConfig):
        OmegaConf.set_struct(cfg, False)
        cfg = parse_cfg(cfg)
        seed_everything(cfg.seed)
        assert cfg.method in METHODS, f"Choose from {METHODS.keys()}"
        if cfg.data.num_large_crops != 2:
            assert cfg.method in ["wmse", "mae"]
        model = METHODS[cfg.method](cfg)
        make_contiguous(model)
        if not cfg.performance.disable_channel_last:
            model = model.to(memory_format=torch.channels_last)
        pipelines = [NCropAugmentation(build_transform_pipeline(cfg.data.dataset, aug_cfg),
                                       aug_cfg.num_crops) for aug_cfg in cfg.augmentations]
        train_dataset = prepare_datasets(
            cfg.data.dataset, FullTransformPipeline(pipelines), train_data_path=cfg.data.train_path,
            data_format=cfg.data.format, no_labels=cfg.data.no_labels, data_fraction=cfg.data.fraction,
        )
        train_loader = prepare_dataloader(train_dataset, batch_size=cfg.optimizer.batch_size,
                                          num_workers=cfg.data.num_workers)
        callbacks = [Checkpointer(cfg, logdir=os.path.join(cfg.checkpoint.dir, cfg.method),
                                  frequency=cfg.checkpoint.frequency,
                                  keep_prev=cfg.checkpoint.keep_prev)]
        trainer_kwargs = OmegaConf.to_container(cfg)
        valid_kwargs = inspect.signature(Trainer.__init__).parameters
        trainer_kwargs = {name: trainer_kwargs[name] for name in valid_kwargs if name in trainer_kwargs}
        trainer_kwargs.update({"logger": None, "callbacks": callbacks, "enable_checkpointing": False,
                               "strategy": cfg.strategy})
        trainer = Trainer(**trainer_kwargs)
        trainer.fit(model, train_loader, None)
        print("normalised input mapped back with", model.input_normalization["train"])


    if __name__ == "__main__":
        main()
''')


def _digits_image_folder(root: Path, n: int) -> Path:
    """The first `n` digits training images as PNGs in an ImageFolder (solo-learn's "custom")."""
    dataset = build_dataset("digits", "train")
    return write_image_folder(root, dataset.images[:n], dataset.targets[:n], [str(c) for c in range(10)])


def main_pretrain_ncp(tmp_path: Path, teacher: Path, k: int, **method_kwargs) -> subprocess.CompletedProcess:
    """solo-learn main's own main_pretrain.py (MAIN_PRETRAIN) on the zoo's ncp config: 128 digits
    as its custom dataset, K clusters, one step; `method_kwargs` added to the config's."""
    cfg = OmegaConf.load(ZOO / "fashionmnist/ncp.yaml")
    aug = {"rrc": {"enabled": False, "crop_min_scale": 0.08, "crop_max_scale": 1.0},
           "color_jitter": {"prob": 0.0, "brightness": 0.0, "contrast": 0.0, "saturation": 0.0,
                            "hue": 0.0},
           "grayscale": {"prob": 0.0}, "gaussian_blur": {"prob": 0.0}, "solarization": {"prob": 0.0},
           "equalization": {"prob": 0.0}, "horizontal_flip": {"prob": 0.5},
           "crop_size": 8, "num_crops": 2}  # main_pretrain.py wants 2 large crops; ncp uses the first
    cfg = OmegaConf.merge(cfg, {
        "name": "ncp-digits", "backbone": {"kwargs": {"cifar": True}},
        "method_kwargs": {"teacher_ckpt": str(teacher), "k": k, **method_kwargs},
        "data": {"dataset": "custom", "train_path": str(_digits_image_folder(tmp_path / "digits", 128)),
                 "num_workers": 0},
        "augmentations": [aug], "optimizer": {"batch_size": 64},
        "scheduler": {"warmup_epochs": 0}, "checkpoint": {"dir": str(tmp_path / "trained_models")},
        "max_epochs": 1, "devices": "1", "accelerator": "cpu", "strategy": "auto",
        "limit_train_batches": 1,
    })
    OmegaConf.save(cfg, tmp_path / "ncp-digits.yaml")
    (tmp_path / "main_pretrain.py").write_text(MAIN_PRETRAIN)
    return subprocess.run([sys.executable, "-W", "ignore", "main_pretrain.py", "--config-path",
                           str(tmp_path), "--config-name", "ncp-digits"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@only_solo_main
def test_solo_main_own_main_pretrain_runs_ncp_after_import_solo_ncp(tmp_path, digits_simclr_ckpt):
    """The zoo's ncp config through solo-learn main's own Hydra entry point: its dataset, its
    augmentation pipeline (which normalises), its Checkpointer; solo-ncp's checkpoint follows."""
    proc = main_pretrain_ncp(tmp_path, digits_simclr_ckpt, 10)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "normalised input mapped back with {'mean': (0.485, 0.456, 0.406)" in proc.stdout
    (ckpt,) = (tmp_path / "trained_models" / "ncp").glob("*/ncp-digits-*-ep=0.ckpt")
    state = read_checkpoint(ckpt)  # weights_only: nothing but tensors and plain types
    meta = state["solo_ncp"]
    assert (meta["method"], meta["dataset"], meta["k"], meta["dual_bn"]) == ("ncp", "custom", 10, True)
    assert meta["backbone"]["cifar"] is True
    assert int(state["state_dict"]["clustered_epoch"]) == 0
    assert main(["eval", "--ckpt", str(ckpt), "--dataset", "digits", "--out", str(tmp_path / "eval"),
                 "--epochs", "1", "--train-n", "128", "--test-n", "32", "--aa-n", "0",
                 "--cache-features"]) == 0


@only_solo_main
def test_main_pretrain_names_a_k_above_its_training_images(tmp_path, digits_simclr_ckpt):
    """K = 1000 > 128 images: it failed at the first clustering ("K=1000 is larger than N=128")
    without naming the option; main's launcher (Hydra) prints the line as its error."""
    proc = main_pretrain_ncp(tmp_path, digits_simclr_ckpt, 1000)
    assert proc.returncode != 0
    assert "K=1000 clusters (method_kwargs.k) but the training set has only 128 images: lower K" in proc.stderr


@only_solo_main
def test_main_pretrain_refuses_a_normalization_its_teacher_overrides(tmp_path, digits_simclr_ckpt):
    """The teacher records the normalisation it was trained with, which stage 2 keeps: main's own
    main_pretrain.py ignored method_kwargs.normalization beside it, in silence (solo-ncp train
    refused it)."""
    given = {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]}
    proc = main_pretrain_ncp(tmp_path, digits_simclr_ckpt, 10, normalization=given)
    assert proc.returncode != 0
    assert (f"method_kwargs.normalization={given} differs from the normalisation the teacher {digits_simclr_ckpt} "
            "records") in proc.stderr
