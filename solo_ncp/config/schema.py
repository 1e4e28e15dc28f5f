"""The keys a run config may hold, and the check that every key is read by something.

solo-ncp's launcher keys (`LAUNCHER_KEYS`) take `key=value` even where a file lacks them (as
`++key=value` would): `data.subset` (train on a fixed random subset of that many images, drawn
with `data.subset_seed`, default 0), `data.val` (validate the online classifier on the test
split; default true), `data.val_path` (custom data's test ImageFolder), `backbone.kwargs.cifar`
(the ResNet stem; default: the dataset's), the Trainer's `limit_train_batches`,
`limit_val_batches`, `log_every_n_steps`, `accumulate_grad_batches`, `sync_batchnorm`,
`num_nodes` (Lightning's defaults), and the keys of the logger and checkpoint blocks
(`RUN_BLOCKS`: `wandb.enabled=true wandb.project=...` on the command line needs no `wandb:` block
in the file).

Every key of a loaded config, from the file or an override, must be read by something
(`check_config_keys`): by solo-ncp (`SCHEMA`: the keys of main's schema it honours, and
`LAUNCHER_KEYS`), or by the installed host's method class (`method_keys`: its `method_kwargs`
options, and on main the other keys its `add_and_assert_specific_cfg` names, such as `momentum.*`).
A few keys of main's configs that change nothing solo-ncp trains are accepted unread
(`MAIN_IGNORED`: `auto_umap`, `dali`, `data.format`, ...). Any other key is refused naming the
closest key read, and a value solo-ncp converts must be of its key's kind (a whole number, a number,
true or false). A key read as a block (`optimizer`: its keys; `augmentations`: a list of blocks)
must be one, or null (`check_block_shapes`): `optimizer: sgd` is refused, not a traceback later.
Each `augmentations` entry of a stage-1 config must hold `crop_size` and `num_crops`
(`check_augmentation_keys`): `augmentations=[{crop_size: 32}]` failed with omegaconf's traceback
when the training built its transform.

Hydra's own config (`HYDRA`: the `hydra:` block of solo-learn main's scripts/ configs, `hydra.*`
and `hydra/...` overrides) is accepted and dropped, as Hydra drops it from the cfg it hands
main_pretrain.py; its config groups (`augmentations=symmetric`, a `defaults:` list) are not
supported: a config is one self-contained file.
"""
import argparse
import ast
import difflib
import inspect
import json
import re
import textwrap
from functools import lru_cache
from types import MappingProxyType
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from solo_ncp._host import current_host, import_solo


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


HYDRA = "hydra"
"""Hydra's own config: its output folders (`hydra.run.dir`, `hydra.output_subdir`) and logging
(`hydra/job_logging=disabled`), which solo-learn main's scripts/ configs set. Hydra consumes it and
hands main_pretrain.py a cfg without it; solo-ncp, which writes no Hydra output folder or log,
accepts it in a file or an override and drops it the same way (`is_hydra_key`)."""
GROUP_NOTE = ("Hydra config groups (augmentations=symmetric, optimizer=sgd) are solo-learn main's Hydra "
              "defaults, not supported by solo-ncp: inline the group's file")
"""The fix for a config-group choice written where a block of keys belongs."""
KWARGS_BLOCKS = ("method_kwargs", "backbone.kwargs", "optimizer.kwargs")
"""Blocks passed on whole as keyword arguments (to the method, the backbone, the optimizer)."""
BLOCK, LIST_OF_BLOCKS = "a block of keys", "a list of blocks"
"""The shapes a key read as a block takes (`needed_shape`)."""


