"""The steps of one results table over seeds, each run once: stage 1, select-k, the proof of
concept, every stage-2 method, every evaluation, the report.

Each step is a `solo_ncp.launch.steps.Step` (a subprocess with its log; skipped when done, resumed
when interrupted). `reproduce.json` in the output folder records the settings that define the
results; a later call with other settings is refused, one with other seeds, methods or evaluations
adds them: the folder's table covers everything recorded (a call naming fewer runs, and reports,
the recorded ones too).

Layout under OUT: s<seed>/simclr (stage 1; absent with a shared teacher), s<seed>/select-k,
s<seed>/poc, s<seed>/<method> (stage 2), s<seed>/eval-<encoder>-<evaluation>, report/ (report.md).

Evaluations (`--eval`): a mode (`slf`, `alf`, `aff`) evaluates with the paper's head (Appendix A.3,
`eval --head paper`): the paper's protocol, the one its tables use. `<mode>-<head>` (e.g.
`slf-whitened`) adds the same evaluation with another head of `solo_ncp.eval.heads`, in its own
folder and its own report tables. The proof of concept (Table 1) trains the paper's head too.
"""
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from solo_ncp.config.overrides import override_key, override_of
from solo_ncp.interrupt import Interrupted, as_interrupted, raise_pending
from solo_ncp.eval.protocol import PAPER_HEAD
from solo_ncp.eval.results import load_runs, read_poc, read_selection
from solo_ncp.io import atomic_write_json, file_sha256, read_json_object, resolved, wrong_kind
from solo_ncp.launch.steps import LOG, Step, fixed, result_file, say_now, trained
from solo_ncp.run_files import BEST, LAST

STAGE1 = "simclr"
"""Label of the stage-1 encoder (config zoo_configs/<dataset>/simclr.yaml) in steps and tables."""
STAGE2_SCOPE = "stage2"
"""Override scope of every stage-2 method."""
SETTINGS = "reproduce.json"
GROWING = ("seeds", "evals")
"""Settings a later call may extend (new steps); all others must match."""
OWN_KEYS = ("data.dataset", "checkpoint.dir", "name", "seed", "method_kwargs.teacher_ckpt", "method_kwargs.k",
            "method_kwargs.k_file")
"""Config keys reproduce sets per step (refused among the overrides)."""
OWN_EVAL_OPTIONS = ("--ckpt", "--dataset", "--seed", "--mode", "--out", "--method", "--data-dir",
                    "--overwrite", "--head")
"""Options `reproduce` sets on select-k, poc and eval itself (refused in --*-options)."""
SLF_ONLY = ("--cache-features",)
RESERVED_LABELS = (STAGE1, STAGE2_SCOPE, "select-k", "poc")
"""Names no method label may take: the scopes of overrides and the folders of each seed's other
steps (its evaluations' folders are eval-...)."""


def evaluation_kinds() -> Tuple[str, ...]:
    """Every `--eval` name: each mode (the paper's head), then `<mode>-<head>` for the other heads."""
    from solo_ncp.eval.protocol import HEADS, MODES

    return MODES + tuple(f"{mode}-{head}" for mode in MODES for head in HEADS if head != PAPER_HEAD)


def mode_and_head(kind: str) -> Tuple[str, str]:
    """("slf", "paper") from "slf"; ("slf", "whitened") from "slf-whitened"."""
    mode, _, head = kind.partition("-")
    return mode, head or PAPER_HEAD


@dataclass(frozen=True)
class Method:
    """A stage-2 encoder: its label (folder and table row) and its config file."""

    label: str
    config: Path


@dataclass
class Plan:
    """Everything `reproduce` runs, in order, and the settings it records."""

    out: Path
    steps: List[Step] = field(default_factory=list)
    settings: Dict = field(default_factory=dict)
    num_classes: int = 0
    """The dataset's classes (custom data: its class folders)."""
    training_images: Optional[int] = None
    """The images the steps train and select K on (`launch.data.training_images`; None: not known)."""
    notes: List[str] = field(default_factory=list)
    """What the plan leaves unused, said before its steps."""


def scope_of(override: str) -> Optional[str]:
    """"ncp" of `ncp:key=value`; None of `key=value` (a ':' after the first '=' is the value's)."""
    colon, equals = override.find(":"), override.find("=")
    return None if colon < 0 or (0 <= equals < colon) else override[:colon]


