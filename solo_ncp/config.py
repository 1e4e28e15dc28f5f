"""Run configs in solo-learn main's Hydra schema, read with OmegaConf, mapped onto solo-learn 1.0.2.

A config file is a YAML dict with solo-learn main's top-level keys (`name`, `method`, `backbone`,
`method_kwargs`, `data`, `augmentations`, `optimizer`, `scheduler`, `checkpoint`, `auto_resume`,
`max_epochs`, `devices`, `accelerator`, `strategy`, `precision`, `seed`).

Overrides follow Hydra's grammar, parsed by hydra-core's own parser and applied as Hydra applies
them (`load_config`): `key=value` changes an existing key (dotted, list items by index:
`augmentations.0.crop_size=8`) and refuses a key the config lacks, naming the closest one;
`+key=value` adds a key (an error if it holds a value); `++key=value` adds or replaces; `~key`
(or `~key=value`, only if it holds that value) deletes. Values are typed as Hydra types them
(`1`, `0.1`, `true`, `null`, `[1,2]`, `{a: 1}`, `'quoted'`). So the same file and overrides give
the same config under `solo-ncp` and under solo-learn main's own main_pretrain.py.

solo-ncp's launcher keys (`LAUNCHER_KEYS`) take `key=value` even where a file lacks them (as
`++key=value` would): `data.subset` (train on a fixed random subset of that many images, drawn
with `data.subset_seed`, default 0), `data.val` (validate the online classifier on the test
split; default true), `data.val_path` (custom data's test ImageFolder), `backbone.kwargs.cifar`
(the ResNet stem; default: the dataset's), the Trainer's `limit_train_batches`,
`limit_val_batches`, `log_every_n_steps`, `accumulate_grad_batches`, `sync_batchnorm`,
`num_nodes` (Lightning's defaults), and the keys of the logger and checkpoint blocks
(`RUN_BLOCKS`: `wandb.enabled=true wandb.project=...` on the command line needs no `wandb:` block
in the file).

`data.dataset: custom` reads torchvision ImageFolders, `data.train_path` and `data.val_path`,
normalised with the `mean`/`std` of every `augmentations` entry (`custom_data_of`, see
solo_ncp.data.custom); the folders and statistics are checked when the config loads.

Every key of a loaded config, from the file or an override, must be read by something
(`check_config_keys`): by solo-ncp (`SCHEMA`: the keys of main's schema it honours, and
`LAUNCHER_KEYS`), or by the installed host's method class (`method_keys`: its `method_kwargs`
options, and on main the other keys its `add_and_assert_specific_cfg` names, such as `momentum.*`).
A few keys of main's configs that change nothing solo-ncp trains are accepted unread
(`MAIN_IGNORED`: `auto_umap`, `dali`, `data.format`, ...). Any other key is refused naming the
closest key read, and a value solo-ncp converts must be of its key's kind (a whole number, a number,
true or false).

The blocks `wandb:` (solo-learn main's: `enabled`, `project`, `entity`, `offline`),
`tensorboard:` (`enabled`) and `checkpoint:` (solo-learn main's `Checkpointer` keys: `enabled`,
`dir`, `frequency`, `keep_prev`; solo-ncp's `save_best`) are checked when a config loads
(`logger_settings`, `checkpoint_history`): a flag that is not true/false or a frequency below 1 is
refused, `wandb.enabled: true` needs a `project` and `checkpoint.save_best: true` stage 2's
`method_kwargs.val_robust_every`. Absent blocks or keys mean what they meant before them: CSV logs
only, `last.ckpt` only.

Learning rates follow solo-learn main's rule (`parse_cfg`, applied by its main_pretrain.py), on
both hosts (`learning_rates`): `optimizer.lr` is multiplied by batch_size * devices * num_nodes
/ 256, and so is `optimizer.classifier_lr` when `data.val_path` is set (main's condition).
Solo-learn's BaseMethod (either host) multiplies both again by `accumulate_grad_batches`.

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
import argparse
import copy
import difflib
import inspect
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from solo_ncp._host import current_host, import_solo
from solo_ncp.data.custom import CUSTOM, CustomData, config_custom_data
from solo_ncp.data.registry import DatasetSpec, get_spec
from solo_ncp.zoo import config_path

REQUIRED = ("name", "method", "backbone.name", "data.dataset", "optimizer.name",
            "optimizer.batch_size", "optimizer.lr", "max_epochs")
OPTIMIZERS = ("sgd", "lars", "adam", "adamw")
PRECISION_102 = {"16-mixed": 16, "16": 16, "32-true": 32, "32": 32, "bf16-mixed": "bf16",
                 "bf16": "bf16"}
RUN_BLOCKS = {
    "wandb": ("enabled", "project", "entity", "offline"),
    "tensorboard": ("enabled",),
    "checkpoint": ("enabled", "dir", "frequency", "keep_prev", "save_best"),
}
"""The keys solo-ncp accepts in the logger and checkpoint blocks (see `logger_settings`,
`checkpoint_history`)."""
WHOLE, NUMBER, FLAG = "a whole number", "a number", "true or false"
"""Kinds of the values solo-ncp converts (`_is_kind`); null is always allowed (the default)."""
LAUNCHER_KEYS = {
    "data.subset": WHOLE, "data.subset_seed": WHOLE, "data.val": FLAG, "data.val_path": None,
    "backbone.kwargs.cifar": FLAG,
    "limit_train_batches": NUMBER, "limit_val_batches": NUMBER, "log_every_n_steps": WHOLE,
    "accumulate_grad_batches": WHOLE, "sync_batchnorm": FLAG, "num_nodes": WHOLE,
    **{f"{block}.{key}": None for block, keys in RUN_BLOCKS.items() for key in keys},
}
"""solo-ncp's own optional keys, with the kind of value each takes: `key=value` sets them as
`++key=value` does when a config lacks them."""
AUGMENTATION_KEYS = {
    "crop_size": WHOLE, "num_crops": WHOLE, "mean": None, "std": None, "pad_crop.padding": WHOLE,
    "rrc.enabled": FLAG, "rrc.crop_min_scale": NUMBER, "rrc.crop_max_scale": NUMBER,
    **{f"color_jitter.{key}": NUMBER for key in ("prob", "brightness", "contrast", "saturation", "hue")},
    **{f"{name}.prob": NUMBER for name in ("grayscale", "gaussian_blur", "solarization",
                                           "equalization", "horizontal_flip")},
}
"""The keys of one `augmentations` entry: solo-learn main's pipeline keys, `mean`/`std` (solo-ncp's
statistics for datasets main has none for) and `pad_crop.padding` (stage 2's weak augmentation)."""
SCHEMA = {
    "name": None, "method": None, "max_epochs": WHOLE, "seed": WHOLE, "devices": None,
    "accelerator": None, "strategy": None, "precision": None,
    "backbone.name": None, "backbone.kwargs": None,
    "data.dataset": None, "data.train_path": None, "data.val_path": None, "data.num_workers": WHOLE,
    **{f"augmentations.*.{key}": kind for key, kind in AUGMENTATION_KEYS.items()},
    "optimizer.name": None, "optimizer.batch_size": WHOLE, "optimizer.lr": NUMBER,
    "optimizer.classifier_lr": NUMBER, "optimizer.weight_decay": NUMBER, "optimizer.kwargs": None,
    "scheduler.name": None, "scheduler.interval": None, "scheduler.warmup_epochs": NUMBER,
    "scheduler.warmup_start_lr": NUMBER, "scheduler.min_lr": NUMBER, "scheduler.lr_decay_steps": None,
    "auto_resume.enabled": FLAG, "knn_eval.enabled": FLAG, "knn_eval.k": WHOLE,
    "knn_eval.distance_func": None,
    **LAUNCHER_KEYS,
}
"""Every key solo-ncp reads or passes on (`backbone.kwargs` and `optimizer.kwargs` whole, to the
backbone and the optimizer), on either host, with the kind of value it converts the key to (None:
any); `*` stands for a list index. The keys of solo-learn main's schema solo-ncp honours (see the
mapping table), plus `LAUNCHER_KEYS`."""
MAIN_IGNORED = ("auto_resume.max_hours", "auto_umap", "dali", "debug_augmentations", "performance",
                "data.format", "data.num_classes", "data.num_large_crops", "data.num_small_crops")
"""Keys of solo-learn main's configs that solo-ncp accepts without reading them: none changes what
solo-ncp trains (UMAP plots, DALI loaders, channels-last, resume age; main's parse_cfg fills the
`data.num_*` keys, solo-ncp computes them)."""
LR_REFERENCE_BATCH = 256


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key and the fix."""


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


def parse_overrides(overrides: Sequence[str]) -> List:
    """hydra-core's `Override`s of command-line strings; refuses sweeps and packages, which
    only Hydra's multirun and config groups give a meaning."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser, parsed = OverridesParser.create(), []
    for line in overrides:
        try:
            (override,) = parser.parse_overrides([line])
        except OverrideParseException as err:
            lines = str(err).splitlines()
            reason = lines[min(1, len(lines) - 1)]
            raise ConfigError(
                f"override {line!r} is not key=value, +key=value, ++key=value or ~key "
                f"(Hydra's grammar: {reason})"
            ) from None
        if override.is_sweep_override() or override.package is not None:
            raise ConfigError(f"override {line!r}: sweeps and @packages are Hydra multirun / "
                              "config-group syntax, not supported by solo-ncp")
        parsed.append(override)
    return parsed


def _walk(node, prefix: Tuple[str, ...] = ()) -> Iterator[Tuple[Tuple[str, ...], object]]:
    """(key path, value) of every key of a plain config, blocks and lists before their items."""
    for key, child in node.items() if isinstance(node, dict) else enumerate(node):
        path = (*prefix, str(key))
        yield path, child
        if isinstance(child, (dict, list)):
            yield from _walk(child, path)


def dotted_keys(node) -> Iterator[str]:
    """Every key of a plain dict/list config (`OmegaConf.to_container`), dotted, list items by
    index ("augmentations.0.crop_size")."""
    return (".".join(path) for path, _ in _walk(node))


def _closest(cfg: DictConfig, key: str) -> str:
    """" (did you mean `<key>`?)" for the existing key closest to `key` (difflib), else ""."""
    known = [*dotted_keys(OmegaConf.to_container(cfg)), *LAUNCHER_KEYS]
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _delete(cfg: DictConfig, line: str, key: str, value) -> None:
    """`~key` / `~key=value`, as Hydra deletes."""
    current = OmegaConf.select(cfg, key, throw_on_missing=False)
    if current is None:
        raise ConfigError(f"override {line!r}: `{key}` is not in the config (or is null), "
                          f"nothing to delete{_closest(cfg, key)}")
    if value is not None and value != current:
        raise ConfigError(f"override {line!r}: `{key}` is {current}, not {value}; nothing deleted")
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    with open_dict(cfg):
        del node[int(leaf) if isinstance(node, ListConfig) else leaf]


def apply_override(cfg: DictConfig, override) -> None:
    """Applies one hydra-core `Override` to `cfg` (struct mode) as Hydra's config loader does."""
    line, key, value = override.input_line, override.key_or_group, override.value()
    if override.is_delete():
        _delete(cfg, line, key, value)
    elif override.is_add():
        if OmegaConf.select(cfg, key, throw_on_missing=False) is not None and not isinstance(
                value, (dict, list)):
            raise ConfigError(f"override {line!r}: `{key}` is already in the config; write "
                              f"{line[1:]} to change it, or +{line} to add or change it")
        OmegaConf.update(cfg, key, value, merge=True, force_add=True)
    elif override.is_force_add() or key in LAUNCHER_KEYS:
        OmegaConf.update(cfg, key, value, merge=True, force_add=True)
    else:
        try:
            OmegaConf.update(cfg, key, value, merge=True)
        except (ConfigAttributeError, ConfigKeyError):
            raise ConfigError(f"override {line!r}: the config has no key `{key}`"
                              f"{_closest(cfg, key)}; to add a new key write +{line}") from None


def with_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """`cfg` (modified) with Hydra-grammar overrides applied in order; unlocked afterwards as
    solo-learn main's main_pretrain.py unlocks it (`set_struct(cfg, False)`)."""
    parsed = parse_overrides(overrides)
    OmegaConf.set_struct(cfg, True)
    for override in parsed:
        try:
            apply_override(cfg, override)
        except ConfigError:
            raise
        except (OmegaConfBaseException, ValueError) as err:
            raise ConfigError(
                f"override {override.input_line!r}: {str(err).splitlines()[0]}") from None
    OmegaConf.set_struct(cfg, False)
    return cfg


def config_file(config) -> Path:
    """The file `--config` names: a path that exists, else a bundled config `<dataset>/<name>`
    (`solo_ncp.zoo.config_path`: `cifar10/ncp`)."""
    path = Path(config)
    if path.is_file():
        return path
    try:
        return config_path(str(config))
    except ValueError as err:
        raise ConfigError(f"config file {path} does not exist and {err}: give a YAML file's "
                          "path or a bundled name") from None


def method_class(name: str) -> type:
    """The installed host's method class `name` (`solo.methods.METHODS`, where `import solo_ncp`
    added solo-ncp's); ConfigError naming the registered ones."""
    methods = import_solo().METHODS
    if name not in methods:
        raise ConfigError(f"method={name!r} is not registered: choose one of {', '.join(methods)}")
    return methods[name]


NAMED_KEY = re.compile(r"[\"']([A-Za-z_]\w*(?:\.\w+)+)[\"']")
"""A dotted config key written as a string literal ("method_kwargs.temperature")."""


def _named_in_cfg_checks(cls: type) -> Tuple[str, ...]:
    """The dotted keys solo-learn main's `add_and_assert_specific_cfg` of `cls` and of its bases
    name (fill in or assert): every key a main method reads beyond main_pretrain.py's own."""
    keys: List[str] = []
    for klass in cls.__mro__:
        check = vars(klass).get("add_and_assert_specific_cfg")
        if check is not None:
            keys += NAMED_KEY.findall(inspect.getsource(check.__func__))
    return tuple(dict.fromkeys(keys))


def _arguments_102(cls: type) -> Set[str]:
    """The arguments solo-learn 1.0.2's `cls.add_model_specific_args` adds to those of BaseMethod:
    the method's own keyword arguments."""
    def dests(klass) -> Set[str]:
        parser = argparse.ArgumentParser(add_help=False)
        klass.add_model_specific_args(parser)
        return {action.dest for action in parser._actions}

    return dests(cls) - dests(import_solo("solo.methods.base").BaseMethod)


@lru_cache(maxsize=None)
def method_keys(cls: type) -> Tuple[str, ...]:
    """The keys the host's method class `cls` reads besides `SCHEMA`'s: `method_kwargs.<option>`
    for each of its options, and on solo-learn main the other keys its `add_and_assert_specific_cfg`
    (or a base's) names (`momentum.base_tau`, `optimizer.exclude_bias_n_norm_wd`, ...). Options:
    the `option_names` solo-ncp's methods declare; else, on 1.0.2, the arguments of the class's
    `add_model_specific_args` (`_arguments_102`), on main the `method_kwargs.<name>` keys its
    `add_and_assert_specific_cfg` names."""
    declared = tuple(f"method_kwargs.{name}" for name in getattr(cls, "option_names", ()))
    if current_host().is_main:
        return declared + _named_in_cfg_checks(cls)
    return declared or tuple(f"method_kwargs.{name}" for name in sorted(_arguments_102(cls)))


def _matches(pattern: Tuple[str, ...], path: Tuple[str, ...]) -> bool:
    """`pattern` and `path` agree on their common length (`*` in `pattern` matches an index)."""
    return all(p == q or (p == "*" and q.isdigit()) for p, q in zip(pattern, path))


def _parses(convert, text: str) -> bool:
    try:
        convert(text)
    except ValueError:
        return False
    return True


def _is_kind(value, kind: Optional[str]) -> bool:
    """`value` converts as a key of `kind` does (see `SCHEMA`): null always (the default); a
    number also as text ('7'), a whole number also as a float without fraction (1e3)."""
    if value is None or kind is None:
        return True
    if kind == FLAG:
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return False
    if isinstance(value, str):
        return _parses(float if kind == NUMBER else int, value)
    return kind == NUMBER or float(value).is_integer()


def _instance(pattern: str, key: str) -> str:
    """`pattern` with each `*` replaced by the index `key` has there (else 0)."""
    parts = key.split(".")
    return ".".join(parts[i] if p == "*" and i < len(parts) and parts[i].isdigit() else
                    p.replace("*", "0") for i, p in enumerate(pattern.split(".")))


def unread_key_error(key: str, known: Sequence[str], reader: str) -> ConfigError:
    """The one-line refusal of `key`, which no key of `known` (dotted, `*` for a list index) reads,
    naming the closest of them (difflib): "did you mean" it when it is close."""
    candidates = [_instance(pattern, key) for pattern in known]
    close = difflib.get_close_matches(key, candidates, n=1)
    closest = close or difflib.get_close_matches(key, candidates, n=1, cutoff=0)
    hint = f"did you mean `{closest[0]}`?" if close else f"the closest key read is `{closest[0]}`"
    return ConfigError(f"`{key}` is not read by {reader} ({hint}): remove it or correct its name")


def check_keys(cfg: DictConfig, known: Mapping[str, Optional[str]], reader: str) -> None:
    """Refuses (`unread_key_error`) the first key of `cfg` that no key of `known` reads: it is
    neither one of them, nor under one, nor a block holding one; and a value that is not of the
    kind its key takes (`known[key]`, see `SCHEMA`), naming key, value and kind."""
    patterns = [(tuple(key.split(".")), kind) for key, kind in known.items()]
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"cannot resolve the config: {str(err).splitlines()[0]}") from None
    for path, value in _walk(plain):
        holds_keys = isinstance(value, (dict, list)) and value
        if not holds_keys and not any(_matches(pattern, path) for pattern, _ in patterns):
            raise unread_key_error(".".join(path), list(known), reader)
        kind = next((kind for pattern, kind in patterns
                     if len(pattern) == len(path) and _matches(pattern, path)), None)
        if not _is_kind(value, kind):
            raise ConfigError(f"{'.'.join(path)}={value!r} must be {kind}")