def is_hydra_key(key: str) -> bool:
    """`key` (dotted, or a `hydra/...` group) is Hydra's own config (`HYDRA`)."""
    return key == HYDRA or key.startswith((HYDRA + ".", HYDRA + "/"))


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key and the fix."""


def walk_plain(node, prefix: Tuple[str, ...] = ()) -> Iterator[Tuple[Tuple[str, ...], object]]:
    """(key path, value) of every key of a plain config, blocks and lists before their items."""
    for key, child in node.items() if isinstance(node, dict) else enumerate(node):
        path = (*prefix, str(key))
        yield path, child
        if isinstance(child, (dict, list)):
            yield from walk_plain(child, path)


def dotted_keys(node) -> Iterator[str]:
    """Every key of a plain dict/list config (`OmegaConf.to_container`), dotted, list items by
    index ("augmentations.0.crop_size")."""
    return (".".join(path) for path, _ in walk_plain(node))


NOT_TRAINED = {
    "base": "the base class of solo-learn's methods: it trains the online classifier alone, never the encoder",
    "linear": "solo-learn's linear evaluation model (its main_linear.py; `solo-ncp eval` trains the paper's heads)",
}
"""Entries of solo-learn's `METHODS` that are no self-supervised method to train, and what they are."""


def method_class(name: str) -> type:
    """The installed host's method class `name` (`solo.methods.METHODS`, where `import solo_ncp`
    added solo-ncp's, less `NOT_TRAINED`); ConfigError naming the methods to choose from."""
    methods = import_solo().METHODS
    choices = ", ".join(method for method in methods if method not in NOT_TRAINED)
    if name in NOT_TRAINED:
        raise ConfigError(f"method={name} is {NOT_TRAINED[name]}: choose one of {choices}")
    if name not in methods:
        raise ConfigError(f"method={name!r} is not registered: choose one of {choices}")
    return methods[name]


NAMED_KEY = re.compile(r"[\"']([A-Za-z_]\w*(?:\.\w+)+)[\"']")
"""A dotted config key written as a string literal ("method_kwargs.temperature")."""
ASSERTED_KEY = re.compile(r"is_missing\(\s*cfg\s*,\s*[\"']([A-Za-z_]\w*(?:\.\w+)+)[\"']")
"""A dotted key solo-learn main asserts present (`OmegaConf.is_missing(cfg, "method_kwargs.temperature")`)."""


def _named_in_cfg_checks(cls: type, pattern: "re.Pattern" = NAMED_KEY) -> Tuple[str, ...]:
    """The dotted keys solo-learn main's `add_and_assert_specific_cfg` of `cls` and of its bases
    name (`pattern`: fill in or assert; `ASSERTED_KEY`: assert present): every key a main method
    reads beyond main_pretrain.py's own."""
    keys: List[str] = []
    for klass in cls.__mro__:
        check = vars(klass).get("add_and_assert_specific_cfg")
        if check is not None:
            keys += pattern.findall(inspect.getsource(check.__func__))
    return tuple(dict.fromkeys(keys))


ARGPARSE_KINDS = {int: WHOLE, float: NUMBER}
"""The kind (see `SCHEMA`) of a solo-learn 1.0.2 method argument parsed with this `type`."""


def _arguments_102(cls: type) -> Dict[str, Optional[str]]:
    """The arguments solo-learn 1.0.2's `cls.add_model_specific_args` adds to those of BaseMethod
    (the method's own keyword arguments), each with the kind of value it parses: a whole number
    (type=int), a number (float), true or false (a flag); None for any other (text, lists)."""
    def actions(klass) -> Dict[str, argparse.Action]:
        parser = argparse.ArgumentParser(add_help=False)
        klass.add_model_specific_args(parser)
        return {action.dest: action for action in parser._actions}

    def kind(action: argparse.Action) -> Optional[str]:
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return FLAG
        return ARGPARSE_KINDS.get(action.type) if action.nargs is None else None

    base = actions(import_solo("solo.methods.base").BaseMethod)
    return {dest: kind(action) for dest, action in actions(cls).items() if dest not in base}


ANNOTATION_KINDS = {"int": WHOLE, "float": NUMBER}
"""The kind of a solo-learn main option that its method's `__init__` reads with this annotation
(`proj_output_dim: int = cfg.method_kwargs.proj_output_dim`). Main's `bool` annotations are not
kinds: DINO annotates `clip_grad` (a float threshold) and `freeze_last_layer` (an epoch count) so."""


