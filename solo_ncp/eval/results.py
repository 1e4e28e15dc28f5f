"""The result files `solo-ncp eval`, `poc` and `select-k` write (metrics.json, poc.json, k.json),
read back and checked: what `report` tables and what `reproduce` takes as a finished step.
A damaged or incomplete file is a ValueError naming it.

metrics.json schema (written by `solo-ncp eval`, "schema": 2):
    {"schema": 2, "method": str, "dataset": str, "mode": "slf" | "alf" | "aff",
     "loss": "ce" | "trades", "beta": float | null, "head": one of HEADS (eval/protocol.py), "seed": int,
     "branches": [{"bn": "adv" | "clean" | null, "metrics": {...}, "history": [...], "files": {...},
                   "timings_s": {"fine_tune": s, "pgd": s, "autoattack": s (when run)}}, ...],
     "bn": ..., "metrics": {...},          # a copy of branches[0], for one-branch readers
     "ra_counting": str, "settings": {...}, "checkpoint": {"path": str, "sha256": str}}
    metrics: {"sa": %, "ra": %, "aa": % | null, "sa_n": int, "ra_n": int, "aa_n": int,
              "train_loss": float, "train_acc": %}
    settings.ra / settings.aa hold each attack's "batch_size" (newer files).
Older files (no "schema": one branch in "bn"/"metrics", no "loss"/"head") still load: their head
was the paper's and their loss CE. Only the keys the tables need are checked; the rest is
provenance.
"""
import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from solo_ncp.eval.protocol import HEADS, LOSSES, MODES, NCP_SETTINGS, PAPER_HEAD, POC_ROWS, best_k, default_loss
from solo_ncp.io import is_whole, read_json, wrong_kind
from solo_ncp.run_files import BEST, LAST, encoder_sha256


BN_BRANCHES = ("clean", "adv")
METRICS_FILE = "metrics.json"
POC_FILE = "poc.json"
K_FILE = "k.json"
NOT_RECORDED = "not recorded"
LINF_LABEL = "L-inf"
"""How tables write the L-inf threat model."""
LEGACY_HEAD = PAPER_HEAD
"""Head of metrics.json files that do not name one: the evaluation then had only the paper's."""
COUNT_KEYS = ("sa_n", "ra_n", "aa_n")
"""The test images behind each metric, in metrics.json's "metrics"."""
EVAL_AGAIN = "restore the file, or run `solo-ncp eval` again"
POC_METRICS = ("prob_dec", "attack_success")
"""The numbers of each Table-1 row in poc.json (%)."""
POC_AGAIN = "restore the file, or run `solo-ncp poc` again"
NO_CORRECT_IMAGE = "no correctly classified test image"
UNMEASURED = f"n/a ({NO_CORRECT_IMAGE})"
"""A Table-1 cell over no test image: poc.json's rates of a seed with n_correct 0 are null."""
SELECTION = "a k.json of `solo-ncp select-k`"
"""What a k_file or a select-k folder's k.json must be, as errors name it."""


@dataclass(frozen=True)
class RunRecord:
    """One evaluated (encoder, BN branch) of a run's metrics.json: what the tables use."""

    path: Path
    method: str
    dataset: str
    mode: str
    loss: str
    head: str
    seed: int
    bn: Optional[str]
    metrics: Mapping[str, Optional[float]]
    attacks: Mapping[str, str]
    """{"ra": the PGD attack behind RA, "aa": AutoAttack's version and eps}, as recorded."""
    encoder: Mapping[str, object] = dataclasses.field(default_factory=dict)
    """What the encoder's checkpoint says NCP's ablations varied: k, strategy, neighbor_rank,
    k_source (`solo_ncp.commands.eval.encoder_settings`); empty for older files."""
    best: bool = False
    """The encoder is a run's best.ckpt (`checkpoint.save_best`), not the last epoch."""
    settings: Mapping[str, object] = dataclasses.field(default_factory=dict)
    """metrics.json's `settings` (the head's training, the attacks); empty for older files."""
    checkpoint_sha256: Optional[str] = None
    """The sha256 of the encoder's checkpoint (`encoder_sha256`; None for older files)."""

    @property
    def label(self) -> str:
        """Row label: the method and the BN branch evaluated: "ncp (adv BN)", "ncp (clean BN) †"
        (the second row of a dual-BN encoder), or the method alone (one BN); " [best.ckpt]" after
        the method of a best epoch."""
        method = f"{self.method} [{BEST}]" if self.best else self.method
        if self.bn is None:
            return method
        return f"{method} ({self.bn} BN)" + (" †" if self.bn == "clean" else "")

    @property
    def protocol(self) -> str:
        """Column-group title of the fine-tuning: "SLF", or e.g. "ALF (CE)", "AFF (TRADES)"."""
        return "SLF" if self.mode == "slf" else f"{self.mode.upper()} ({self.loss.upper()})"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require(condition: bool, path: Path, message: str) -> None:
    if not condition:
        raise ValueError(f"{path}: {message}")


