from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from solo_ncp.config import (
    ConfigError,
    augmentation_pipelines,
    crop_counts,
    lightning_precision,
    load_config,
    to_solo102_kwargs,
)
from tests.conftest import SMALL_BACKBONE

ZOO = Path(__file__).resolve().parents[1] / "zoo_configs"


@pytest.mark.parametrize("path", sorted(ZOO.glob("*/simclr.yaml")), ids=lambda p: p.parent.name)
def test_zoo_simclr_configs_follow_the_paper(path):
    cfg = load_config(path)
    pipelines = augmentation_pipelines(cfg)
    kwargs = to_solo102_kwargs(cfg, crop_counts(pipelines))
    stl = cfg.data.dataset == "stl10"
    assert cfg.method == "simclr" and kwargs["encoder"] == "resnet18"
    assert kwargs["optimizer"] == "sgd" and kwargs["lars"] is True
    assert kwargs["extra_optimizer_args"] == {"momentum": 0.9}
    assert kwargs["scheduler"] == "warmup_cosine" and kwargs["warmup_epochs"] == 10
    assert kwargs["temperature"] == 0.5
    assert kwargs["weight_decay"] == (1e-5 if stl else 1e-4)
    assert (kwargs["num_large_crops"], kwargs["num_small_crops"]) == (2, 0)
    (aug,) = pipelines
    assert aug["crop_size"] == {"stl10": 96, "fashionmnist": 28}.get(cfg.data.dataset, 32)
    assert aug["brightness"] == pytest.approx(0.8 * (1.0 if stl else 0.5))
    assert (aug["color_jitter_prob"], aug["gray_scale_prob"], aug["gaussian_prob"]) == (0.8, 0.2, 0.5)
    assert aug["min_scale"] == 0.08
    if cfg.data.dataset in ("cifar10", "cifar100", "stl10"):
        assert cfg.max_epochs == 1000 and kwargs["batch_size"] == 512


def test_overrides_reach_lists_and_launcher_keys(tmp_path):
    cfg = load_config(ZOO / "fashionmnist/simclr.yaml",
                      ["augmentations.0.crop_size=8", "data.subset=100", "optimizer.lr=0.1"])
    assert cfg.augmentations[0].crop_size == 8 and cfg.data.subset == 100
    assert cfg.optimizer.lr == 0.1


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["max_epochs"], "key=value"),
        (["data.dataset=mnist"], "unknown dataset 'mnist'"),
        (["optimizer.name=rmsprop"], "optimizer.name='rmsprop'"),
        (["max_epochs=null"], "^override 'max_epochs=null' leaves the config without `max_epochs`, which it "
                              "needs: give it a value$"),
        (["~max_epochs"], "^override '~max_epochs' leaves the config without `max_epochs`"),
        (["max_epochs=0"], r"^max_epochs=0 trains nothing: give a whole number >= 1$"),
        (["max_epochs=-1"], r"^max_epochs=-1 trains nothing"),
        (["name="], r"^name='' names no run folder of its own under checkpoint.dir: give the run a name"),
        (["name=.."], r"^name='..' names no run folder"),
        (["name=./"], r"^name='./' names no run folder"),
        (["name=run/.."], r"^name='run/..' names no run folder"),
        (["name=../run"], r"^name='../run' names no run folder"),
        (["name=/tmp/run"], r"^name='/tmp/run' names no run folder"),
    ],
)
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(ZOO / "fashionmnist/simclr.yaml", overrides)


def test_a_file_that_is_no_solo_learn_config_is_named_so_before_any_override(tmp_path):
    """Not `override 'max_epochs=1': the config has no key max_epochs; ... write +max_epochs=1`."""
    path = tmp_path / "k.json"
    path.write_text('{"k": 15, "scores": {"15": 0.5}}')
    with pytest.raises(ValueError) as caught:
        load_config(path, ["max_epochs=1", "+name=run"])
    assert str(caught.value) == (
        f"config {path} lacks `method`, `backbone.name`, `data.dataset`, `optimizer.name`, `optimizer.batch_size`, "
        "`optimizer.lr` (solo-learn main's schema): pass a solo-learn config (e.g. "
        "zoo_configs/cifar10/simclr.yaml)")