def _annotated_kinds_main(cls: type) -> Dict[str, str]:
    """The `method_kwargs.<name>` keys that solo-learn main's `cls.__init__` (or a base's) reads into
    a variable annotated `int` or `float`, with that kind (`ANNOTATION_KINDS`)."""
    kinds: Dict[str, str] = {}
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None or not klass.__module__.startswith("solo."):
            continue
        for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(init)))):
            if isinstance(node, ast.AnnAssign) and isinstance(node.annotation, ast.Name) and node.value:
                read = ast.unparse(node.value)
                if read.startswith("cfg.method_kwargs.") and node.annotation.id in ANNOTATION_KINDS:
                    kinds.setdefault(read[len("cfg."):], ANNOTATION_KINDS[node.annotation.id])
    return kinds


DEFAULT_KINDS = {float: NUMBER, bool: FLAG}
"""The kind of a key solo-learn main fills in with a default of this type
(`omegaconf_select(cfg, "momentum.base_tau", 0.99)`); whole-number defaults give none: DINO's
`clip_grad` defaults to 0 and takes a float."""


def _default_kinds_main(cls: type) -> Dict[str, str]:
    """The dotted keys solo-learn main's `add_and_assert_specific_cfg` of `cls` (or a base's) fills
    in with a float or bool default, with that kind (`DEFAULT_KINDS`)."""
    kinds: Dict[str, str] = {}
    for klass in cls.__mro__:
        check = vars(klass).get("add_and_assert_specific_cfg")
        if check is None or not klass.__module__.startswith("solo."):
            continue
        for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(check.__func__)))):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "omegaconf_select"
                    and len(node.args) == 3 and all(isinstance(a, ast.Constant) for a in node.args[1:])
                    and type(node.args[2].value) in DEFAULT_KINDS):
                kinds.setdefault(node.args[1].value, DEFAULT_KINDS[type(node.args[2].value)])
    return kinds


@lru_cache(maxsize=None)
def method_keys(cls: type) -> Mapping[str, Optional[str]]:
    """The keys the host's method class `cls` reads besides `SCHEMA`'s, with the kind of value each
    takes where the host says (else None): `method_kwargs.<option>` for each of its options, and on
    solo-learn main the other keys its `add_and_assert_specific_cfg` (or a base's) names
    (`momentum.base_tau`, `optimizer.exclude_bias_n_norm_wd`, ...). Options: the `option_names`
    solo-ncp's methods declare (they check their own); else, on 1.0.2, the arguments of the
    class's `add_model_specific_args` with the kinds they parse (`_arguments_102`), on main the
    `method_kwargs.<name>` keys its `add_and_assert_specific_cfg` names, with the kinds its
    `__init__` annotates (`_annotated_kinds_main`), else the kinds of the defaults it fills in
    (`_default_kinds_main`: `momentum.base_tau` a number, `momentum.classifier` a flag)."""
    declared = dict.fromkeys(f"method_kwargs.{name}" for name in getattr(cls, "option_names", ()))
    if current_host().is_main:
        annotated = {} if declared else {**_default_kinds_main(cls), **_annotated_kinds_main(cls)}
        keys = {**declared, **{key: annotated.get(key) for key in _named_in_cfg_checks(cls)}}
    else:
        keys = declared or {f"method_kwargs.{name}": kind for name, kind in sorted(_arguments_102(cls).items())}
    return MappingProxyType(keys)  # cached: shared by every caller, so read-only