def _is_text(value: object) -> bool:
    return isinstance(value, str)


Kinds = Mapping[str, Tuple[Callable[[object], bool], str]]
"""{key: (test of its value, the kind the test accepts as errors name it)} of a result record."""
TEXT, WHOLE = (_is_text, "a string"), (is_whole, "a whole number")
COUNT = (lambda value: is_whole(value, 0), "a whole number of test images (>= 0)")
NUMBER = (_is_number, "a finite number")
FLAG = (lambda value: isinstance(value, bool), "true or false")


def _misfit(values: Mapping[str, object], kinds: Kinds, name: str) -> Optional[str]:
    """The error text `<name> must be <kind> or null, not <value>` of the first key of `kinds` whose
    entry in `values` is neither null (or absent) nor of its kind; None when every entry fits.
    `name`: the key's name as errors give it, "{}" where the key goes ("encoder.{}")."""
    for key, (fits, kind) in kinds.items():
        value = values.get(key)
        if value is not None and not fits(value):
            return f"{name.format(key)} must be {kind} or null, not {value!r}"
    return None


def _is_accuracy(value: object) -> bool:
    return _is_number(value) and 0 <= value <= 100


def _check_metrics(metrics: object, path: Path, where: str) -> None:
    _require(isinstance(metrics, dict), path, f"'{where}' must be an object")
    for key in ("sa", "ra"):
        _require(_is_accuracy(metrics.get(key)), path, f"{where}.{key} must be a percentage in [0, 100]")
    aa = metrics.get("aa")
    _require(aa is None or _is_accuracy(aa), path, f"{where}.aa must be a percentage in [0, 100] or null")
    problem = _misfit(metrics, dict.fromkeys(COUNT_KEYS, COUNT), where + ".{}")
    _require(problem is None, path, f"{problem}: {EVAL_AGAIN}")


def _check_checkpoint(checkpoint: Mapping, path: Path, where: str, fix: str) -> None:
    """ValueError naming `path` and the field when the `checkpoint` record at `where` ("checkpoint",
    "settings.checkpoint") holds a path, sha256 or exported_from.sha256 that is no string: the
    tables compare and group encoders by them."""
    exported_from = checkpoint.get("exported_from")
    entries = {"path": checkpoint.get("path"), "sha256": checkpoint.get("sha256"),
               "exported_from.sha256": exported_from.get("sha256") if isinstance(exported_from, dict) else None}
    problem = _misfit(entries, dict.fromkeys(entries, TEXT), where + ".{}")
    _require(problem is None, path, f"{problem}: {fix}")


ENCODER_KINDS = {"k": WHOLE, "neighbor_rank": WHOLE, "strategy": TEXT, "k_source": TEXT,
                 **{key: {bool: FLAG, int: WHOLE, float: NUMBER, str: TEXT}[type(default)]
                    for key, default in NCP_SETTINGS.items()}}
"""The kind of each entry of metrics.json's "encoder" (`RunRecord.encoder`), `NCP_SETTINGS`' of
their defaults' types; null where unknown."""


def _check_encoder(encoder: dict, path: Path) -> None:
    problem = _misfit(encoder, ENCODER_KINDS, "encoder.{}")
    _require(problem is None, path, problem)