def split_scoped(overrides: Sequence[str], scopes: Sequence[str]) -> Dict[Optional[str], List[str]]:
    """{scope or None: [override, ...]} for `scope:key=value` (one stage) and `key=value` (all).

    A prefix counts as a scope when its ':' comes before the first '='; it must name a scope."""
    scoped: Dict[Optional[str], List[str]] = {None: []}
    for override in overrides:
        scope = scope_of(override)
        if scope is None:
            scoped[None].append(override)
            continue
        rest = override[len(scope) + 1:]
        if scope not in scopes:
            raise ValueError(f"override {override!r}: unknown scope {scope!r}; scopes are "
                             f"{', '.join(scopes)} (or no scope: every stage)")
        scoped.setdefault(scope, []).append(rest)
    return scoped


def data_options(cfg) -> List[str]:
    """--data-dir and --train-n of select-k, poc and eval from a training config's data.train_path
    and data.subset (eval takes the first N images, training a fixed random subset of N); custom
    data gets no --data-dir (those commands read its folders from the checkpoint), nor does a
    dataset whose images come installed (digits: those commands refuse it)."""
    from solo_ncp.config import select
    from solo_ncp.data.custom import CUSTOM
    from solo_ncp.data.registry import get_spec

    dataset = select(cfg, "data.dataset")
    folder = dataset != CUSTOM and bool(get_spec(dataset).folder)
    keys = ((("data.train_path", "--data-dir"),) if folder else ()) + (("data.subset", "--train-n"),)
    argv = []
    for key, option in keys:
        value = select(cfg, key)
        argv += [option, str(value)] if value is not None else []
    return argv


def options(text: str, what: str) -> List[str]:
    """--select-k-options / --eval-options / --poc-options split as a shell would; refuses the
    options reproduce sets itself."""
    try:
        argv = shlex.split(text or "")
    except ValueError as err:
        raise ValueError(f"{what} {text!r}: {err} (quote values as a shell would)") from None
    names = {arg.split("=")[0]: own_option(arg.split("=")[0]) for arg in argv}
    own = sorted(name if option == name else f"{name} ({option})" for name, option in names.items() if option)
    if own:
        raise ValueError(f"{what}: {', '.join(own)} {'is' if len(own) == 1 else 'are'} set by "
                         f"reproduce itself (use --dataset, --seeds, --out and overrides instead)")
    return argv


def own_option(name: str) -> Optional[str]:
    """The option of OWN_EVAL_OPTIONS that `name` sets: itself, or the one it abbreviates as
    argparse reads `--hea` as `--head` (no option of select-k, eval or poc abbreviates one)."""
    if len(name) < 3 or not name.startswith("--"):
        return None
    return next((option for option in OWN_EVAL_OPTIONS if option.startswith(name)), None)


def mode_options(texts: Sequence[str], modes: Sequence[str]) -> Dict[Optional[str], List[str]]:
    """{None: options of every evaluation, mode: options of that mode's only} from --eval-options
    values "OPTIONS" and "MODE=OPTIONS"; a mode's options come after the shared ones (they win)."""
    scoped: Dict[Optional[str], List[str]] = {None: []}
    for text in texts:
        mode, equals, rest = text.partition("=")
        if equals and mode in modes:
            scoped.setdefault(mode, []).extend(options(rest, f"--eval-options {mode}="))
        else:
            scoped[None].extend(options(text, "--eval-options"))
    return scoped


def without(argv: Sequence[str], dropped: Sequence[str]) -> List[str]:
    return [arg for arg in argv if arg not in dropped]


def compare_settings(old: Dict, new: Dict, path: Path) -> None:
    """Refuses `new` when a recorded setting differs, naming only what differs; seeds and
    evaluations may grow, methods may be added with overrides of their own (`label:key=value`; a
    method already recorded must keep its config and its own overrides)."""
    differing = []
    old = {"checkpoint": LAST, **old}  # runs recorded before --checkpoint evaluated last.ckpt
    old.setdefault("solo_learn", new.get("solo_learn"))  # recorded since; earlier runs: unknown
    teacher = old.get("teacher")
    if isinstance(teacher, dict) and isinstance(teacher.get("path"), str):  # recorded as spelled, before
        old["teacher"] = {**teacher, "path": str(resolved(teacher["path"]))}
    added = set(new.get("methods", {})) - set(old.get("methods", {}))
    for key in sorted(set(old) | set(new)):
        if key == "overrides":
            kept = [item for item in new.get(key, []) if scope_of(item) not in added]
            differing += differences(key, effective(old.get(key, [])), effective(kept))
        elif key in OPTION_LISTS:
            differing += differences(f"--{key.replace('_', '-')}", as_command_line(old.get(key)),
                                     as_command_line(new.get(key)))
        elif key not in GROWING + ("methods",):
            differing += differences(key, old.get(key), new.get(key))
    for label in sorted(set(old.get("methods", {})) & set(new.get("methods", {}))):
        differing += differences(f"methods.{label}", old["methods"][label], new["methods"][label])
    if differing:
        raise ValueError(f"{path.parent} holds a reproduce run of other settings "
                         f"({'; '.join(differing)}): pass another --out, or the recorded settings")