@lru_cache(maxsize=None)
def required_method_keys(cls: type) -> Tuple[str, ...]:
    """The keys solo-learn's method class `cls` cannot do without (`method_kwargs.temperature` of
    SimCLR): on 1.0.2 its own arguments without a default in its `__init__` or a base's (BYOL's
    `base_tau_momentum` is BaseMomentumMethod's), on main the keys its
    `add_and_assert_specific_cfg` (or a base's) asserts present. None for solo-ncp's methods, whose
    options have defaults or are checked where they are read."""
    if getattr(cls, "option_names", ()):
        return ()
    if current_host().is_main:
        return _named_in_cfg_checks(cls, ASSERTED_KEY)
    own = _arguments_102(cls)
    inits = [vars(klass)["__init__"] for klass in cls.__mro__ if "__init__" in vars(klass)]
    return tuple(dict.fromkeys(f"method_kwargs.{p.name}" for init in inits
                               for p in inspect.signature(init).parameters.values()
                               if p.name in own and p.default is inspect.Parameter.empty))


def _matches(pattern: Tuple[str, ...], path: Tuple[str, ...]) -> bool:
    """`pattern` and `path` agree on their common length (`*` in `pattern` matches an index)."""
    return all(p == q or (p == "*" and q.isdigit()) for p, q in zip(pattern, path))


def _is_kind(value, kind: Optional[str], converted: bool = True) -> bool:
    """`value` is of `kind` (see `SCHEMA`): null always (the default); a whole number also as a float
    without fraction (1e3) where solo-ncp converts it (`converted`; not an option it passes on as
    given, which nn.Linear refuses as 64.0); never text, which a number in quotes is ('7', as Hydra
    and YAML read it)."""
    if value is None or kind is None:
        return True
    if kind == FLAG:
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return kind == NUMBER or isinstance(value, int) or (converted and float(value).is_integer())


def _unquoted(text: str):
    """What `text` would be written without quotes, where a number or true/false ('7': 7, '7.5': 7.5)."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    return text


def _instance(pattern: str, key: str) -> str:
    """`pattern` with each `*` replaced by the index `key` has there (else 0)."""
    parts = key.split(".")
    return ".".join(parts[i] if p == "*" and i < len(parts) and parts[i].isdigit() else
                    p.replace("*", "0") for i, p in enumerate(pattern.split(".")))


def closest_key(key: str, candidates: Sequence[str]) -> Tuple[Optional[str], bool]:
    """(the candidate closest to dotted `key`, whether it is close enough to be what was meant).
    Within `key`'s own block only the last names are compared (`method_kwargs.lamda`: `lam`), since
    a shared `method_kwargs.` makes any two options look alike; a key of another block is close when
    both its block and its last name are (`optimiser.lr`: `optimizer.lr`). Blocks holding `key` are
    no candidates. Not close: the nearest key of `key`'s block, else of all (None without any)."""
    block, _, name = key.rpartition(".")
    pool = [c for c in dict.fromkeys(candidates) if c != key and not key.startswith(c + ".")]
    siblings = {c.rpartition(".")[2]: c for c in pool if c.rpartition(".")[0] == block}

    def close(a: str, b: str) -> bool:
        return bool(difflib.get_close_matches(a, [b], n=1))

    near = difflib.get_close_matches(name, list(siblings), n=1)
    if near:
        return siblings[near[0]], True
    for other in pool:
        other_block, _, other_name = other.rpartition(".")
        if other_block != block and close(block, other_block) and close(name, other_name):
            return other, True
    nearest = difflib.get_close_matches(name, list(siblings), n=1, cutoff=0) or \
        difflib.get_close_matches(key, pool, n=1, cutoff=0)
    return (siblings.get(nearest[0], nearest[0]) if nearest else None), False


REPLACED_MAIN_KEYS = {
    "data.fraction": "data.subset=<number of images> (a fixed random subset, drawn with data.subset_seed)",
    "resume_from_checkpoint": "the command's --resume (it continues the run folder's last.ckpt)",
    "data.no_labels": "none: custom data is an ImageFolder of class sub-folders (README, custom data)",
}
"""Keys of solo-learn main's configs solo-ncp refuses, with what it has instead."""