def check_config_keys(cfg: DictConfig) -> None:
    """`check_keys` of every key of `cfg` against those solo-ncp reads (`SCHEMA`, `MAIN_IGNORED`)
    and those the host's method `cfg.method` reads (`method_keys`)."""
    cls = method_class(cfg.method)
    known = {**dict.fromkeys(method_keys(cls)), **dict.fromkeys(MAIN_IGNORED), **SCHEMA}
    check_keys(cfg, known, f"solo-ncp or {cfg.method} on {current_host().api}")


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
    cfg = with_overrides(cfg, overrides)
    for key in REQUIRED:
        if OmegaConf.select(cfg, key) is None:
            raise ConfigError(f"config {path} lacks `{key}` (solo-learn main's schema)")
    check_config_keys(cfg)
    dataset_spec(cfg)  # an unknown dataset, custom folders and statistics: refused before any work
    if cfg.optimizer.name not in OPTIMIZERS:
        raise ConfigError(
            f"optimizer.name={cfg.optimizer.name!r} is not one of {', '.join(OPTIMIZERS)}"
        )
    logger_settings(cfg)  # refused here, before any work
    checkpoint_history(cfg)
    return cfg


def select(cfg: DictConfig, key: str, default=None):
    value = OmegaConf.select(cfg, key)
    return default if value is None else value


