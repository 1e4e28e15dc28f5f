"""A loaded config as each host's method class takes it.

Mapping onto solo-learn 1.0.2's keyword arguments (`to_solo102_kwargs`):

| config key                               | solo-learn 1.0.2 argument              |
|------------------------------------------|----------------------------------------|
| backbone.name                            | encoder                                |
| backbone.kwargs.zero_init_residual       | backbone_args["zero_init_residual"]    |
| backbone.kwargs.cifar (default: dataset) | backbone_args["cifar"] (3x3 stem, no max-pool) |
| backbone.kwargs.* (others: widen_factor) | backbone_args[*]                       |
| optimizer.name: lars                     | optimizer="sgd", lars=True             |
| optimizer.kwargs.eta / clip_lr           | eta_lars / grad_clip_lars              |
| optimizer.kwargs.exclude_bias_n_norm     | exclude_bias_n_norm                    |
| optimizer.kwargs.momentum (0.9)          | extra_optimizer_args["momentum"]       |
| optimizer.lr / classifier_lr             | lr / classifier_lr, scaled (see above) |
| optimizer.batch_size / weight_decay      | batch_size / weight_decay              |
| scheduler.name / warmup_epochs / ...     | scheduler / warmup_epochs / warmup_start_lr / min_lr / lr_decay_steps |
| augmentations[i].num_crops, crop_size    | num_large_crops / num_small_crops      |
| method_kwargs.*                          | the method's own keyword arguments     |
| knn_eval.enabled / k                     | knn_eval / knn_k (distance_func must be euclidean) |
| data.dataset                             | dataset (in extra_args, as 1.0.2's main_pretrain.py passes it) |
| scheduler.interval                       | must be "epoch" (1.0.2 steps per epoch) |

`scheduler.warmup_epochs: 0` starts at the (scaled) `optimizer.lr`, as solo-learn main does:
`warmup_start_lr` becomes that lr. Both hosts' LinearWarmupCosineAnnealingLR (pl_bolts' on 1.0.2)
start every parameter group at that one `warmup_start_lr`; `solo_ncp.launch.trainer` puts each
group back at its own lr (the online classifier at `classifier_lr`) before the first epoch.

Under solo-learn main the config is the method's `cfg` itself (`to_solo_main_cfg`): a copy
completed as main's `parse_cfg` completes it (`data.num_classes`, crop counts, optimizer kwargs
defaults, the learning-rate rule), except that `scheduler.interval` defaults to "epoch", as on
1.0.2 (main_pretrain.py's default is "step"). `backbone.kwargs.cifar` is read by solo-ncp (see
`solo_ncp.methods.main_host`).
"""
import copy
from typing import Dict, List, Tuple

from omegaconf import DictConfig, ListConfig, OmegaConf

from solo_ncp.config.schema import ConfigError
from solo_ncp.config.settings import dataset_spec, learning_rates, select


PRECISION_102 = {"16-mixed": 16, "16": 16, "32-true": 32, "32": 32, "bf16-mixed": "bf16",
                 "bf16": "bf16"}


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def to_solo102_kwargs(cfg: DictConfig, num_crops: Tuple[int, int] = (2, 0)) -> Dict:
    """Keyword arguments for a solo-learn 1.0.2 method class (see the module's mapping table)."""
    spec = dataset_spec(cfg)
    opt, sched = cfg.optimizer, cfg.get("scheduler") or {}
    rates = learning_rates(cfg)
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
    knn = cfg.get("knn_eval") or {}
    if knn.get("distance_func", "euclidean") != "euclidean":
        raise ConfigError(
            f"knn_eval.distance_func={knn.distance_func!r}: solo-learn 1.0.2's k-NN measures "
            "euclidean distance only; remove the key or set it to euclidean"
        )
    if sched.get("interval", "epoch") != "epoch":
        raise ConfigError(
            f"scheduler.interval={sched.interval!r}: solo-learn 1.0.2 steps its scheduler once "
            "an epoch; remove the key or set it to epoch"
        )
    return dict(
        encoder=cfg.backbone.name,
        backbone_args={
            **(_plain(cfg.backbone.get("kwargs")) or {}),
            "cifar": bool(select(cfg, "backbone.kwargs.cifar", spec.cifar_stem)),
            "zero_init_residual": bool(select(cfg, "backbone.kwargs.zero_init_residual", False)),
        },
        num_classes=spec.num_classes,
        dataset=spec.name,
        max_epochs=int(cfg.max_epochs),
        batch_size=int(opt.batch_size),
        optimizer="sgd" if lars else opt.name,
        lars=lars,
        eta_lars=float(eta),
        grad_clip_lars=bool(clip),
        exclude_bias_n_norm=bool(exclude),
        lr=rates.lr,
        classifier_lr=rates.classifier_lr,
        weight_decay=float(opt.get("weight_decay", 1e-4)),
        extra_optimizer_args=extra,
        accumulate_grad_batches=rates.accumulate,
        scheduler=sched.get("name", "none"),
        lr_decay_steps=decay_steps,
        min_lr=float(sched.get("min_lr", 0.0)),
        warmup_start_lr=rates.lr if warmup_epochs == 0 else float(sched.get("warmup_start_lr", 3e-5)),
        warmup_epochs=warmup_epochs,
        num_large_crops=num_crops[0],
        num_small_crops=num_crops[1],
        knn_eval=bool(knn.get("enabled", False)),
        knn_k=int(knn.get("k", 20)),
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
    are merged into `cfg.method_kwargs`, and a missing `momentum` block is an empty one (main's
    momentum methods fill its keys with their defaults, but need the block: a config without it
    failed with omegaconf's traceback). `cfg` itself is left as it is."""
    spec = dataset_spec(cfg)
    rates = learning_rates(cfg)
    out = copy.deepcopy(cfg)
    out.data.num_classes = spec.num_classes
    out.data.num_large_crops, out.data.num_small_crops = num_crops
    opt_kwargs = _plain(out.optimizer.get("kwargs")) or {}
    out.optimizer.kwargs = {**MAIN_OPTIMIZER_DEFAULTS.get(out.optimizer.name, {}), **opt_kwargs}
    out.optimizer.lr, out.optimizer.classifier_lr = rates.lr, rates.classifier_lr
    out.optimizer.weight_decay = float(out.optimizer.get("weight_decay", 1e-4))
    out.scheduler = {"name": "none", "interval": "epoch", **(_plain(out.get("scheduler")) or {})}
    out.method_kwargs = {**(_plain(out.get("method_kwargs")) or {}), **method_kwargs}
    out.momentum = _plain(out.get("momentum")) or {}
    return out


def lightning_precision(cfg: DictConfig):
    """Lightning 2 precision strings ("16-mixed") as Lightning 1.9 expects them (16)."""
    value = str(cfg.get("precision", 32))
    if value not in PRECISION_102:
        raise ConfigError(f"precision={value!r} is not one of {', '.join(PRECISION_102)}")
    return PRECISION_102[value]
