"""Building a registered solo-learn method from a config, the installed host's way."""
import math
from typing import Tuple

from omegaconf import DictConfig

from solo_ncp._host import current_host, import_solo
from solo_ncp.config import (ConfigError, dataset_spec, learning_rates, method_class, select,
                             to_solo102_kwargs, to_solo_main_cfg)
from solo_ncp.models.backbones import SUPPORTED, BackboneSpec


def config_backbone_spec(cfg: DictConfig) -> BackboneSpec:
    """The backbone a solo-ncp config builds: `backbone.name` with `backbone.kwargs` (`cifar`
    defaulting to the dataset's stem); ValueError for options the backbone does not take."""
    kwargs = dict(select(cfg, "backbone.kwargs", {}))
    kwargs.setdefault("cifar", dataset_spec(cfg).cifar_stem)
    return BackboneSpec.from_kwargs(cfg.backbone.name, kwargs)


def host_backbones() -> Tuple[str, ...]:
    """The backbone names the installed solo-learn builds (solo-ncp's WideResNets registered)."""
    base = import_solo("solo.methods.base").BaseMethod
    return tuple(base._BACKBONES if current_host().is_main else base._SUPPORTED_ENCODERS)


TWO_VIEW_METHODS_102 = frozenset({"barlow_twins", "deepclusterv2", "dino", "mocov2plus", "nnbyol", "nnclr",
                                  "nnsiam", "ressl", "simsiam", "swav", "vicreg"})
"""solo-learn 1.0.2's methods whose `training_step` unpacks `out["feats"]` into two views: it holds
every crop, large then small, so they take 2 large crops and no small one (SimCLR too when it
has no small crop; with small crops it takes any number)."""
TWO_VIEW_METHODS_MAIN = frozenset({"all4one", "barlow_twins", "deepclusterv2", "mocov2plus", "nnbyol", "nnclr",
                                   "nnsiam", "ressl", "simsiam", "vibcreg", "vicreg"})
"""solo-learn main's methods whose `training_step` unpacks `out["z"]` (and `p`, `momentum_z`) into two
views: it holds the large crops only, so they take 2 large crops and any number of small ones."""
QUEUE_METHODS = frozenset({"all4one", "mocov2plus", "nnbyol", "nnclr", "nnsiam", "ressl"})
"""Methods whose queue takes every step's keys of all devices and asserts (both hosts) that
`method_kwargs.queue_size` is a multiple of their number (`queue_size % batch_size == 0`)."""


def check_views(cfg: DictConfig, num_crops: Tuple[int, int]) -> None:
    """ConfigError, before any work, for a stage-1 config the host's method fails on at its first
    step: a two-view method (`TWO_VIEW_METHODS_*`) given other than 2 crops it pairs
    (`num_crops`: (large, small), see `solo_ncp.config.crop_counts`), or a queue
    (`QUEUE_METHODS`) that is no multiple of the keys one step adds (batch x devices x nodes)."""
    method, (large, small) = str(cfg.method), num_crops
    host = current_host()
    if host.is_main:
        paired, counted, kind = method in TWO_VIEW_METHODS_MAIN, large, "2 large crops (and any small ones)"
    else:
        paired = method in TWO_VIEW_METHODS_102 or (method == "simclr" and small == 0)
        counted = large + small
        kind = "2 crops when none is small" if method == "simclr" else "2 crops, large and small together"
    if paired and counted != 2:
        main_takes = not host.is_main and (large == 2 or method not in TWO_VIEW_METHODS_MAIN)
        elsewhere = f", or train on solo-learn main, whose {method} takes these crops" if main_takes else ""
        raise ConfigError(
            f"method={method} on {host.api} pairs exactly {kind}; the augmentations give {large} large "
            f"and {small} small (crops of the largest crop_size are large): set their num_crops to give "
            f"{kind}{elsewhere}")
    if method in QUEUE_METHODS:
        rates = learning_rates(cfg)
        keys = rates.batch_size * rates.devices * rates.nodes
        queue = int(select(cfg, "method_kwargs.queue_size", 65536))
        if queue % keys:
            raise ConfigError(
                f"method_kwargs.queue_size={queue} is no multiple of the {keys} keys each step adds to "
                f"{method}'s queue (optimizer.batch_size {rates.batch_size} x {rates.devices} device(s) x "
                f"{rates.nodes} node(s)), which solo-learn asserts at the first step: set it to a multiple, "
                f"e.g. {math.ceil(queue / keys) * keys}")


def build_method(cfg: DictConfig, num_crops=(2, 0), **extra):
    """`solo.methods.METHODS[cfg.method]` built from the config: with solo-learn 1.0.2's keyword
    arguments (`extra` added to them), or with solo-learn main's `cfg` (`extra` added to its
    `method_kwargs`) and the ResNet stem of `backbone.kwargs.cifar` (see `methods.main_host`).
    A backbone of solo-ncp's (`SUPPORTED`) has its kwargs checked first."""
    cls = method_class(cfg.method)
    if cfg.backbone.name in SUPPORTED:
        config_backbone_spec(cfg)
    elif cfg.backbone.name not in host_backbones():
        raise ConfigError(f"backbone.name={cfg.backbone.name!r} is no backbone of {current_host().api}: choose "
                          f"one of {', '.join(sorted(host_backbones()))} (solo-ncp evaluates {', '.join(SUPPORTED)})")
    if not current_host().is_main:
        return cls(**to_solo102_kwargs(cfg, num_crops), **extra)
    from solo_ncp.methods.main_host import cifar_stem, match_stem, stem_key_hidden
    from solo_ncp.methods.stage2_hooks import Stage2Hooks

    main_cfg = to_solo_main_cfg(cfg, num_crops, **extra)
    if issubclass(cls, Stage2Hooks):  # reads backbone.kwargs.cifar itself
        return cls(main_cfg)
    cifar = cifar_stem(main_cfg)
    with stem_key_hidden(main_cfg):
        model = cls(main_cfg)
    match_stem(model, cifar)
    return model


def backbone_meta(model) -> dict:
    """The checkpoint's `solo_ncp.backbone` entry of a solo-learn method instance (either host):
    the spec of its backbone name and kwargs, the stem read from the built encoder (CIFAR stem: a
    3x3 conv1)."""
    main = current_host().is_main
    encoder = model.backbone if main else model.encoder
    conv1 = getattr(encoder, "conv1", None)
    cifar = conv1 is not None and tuple(conv1.kernel_size) == (3, 3)
    name = model.backbone_name if main else model.encoder_name
    return BackboneSpec.from_kwargs(name, {**model.backbone_args, "cifar": cifar}).to_dict()