def unread_key_error(key: str, known: Sequence[str], reader: str) -> ConfigError:
    """The one-line refusal of `key`, which no key of `known` (dotted, `*` for a list index) reads:
    what solo-ncp has instead of a key of main's it refuses (`REPLACED_MAIN_KEYS`); "did you mean"
    the closest of them (`closest_key`) when it is close; else the names read in `key`'s block (a
    method's options), or the closest key read."""
    if key in REPLACED_MAIN_KEYS:
        return ConfigError(f"`{key}` is solo-learn main's, not read by {reader}: solo-ncp's is "
                           f"{REPLACED_MAIN_KEYS[key]}; remove it")
    candidates = [_instance(pattern, key) for pattern in known]
    closest, close = closest_key(key, candidates)
    block = key.rpartition(".")[0]
    siblings = sorted({c[len(block) + 1:].split(".")[0] for c in candidates if block and c.startswith(block + ".")})
    if close:
        hint = f"did you mean `{closest}`?"
    elif siblings:
        hint = f"`{block}` takes {', '.join(siblings)}"
    else:
        hint = f"the closest key read is `{closest}`"
    return ConfigError(f"`{key}` is not read by {reader} ({hint}): remove it or correct its name")


@lru_cache(maxsize=8)
def _split_keys(known: Tuple[str, ...]) -> Tuple[Tuple[str, ...], ...]:
    """Each dotted key of `known` as its parts: split once per set of keys, not per key checked."""
    return tuple(tuple(key.split(".")) for key in known)


def needed_shape(path: Tuple[str, ...], known: Sequence[str]) -> Tuple[Optional[str], List[str]]:
    """(BLOCK or LIST_OF_BLOCKS where keys of `known` (dotted, `*` for a list index) lie under
    `path`, or a `KWARGS_BLOCKS` block; else None, the names read right under it (a list's: those of
    its entries))."""
    deeper = [p for p in _split_keys(tuple(known)) if len(p) > len(path) and _matches(p, path)]
    if not deeper:
        return (BLOCK if ".".join(path) in KWARGS_BLOCKS else None), []
    if deeper[0][len(path)] == "*":
        return LIST_OF_BLOCKS, sorted({p[len(path) + 1] for p in deeper if len(p) > len(path) + 1})
    return BLOCK, sorted({p[len(path)] for p in deeper})


def block_shape_error(path: Tuple[str, ...], value, known: Sequence[str], reader: str) -> Optional[ConfigError]:
    """The refusal of `value` at `path` where `reader` reads a block of keys or a list of blocks
    (`needed_shape`) and `value` is neither (null is: no block); None where the shape fits."""
    needed, names = needed_shape(path, known)
    if needed is None or value is None or isinstance(value, dict if needed == BLOCK else list):
        return None
    key, parent, last = ".".join(path), ".".join(path[:-1]), path[-1]
    given = ("a block of keys" if isinstance(value, dict) else "a list" if isinstance(value, list)
             else f"a value ({key}: {value})")
    takes = f" (`{key}` takes {', '.join(names)}{' in each entry' * (needed == LIST_OF_BLOCKS)})" if names else ""
    where = ("a list of blocks, one per entry, under" if needed == LIST_OF_BLOCKS else
             f"its keys in entry {last} of" if last.isdigit() and parent else "its keys under")
    group = f"; {GROUP_NOTE}" if isinstance(value, str) else ""
    return ConfigError(f"`{key}` is {given}, but {reader} reads it as {needed}{takes}: write {where} "
                       f"`{parent if last.isdigit() and parent else key}:`{group}")


def check_block_shapes(plain, known: Sequence[str], reader: str) -> None:
    """Refuses (`block_shape_error`) the first key of the plain config `plain` whose value is not
    of the shape `reader` reads it as: a block of keys where keys of `known` lie under it.
    Interpolations (`${...}`) are left to OmegaConf."""
    for path, value in walk_plain(plain):
        interpolation = isinstance(value, str) and value.startswith("${")
        error = None if interpolation else block_shape_error(path, value, known, reader)
        if error is not None:
            raise error