OPTION_LISTS = ("select_k_options", "eval_options", "poc_options")
"""The recorded argv of the steps' own options: compared as the command lines they are."""


def as_command_line(recorded):
    """A recorded option list as one shell line (`--k-min 5 --k-max 10`); of a dict of them (the
    evaluations', per mode), each entry's."""
    if isinstance(recorded, dict):
        return {key: as_command_line(value) for key, value in recorded.items()}
    return shlex.join(recorded) if isinstance(recorded, list) else recorded


def effective(overrides: Sequence[str]) -> List[str]:
    """The overrides that take effect, sorted: of several with the same scope and key, the last
    (`max_epochs=3 max_epochs=2` trains 2 epochs, as `max_epochs=2` does; the reverse 3)."""
    last = {(scope_of(item), override_key(item.split(":", 1)[1] if scope_of(item) else item)): item
            for item in overrides}
    return sorted(last.values())


def differences(key: str, old, new) -> List[str]:
    """`key: recorded X, now Y` for each differing entry of two recorded values: dicts entry by
    entry, lists (overrides, options) by the items only one of them has."""
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        return [line for part in sorted(set(old) | set(new))
                for line in differences(f"{key}.{part}", old.get(part), new.get(part))]
    if isinstance(old, list) and isinstance(new, list):
        gone, added = [item for item in old if item not in new], [item for item in new if item not in old]
        if gone and added:
            return [f"{key}: recorded has {_items(gone)}, now {_items(added)}"]
        if gone or added:
            return [f"{key}: recorded has {_items(gone)}, now not" if gone else
                    f"{key}: now has {_items(added)}, recorded not"]
    return [f"{key}: recorded {old!r}, now {new!r}"]


def _items(items: Sequence) -> str:
    return ", ".join(map(repr, items))


def parse_methods(specs: Sequence[str], config_dir: Path) -> List[Method]:
    """`CONFIG` or `LABEL=CONFIG`; CONFIG names config_dir/<CONFIG>.yaml or is a YAML path."""
    methods = []
    for spec in specs:
        label, _, config = spec.rpartition("=") if "=" in spec else (None, "", spec)
        is_path = config.endswith((".yaml", ".yml")) or "/" in config
        path = resolved(Path(config) if is_path else config_dir / f"{config}.yaml")
        label = label or path.stem
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in config_dir.glob("*.yaml") if p.stem != STAGE1))
            raise ValueError(f"method {spec!r}: no config {path} (stage-2 configs in {config_dir}: "
                             f"{known or 'none'}; or give a YAML path)")
        if label in RESERVED_LABELS or label.startswith("eval-") or not label.replace("-", "_").isidentifier():
            raise ValueError(f"method label {label!r}: use letters, digits, '-' and '_', not "
                             f"{', '.join(map(repr, RESERVED_LABELS))} or eval-... (a step's folder or scope)")
        methods.append(Method(label, path))
    labels = [m.label for m in methods]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f"--methods repeats {', '.join(repeated)}: give each a label, e.g. "
                         f"{repeated[0]}-b={repeated[0]}")
    if not methods:
        raise ValueError("--methods needs at least one stage-2 config")
    return methods


def check_label(method: Method, cfg) -> None:
    """ValueError when `method`'s label is the name of a stage-2 method other than the one its
    config `cfg` (with its overrides) trains: the label names the encoder's rows in every table."""
    from solo_ncp.eval.protocol import STAGE2_METHODS

    if method.label in STAGE2_METHODS and str(cfg.method) != method.label:
        raise ValueError(f"method label {method.label!r} is the name of the {method.label} method, but "
                         f"{method.config.name} trains method={cfg.method}, whose rows would read as "
                         f"{method.label}'s: give it another label, e.g. {cfg.method}-b={method.config.stem}")


