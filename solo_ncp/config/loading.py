"""Reading a run config: the file (a path or a bundled name), its overrides, and every check."""
import os
from pathlib import Path, PurePath
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from solo_ncp._host import current_host
from solo_ncp.config.overrides import override_key, with_overrides
from solo_ncp.config.ranges import check_ranges
from solo_ncp.config.schema import (
    HYDRA,
    ConfigError,
    check_block_shapes,
    check_config_keys,
    check_option_kinds,
    is_hydra_key,
    known_keys,
)
from solo_ncp.config.settings import checkpoint_history, dataset_spec, logger_settings, select
from solo_ncp.io import wrong_kind
from solo_ncp.zoo import config_path


REQUIRED = ("name", "method", "backbone.name", "data.dataset", "optimizer.name",
            "optimizer.batch_size", "optimizer.lr", "max_epochs")
OPTIMIZERS = ("sgd", "lars", "adam", "adamw")
SCHEDULERS = {False: ("warmup_cosine", "cosine", "step", "none"), True: ("warmup_cosine", "step", "none")}
"""The `scheduler.name`s the installed host's BaseMethod builds (keyed by `is_main`): solo-learn
1.0.2's `configure_optimizers` and main's; any other failed once data and run folder were made."""


class NotABlockOfKeys(ValueError):
    """A YAML file that reads, but whose document is a list or a single value."""