def check_keys(cfg: DictConfig, known: Mapping[str, Optional[str]], reader: str) -> None:
    """Refuses (`unread_key_error`) the first key of `cfg` that no key of `known` reads: it is
    neither one of them, nor under one, nor a block holding one; a value that is not of the
    kind its key takes (`known[key]`, see `SCHEMA`), naming key, value and kind; and a value where
    a block of keys is read (`block_shape_error`)."""
    patterns = [(tuple(key.split(".")), kind) for key, kind in known.items()]
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"cannot resolve the config: {str(err).splitlines()[0]}") from None
    for path, value in walk_plain(plain):
        shape_error = block_shape_error(path, value, list(known), reader)
        if shape_error is not None:
            raise shape_error
        holds_keys = isinstance(value, (dict, list)) and value
        if not holds_keys and not any(_matches(pattern, path) for pattern, _ in patterns):
            raise unread_key_error(".".join(path), list(known), reader)
        kind = next((kind for pattern, kind in patterns
                     if len(pattern) == len(path) and _matches(pattern, path)), None)
        key = ".".join(path)
        if not _is_kind(value, kind, converted=not is_passed_on(key)):
            raise kind_error(key, value, kind, converted=not is_passed_on(key))


def kind_error(key: str, value, kind: str, because: str = "", converted: bool = True) -> ConfigError:
    """"key=value must be <kind><because>", saying to drop the quotes where `value` is text that
    would be of `kind` without them, and to drop the fraction where a whole number's value is a
    float without one that is passed on as given (`converted` False, see `_is_kind`)."""
    if isinstance(value, str) and _is_kind(_unquoted(value), kind, converted):
        fix = f": in quotes it is text; drop the quotes ({key}={value})"
    elif kind == WHOLE and isinstance(value, float) and value.is_integer():
        fix = f": the method takes it as written, and {value!r} is a float; write {key}={int(value)}"
    else:
        fix = ""
    return ConfigError(f"{key}={value!r} must be {kind}{because}{fix}")


def known_keys(method) -> Mapping[str, Optional[str]]:
    """The keys read (with their kinds, see `SCHEMA`): solo-ncp's (`SCHEMA`, `MAIN_IGNORED`) and
    those the host's method `method` reads (`method_keys`; none where `method` is not registered)."""
    methods = import_solo().METHODS
    own = method_keys(methods[method]) if isinstance(method, str) and method in methods else {}
    return {**own, **dict.fromkeys(MAIN_IGNORED), **SCHEMA}


def check_config_keys(cfg: DictConfig) -> None:
    """`check_keys` of every key of `cfg` against those solo-ncp reads (`SCHEMA`, `MAIN_IGNORED`)
    and those the host's method `cfg.method` reads (`method_keys`); then the keys the method
    cannot do without (`required_method_keys`), and those of each `augmentations` entry
    (`check_augmentation_keys`)."""
    cls = method_class(cfg.method)
    check_keys(cfg, known_keys(cfg.method), f"solo-ncp or {cfg.method} on {current_host().api}")
    missing = next((key for key in required_method_keys(cls) if OmegaConf.select(cfg, key) is None), None)
    if missing:
        raise ConfigError(f"{cfg.method} on {current_host().api} needs `{missing}`, which the config leaves out "
                          f"or sets to null: give it a value (++{missing}=<value>)")
    check_augmentation_keys(cfg)


PIPELINE_KEYS = {"crop_size": "the side of this pipeline's crops, in pixels",
                 "num_crops": "how many crops this pipeline makes of each image"}
"""The keys of an `augmentations` entry that stage 1 cannot do without on either host (solo-ncp's
`augmentation_pipelines`, solo-learn main's `build_transform_pipeline` and `NCropAugmentation`), and
what each is. Its steps (`rrc`, `grayscale`, ...) left out take `settings.PIPELINE_DEFAULTS` on either
host."""