def custom_data_of(cfg: DictConfig) -> Optional[CustomData]:
    """The checked folders, image size and statistics of `data.dataset: custom`
    (`solo_ncp.data.custom.config_custom_data`); None for a registered dataset."""
    if cfg.data.dataset != CUSTOM:
        return None
    try:
        augmentations = cfg.get("augmentations")
        augmentations = OmegaConf.to_container(augmentations, resolve=True) if augmentations else []
        return config_custom_data(OmegaConf.to_container(cfg.data, resolve=True), augmentations,
                                  validate=bool(select(cfg, "data.val", True)))
    except OmegaConfBaseException as err:
        raise ConfigError(f"cannot resolve the config: {str(err).splitlines()[0]}") from None


def dataset_spec(cfg: DictConfig) -> DatasetSpec:
    """The DatasetSpec of `data.dataset`: the registry's, or that of the custom folders."""
    custom = custom_data_of(cfg)
    return get_spec(cfg.data.dataset) if custom is None else custom.spec


def run_block(cfg: DictConfig, name: str) -> Dict:
    """The block `name` of `RUN_BLOCKS` as a plain dict without its null keys ({} when absent).
    Keys the block does not take were refused with the config's other unread keys
    (`check_config_keys`)."""
    block = cfg.get(name)
    if block is None:
        return {}
    if not isinstance(block, DictConfig):
        raise ConfigError(f"`{name}: {block}` must be a block of keys ({', '.join(RUN_BLOCKS[name])})")
    return {k: v for k, v in OmegaConf.to_container(block, resolve=True).items() if v is not None}


