"""Building a registered solo-learn method from a config, the installed host's way."""
from typing import Tuple

from omegaconf import DictConfig

from solo_ncp._host import current_host, import_solo
from solo_ncp.config import (ConfigError, dataset_spec, method_class, select, to_solo102_kwargs,
                             to_solo_main_cfg)
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