def parse_evals(specs: Sequence[str], encoders: Sequence[str], modes: Sequence[str]) -> Dict[str, List[str]]:
    """{evaluation: [encoder, ...]} from `EVALUATION` (every encoder) or `EVALUATION=enc1,enc2`;
    `modes`: the evaluations allowed (see `evaluation_kinds`)."""
    evals: Dict[str, List[str]] = {}
    for spec in specs:
        mode, _, names = spec.partition("=")
        if mode not in modes:
            raise ValueError(f"--eval {spec!r}: the evaluation must be one of {', '.join(modes)} (a "
                             "mode alone uses the paper's head; <mode>-<head> another head)")
        chosen = names.split(",") if names else list(encoders)
        unknown = [name for name in chosen if name not in encoders]
        if unknown:
            raise ValueError(f"--eval {spec!r}: no encoder {', '.join(unknown)} (encoders: "
                             f"{', '.join(encoders)})")
        if mode in evals:
            raise ValueError(f"--eval names mode {mode} twice: list its encoders once, {mode}=a,b")
        repeated = sorted({name for name in chosen if chosen.count(name) > 1})
        if repeated:
            raise ValueError(f"--eval {spec!r} names {', '.join(repeated)} twice: name each encoder once")
        evals[mode] = chosen
    return evals


def check_seeds(seeds: Sequence[int]) -> None:
    repeated = sorted({seed for seed in seeds if list(seeds).count(seed) > 1})
    if repeated:
        raise ValueError(f"--seeds repeats {', '.join(map(str, repeated))}: each seed runs once")
    if not seeds:
        raise ValueError("--seeds needs at least one seed")


def check_overrides(scoped: Dict[Optional[str], List[str]],
                    allowed: Optional[Dict[str, Sequence[str]]] = None) -> None:
    """Refuses the keys reproduce sets itself (OWN_KEYS), except those `allowed` in a scope: a
    method's own `method_kwargs.k` (a point of Fig. 3's K sweep, instead of its seed's select-k K)."""
    for scope, overrides in scoped.items():
        for override in overrides:
            key = override_key(override)
            if key in OWN_KEYS and key not in (allowed or {}).get(scope, ()):
                where = f"{scope}:" if scope else ""
                raise ValueError(f"override {where}{override!r}: reproduce sets {key} itself (from "
                                 "--out, --seeds, --teacher and each seed's select-k)")


def stage_config(label: str, path: Path, overrides: Sequence[str], unscoped: Sequence[str]):
    """The config `path` of step `label` with `overrides`, checked now (a misspelt key or a stage-2
    option out of range fails before any work); the error names the step, and when the config is
    valid without the user's overrides that have no scope (`unscoped`: they reach every stage),
    says how to send one to one stage."""
    try:
        return checked_config(label, path, overrides)
    except ValueError as err:
        scoped_only = [override for override in overrides if override not in unscoped]
        hint = (f"; overrides without a scope go to stage 1 and every stage-2 method: prefix one "
                f"with {STAGE1}:, {STAGE2_SCOPE}: or a method's label to send it there only"
                if unscoped and _is_valid(label, path, scoped_only) else "")
        raise ValueError(f"{label} ({path.name}): {err}{hint}") from None


def checked_config(label: str, path: Path, overrides: Sequence[str]):
    """The config with its overrides; a stage-2 config's options checked as its training will."""
    from solo_ncp.config import check_stage2_augmentation, load_config

    cfg = load_config(path, overrides)
    if label != STAGE1:
        check_stage2_augmentation(cfg)
        check_stage2_options(cfg)
    return cfg


def _is_valid(label: str, path: Path, overrides: Sequence[str]) -> bool:
    try:
        checked_config(label, path, overrides)
    except ValueError:
        return False
    return True


def check_stage2_options(cfg) -> None:
    """The stage-2 options of a config's method_kwargs checked as the training will check them
    (`take_options`: types, bounds, choices, the L-inf budget), so a bad value fails before stage 1
    trains; the keys reproduce sets per step hold the config's own values here."""
    from omegaconf import OmegaConf

    from solo_ncp.methods.stage2_options import take_options

    take_options(OmegaConf.to_container(cfg.method_kwargs, resolve=True))


