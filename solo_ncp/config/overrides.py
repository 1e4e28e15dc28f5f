"""Command-line overrides of a run config, in Hydra's grammar.

Overrides follow Hydra's grammar, parsed by hydra-core's own parser and applied as Hydra applies
them (`load_config`): `key=value` changes an existing key (dotted, list items by index:
`augmentations.0.crop_size=8`) and refuses a key the config lacks, naming the closest one;
`+key=value` adds a key (an error if it holds a value); `++key=value` adds or replaces; `~key`
(or `~key=value`, only if it holds that value) deletes. Values are typed as Hydra types them
(`1`, `0.1`, `true`, `null`, `[1,2]`, `{a: 1}`, `'quoted'`: text, so `'7'` is refused where a key
takes a number). So the same file and overrides give the same config under `solo-ncp` and under
solo-learn main's own main_pretrain.py.
"""
from typing import List, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from solo_ncp.config.schema import LAUNCHER_KEYS, ConfigError, closest_key, dotted_keys


def override_key(override: str) -> str:
    """"method_kwargs.k" of `method_kwargs.k=3`, `+method_kwargs.k=3`, `~method_kwargs.k`."""
    return override.lstrip("+~").split("=")[0]


def parse_overrides(overrides: Sequence[str]) -> List:
    """hydra-core's `Override`s of command-line strings; refuses what Hydra's grammar cannot read
    (with its reason), an empty key, and sweeps and packages, which only Hydra's multirun and config
    groups give a meaning."""
    from antlr4.error.Errors import LexerNoViableAltException
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser, parsed = OverridesParser.create(), []
    for line in overrides:
        try:  # parse_rule, as parse_overrides does, but keeping the reason its message drops
            override = parser.parse_rule(line, "override")
        except HydraException as err:
            reason, cause = str(err).splitlines()[0], err.__cause__
            if isinstance(cause, LexerNoViableAltException):
                reason += f", character {cause.startIndex + 1}"
            raise ConfigError(
                f"override {line!r} is not key=value, +key=value, ++key=value or ~key "
                f"(Hydra's grammar: {reason})"
            ) from None
        if override.is_sweep_override() or override.package is not None:
            raise ConfigError(f"override {line!r}: sweeps and @packages are Hydra multirun / "
                              "config-group syntax, not supported by solo-ncp")
        if not override.key_or_group:
            raise ConfigError(f"override {line!r} names no key: write key=value, +key=value, "
                              "++key=value or ~key with the key's dotted name (optimizer.lr=0.1)")
        parsed.append(override)
    return parsed


def _closest(cfg: DictConfig, key: str) -> str:
    """" (did you mean `<key>`?)" for an existing key close to `key` (`closest_key`), else ""."""
    closest, close = closest_key(key, [*dotted_keys(OmegaConf.to_container(cfg)), *LAUNCHER_KEYS])
    return f" (did you mean `{closest}`?)" if close else ""


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


def _check_list_indices(cfg: DictConfig, line: str, key: str) -> None:
    """Refuses a `key` that goes into a list of `cfg` by anything but the index of an entry, naming
    the list and its indices (OmegaConf says `Index 'rrc' (str) is not an int`)."""
    parts = key.split(".")
    for i, part in enumerate(parts[1:], 1):
        where = ".".join(parts[:i])
        node = OmegaConf.select(cfg, where, throw_on_missing=False, throw_on_resolution_failure=False)
        if not isinstance(node, ListConfig) or part.isdigit() and int(part) < len(node):
            continue
        if not node:
            raise ConfigError(f"override {line!r}: `{where}` is an empty list, with no entry to "
                              f"change: give the whole list ({where}=[...])")
        left_out = not part.isdigit() and isinstance(node[0], DictConfig) and part in node[0]
        example = line.replace(key, ".".join([*parts[:i], "0", *parts[i + (not left_out):]]), 1)
        indices = "0, its only entry" if len(node) == 1 else f"0 to {len(node) - 1}"
        problem = f"has no entry {part}" if part.isdigit() else "is a list"
        raise ConfigError(f"override {line!r}: `{where}` {problem}: give the entry's index "
                          f"({indices}), e.g. {example}")


def apply_override(cfg: DictConfig, override) -> None:
    """Applies one hydra-core `Override` to `cfg` (struct mode) as Hydra's config loader does."""
    line, key, value = override.input_line, override.key_or_group, override.value()
    _check_list_indices(cfg, line, key)
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