def _branches(record: dict, path: Path) -> List[dict]:
    """[{"bn", "metrics"}, ...]: the "branches" list, or the one top-level branch of older files."""
    branches = record.get("branches", [{"bn": record.get("bn"), "metrics": record.get("metrics")}])
    _require(isinstance(branches, list) and branches, path, "'branches' must be a non-empty list")
    for index, branch in enumerate(branches):
        _require(isinstance(branch, dict), path, f"branches[{index}] must be an object")
        _require(branch.get("bn") in BN_BRANCHES + (None,), path,
                 f"branches[{index}].bn must be one of {BN_BRANCHES} or null")
        _check_metrics(branch.get("metrics"), path, "metrics" if "branches" not in record else
                       f"branches[{index}].metrics")
    bns = [branch.get("bn") for branch in branches]
    _require(len(set(bns)) == len(bns), path, f"BN branches repeat: {bns}")
    return branches


RESULTS_FOLDER = "a results folder (the --out of `solo-ncp eval`, `poc` or `select-k`)"
EVAL_FOLDER = "the --out folder of a `solo-ncp eval`"


def _existing_folder(folder: Union[str, os.PathLike], expected: str = RESULTS_FOLDER) -> Path:
    """`folder` as a Path; FileNotFoundError naming it, and `expected` (what to pass instead),
    when it is not an existing folder."""
    problem = wrong_kind(folder, "folder")
    if problem:
        raise FileNotFoundError(f"{folder} {problem}: pass {expected}")
    return Path(folder)


def load_runs(run_dir: Union[str, os.PathLike]) -> List[RunRecord]:
    """Read and check `run_dir/metrics.json`: one RunRecord per evaluated BN branch, in file order.

    FileNotFoundError / ValueError name the file.
    """
    path = _existing_folder(run_dir, EVAL_FOLDER) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {METRICS_FILE} in {run_dir}: pass {EVAL_FOLDER} that "
                                "finished (an interrupted one writes none; run it again)")
    try:
        record = read_json(path)
    except ValueError as error:  # JSONDecodeError, or UnicodeDecodeError of a binary file
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    _require(isinstance(record, dict), path, "top level must be a JSON object")
    for key in ("method", "dataset"):
        is_name = isinstance(record.get(key), str) and record[key] != ""
        _require(is_name, path, f"'{key}' must be a non-empty string")
    mode = record.get("mode")
    _require(mode in MODES, path, f"'mode' must be one of {MODES}, got {mode!r}")
    loss = record.get("loss") or default_loss(mode)
    _require(loss in LOSSES, path, f"'loss' must be one of {LOSSES}, got {loss!r}")
    head = record.get("head") or LEGACY_HEAD
    _require(head in HEADS, path, f"'head' must be one of {HEADS}, got {head!r}")
    seed = record.get("seed")
    _require(is_whole(seed), path, "'seed' must be an int")
    attacks = attack_texts(record.get("settings"))
    encoder = record.get("encoder") if isinstance(record.get("encoder"), dict) else {}
    _check_encoder(encoder, path)
    checkpoint = record.get("checkpoint") if isinstance(record.get("checkpoint"), dict) else {}
    _check_checkpoint(checkpoint, path, "checkpoint", EVAL_AGAIN)
    best = Path(str(checkpoint.get("path", ""))).name == BEST
    return [
        RunRecord(path=path, method=record["method"], dataset=record["dataset"].lower(), mode=mode,
                  loss=loss, head=head, seed=seed, bn=branch.get("bn"), metrics=branch["metrics"],
                  attacks=attacks, encoder=encoder, best=best,
                  settings=record["settings"] if isinstance(record.get("settings"), dict) else {},
                  checkpoint_sha256=encoder_sha256(checkpoint))
        for branch in _branches(record, path)
    ]


def _fraction_of_255(value: float) -> str:
    return f"{value * 255:.3g}/255"


def budget_text(attack: Mapping, key: str) -> str:
    """An attack's size `key` ("eps", "alpha") in its threat model's usual units: "8/255" in L-inf
    (the norm of files written before L2 existed), "0.5" in L2; with the norm's name for "eps"."""
    norm = attack.get("norm", "Linf")
    value = float(attack[key])
    size = _fraction_of_255(value) if norm == "Linf" else f"{value:.3g}"
    return f"{LINF_LABEL if norm == 'Linf' else norm} eps {size}" if key == "eps" else size