def read_yaml_block(path: Path) -> DictConfig:
    """The block of keys the YAML file at `path` holds, read as `OmegaConf.load` reads it (an empty
    file: no keys). ValueError naming why it holds none: the file is not UTF-8, the YAML error (on
    one line), or it nests without end (an alias inside its own anchor); NotABlockOfKeys where the
    document is a list or a single value (OmegaConf reads a lone word as a key)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        top = yaml.compose(text, Loader=yaml.SafeLoader)
        if top is not None and not isinstance(top, yaml.MappingNode):
            kind = "a list" if isinstance(top, yaml.SequenceNode) else f"a single value ({top.value[:40]!r})"
            raise NotABlockOfKeys(f"holds {kind}, not a block of keys")
        return OmegaConf.create(text) if top is not None else OmegaConf.create()
    except (OmegaConfBaseException, yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(" ".join(line.strip() for line in str(err).splitlines() if line.strip())) from None
    except RecursionError:
        raise ValueError("it nests without end (a YAML alias inside its own anchor)") from None


def read_config_file(path: Path) -> Dict:
    """The plain dict a YAML config file (a run's config.yaml) holds; ValueError naming why when it
    holds none (`read_yaml_block`'s reasons, or "empty")."""
    config = OmegaConf.to_container(read_yaml_block(path))
    if not config:
        raise ValueError("empty")
    return config


def _names_a_folder_inside(name: str) -> bool:
    """Whether the run name `name` is a relative path to a folder below checkpoint.dir: not empty,
    `.`, `./` or `a/..` (checkpoint.dir itself), not leaving it (`..`, `../x`) nor absolute."""
    name = name.strip()
    parts = PurePath(os.path.normpath(name or ".")).parts
    return bool(parts) and ".." not in parts and not PurePath(name).is_absolute()


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


def _group_file(path: Path, name: str) -> str:
    """Where the group file `name` (`augmentations/symmetric.yaml`) of a config copied from
    solo-learn main's scripts/ is: beside `path` when it is there, else in solo-learn's scripts/."""
    beside = path.parent / name
    return str(beside) if beside.is_file() else f"solo-learn's scripts/<task>/<dataset>/{name}"


def _defaults_to_inline(path: Path, defaults) -> List[str]:
    """What each entry of Hydra's `defaults` list in config `path` composes into the config, as
    "`augmentations: symmetric.yaml` -> the keys of <its file> under `augmentations:`"; none for
    `_self_`, Hydra's own groups (`override hydra/job_logging: disabled`) and an empty choice."""
    inline = []
    for entry in defaults if isinstance(defaults, list) else [defaults]:
        if entry is None or entry == "_self_":
            continue
        if not isinstance(entry, dict):
            name = f"{entry}" if str(entry).endswith(".yaml") else f"{entry}.yaml"
            inline.append(f"`{entry}` -> the keys of {_group_file(path, name)} at the top level")
            continue
        for written, choice in entry.items():
            group, _, package = str(written).split()[-1].partition("@")  # override / optional group@package
            if is_hydra_key(group) or choice is None:
                continue
            for option in choice if isinstance(choice, list) else [choice]:
                name = f"{group}/{option}" + ("" if str(option).endswith(".yaml") else ".yaml")
                place = ("at the top level" if package == "_global_" else
                         f"under `{package or group.replace('/', '.')}:`")
                inline.append(f"`{written}: {option}` -> the keys of {_group_file(path, name)} {place}")
    return inline


def _composition_error(path: Path, cfg: DictConfig) -> Optional[ConfigError]:
    """The refusal of a config that composes group files with Hydra's `defaults` list (solo-learn
    main's scripts/ configs): solo-ncp reads one self-contained file. A list of only `_self_` and
    Hydra's own groups composes nothing into the config: it is accepted (and dropped, as Hydra
    drops it), so a file keeps running under main's launcher with Hydra's logging off."""
    inline = _defaults_to_inline(path, OmegaConf.to_container(cfg)["defaults"])
    if not inline:
        return None
    return ConfigError(f"config {path} holds Hydra's `defaults` list: solo-ncp reads one self-contained file, "
                       f"not Hydra's defaults list: inline the listed group files ({'; '.join(inline)}) and "
                       "delete `defaults` (its `_self_` and `override hydra/...` entries may stay)")


def _override_leaving_out(overrides: Sequence[str], key: str) -> str:
    """"override '<the last of `overrides` whose key is `key` or a block holding it>'" (`~data` for
    data.dataset), else "the overrides" (an interpolation's target changed)."""
    last = next((override for override in reversed(overrides)
                 if key == override_key(override) or key.startswith(override_key(override) + ".")), None)
    return "the overrides" if last is None else f"override {last!r}"


def load_config(path, overrides: Sequence[str] = (),
                check_method: Optional[Callable[[DictConfig], None]] = None) -> DictConfig:
    """Reads a YAML config (a path or a bundled name, `config_file`) and applies overrides in
    Hydra's grammar (see the module's docstring). Hydra's own keys (`hydra:`, a `defaults` list of
    only `_self_` and `hydra/...` entries) are dropped, as Hydra drops them. `check_method(cfg)`:
    the command's check that it runs the config's `method`, made once the overrides are applied
    and before its keys are checked against that method's (whose error would name a key, not the
    method)."""
    path = config_file(path)
    try:
        cfg = read_yaml_block(path)
    except NotABlockOfKeys as err:
        raise ConfigError(f"config {path} {err}: pass a config in solo-learn main's schema (e.g. "
                          "zoo_configs/cifar10/simclr.yaml)") from None
    except ValueError as err:
        raise ConfigError(f"cannot read config {path}: {err}") from None
    if "defaults" in cfg:
        error = _composition_error(path, cfg)
        if error is not None:
            raise error
        del cfg["defaults"]
    cfg.pop(HYDRA, None)
    try:
        check_block_shapes(OmegaConf.to_container(cfg), list(known_keys(cfg.get("method"))), "solo-ncp")
    except ConfigError as err:
        raise ConfigError(f"config {path}: {err}") from None
    overridden = {override_key(override): override for override in overrides}
    lacking = [key for key in REQUIRED if OmegaConf.select(cfg, key) is None and key not in overridden]
    if lacking:
        raise ConfigError(f"config {path} lacks {', '.join(f'`{key}`' for key in lacking)} (solo-learn "
                          "main's schema): pass a solo-learn config (e.g. zoo_configs/cifar10/simclr.yaml)")
    file_values = OmegaConf.to_container(cfg)
    cfg = with_overrides(cfg, overrides)
    for key in REQUIRED:
        if OmegaConf.select(cfg, key) is None:
            raise ConfigError(f"{_override_leaving_out(overrides, key)} leaves the config without "
                              f"`{key}`, which it needs: give it a value")
    if check_method is not None:
        check_method(cfg)
    check_option_kinds(file_values, cfg)  # first: an override's error names the file's value
    check_config_keys(cfg)
    check_ranges(cfg)
    if int(cfg.max_epochs) < 1:
        raise ConfigError(f"max_epochs={cfg.max_epochs} trains nothing: give a whole number >= 1")
    if not _names_a_folder_inside(str(cfg.name)):
        raise ConfigError(f"name={str(cfg.name)!r} names no run folder of its own under checkpoint.dir: "
                          "give the run a name (name=ncp-cifar10)")
    dataset_spec(cfg)  # an unknown dataset, custom folders and statistics: refused before any work
    if cfg.optimizer.name not in OPTIMIZERS:
        raise ConfigError(
            f"optimizer.name={cfg.optimizer.name!r} is not one of {', '.join(OPTIMIZERS)}"
        )
    schedulers = SCHEDULERS[current_host().is_main]
    scheduler = select(cfg, "scheduler.name", "none")
    if str(scheduler).lower() not in schedulers:
        raise ConfigError(f"scheduler.name={scheduler!r} is no scheduler of {current_host().api}: choose one of "
                          f"{', '.join(schedulers)}")
    known = optimizer_options(cfg.optimizer.name)
    unknown = sorted(set(cfg.optimizer.get("kwargs") or {}) - set(known))
    if unknown:
        raise ConfigError(f"optimizer.kwargs.{unknown[0]} is not an option of {cfg.optimizer.name}: remove it "
                          f"(its options: {', '.join(known)}; lr and weight_decay are optimizer.lr and "
                          "optimizer.weight_decay)")
    logger_settings(cfg)  # refused here, before any work
    checkpoint_history(cfg)
    return cfg
