"""Command-line overrides of a run config, in Hydra's grammar.

Overrides follow Hydra's grammar, parsed by hydra-core's own parser and applied as Hydra applies
them (`load_config`): `key=value` changes an existing key (dotted, list items by index:
`augmentations.0.crop_size=8`) and refuses a key the config lacks, naming the closest one;
`+key=value` adds a key (an error if it holds a value); `++key=value` adds or replaces; `~key`
(or `~key=value`, only if it holds that value) deletes. Values are typed as Hydra types them
(`1`, `0.1`, `true`, `null`, `[1,2]`, `{a: 1}`, `'quoted'`: text, so `'7'` is refused where a key
takes a number). So the same file and overrides give the same config under `solo-ncp` and under
solo-learn main's own main_pretrain.py.

An override that turns a block of the config (a block of keys, or a list of blocks such as
`augmentations`) into a value, null or another shape is refused (`_check_block_kept`): Hydra's
config-group choices (`augmentations=symmetric`, `optimizer=sgd`) are written that way, and so is
`data=null`; a block replaced by one of its shape (`+auto_umap={enabled: false}`,
`augmentations=[{...}]`) is taken. Hydra's own keys (`hydra.run.dir=.`, `hydra/job_logging=disabled`)
are accepted and dropped, as Hydra drops them from the cfg it hands main_pretrain.py (`HYDRA`).
"""
import re
from typing import List, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from solo_ncp.config.schema import (
    GROUP_NOTE,
    LAUNCHER_KEYS,
    ConfigError,
    walk_plain,
    closest_key,
    dotted_keys,
    is_hydra_key,
)


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
                f"(Hydra's grammar: {reason}){_quoting_fix(line)}"
            ) from None
        if override.is_sweep_override() or override.package is not None:
            raise ConfigError(f"override {line!r}: sweeps and @packages are Hydra multirun / "
                              "config-group syntax, not supported by solo-ncp")
        if "/" in override.key_or_group and not is_hydra_key(override.key_or_group):
            group = override.key_or_group
            raise ConfigError(f"override {line!r}: `{group}` is a Hydra config group: {GROUP_NOTE}, or set "
                              f"its keys one by one ({group.replace('/', '.')}.<key>=<value>)")
        if not override.key_or_group:
            raise ConfigError(f"override {line!r} names no key: write key=value, +key=value, "
                              "++key=value or ~key with the key's dotted name (optimizer.lr=0.1)")
        parsed.append(override)
    return parsed


def override_of(key: str, value) -> str:
    """`key=value` whose value Hydra reads back as exactly the text `value` (a path): as written
    where it reads so (`checkpoint.dir=runs/x`), else quoted, `'` and the backslashes before a
    quote or the end escaped (`checkpoint.dir='runs/lr=0.1'`: unquoted, `=`, `,`, brackets, `#` or a
    quote break the override, and `1`, `null` or `true` are read as another type)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    text, parser = str(value), OverridesParser.create()
    try:
        if parser.parse_override(f"{key}={text}").value() == text:
            return f"{key}={text}"
    except HydraException:
        pass
    escaped = re.sub(r"(\\+)(?='|$)", lambda run: run.group(1) * 2, text).replace("'", "\\'")
    return f"{key}='{escaped}'"


def _quoting_fix(line: str) -> str:
    """": quote the value ..." where Hydra could not parse `line` and its value holds an `=`
    (`teacher_ckpt=/x/simclr-ep=0.ckpt`: solo-learn main's Checkpointer names files so), else ""."""
    key, _, value = line.partition("=")
    if "=" not in value:
        return ""
    quoted = override_of(key, value)
    shell = f'"{quoted}"'
    return (f": an `=` in a value needs the value quoted, as Hydra requires: {quoted} (in a shell, "
            f"quote it once more so the quotes arrive: {shell})")


def _hydra_text(value) -> str:
    """`value` as an override writes it (true, null, 0.5, text)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(value)


def _check_block_kept(cfg: DictConfig, line: str, key: str, value) -> None:
    """Refuses an override giving `key`, a block of `cfg` (a block of keys, or a list holding
    blocks), a value of another shape: a value, null, a list for a block of keys, anything but a list
    of blocks for a list of blocks. Names the block's keys, and the fix: its keys one by one (Hydra's
    config-group choices are written `augmentations=symmetric`; null would leave none)."""
    current = OmegaConf.select(cfg, key, throw_on_missing=False, throw_on_resolution_failure=False)
    if not isinstance(current, (DictConfig, ListConfig)):
        return
    plain = OmegaConf.to_container(current)
    if isinstance(plain, dict):
        if isinstance(value, dict):
            return
        what, names = "a block", list(plain)
    else:
        entries = [entry for entry in plain if isinstance(entry, dict)]
        if not entries or isinstance(value, list) and all(isinstance(entry, dict) for entry in value):
            return
        what = f"a list of {len(plain)} block{'s' * (len(plain) != 1)}"
        names = list(dict.fromkeys(name for entry in entries for name in entry))
    given = ("null" if value is None else "a block of keys" if isinstance(value, dict) else
             "a list of values" if isinstance(value, list) and plain and not isinstance(plain, dict) else
             "a list" if isinstance(value, list) else "a value")
    leaf = next(((path, child) for path, child in walk_plain(plain) if not isinstance(child, (dict, list))), None)
    if isinstance(value, str) and isinstance(plain, dict) and "name" in plain:
        example = f"{key}.name={value}"
    elif leaf is not None:
        example = f"{key}.{'.'.join(leaf[0])}={_hydra_text(leaf[1])}"
    else:
        example = f"+{key}.<key>=<value>"
    holding = f"holding {', '.join(names)}" if names else "holding no keys"
    fix = f"set its keys one by one ({example})"
    if value is None:
        fix = f"delete it with ~{key}, or {fix}"
    elif isinstance(value, str):
        fix += f"; {GROUP_NOTE}"
    raise ConfigError(f"override {line!r}: `{key}` is {what} in the config, {holding}, and {given} cannot "
                      f"replace it: {fix}")


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
    if not override.is_delete():
        _check_block_kept(cfg, line, key, value)
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
    solo-learn main's main_pretrain.py unlocks it (`set_struct(cfg, False)`). Hydra's own keys
    (`hydra.run.dir=.`, `hydra/job_logging=disabled`) are skipped: Hydra consumes them."""
    parsed = [override for override in parse_overrides(overrides) if not is_hydra_key(override.key_or_group)]
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