def attack_texts(settings: object) -> Dict[str, str]:
    """{"ra": "PGD-20, L-inf eps 8/255, step 2/255", "aa": "AutoAttack standard, L-inf eps 8/255"}
    (or "L2 eps 0.5, step 0.125") from metrics.json's settings (NOT_RECORDED where an older file
    lacks them)."""
    settings = settings if isinstance(settings, dict) else {}
    ra, aa = settings.get("ra") or {}, settings.get("aa") or {}
    try:
        ra_text = f"PGD-{int(ra['steps'])}, {budget_text(ra, 'eps')}, step {budget_text(ra, 'alpha')}"
    except (KeyError, TypeError, ValueError):
        ra_text = NOT_RECORDED
    try:
        attacks = f" ({', '.join(aa['attacks'])})" if aa.get("attacks") else ""
        aa_text = f"AutoAttack {aa['version']}{attacks}, {budget_text(aa, 'eps')}"
    except (KeyError, TypeError, ValueError):
        aa_text = NOT_RECORDED
    return {"ra": ra_text, "aa": aa_text}


def read_poc(poc_dir: Union[str, os.PathLike]) -> Tuple[Tuple[str, float, int], dict]:
    """A `solo-ncp poc` folder's poc.json: ((dataset, eps, n), its record); ValueError naming the
    file when it is missing, damaged, lacks a number of Table 1 (null only where no test image was
    classified correctly: n_correct 0), names no head (settings.head, absent in files written before
    poc recorded it), or holds a seed or checkpoint record of another type."""
    path = Path(poc_dir) / POC_FILE
    try:
        record = read_json(path)
        settings = record["settings"]
        key = (str(settings["dataset"]), float(settings["eps"]), int(settings["n"]))
        n_correct = record["n_correct"]
        values = [record[row][m] for row in POC_ROWS for m in POC_METRICS]
    except (OSError, KeyError, TypeError, ValueError) as error:  # ValueError: JSON, UTF-8, float()
        raise ValueError(f"{path}: not a poc.json of `solo-ncp poc` ({error!r})") from None
    _require(is_whole(n_correct, 0), path, f"n_correct must be a whole number of test images (>= 0), not "
                                         f"{n_correct!r}: {POC_AGAIN}")
    measured = all(_is_number(value) or value is None and n_correct == 0 for value in values)
    _require(measured, path, f"rows {', '.join(POC_ROWS)} need numbers {' and '.join(POC_METRICS)} (null only "
                             f"where n_correct is 0: no test image measured): {POC_AGAIN}")
    head = settings.get("head")
    _require(head is None or isinstance(head, str) and head in HEADS, path,
             f"settings.head {head!r} is none of the heads {', '.join(HEADS)}: run poc again")
    problem = _misfit(settings, {"seed": WHOLE}, "settings.{}")
    _require(problem is None, path, f"{problem}: {POC_AGAIN}")
    checkpoint = settings.get("checkpoint")
    _check_checkpoint(checkpoint if isinstance(checkpoint, dict) else {}, path, "settings.checkpoint", POC_AGAIN)
    return key, record


SELECTION_ABOUT = {"dataset": TEXT, "seed": WHOLE, "n": (lambda value: is_whole(value, 1), "a whole number >= 1"),
                   "ckpt": TEXT, "ckpt_sha256": TEXT}
"""What a k.json records of its sweep besides K and its scores, null where unknown (Fig. 2's legend;
the encoder stage 2 and Table 1 compare with their own): its test and the type it names."""


def read_selection(folder: Path) -> Dict:
    """A select-k folder's k.json: {"k", "scores": {K: silhouette}, **SELECTION_ABOUT's entries}
    (None where a file does not record them: older select-k); ValueError naming the file."""
    return read_selection_file(Path(folder) / K_FILE)