def _flag(block: Dict, name: str, key: str) -> bool:
    """`block[key]` (false when absent), refused unless true or false."""
    value = block.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"`{name}.{key}: {value}` must be true or false")
    return value


@dataclass(frozen=True)
class WandbSettings:
    """An enabled `wandb:` block (solo-learn main's keys): the W&B `project` and `entity` (null:
    the account's default entity) the run logs to, and `offline` (write the run under the run
    folder only, for a later `wandb sync`)."""

    project: str
    entity: Optional[str]
    offline: bool


@dataclass(frozen=True)
class LoggerSettings:
    """Which loggers a run writes besides the CSV log (always written): `wandb` (None: W&B off)
    and `tensorboard`."""

    wandb: Optional[WandbSettings]
    tensorboard: bool


def logger_settings(cfg: DictConfig) -> LoggerSettings:
    """The checked `wandb:` and `tensorboard:` blocks. solo-learn's own wandb/private.yaml writes
    `entity: None`, which YAML reads as the text "None": it means the default entity here."""
    wandb = run_block(cfg, "wandb")
    enabled, offline = _flag(wandb, "wandb", "enabled"), _flag(wandb, "wandb", "offline")
    settings = None
    if enabled:
        project = str(wandb.get("project", "")).strip()
        if not project:
            raise ConfigError(
                "wandb.enabled is true but `wandb.project` is not set: add `project: <your W&B "
                "project>` under `wandb:` in the config or pass wandb.project=<name>, or set "
                "wandb.enabled=false"
            )
        entity = str(wandb.get("entity", "None"))
        settings = WandbSettings(project=project, entity=None if entity == "None" else entity,
                                 offline=offline)
    return LoggerSettings(wandb=settings,
                          tensorboard=_flag(run_block(cfg, "tensorboard"), "tensorboard", "enabled"))