@pytest.mark.parametrize("data, message", [
    (b"\xff\xfe\x00\x81", "cannot read config {path}: 'utf-8' codec can't decode byte 0xff"),
    (b"\0" * 64, "cannot read config {path}: unacceptable character #x0000"),
    (b"name: [simclr", "cannot read config {path}: while parsing a flow sequence"),
    (b"- name: simclr\n", "config {path} holds a list, not a block of keys"),
    (b"42\n", "config {path} holds a single value ('42'), not a block of keys: pass a config in solo-learn"),
    (b"simclr\n", "config {path} holds a single value ('simclr'), not a block of keys: pass a config"),
    (b"a: &x\n  b: *x\n", "cannot read config {path}: it nests without end (a YAML alias inside its own anchor)"),
], ids=["binary", "zeroed", "truncated", "a list", "a number", "a word", "an alias inside itself"])
def test_a_damaged_config_file_is_one_error_line_naming_it(data, message, tmp_path, capsys):
    from solo_ncp.cli import main

    path = tmp_path / "simclr.yaml"
    path.write_bytes(data)
    assert main(["pretrain", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"error: {message.format(path=path)}"), err


def test_missing_config_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("nope.yaml")


def test_precision_mapping_to_lightning_19():
    cfg = load_config(ZOO / "cifar10/simclr.yaml")
    assert lightning_precision(cfg) == 16
    with pytest.raises(ConfigError, match="precision"):
        lightning_precision(load_config(ZOO / "cifar10/simclr.yaml", ["precision=8"]))


PAPER_STAGE2 = {"cifar10": (70, 200, 32), "cifar100": (150, 100, 32), "stl10": (215, 1000, 96)}


@pytest.mark.parametrize("dataset", sorted(PAPER_STAGE2))
def test_zoo_ncp_configs_follow_appendix_a22(dataset):
    cfg = load_config(ZOO / dataset / "ncp.yaml")
    kwargs = to_solo102_kwargs(cfg, (1, 0))
    k, epochs, crop = PAPER_STAGE2[dataset]
    assert cfg.method == "ncp" and kwargs["k"] == k and kwargs["max_epochs"] == epochs
    assert (kwargs["batch_size"], kwargs["lr"], kwargs["classifier_lr"]) == (256, 0.5, 0.5)
    assert (kwargs["optimizer"], kwargs["lars"], kwargs["weight_decay"]) == ("sgd", False, 5e-4)
    assert kwargs["scheduler"] == "warmup_cosine"
    assert kwargs["lam"] == 6.0 and kwargs["pgd_steps"] == 5 and kwargs["dual_bn"] is True
    assert kwargs["eps"] == pytest.approx(8 / 255) and kwargs["alpha"] == pytest.approx(2 / 255)
    assert (kwargs["strategy"], kwargs["neighbor_rank"]) == ("iii", 2)
    (aug,) = cfg.augmentations
    assert (aug.crop_size, aug.pad_crop.padding, aug.horizontal_flip.prob) == (crop, 4, 0.5)
    assert cfg.method_kwargs.teacher_ckpt == f"trained_models/simclr-{dataset}/last.ckpt"


ABLATION_LAUNCHERS = ("strategies", "neighbor_rank", "k_sweep")
"""bash_files/reproduce's launchers of Tables 4, 5 and Fig. 3, each for any dataset."""


def test_bash_files_launch_existing_configs():
    bash = ZOO.parent / "bash_files"
    scripts = sorted(bash.rglob("*.sh"))
    for stage in bash.iterdir():  # one launcher per dataset (reproduce/: also the ablations')
        datasets = {p.relative_to(stage).parts[0].removesuffix(".sh") for p in stage.rglob("*.sh")}
        assert datasets - set(ABLATION_LAUNCHERS) == {"cifar10", "cifar100", "stl10", "fashionmnist"}, stage
    for script in scripts:
        for word in script.read_text().split():
            if word.startswith("zoo_configs/"):
                assert (ZOO.parent / word).is_file(), f"{script} names missing {word}"


@pytest.mark.parametrize("method", ["simclr", "ncp"])
def test_no_warmup_starts_at_the_base_lr_and_follows_the_cosine(method, digits_small_simclr_ckpt):
    """Both hosts: with scheduler.warmup_epochs=0 the lr of epoch e is lr * (1 + cos(pi e / E)) / 2.
    (1.0.2 alone, unmended, holds warmup_start_lr for the whole run.)"""
    import math

    from solo_ncp.launch.methods import build_method

    epochs, base = 4, 0.4
    cfg = load_config(ZOO / f"fashionmnist/{method}.yaml", [
        f"max_epochs={epochs}", f"optimizer.lr={base}", "scheduler.warmup_epochs=0",
        "scheduler.warmup_start_lr=0.0", "++scheduler.interval=epoch", "optimizer.batch_size=256",
        "data.dataset=digits", "augmentations.0.crop_size=8", *SMALL_BACKBONE,
        *([f"method_kwargs.teacher_ckpt={digits_small_simclr_ckpt}", "method_kwargs.k=5"]
          if method == "ncp" else [])])
    optimizers, schedulers = build_method(cfg).configure_optimizers()
    scheduler = schedulers[0]["scheduler"] if isinstance(schedulers[0], dict) else schedulers[0]
    seen = []
    for _ in range(epochs):
        seen.append(optimizers[0].param_groups[0]["lr"])
        optimizers[0].step()
        scheduler.step()
    expected = [base * (1 + math.cos(math.pi * e / epochs)) / 2 for e in range(epochs)]
    assert seen == pytest.approx(expected, rel=1e-6)


def test_fractional_warmup_is_refused_on_solo_learn_102():
    cfg = load_config(ZOO / "fashionmnist/simclr.yaml", ["scheduler.warmup_epochs=0.5"])
    with pytest.raises(ConfigError, match="warmup_epochs=0.5.*integer"):
        to_solo102_kwargs(cfg)


@pytest.mark.parametrize("path", sorted(ZOO.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}-{p.stem}")
def test_every_bundled_config_loads_as_written(path):
    """Every key of the zoo is read by solo-ncp or by the host's method (or accepted unread)."""
    from omegaconf import OmegaConf

    assert OmegaConf.to_container(load_config(path)) == OmegaConf.to_container(OmegaConf.load(path))


@pytest.mark.parametrize("block, key, closest", [
    ("knn_evaluation:\n  enabled: true\n", "knn_evaluation.enabled", "knn_eval.enabled"),
    ("momentum_tau: 0.99\n", "momentum_tau", None),
])
def test_a_file_key_nothing_reads_is_refused(tmp_path, block, key, closest):
    path = tmp_path / "mine.yaml"
    path.write_text((ZOO / "fashionmnist/simclr.yaml").read_text() + block)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"`{key}` is not read by solo-ncp or simclr on ")
    assert (f"did you mean `{closest}`?" if closest else "the closest key read is") in str(err.value)


MAIN_EXAMPLE = """
# solo-learn main's scripts/pretrain/cifar/simclr.yaml as Hydra composes it (defaults
# augmentations/symmetric.yaml and wandb/private.yaml), and the keys its parse_cfg fills in that
# solo-ncp accepts unread
name: "simclr-cifar10"
method: "simclr"
backbone:
  name: "resnet18"
method_kwargs:
  proj_hidden_dim: 2048
  proj_output_dim: 256
  temperature: 0.2
data:
  dataset: cifar10
  train_path: "./datasets"
  val_path: "datasets/imagenet100/val"
  format: "image_folder"
  num_workers: 4
  num_classes: 10
  num_large_crops: 2
  num_small_crops: 0
optimizer:
  name: "lars"
  batch_size: 256
  lr: 0.4
  classifier_lr: 0.1
  weight_decay: 1e-4
  kwargs:
    clip_lr: True
    eta: 0.02
    exclude_bias_n_norm: True
scheduler:
  name: "warmup_cosine"
checkpoint:
  enabled: True
  dir: "trained_models"
  frequency: 1
auto_resume:
  enabled: True
  max_hours: 36
auto_umap:
  enabled: False
  dir: "auto_umap"
  frequency: 1
dali:
  device: "gpu"
  encode_indexes_into_labels: False
debug_augmentations: False
performance:
  disable_channel_last: False
knn_eval:
  enabled: False
  k: 20
  distance_func: "euclidean"
max_epochs: 1000
devices: [0]
sync_batchnorm: True
accelerator: "gpu"
strategy: "ddp"
precision: 16
augmentations:
  - rrc:
      enabled: True
      crop_min_scale: 0.08
      crop_max_scale: 1.0
    color_jitter:
      prob: 0.8
      brightness: 0.8
      contrast: 0.8
      saturation: 0.8
      hue: 0.2
    grayscale:
      prob: 0.2
    gaussian_blur:
      prob: 0.5
    solarization:
      prob: 0.0
    equalization:
      prob: 0.0
    horizontal_flip:
      prob: 0.5
    crop_size: 32
    num_crops: 2
wandb:
  enabled: True
  entity: None
  project: "solo-learn"
"""


def test_solo_learn_mains_example_config_loads(tmp_path):
    path = tmp_path / "simclr.yaml"
    path.write_text(MAIN_EXAMPLE)
    cfg = load_config(path)
    assert cfg.method_kwargs.proj_output_dim == 256 and cfg.data.format == "image_folder"


def test_the_keys_solo_learn_mains_method_fills_in_load_on_main_only(tmp_path):
    """solo-learn main's BaseMethod reads `optimizer.exclude_bias_n_norm_wd` (its
    add_and_assert_specific_cfg fills it in); solo-learn 1.0.2's does not, nor does solo-ncp."""
    from omegaconf import OmegaConf

    from solo_ncp._host import current_host

    cfg = OmegaConf.create(MAIN_EXAMPLE)
    if current_host().is_main:
        from solo.methods import METHODS

        cfg = METHODS["simclr"].add_and_assert_specific_cfg(cfg)
        assert cfg.optimizer.exclude_bias_n_norm_wd is False  # filled in by main's BaseMethod
    else:
        cfg.optimizer.exclude_bias_n_norm_wd = False
    path = tmp_path / "filled.yaml"
    path.write_text(OmegaConf.to_yaml(cfg))
    if current_host().is_main:
        assert load_config(path).optimizer.exclude_bias_n_norm_wd is False
    else:
        with pytest.raises(ConfigError, match="`optimizer.exclude_bias_n_norm_wd` is not read by "
                                              "solo-ncp or simclr on solo-learn-1.0.2"):
            load_config(path)


def test_interpolations_in_blocks_reach_solo_learn_102_resolved():
    """`${...}` in method_kwargs, optimizer.kwargs (solo-learn main's Hydra resolves them; 1.0.2's
    arguments got the text '${method_kwargs.eps}')."""
    cfg = load_config(ZOO / "fashionmnist/ncp.yaml", ["method_kwargs.alpha=${method_kwargs.eps}",
                                                       "optimizer.kwargs.momentum=${optimizer.lr}"])
    kwargs = to_solo102_kwargs(cfg, (1, 0))
    assert kwargs["alpha"] == 8 / 255 == cfg.method_kwargs.eps
    assert kwargs["extra_optimizer_args"]["momentum"] == 0.5 == cfg.optimizer.lr


@pytest.mark.parametrize("key", ["mean", "std"])
def test_statistics_of_custom_data_are_refused_on_a_registered_dataset(key):
    """solo-learn 1.0.2 ignored them and main normalised with them: the same config trained two
    different models on the two hosts."""
    with pytest.raises(ValueError) as caught:
        load_config(ZOO / "fashionmnist/simclr.yaml", [f"+augmentations.0.{key}=[0.5,0.5,0.5]"])
    value = {"mean": [0.286, 0.286, 0.286], "std": [0.353, 0.353, 0.353]}[key]
    assert str(caught.value) == (f"augmentations.0.{key} is for data.dataset=custom: fashionmnist is normalised "
                                 f"with its own statistics ({key} {value}), which its checkpoints record; remove it")


@pytest.mark.parametrize("config, override, name", [
    ("simclr", "+optimizer.kwargs.foo=1", "lars"),
    ("ncp", "+optimizer.kwargs.eta=0.001", "sgd"),
])
def test_an_optimizer_option_the_optimizer_does_not_take_is_refused(config, override, name):
    """Before: SGD's or LARS's TypeError traceback when the training built it (sgd's eta: silently
    dropped on 1.0.2, a TypeError on main)."""
    with pytest.raises(ValueError) as caught:
        load_config(ZOO / f"fashionmnist/{config}.yaml", [override])
    key = override.split("=")[0].lstrip("+").split(".")[-1]
    options = {"lars": "momentum, dampening, nesterov, eta, clip_lr, exclude_bias_n_norm;",
               "sgd": "momentum, dampening, nesterov, "}[name]  # then torch's own, by its version
    message = str(caught.value)
    assert message.startswith(f"optimizer.kwargs.{key} is not an option of {name}: remove it (its options: "
                              f"{options}"), message
    assert message.endswith("; lr and weight_decay are optimizer.lr and optimizer.weight_decay)"), message


@pytest.mark.parametrize("override, refused_on_102, seen_on_main", [
    ("augmentations.0.equalization.prob=1.0", "augmentations.0.equalization is not available in solo-learn 1.0.2",
     "Equalization object"),
    ("augmentations.0.rrc.enabled=false", "augmentations.0.rrc.enabled=false is not available in solo-learn 1.0.2",
     "Resize(size=8"),
])
def test_a_pipeline_step_only_main_has_is_refused_on_102_and_built_on_main(override, refused_on_102, seen_on_main):
    """solo-learn main builds both (its `build_transform_pipeline`): solo-ncp refused equalization
    there with a 1.0.2 message; 1.0.2 cannot do either, and it ignored rrc.enabled=false."""
    from solo_ncp._host import current_host
    from solo_ncp.launch.compat import pretrain_transform

    cfg = load_config(ZOO / "fashionmnist/simclr.yaml", ["data.dataset=digits", "augmentations.0.crop_size=8", override])
    if not current_host().is_main:
        with pytest.raises(ConfigError, match=refused_on_102):
            pretrain_transform(cfg)
        return
    assert crop_counts(augmentation_pipelines(cfg)) == (2, 0)  # what pretrain reads of it on either host
    built = repr(pretrain_transform(cfg))
    assert seen_on_main in built and ("RandomResizedCrop" in built) == ("rrc" not in override)


def test_a_pipeline_step_left_out_or_null_means_the_same_on_both_hosts():
    """solo-learn main's build_transform_pipeline failed on a step left out (`~augmentations.0.grayscale`:
    omegaconf's 'Missing key grayscale' traceback at stage 1's start); 1.0.2 read it as no step. Both
    now take PIPELINE_DEFAULTS: a random resized crop of scale 0.08-1.0, a flip with p 0.5, nothing else."""
    from solo_ncp._host import current_host
    from solo_ncp.launch.compat import pretrain_transform

    overrides = ["data.dataset=digits", "augmentations.0.crop_size=8", "~augmentations.0.grayscale",
                 "~augmentations.0.rrc", "~augmentations.0.horizontal_flip", "augmentations.0.solarization.prob=null",
                 "~augmentations.0.color_jitter"]
    cfg = load_config(ZOO / "fashionmnist/simclr.yaml", overrides)
    (pipeline,) = augmentation_pipelines(cfg)
    assert {key: pipeline[key] for key in ("gray_scale_prob", "horizontal_flip_prob", "min_scale", "max_scale",
                                           "solarization_prob", "color_jitter_prob", "crop_size", "num_crops")} == {
        "gray_scale_prob": 0.0, "horizontal_flip_prob": 0.5, "min_scale": 0.08, "max_scale": 1.0,
        "solarization_prob": 0.0, "color_jitter_prob": 0.0, "crop_size": 8, "num_crops": 2}
    built = repr(pretrain_transform(cfg))
    if current_host().is_main:
        assert "RandomResizedCrop(size=(8, 8), scale=(0.08, 1.0)" in built and "RandomHorizontalFlip(p=0.5)" in built
        assert not any(step in built for step in ("Grayscale", "ColorJitter", "Solarization"))
    image = Image.fromarray(np.zeros((8, 8, 3), np.uint8))
    assert [tuple(crop.shape) for crop in pretrain_transform(cfg)(image)] == [(3, 8, 8), (3, 8, 8)]