def read_selection_file(path: Path) -> Dict:
    """`read_selection` of the k.json at `path` (a stage-2 config's method_kwargs.k_file). K must be
    a whole number >= 2 (a file edited to "k": 3.7, true or "12" is refused, not rounded); the
    scores, finite silhouettes of whole Ks >= 2, must be the sweep select-k chose K from: K is
    their best (`best_k`); the sweep's record (`SELECTION_ABOUT`) holds its types or null."""
    problem = wrong_kind(path, "file")
    if problem:
        raise ValueError(f"{path} {problem}: pass {SELECTION}, or run select-k first")
    try:
        record = read_json(path)
        scored, best = record["scores"], record["k"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not {SELECTION} ({err!r})") from None
    if not is_whole(best, 2):
        raise _not_a_selection(path, f"its K ('k') must be a whole number >= 2, not {best!r}")
    scores = _silhouettes(scored, path)
    if best not in scores:
        raise _not_a_selection(path, f"its K ('k') {best} is none of the Ks its 'scores' hold "
                                     f"({', '.join(map(str, scores))})")
    chosen = best_k(scores)
    if chosen != best:
        raise _not_a_selection(path, f"its K ('k') {best} (silhouette {scores[best]!r}) is not the best-scoring K "
                                     f"of its 'scores', {chosen} (silhouette {scores[chosen]!r})")
    problem = _misfit(record, SELECTION_ABOUT, "its '{}'")
    if problem:
        raise _not_a_selection(path, problem)
    return {"k": best, "scores": scores, **{key: record.get(key) for key in SELECTION_ABOUT}}


def _not_a_selection(path: Path, problem: str) -> ValueError:
    """The error for a k.json at `path` that select-k did not write as it is: `problem`, and the fix."""
    return ValueError(f"{path}: not {SELECTION}: {problem}; run select-k again, or set "
                      "method_kwargs.k")


def _silhouettes(scored: object, path: Path) -> Dict[int, float]:
    """k.json's "scores" ({"<K>": silhouette}) as {K: silhouette}, in file order; ValueError (through
    `_not_a_selection`) unless it is a non-empty object of finite numbers keyed by whole Ks >= 2
    written as select-k writes them ("15", not "015" or "15.0")."""
    if not isinstance(scored, dict) or not scored:
        raise _not_a_selection(path, f"its 'scores' must be a non-empty object of silhouettes by K, not {scored!r}")
    scores = {}
    for key, value in scored.items():
        k = int(key) if key.isascii() and key.isdigit() else None
        if k is None or str(k) != key or not is_whole(k, 2):
            raise _not_a_selection(path, f"its 'scores' hold a K {key!r} that is no whole number >= 2")
        if not _is_number(value):
            raise _not_a_selection(path, f"its 'scores' hold silhouette {value!r} for K {key}, not a finite number")
        scores[k] = float(value)
    return scores


@dataclass(frozen=True)
class ReportInputs:
    """What `report`'s folders hold: the evaluations' runs (metrics.json), the proof-of-concept
    folders (poc.json) and the select-k results (k.json, read by `read_selection`)."""

    runs: List[RunRecord]
    poc_dirs: List[Path]
    selections: List[Dict]


def read_inputs(run_dirs: Iterable[Union[str, os.PathLike]]) -> ReportInputs:
    """Reads and checks every folder once; FileNotFoundError naming a folder that does not exist
    or holds none of the three files."""
    inputs = ReportInputs([], [], [])
    for run_dir in map(_existing_folder, run_dirs):
        if (run_dir / METRICS_FILE).exists():
            inputs.runs.extend(load_runs(run_dir))
        elif (run_dir / POC_FILE).is_file():
            inputs.poc_dirs.append(run_dir)
        elif (run_dir / K_FILE).is_file():
            inputs.selections.append(read_selection(run_dir))
        else:
            raise FileNotFoundError(f"{run_dir} holds no {METRICS_FILE} (`solo-ncp eval`), {POC_FILE} (`solo-ncp "
                                    f"poc`) or {K_FILE} (`solo-ncp select-k`): {_what_instead(run_dir)}")
    return inputs


def _what_instead(run_dir: Path) -> str:
    """The fix for a folder `read_inputs` cannot report: evaluate what it holds (an export, a
    training run), else run the command it was meant for."""
    exported = (run_dir / "export.json").is_file()  # models.checkpoint.EXPORT_INFO, without importing torch
    if exported or (run_dir / LAST).is_file():
        what, ckpt = ("an export", run_dir) if exported else ("a training run", run_dir / LAST)
        return (f"it is {what}, which report does not read: evaluate it (solo-ncp eval --ckpt {ckpt} "
                "--out <folder>) and pass that folder")
    return ("pass the --out folder of a finished run of one of them (an interrupted one writes none; run it "
            "again)")