def check_stage_sizes(label: str, path: Path, cfg, images: Optional[int]) -> None:
    """The `images` stage-2 step `label` trains on (config `path`, loaded as `cfg` with the
    overrides it trains with, its options checked: `checked_config`) checked as its training will
    (`check_stage2_sizes`: the robust monitor's held-out images, a fixed K, the batch size), before
    stage 1 trains; the error names the step."""
    from omegaconf import OmegaConf

    from solo_ncp.launch.data import check_stage2_sizes
    from solo_ncp.methods.stage2_options import with_defaults

    try:
        check_stage2_sizes(cfg, with_defaults(OmegaConf.to_container(cfg.method_kwargs, resolve=True)), images)
    except ValueError as err:
        raise ValueError(f"{label} ({path.name}): {err}") from None


def check_teacher(teacher: Path, configs: Dict[str, object]) -> None:
    """The shared stage-1 checkpoint exists, loads safely and has each stage-2 config's backbone
    (name, stem and every option of `backbone.kwargs`, as the training will build it); one without
    solo-ncp metadata is read with the normalisation the training will read it with (`read_teacher`)."""
    from omegaconf import OmegaConf

    from solo_ncp.launch.methods import config_backbone_spec
    from solo_ncp.ncp.teacher import read_teacher

    problem = wrong_kind(teacher, "file")
    if problem:
        raise ValueError(f"--teacher {teacher} {problem}: pass a stage-1 checkpoint file "
                         "(`solo-ncp pretrain`'s last.ckpt)")
    checked = set()  # each distinct backbone, normalisation and dataset once, with its first method
    for label, cfg in configs.items():
        spec, dataset = config_backbone_spec(cfg), cfg.data.dataset
        given = OmegaConf.to_container(cfg.method_kwargs, resolve=True).get("normalization")
        key = (spec, json.dumps(given), dataset)
        if key in checked:
            continue
        checked.add(key)
        try:
            read_teacher(teacher, spec, given=given, dataset=dataset)
        except ValueError as err:
            raise ValueError(f"--teacher for method {label}: {err}") from None


RECORD_LISTS = {"seeds": int, "overrides": str, "evals": str}
"""The lists of reproduce.json that a call extends, and the type of their items."""


def read_record(out: Path) -> Optional[Dict]:
    """The settings recorded in `out/reproduce.json`; None before the first run there. A damaged
    record (unreadable, not JSON, missing or mistyped entries) is a ValueError naming it and the fix."""
    record = out / SETTINGS
    if not record.is_file():
        return None
    try:
        recorded = read_json_object(record, "the settings record of a `solo-ncp reproduce` folder")
        for key, kind in RECORD_LISTS.items():
            if not (isinstance(recorded.get(key), list) and all(type(item) is kind for item in recorded[key])):
                raise ValueError(f"{record}: its {key!r} is not a list of {kind.__name__}")
        methods = recorded.get("methods")
        if not (isinstance(methods, dict) and all(isinstance(entry, dict) and isinstance(entry.get("config"), str)
                                                  for entry in methods.values())):
            raise ValueError(f"{record}: its 'methods' is not a mapping of labels to their configs")
    except ValueError as err:
        raise ValueError(f"{err}: restore it, or remove it to record this call's settings (a finished "
                         "step stays finished: its .step-done.json holds its own command)") from None
    return recorded


def with_recorded_methods(chosen: List[Method], recorded: Dict, record: Path) -> List[Method]:
    """The call's methods, then the recorded ones it does not name (with their recorded configs)."""
    named = {m.label for m in chosen}
    kept = [Method(label, Path(entry["config"])) for label, entry in recorded.items() if label not in named]
    for method in kept:
        if not method.config.is_file():
            raise ValueError(f"{record} records method {method.label} with the config {method.config}, "
                             "which is gone: restore it, or pass another --out")
    return chosen + kept


def merged_evals(specs: Sequence[str]) -> List[str]:
    """One spec per mode from several: `MODE` (every encoder) if one is, else `MODE=` the encoders
    of them all, in order."""
    encoders: Dict[str, Optional[List[str]]] = {}
    for spec in specs:
        mode, _, names = spec.partition("=")
        known = encoders.get(mode, [])
        encoders[mode] = (None if known is None or not names else
                          list(dict.fromkeys(known + names.split(","))))
    return [mode if names is None else f"{mode}={','.join(names)}" for mode, names in encoders.items()]


