"""Building a registered solo-learn method from a config, the installed host's way."""
from omegaconf import DictConfig

from solo_ncp._host import current_host
from solo_ncp.config import ConfigError, to_solo102_kwargs, to_solo_main_cfg


def build_method(cfg: DictConfig, num_crops=(2, 0), **extra):
    """`solo.methods.METHODS[cfg.method]` built from the config: with solo-learn 1.0.2's keyword
    arguments (`extra` added to them), or with solo-learn main's `cfg` (`extra` added to its
    `method_kwargs`) and the ResNet stem of `backbone.kwargs.cifar` (see `methods.main_host`)."""
    from solo.methods import METHODS

    if cfg.method not in METHODS:
        raise ConfigError(f"method={cfg.method!r} is not registered: choose one of {', '.join(METHODS)}")
    cls = METHODS[cfg.method]
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
    """The checkpoint's `solo_ncp.backbone` entry of a solo-learn method instance (either host);
    the stem is read from the built encoder (CIFAR stem: a 3x3 conv1)."""
    main = current_host().is_main
    encoder = model.backbone if main else model.encoder
    conv1 = getattr(encoder, "conv1", None)
    return {
        "name": model.backbone_name if main else model.encoder_name,
        "cifar": conv1 is not None and tuple(conv1.kernel_size) == (3, 3),
        "zero_init_residual": bool(model.backbone_args.get("zero_init_residual", False)),
    }
