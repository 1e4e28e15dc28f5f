"""Reading a run config: the file (a path or a bundled name), its overrides, and every check."""
from pathlib import Path
from typing import Dict, Sequence, Tuple

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from solo_ncp.config.overrides import override_key, with_overrides
from solo_ncp.config.schema import ConfigError, check_config_keys, check_option_kinds
from solo_ncp.config.settings import checkpoint_history, dataset_spec, logger_settings
from solo_ncp.io import wrong_kind
from solo_ncp.zoo import config_path


REQUIRED = ("name", "method", "backbone.name", "data.dataset", "optimizer.name",
            "optimizer.batch_size", "optimizer.lr", "max_epochs")
OPTIMIZERS = ("sgd", "lars", "adam", "adamw")


def read_config_file(path: Path) -> Dict:
    """The plain dict a YAML config file (a run's config.yaml) holds; ValueError naming why when it
    holds none: the YAML error's first line, or "not a block of keys"."""
    try:
        config = OmegaConf.to_container(OmegaConf.load(path))
    except (OmegaConfBaseException, yaml.YAMLError) as err:
        raise ValueError(str(err).splitlines()[0]) from None
    if not isinstance(config, dict) or not config:
        raise ValueError("not a block of keys" if config else "empty")
    return config


def config_file(config) -> Path:
    """The file `--config` names: a path that exists, else a bundled config `<dataset>/<name>`
    (`solo_ncp.zoo.config_path`: `cifar10/ncp`)."""
    path = Path(config)
    if path.is_file():
        return path
    if path.exists():
        raise ConfigError(f"config file {path} {wrong_kind(path, 'file')}: give a YAML file's path "
                          "or a bundled name")
    try:
        return config_path(str(config))
    except ValueError as err:
        raise ConfigError(f"config file {path} does not exist and {err}: give a YAML file's "
                          "path or a bundled name") from None


LARS_OPTIONS = ("momentum", "dampening", "nesterov", "eta", "clip_lr", "exclude_bias_n_norm")
"""What both hosts' LARS take: solo-learn main's LARS class, 1.0.2's SGD inside its LARS wrapper."""


def optimizer_options(name: str) -> Tuple[str, ...]:
    """The `optimizer.kwargs` optimizer `name` takes on both hosts: LARS_OPTIONS, or the keyword
    arguments of torch's SGD / Adam / AdamW besides params, lr and weight_decay."""
    if name == "lars":
        return LARS_OPTIONS
    import inspect

    import torch

    optimizer = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    return tuple(p for p in inspect.signature(optimizer).parameters if p not in ("params", "lr", "weight_decay"))


def load_config(path, overrides: Sequence[str] = ()) -> DictConfig:
    """Reads a YAML config (a path or a bundled name, `config_file`) and applies overrides in
    Hydra's grammar (see the module's docstring)."""
    path = config_file(path)
    try:
        cfg = OmegaConf.load(path)
    except (OmegaConfBaseException, yaml.YAMLError, UnicodeDecodeError) as err:  # binary: not UTF-8
        raise ConfigError(f"cannot read config {path}: {err}") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"config {path} holds a list, not a block of keys: pass a config in solo-learn "
                          "main's schema (e.g. zoo_configs/cifar10/simclr.yaml)")
    overridden = {override_key(override): override for override in overrides}
    lacking = [key for key in REQUIRED if OmegaConf.select(cfg, key) is None and key not in overridden]
    if lacking:
        raise ConfigError(f"config {path} lacks {', '.join(f'`{key}`' for key in lacking)} (solo-learn "
                          "main's schema): pass a solo-learn config (e.g. zoo_configs/cifar10/simclr.yaml)")
    file_values = OmegaConf.to_container(cfg)
    cfg = with_overrides(cfg, overrides)
    for key in REQUIRED:
        if OmegaConf.select(cfg, key) is None:
            raise ConfigError(f"override {overridden[key]!r} leaves the config without `{key}`, which "
                              "it needs: give it a value")
    check_config_keys(cfg)
    check_option_kinds(file_values, cfg)
    if int(cfg.max_epochs) < 1:
        raise ConfigError(f"max_epochs={cfg.max_epochs} trains nothing: give a whole number >= 1")
    if str(cfg.name).strip() in ("", ".", ".."):
        raise ConfigError(f"name={str(cfg.name)!r} names no run folder of its own under checkpoint.dir: "
                          "give the run a name (name=ncp-cifar10)")
    dataset_spec(cfg)  # an unknown dataset, custom folders and statistics: refused before any work
    if cfg.optimizer.name not in OPTIMIZERS:
        raise ConfigError(
            f"optimizer.name={cfg.optimizer.name!r} is not one of {', '.join(OPTIMIZERS)}"
        )
    known = optimizer_options(cfg.optimizer.name)
    unknown = sorted(set(cfg.optimizer.get("kwargs") or {}) - set(known))
    if unknown:
        raise ConfigError(f"optimizer.kwargs.{unknown[0]} is not an option of {cfg.optimizer.name}: remove it "
                          f"(its options: {', '.join(known)}; lr and weight_decay are optimizer.lr and "
                          "optimizer.weight_decay)")
    logger_settings(cfg)  # refused here, before any work
    checkpoint_history(cfg)
    return cfg