def build_plan(*, dataset: str, seeds: Sequence[int], methods: Sequence[str], evals: Sequence[str],
               out: Path, overrides: Sequence[str], teacher: Optional[Path], config_dir: Path,
               select_k_options: str = "", eval_options: Sequence[str] = (), poc_options: str = "",
               checkpoint: str = LAST) -> Plan:
    """Every step of the table, in order; every input checked before any step runs. The seeds,
    methods and evaluations recorded in `out` join those given (the folder's table is of them all).
    `checkpoint`: which checkpoint of each stage-2 run is evaluated, last.ckpt or best.ckpt (the
    trainings then keep it: `best_checkpoint_overrides`)."""
    from omegaconf import OmegaConf

    from solo_ncp.config import dataset_spec, select
    from solo_ncp.eval.protocol import MODES
    from solo_ncp.launch.data import training_images

    check_seeds(seeds)
    chosen = parse_methods(methods, config_dir)
    recorded = read_record(out)
    if recorded is not None:
        if effective(overrides) == effective(recorded["overrides"]):  # the recorded spelling: the same commands
            overrides = list(recorded["overrides"])
        seeds = list(dict.fromkeys([*recorded["seeds"], *seeds]))
        kept = set(recorded["methods"]) - {m.label for m in chosen}
        unnamed = [item for item in overrides if scope_of(item) in kept and item not in recorded["overrides"]]
        if unnamed:
            raise ValueError(f"override {unnamed[0]!r}: {scope_of(unnamed[0])} is a method {out / SETTINGS} records "
                             "but --methods does not name, so its recorded settings stand: name it in --methods "
                             "(its settings are then compared with the record), or drop the override")
        overrides = list(overrides) + [item for item in recorded["overrides"]
                                       if scope_of(item) in kept and item not in overrides]
        chosen = with_recorded_methods(chosen, recorded["methods"], out / SETTINGS)
    encoders = [STAGE1] + [m.label for m in chosen]
    modes = parse_evals(evals, encoders, evaluation_kinds())
    if recorded is not None:
        evals = merged_evals([*recorded["evals"], *evals])
        modes = parse_evals(evals, encoders, evaluation_kinds())
    scoped = split_scoped(overrides, [STAGE1, STAGE2_SCOPE] + [m.label for m in chosen])
    own_k = {label for label, items in scoped.items() if label not in (None, STAGE1, STAGE2_SCOPE)
             and any(override_key(item) == "method_kwargs.k" and not item.startswith("~") for item in items)}
    check_overrides(scoped, allowed={label: ("method_kwargs.k",) for label in own_k})
    unread = [f"{STAGE1}:{item}" for item in scoped.get(STAGE1, [])] if teacher is not None else []
    select_k_argv = options(select_k_options, "--select-k-options")
    eval_argv = mode_options(eval_options, MODES)
    evaluated = {mode_and_head(kind)[0] for kind in modes}
    unused = [mode for mode in eval_argv if mode is not None and mode not in evaluated]
    if unused:
        raise ValueError(f"--eval-options {unused[0]}=...: no evaluation runs {unused[0]} (--eval: "
                         f"{', '.join(modes)}): drop them, or add --eval {unused[0]}")
    poc_argv = options(poc_options, "--poc-options")
    common = [f"data.dataset={dataset}"] + scoped[None]
    stage1_overrides = common + scoped.get(STAGE1, [])
    stage1_config = resolved(config_dir / f"{STAGE1}.yaml")
    if teacher is None and not stage1_config.is_file():
        raise ValueError(f"no stage-1 config {stage1_config}: pass --config-dir, or --teacher")
    configs = ({STAGE1: stage_config(STAGE1, stage1_config, stage1_overrides, scoped[None])}
               if teacher is None else {})
    stage2_overrides = {m.label: common + scoped.get(STAGE2_SCOPE, []) + scoped.get(m.label, [])
                        for m in chosen}
    counted: Dict[str, Optional[int]] = {}  # training_images reads the dataset: once per data block

    def images_of(cfg) -> Optional[int]:
        data = OmegaConf.to_yaml(cfg.data)
        if data not in counted:
            counted[data] = training_images(cfg)
        return counted[data]

    for m in chosen:
        configs[m.label] = stage_config(m.label, m.config, stage2_overrides[m.label], scoped[None])
        if checkpoint == BEST:  # checked again as it will train: keeping best.ckpt holds images out
            stage2_overrides[m.label] += best_checkpoint_overrides(configs[m.label])
            configs[m.label] = stage_config(m.label, m.config, stage2_overrides[m.label], scoped[None])
        check_label(m, configs[m.label])
        check_stage_sizes(m.label, m.config, configs[m.label], images_of(configs[m.label]))
    for label in own_k:  # its K replaces select-k's: null would leave the training none
        if select(configs[label], "method_kwargs.k") is None and not select(configs[label], "method_kwargs.k_file"):
            raise ValueError(f"{label}:method_kwargs.k=null gives {label} no K, as the scope replaces select-k's: "
                             "set a whole number (the run's own K), or drop it (each run gets select-k's K)")
    if teacher is not None:
        check_teacher(teacher, {m.label: configs[m.label] for m in chosen})
    data_argv = data_options(configs[chosen[0].label])

    plan = Plan(out, num_classes=dataset_spec(configs[chosen[0].label]).num_classes,
                training_images=images_of(configs[chosen[0].label]))
    if unread:
        plan.notes.append(f"--teacher replaces stage 1, so no {STAGE1} step reads {', '.join(unread)}")
    plan.settings = {
        "dataset": dataset, "seeds": list(seeds), "evals": list(evals), "overrides": list(overrides),
        "teacher": None if teacher is None else {"path": str(teacher), "sha256": file_sha256(teacher)},
        "stage1": None if teacher is not None else {"config": str(stage1_config),
                                                    "sha256": file_sha256(stage1_config)},
        "methods": {m.label: {"config": str(m.config), "sha256": file_sha256(m.config)} for m in chosen},
        "select_k_options": select_k_argv,
        "eval_options": {mode or "every mode": argv for mode, argv in eval_argv.items()},
        "poc_options": poc_argv,
        "checkpoint": checkpoint,
        "solo_learn": installed_solo_learn(),
    }
    results: List[Path] = []
    for seed in seeds:
        base = out / f"s{seed}"
        stage1 = teacher if teacher is not None else base / STAGE1 / LAST
        encoder_args = ["--dataset", dataset, "--seed", str(seed), *data_argv]
        if teacher is None:
            plan.steps.append(Step(f"s{seed}/{STAGE1}", base / STAGE1, fixed(
                ["pretrain", "--config", str(stage1_config), *stage1_overrides,
                 override_of("checkpoint.dir", base), f"name={STAGE1}", f"seed={seed}"]),
                trained(stage1, int(configs[STAGE1].max_epochs)), rerun="--resume"))
        k_dir = base / "select-k"
        plan.steps.append(Step(f"s{seed}/select-k", k_dir, fixed(
            ["select-k", "--ckpt", str(stage1), *encoder_args, *select_k_argv, "--out", str(k_dir)]),
            result_file(k_dir / "k.json", lambda path: read_selection(path.parent)), inputs=(stage1,)))
        results.append(k_dir)
        poc_dir = base / "poc"
        plan.steps.append(Step(f"s{seed}/poc", poc_dir, _poc_argv(
            ["poc", "--ckpt", str(stage1), *encoder_args, "--head", PAPER_HEAD, *poc_argv, "--out", str(poc_dir)],
            k_dir),
            result_file(poc_dir / "poc.json", lambda path: read_poc(path.parent)),
            inputs=(stage1, k_dir / "k.json")))
        results.append(poc_dir)
        checkpoints = {STAGE1: stage1}
        for m in chosen:
            clusters = ([] if "k" not in configs[m.label].method_kwargs or m.label in own_k else
                        ["method_kwargs.k=null", override_of("method_kwargs.k_file", k_dir / "k.json")])
            plan.steps.append(Step(f"s{seed}/{m.label}", base / m.label, fixed(
                ["train", "--config", str(m.config), *stage2_overrides[m.label],
                 override_of("checkpoint.dir", base), f"name={m.label}", f"seed={seed}",
                 override_of("method_kwargs.teacher_ckpt", stage1), *clusters]),
                trained(base / m.label / LAST, int(configs[m.label].max_epochs)),
                rerun="--resume", inputs=(stage1, k_dir / "k.json") if clusters else (stage1,)))
            checkpoints[m.label] = base / m.label / checkpoint
        for kind, names in modes.items():
            mode, head = mode_and_head(kind)
            for name in names:
                folder = base / f"eval-{name}-{kind}"
                shared = eval_argv[None] if mode == "slf" else without(eval_argv[None], SLF_ONLY)
                extra = shared + eval_argv.get(mode, [])  # one aimed at this mode is its, as given
                plan.steps.append(Step(f"s{seed}/eval-{name}-{kind}", folder, fixed(
                    ["eval", "--ckpt", str(checkpoints[name]), *encoder_args, "--mode", mode,
                     "--head", head, "--method", name, *extra, "--out", str(folder)]),
                    result_file(folder / "metrics.json", lambda path: load_runs(path.parent)),
                    inputs=(checkpoints[name],)))
                results.append(folder)
    report = out / "report"
    plan.steps.append(Step("report", report, fixed(
        ["report", *map(str, results), "--out", str(report / "report.md")]),
        result_file(report / "report.md"), rerun="",
        inputs=tuple(folder / name for folder in results for name in ("metrics.json", "poc.json", "k.json"))))
    return plan