@dataclass(frozen=True)
class CheckpointHistory:
    """`checkpoint.frequency` (epochs, >= 1, default 1) and `checkpoint.keep_prev` (default false):
    with keep_prev, a checkpoint is kept after every frequency-th epoch besides `last.ckpt`;
    without, only `last.ckpt` (solo-learn main's Checkpointer without keep_prev keeps only its
    newest checkpoint, which here is `last.ckpt`). `checkpoint.save_best` (default false): also
    keep `best.ckpt`, the epoch of the best held-out PGD-20 accuracy, which stage 2 measures every
    `method_kwargs.val_robust_every` epochs (needed >= 1)."""

    frequency: int
    keep_prev: bool
    save_best: bool = False


def checkpoint_history(cfg: DictConfig) -> CheckpointHistory:
    """The checked `checkpoint:` block's history settings (see `CheckpointHistory`)."""
    block = run_block(cfg, "checkpoint")
    frequency = block.get("frequency", 1)
    if isinstance(frequency, bool) or not isinstance(frequency, int) or frequency < 1:
        raise ConfigError(f"`checkpoint.frequency: {frequency}` must be a whole number of epochs, "
                          "1 or more")
    save_best = _flag(block, "checkpoint", "save_best")
    if save_best and not select(cfg, "method_kwargs.val_robust_every", 0):
        raise ConfigError(
            "checkpoint.save_best=true keeps best.ckpt by the held-out robust accuracy that only stage 2 "
            "(solo-ncp train) measures, every method_kwargs.val_robust_every epochs: set "
            "method_kwargs.val_robust_every=1 (or more), or drop checkpoint.save_best"
        )
    return CheckpointHistory(frequency=frequency, keep_prev=_flag(block, "checkpoint", "keep_prev"),
                             save_best=save_best)


