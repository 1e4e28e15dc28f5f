"""Building a registered solo-learn method from a config."""
from omegaconf import DictConfig

from solo_ncp.config import ConfigError, to_solo102_kwargs


def build_method(cfg: DictConfig, num_crops=(2, 0), **extra):
    """`solo.methods.METHODS[cfg.method]` with the config's solo-learn 1.0.2 keyword arguments."""
    from solo.methods import METHODS

    if cfg.method not in METHODS:
        raise ConfigError(f"method={cfg.method!r} is not registered: choose one of {', '.join(METHODS)}")
    return METHODS[cfg.method](**to_solo102_kwargs(cfg, num_crops), **extra)


def backbone_meta(model) -> dict:
    """The checkpoint's `solo_ncp.backbone` entry for a solo-learn 1.0.2 method instance."""
    return {
        "name": model.encoder_name,
        "cifar": bool(model.backbone_args.get("cifar", False)),
        "zero_init_residual": bool(model.backbone_args.get("zero_init_residual", False)),
    }