def _example_crop_size(cfg: DictConfig, entries: Sequence) -> int:
    """A crop size to suggest: the registered dataset's image size, else another entry's, else 32."""
    from solo_ncp.data.registry import DATASETS

    spec = DATASETS.get(str(OmegaConf.select(cfg, "data.dataset")))
    if spec is not None:
        return spec.image_size
    sizes = [entry.get("crop_size") for entry in entries if isinstance(entry, dict)]
    return next((size for size in sizes if isinstance(size, int) and not isinstance(size, bool)), 32)


def check_augmentation_keys(cfg: DictConfig) -> None:
    """Refuses an `augmentations` entry without a key its training cannot do without (it failed with
    omegaconf's ConfigAttributeError traceback once the training built its transform, and `reproduce
    --dry-run` accepted it), naming the entry, the key and an override that gives it. Stage 1 (a
    method of solo-learn's) needs each entry's `crop_size` and `num_crops` (`PIPELINE_KEYS`), neither
    left out nor null. Stage 2 (solo-ncp's methods, which have `option_names`) reads
    `augmentations.0.crop_size` only where it is given (default: the dataset's image size), except on
    custom data, whose image size is the largest `crop_size`: there each entry needs one. A config
    without entries is left to the readers (`augmentation_pipelines`, `config_custom_data`):
    `augmentations=[]` is a replacement of the list's shape, which loads."""
    custom = str(OmegaConf.select(cfg, "data.dataset")) == "custom"
    stage2 = trains_stage2(cfg)
    if stage2 and not custom:
        return
    augmentations = cfg.get("augmentations")
    entries = OmegaConf.to_container(augmentations, resolve=True) if augmentations else []
    examples = {"crop_size": _example_crop_size(cfg, entries), "num_crops": 2}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue  # check_keys refuses it (a list of blocks)
        for key in ("crop_size",) if stage2 else tuple(PIPELINE_KEYS):
            if entry.get(key) is None:
                what = PIPELINE_KEYS[key] + ("; custom data's image size is the largest" if custom and
                                             key == "crop_size" else "")
                state = f"sets `{key}` to null" if key in entry else f"lacks `{key}`"
                raise ConfigError(f"augmentations.{index} {state} ({what}): give it a value, e.g. "
                                  f"++augmentations.{index}.{key}={examples[key]}")


OPTION_BLOCKS = ("method_kwargs", "optimizer.kwargs")
"""Blocks whose options solo-ncp passes on unconverted: to solo-learn's method, to torch's optimizer."""


def is_passed_on(key: str) -> bool:
    """`key` (dotted) is an option of `OPTION_BLOCKS`, which solo-ncp passes on as written."""
    return key.startswith(tuple(block + "." for block in OPTION_BLOCKS))


def trains_stage2(cfg: DictConfig) -> bool:
    """Whether `cfg.method` is one of solo-ncp's stage-2 methods (ncp, deacl: their classes declare
    `option_names`), not a solo-learn method of stage 1."""
    return getattr(method_class(cfg.method), "option_names", None) is not None


def check_option_kinds(file_values: Mapping, cfg: DictConfig) -> None:
    """Refuses an override that gives an option of `OPTION_BLOCKS` another kind of value than the
    config file has for it: a number for a number, true or false for true or false (null is always
    allowed). `method_kwargs.temperature=abc` otherwise reached SimCLR's loss and failed at the first
    step. solo-ncp's own methods check their options themselves, so only `optimizer.kwargs` is
    checked for them. file_values: the config file as a plain dict, before the overrides."""
    blocks = OPTION_BLOCKS[trains_stage2(cfg):]
    given = dict(walk_plain(OmegaConf.to_container(cfg, resolve=True)))
    for path, before in walk_plain(dict(file_values)):
        if not isinstance(before, (bool, int, float)) or not any(
                ".".join(path).startswith(block + ".") for block in blocks):
            continue
        kind = FLAG if isinstance(before, bool) else NUMBER
        value = given.get(path)
        if not _is_kind(value, kind):
            raise kind_error(".".join(path), value, kind, f", as the config file's {json.dumps(before)} is")