def device_count(devices) -> int:
    """How many devices a Trainer given `devices` trains on: a list's length, or a count
    (int or digit string)."""
    if isinstance(devices, (list, tuple, ListConfig)):
        return len(devices)
    if str(devices).isdigit() and int(devices) > 0:
        return int(devices)
    raise ConfigError(
        f"devices={devices!r}: the learning rate is scaled by the number of devices (solo-learn "
        "main's rule), so give devices as a count (devices=1) or a list (devices=[0,1])"
    )


@dataclass(frozen=True)
class LearningRates:
    """solo-learn main's learning-rate rule (its `parse_cfg`, run by main_pretrain.py): `lr` is
    `base_lr * factor`, factor = batch_size * devices * nodes / 256 (batch_size per device);
    `classifier_lr` is `base_classifier_lr * factor` when `scale_classifier` (main scales it
    only when `data.val_path` is set), else `base_classifier_lr`. Solo-learn's BaseMethod
    multiplies both by `accumulate` (accumulate_grad_batches) again."""

    base_lr: float
    base_classifier_lr: float
    batch_size: int
    devices: int
    nodes: int
    scale_classifier: bool
    accumulate: int = 1

    @property
    def factor(self) -> float:
        return self.batch_size * self.devices * self.nodes / LR_REFERENCE_BATCH

    @property
    def lr(self) -> float:
        return self.base_lr * self.factor

    @property
    def classifier_lr(self) -> float:
        return self.base_classifier_lr * (self.factor if self.scale_classifier else 1.0)

    def describe(self) -> str:
        """One line: the rule with this run's numbers and the lrs the optimizer starts from."""
        accumulate = f" x accumulate_grad_batches {self.accumulate}" if self.accumulate > 1 else ""
        return (
            f"learning rate (solo-learn main's rule): optimizer.lr {self.base_lr:g} x batch "
            f"{self.batch_size} x {self.devices} device(s) x {self.nodes} node(s) / "
            f"{LR_REFERENCE_BATCH}{accumulate} = {self.lr * self.accumulate:g}; classifier_lr "
            f"{self.base_classifier_lr:g} -> {self.classifier_lr * self.accumulate:g}"
            + ("" if self.scale_classifier else " (scaled only with data.val_path, as main)")
        )


def learning_rates(cfg: DictConfig) -> LearningRates:
    """The learning rates a config trains with (see `LearningRates`)."""
    return LearningRates(
        base_lr=float(cfg.optimizer.lr),
        base_classifier_lr=float(select(cfg, "optimizer.classifier_lr", 0.1)),
        batch_size=int(cfg.optimizer.batch_size),
        devices=device_count(select(cfg, "devices", 1)),
        nodes=int(select(cfg, "num_nodes", 1)),
        scale_classifier=select(cfg, "data.val_path") is not None,
        accumulate=int(select(cfg, "accumulate_grad_batches", 1)),
    )


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
    are merged into `cfg.method_kwargs`. `cfg` itself is left as it is."""
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
    return out


def lightning_precision(cfg: DictConfig):
    """Lightning 2 precision strings ("16-mixed") as Lightning 1.9 expects them (16)."""
    value = str(cfg.get("precision", 32))
    if value not in PRECISION_102:
        raise ConfigError(f"precision={value!r} is not one of {', '.join(PRECISION_102)}")
    return PRECISION_102[value]
