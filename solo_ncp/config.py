"""Run configs in solo-learn main's Hydra schema, read with OmegaConf, mapped onto solo-learn 1.0.2.

A config file is a YAML dict with solo-learn main's top-level keys (`name`, `method`, `backbone`,
`method_kwargs`, `data`, `augmentations`, `optimizer`, `scheduler`, `checkpoint`, `auto_resume`,
`max_epochs`, `devices`, `accelerator`, `strategy`, `precision`, `seed`), plus two optional keys
of solo-ncp under `data`: `subset` (use a fixed random subset of that many training images, drawn
with `subset_seed`, default 0) and `val` (validate the online classifier on the test split;
default true).

Mapping onto solo-learn 1.0.2's keyword arguments (`to_solo102_kwargs`):

| config key                               | solo-learn 1.0.2 argument              |
|------------------------------------------|----------------------------------------|
| backbone.name                            | encoder                                |
| backbone.kwargs.zero_init_residual       | backbone_args["zero_init_residual"]    |
| backbone.kwargs.cifar (default: dataset) | backbone_args["cifar"] (3x3 stem, no max-pool) |
| optimizer.name: lars                     | optimizer="sgd", lars=True             |
| optimizer.kwargs.eta / clip_lr           | eta_lars / grad_clip_lars              |
| optimizer.kwargs.exclude_bias_n_norm     | exclude_bias_n_norm                    |
| optimizer.kwargs.momentum (0.9)          | extra_optimizer_args["momentum"]       |
| optimizer.batch_size / lr / ...          | batch_size / lr / classifier_lr / weight_decay |
| scheduler.name / warmup_epochs / ...     | scheduler / warmup_epochs / warmup_start_lr / min_lr / lr_decay_steps |
| augmentations[i].num_crops, crop_size    | num_large_crops / num_small_crops      |
| method_kwargs.*                          | the method's own keyword arguments     |
| scheduler.interval                       | must be "epoch" (1.0.2 steps per epoch) |

`scheduler.warmup_epochs: 0` starts at `optimizer.lr`, as solo-learn main does. 1.0.2 passes
`warmup_start_lr` to pl_bolts' `LinearWarmupCosineAnnealingLR`, whose chained cosine multiplies
the previous lr: with no warmup it would hold `warmup_start_lr` (3e-5, or 0) for the whole run.
As on main, every parameter group then starts at `optimizer.lr`, the online classifier's too
(it only monitors training; evaluation trains its own head).

Under solo-learn main the config is the method's `cfg` itself (`to_solo_main_cfg`): a copy
completed as main's `parse_cfg` completes it (`data.num_classes`, crop counts, optimizer kwargs
defaults), except that learning rates are used as written (main_pretrain.py multiplies them by
batch_size * devices / 256: the same for the zoo configs' batch of 256 on one device) and that
`scheduler.interval` defaults to "epoch", as on 1.0.2 (main_pretrain.py's default is "step").
`backbone.kwargs.cifar` is read by solo-ncp (see `solo_ncp.methods.main_host`).
"""
import copy
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from solo_ncp.data.registry import get_spec

REQUIRED = ("name", "method", "backbone.name", "data.dataset", "optimizer.name",
            "optimizer.batch_size", "optimizer.lr", "max_epochs")