def installed_solo_learn() -> str:
    """The installed solo-learn's version (its metadata, without importing it): the steps train on
    it, so one folder's table compares runs of one solo-learn."""
    from importlib import metadata

    try:
        return metadata.version("solo-learn")
    except metadata.PackageNotFoundError:
        return "not installed"


def best_checkpoint_overrides(cfg) -> List[str]:
    """What a stage-2 training of config `cfg` adds to keep best.ckpt: `checkpoint.save_best`, and the
    held-out robust monitor after every epoch unless the config already runs it."""
    from solo_ncp.config import select

    every = [] if select(cfg, "method_kwargs.val_robust_every", 0) else ["++method_kwargs.val_robust_every=1"]
    return ["++checkpoint.save_best=true", *every]


def _poc_argv(argv: List[str], k_dir: Path) -> Callable[[], List[str]]:
    """poc's argv with --k read from the seed's k.json when it runs (a placeholder before)."""
    def build() -> List[str]:
        try:
            k = str(read_selection(k_dir)["k"])
        except ValueError:  # before select-k ran, or its k.json is damaged (select-k runs again)
            k = f"<K of {k_dir / 'k.json'}>"
        return argv[:1] + ["--k", k] + argv[1:]
    return build


def run_plan(plan: Plan, dry_run: bool, say: Callable[[str], None] = say_now) -> List[Tuple[str, str, float]]:
    """Runs the steps not done yet, in order (or, with dry_run, only lists them); returns
    [(step, "skipped" | "ran" | "would run", seconds)]. The caller holds the lock of plan.out
    (unless dry_run): the recorded settings `build_plan` read stay as they are."""
    record = plan.out / SETTINGS
    recorded = read_record(plan.out)
    if recorded is not None:
        compare_settings(recorded, plan.settings, record)
    if dry_run:
        rows = []
        for step in plan.steps:
            state = step.state()
            say(f"[reproduce] {state:7s} {step.name}: solo-ncp {shlex.join(step.command(state))}")
            rows.append((step.name, "skipped" if state == "done" else "would run", 0.0))
        return rows
    if recorded != json.loads(json.dumps(plan.settings)):  # a call adding nothing leaves it be
        atomic_write_json(record, plan.settings)
    try:
        return [run_step(step, say) for step in plan.steps]
    except KeyboardInterrupt as err:  # between steps: wait_for names the step it stopped
        interrupted = as_interrupted(err)
        if interrupted.again is None:
            interrupted = Interrupted(interrupted.signum, again="resume with")
        raise interrupted from None


def run_step(step: Step, say: Callable[[str], None]) -> Tuple[str, str, float]:
    """Runs `step` unless it is done: (its name, "skipped" | "ran", seconds). A signal that
    arrived while the previous step ended, its raise swallowed, stops the plan here."""
    try:
        raise_pending()
    except KeyboardInterrupt as err:
        raise Interrupted(as_interrupted(err).signum, f"before step {step.name}", "resume with") from None
    state = step.state()
    if state == "done":
        say(f"[reproduce] skipped {step.name} (done)")
        return step.name, "skipped", 0.0
    step.check_runnable(state)
    verb = "resuming" if state == "partial" and step.rerun == "--resume" else "running"
    again = f", again: {', '.join(step.changed_inputs())} changed since it ran" if state == "stale" else ""
    say(f"[reproduce] {verb} {step.name}{again} (log: {step.folder / LOG})")
    seconds = step.run(state)
    say(f"[reproduce] finished {step.name} in {seconds:.0f} s")
    return step.name, "ran", seconds