OPTIMIZERS = ("sgd", "lars", "adam", "adamw")
PRECISION_102 = {"16-mixed": 16, "16": 16, "32-true": 32, "32": 32, "bf16-mixed": "bf16",
                 "bf16": "bf16"}


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key and the fix."""


def load_config(path, overrides: Sequence[str] = ()) -> DictConfig:
    """Reads a YAML config and applies `key=value` overrides (dotted keys, OmegaConf syntax)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist (see zoo_configs/<dataset>/)")
    try:
        cfg = OmegaConf.load(path)
        for override in overrides:
            key, sep, value = override.partition("=")
            if not sep or not key:
                raise ConfigError(f"overrides must look like key=value, got {override!r}")
            OmegaConf.update(cfg, key, yaml.safe_load(value), force_add=True)
    except (OmegaConfBaseException, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read config {path}: {err}") from None
    for key in REQUIRED:
        if OmegaConf.select(cfg, key) is None:
            raise ConfigError(f"config {path} lacks `{key}` (solo-learn main's schema)")
    get_spec(cfg.data.dataset)
    if cfg.optimizer.name not in OPTIMIZERS:
        raise ConfigError(
            f"optimizer.name={cfg.optimizer.name!r} is not one of {', '.join(OPTIMIZERS)}"
        )
    return cfg


def select(cfg: DictConfig, key: str, default=None):
    value = OmegaConf.select(cfg, key)
    return default if value is None else value


def augmentation_pipelines(cfg: DictConfig) -> Tuple[Dict, ...]:
    """solo-learn 1.0.2 transform kwargs (+ `num_crops`) for each entry of `augmentations`."""
    pipelines = []
    for aug in cfg.get("augmentations") or []:
        if select(aug, "equalization.prob", 0.0) > 0:
            raise ConfigError("augmentations[].equalization is not available in solo-learn 1.0.2")
        pipelines.append(
            dict(
                brightness=select(aug, "color_jitter.brightness", 0.0),
                contrast=select(aug, "color_jitter.contrast", 0.0),
                saturation=select(aug, "color_jitter.saturation", 0.0),
                hue=select(aug, "color_jitter.hue", 0.0),
                color_jitter_prob=select(aug, "color_jitter.prob", 0.0),
                gray_scale_prob=select(aug, "grayscale.prob", 0.0),
                horizontal_flip_prob=select(aug, "horizontal_flip.prob", 0.5),
                gaussian_prob=select(aug, "gaussian_blur.prob", 0.0),
                solarization_prob=select(aug, "solarization.prob", 0.0),
                min_scale=select(aug, "rrc.crop_min_scale", 0.08),
                max_scale=select(aug, "rrc.crop_max_scale", 1.0),
                crop_size=int(aug.crop_size),
                num_crops=int(aug.num_crops),
            )
        )
    if not pipelines:
        raise ConfigError("config has no `augmentations` list (one entry per pipeline)")
    return tuple(pipelines)


def crop_counts(pipelines: Sequence[Dict]) -> Tuple[int, int]:
    """(num_large_crops, num_small_crops): crops of the largest size count as large."""
    largest = max(p["crop_size"] for p in pipelines)
    large = sum(p["num_crops"] for p in pipelines if p["crop_size"] == largest)
    return large, sum(p["num_crops"] for p in pipelines) - large


def _plain(value):
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value


def to_solo102_kwargs(cfg: DictConfig, num_crops: Tuple[int, int] = (2, 0)) -> Dict:
    """Keyword arguments for a solo-learn 1.0.2 method class (see the module's mapping table)."""
    spec = get_spec(cfg.data.dataset)
    opt, sched = cfg.optimizer, cfg.get("scheduler") or {}
    opt_kwargs = dict(_plain(opt.get("kwargs")) or {})
    lars = opt.name == "lars"
    extra = {}
    if opt.name in ("sgd", "lars"):
        extra["momentum"] = opt_kwargs.pop("momentum", 0.9)
    eta = opt_kwargs.pop("eta", 1e-3)
    clip = opt_kwargs.pop("clip_lr", False)
    exclude = opt_kwargs.pop("exclude_bias_n_norm", False)
    extra.update(opt_kwargs)
    decay_steps: List = _plain(sched.get("lr_decay_steps"))
    warmup_epochs = sched.get("warmup_epochs", 10)
    if warmup_epochs != int(warmup_epochs):
        raise ConfigError(
            f"scheduler.warmup_epochs={warmup_epochs}: solo-learn 1.0.2 warms up in whole epochs: "
            "use an integer"
        )
    warmup_epochs = int(warmup_epochs)
    if sched.get("interval", "epoch") != "epoch":
        raise ConfigError(
            f"scheduler.interval={sched.interval!r}: solo-learn 1.0.2 steps its scheduler once "
            "an epoch; remove the key or set it to epoch"
        )
    return dict(
        encoder=cfg.backbone.name,
        backbone_args={
            "cifar": bool(select(cfg, "backbone.kwargs.cifar", spec.cifar_stem)),
            "zero_init_residual": bool(select(cfg, "backbone.kwargs.zero_init_residual", False)),
        },
        num_classes=spec.num_classes,
        max_epochs=int(cfg.max_epochs),
        batch_size=int(opt.batch_size),
        optimizer="sgd" if lars else opt.name,
        lars=lars,
        eta_lars=float(eta),
        grad_clip_lars=bool(clip),
        exclude_bias_n_norm=bool(exclude),
        lr=float(opt.lr),
        classifier_lr=float(opt.get("classifier_lr", 0.1)),
        weight_decay=float(opt.get("weight_decay", 1e-4)),
        extra_optimizer_args=extra,
        accumulate_grad_batches=int(cfg.get("accumulate_grad_batches") or 1),
        scheduler=sched.get("name", "none"),
        lr_decay_steps=decay_steps,
        min_lr=float(sched.get("min_lr", 0.0)),
        warmup_start_lr=float(opt.lr if warmup_epochs == 0 else sched.get("warmup_start_lr", 3e-5)),
        warmup_epochs=warmup_epochs,
        num_large_crops=num_crops[0],
        num_small_crops=num_crops[1],
        **(_plain(cfg.get("method_kwargs")) or {}),
    )


MAIN_OPTIMIZER_DEFAULTS = {
    "sgd": {"momentum": 0.9},
    "lars": {"momentum": 0.9, "eta": 1e-3, "clip_lr": False, "exclude_bias_n_norm": False},
    "adamw": {"betas": [0.9, 0.999]},
}


def to_solo_main_cfg(cfg: DictConfig, num_crops: Tuple[int, int] = (2, 0),
                     **method_kwargs) -> DictConfig:
    """The `cfg` of a solo-learn main method class (see the module's docstring); `method_kwargs`
    are merged into `cfg.method_kwargs`. `cfg` itself is left as it is."""
    spec = get_spec(cfg.data.dataset)
    out = copy.deepcopy(cfg)
    out.data.num_classes = spec.num_classes
    out.data.num_large_crops, out.data.num_small_crops = num_crops
    opt_kwargs = _plain(out.optimizer.get("kwargs")) or {}
    out.optimizer.kwargs = {**MAIN_OPTIMIZER_DEFAULTS.get(out.optimizer.name, {}), **opt_kwargs}
    out.optimizer.classifier_lr = float(out.optimizer.get("classifier_lr", 0.1))
    out.optimizer.weight_decay = float(out.optimizer.get("weight_decay", 1e-4))
    out.scheduler = {"name": "none", "interval": "epoch", **(_plain(out.get("scheduler")) or {})}
    out.method_kwargs = {**(_plain(out.get("method_kwargs")) or {}), **method_kwargs}
    return out


def lightning_precision(cfg: DictConfig):
    """Lightning 2 precision strings ("16-mixed") as Lightning 1.9 expects them (16)."""
    value = str(cfg.get("precision", 32))
    if value not in PRECISION_102:
        raise ConfigError(f"precision={value!r} is not one of {', '.join(PRECISION_102)}")
    return PRECISION_102[value]
