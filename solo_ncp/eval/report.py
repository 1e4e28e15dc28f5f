"""Markdown tables from run directories' metrics.json, in the layout of the paper's Tables 2 and 3.

metrics.json schema (written by `solo-ncp eval`, "schema": 2):
    {"schema": 2, "method": str, "dataset": str, "mode": "slf" | "alf" | "aff",
     "loss": "ce" | "trades", "beta": float | null, "head": "standardized" | "paper", "seed": int,
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
import json
import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from solo_ncp.eval.protocol import DEFAULT_HEAD, HEADS, LOSSES, MODES, POC_ROWS, default_loss

METRICS = ("sa", "ra", "aa")
METRIC_TITLES = {"sa": "SA (%)", "ra": "RA (%)", "aa": "AA (%)"}
BN_BRANCHES = ("clean", "adv")
DATASET_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "stl10": "STL-10"}
METRICS_FILE = "metrics.json"
POC_FILE = "poc.json"
NOT_AVAILABLE = "n/a"
HEAD_NOTES = {
    "whitened": "trained on whitened features",
    "standardized": "trained on per-dimension standardised features (not whitened)",
    "paper": "Appendix A.3's head on raw features (older metrics.json files have no other)",
}
LEGACY_HEAD = "paper"
"""Head of metrics.json files that do not name one: the evaluation then had only the paper's."""


def _number(value: Optional[float]) -> str:
    return NOT_AVAILABLE if value is None else f"{value:.2f}"


def format_row(name: str, metrics: Mapping[str, Optional[float]]) -> str:
    """One Table-2 style markdown row `| name | SA | RA | AA |` (percent, 2 decimals; None -> n/a)."""
    return "| " + " | ".join([name] + [_number(metrics.get(key)) for key in METRICS]) + " |"


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

    @property
    def label(self) -> str:
        """Row label: the method, the BN branch evaluated (if any), and the head unless the default
        one (e.g. "[paper head]")."""
        label = self.method if self.bn is None else f"{self.method} ({self.bn} BN)"
        return label + ("" if self.head == DEFAULT_HEAD else f" [{self.head} head]")

    @property
    def protocol(self) -> str:
        """Column-group title of the fine-tuning: "SLF", or e.g. "ALF (CE)", "AFF (TRADES)"."""
        return "SLF" if self.mode == "slf" else f"{self.mode.upper()} ({self.loss.upper()})"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require(condition: bool, path: Path, message: str) -> None:
    if not condition:
        raise ValueError(f"{path}: {message}")


def _check_metrics(metrics: object, path: Path, where: str) -> None:
    _require(isinstance(metrics, dict), path, f"'{where}' must be an object")
    for key in ("sa", "ra"):
        _require(_is_number(metrics.get(key)), path, f"{where}.{key} must be a finite number")
    aa = metrics.get("aa")
    _require(aa is None or _is_number(aa), path, f"{where}.aa must be a finite number or null")


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


def load_runs(run_dir: Union[str, os.PathLike]) -> List[RunRecord]:
    """Read and check `run_dir/metrics.json`: one RunRecord per evaluated BN branch, in file order.

    FileNotFoundError / ValueError name the file.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {METRICS_FILE} in run directory {run_dir}")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
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
    _require(isinstance(seed, int) and not isinstance(seed, bool), path, "'seed' must be an int")
    return [
        RunRecord(path=path, method=record["method"], dataset=record["dataset"].lower(), mode=mode,
                  loss=loss, head=head, seed=seed, bn=branch.get("bn"), metrics=branch["metrics"])
        for branch in _branches(record, path)
    ]


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (ddof=1); the std of a single value is 0."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _cell(runs: Iterable[RunRecord], metric: str) -> str:
    """"mean ± std (n=k)" over the runs that have `metric`; one run: "value (n=1)"."""
    values = [run.metrics[metric] for run in runs if run.metrics.get(metric) is not None]
    return _mean_cell(values) if values else NOT_AVAILABLE


def _mean_cell(values: Sequence[float]) -> str:
    """"mean ± std (n=k)" of `values`; one value: "value (n=1)"."""
    mean, std = mean_std(values)
    spread = f" ± {std:.2f}" if len(values) > 1 else ""
    return f"{mean:.2f}{spread} (n={len(values)})"


def _counts(runs: Iterable[RunRecord], metric: str) -> List[int]:
    """Distinct numbers of test images behind `metric` over the runs, 0 (not run) left out."""
    return sorted({run.metrics.get(f"{metric}_n") for run in runs} - {None, 0})


def _metric_title(metric: str, runs: Sequence[RunRecord]) -> str:
    """Column title; AA on fewer images than SA in any run adds "[n=...]" (the AA image counts)."""
    title = METRIC_TITLES[metric]
    subset = any(0 < (run.metrics.get("aa_n") or 0) < (run.metrics.get("sa_n") or 0) for run in runs)
    if metric == "aa" and subset:
        title += " [n=" + "/".join(str(count) for count in _counts(runs, "aa")) + "]"
    return title


def _sample_counts(runs: Sequence[RunRecord]) -> str:
    """Footnote listing the distinct numbers of test images behind each metric."""
    parts = [f"{metric.upper()} " + ("/".join(str(c) for c in _counts(runs, metric)) or NOT_AVAILABLE)
             for metric in METRICS]
    return "Test images per run: " + "; ".join(parts) + "."


def _table(
    title: str,
    groups: Sequence[Tuple[str, Callable[[RunRecord], bool]]],
    runs: Sequence[RunRecord],
) -> str:
    """Rows = run labels (first-seen order); per group title, SA/RA/AA cells over the group's runs."""
    labels = list(dict.fromkeys(run.label for run in runs))
    header = ["Method"] + [
        f"{group} {_metric_title(metric, [run for run in runs if belongs(run)])}"
        for group, belongs in groups
        for metric in METRICS
    ]
    lines = [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label in labels:
        cells = [label]
        for _, belongs in groups:
            group_runs = [run for run in runs if run.label == label and belongs(run)]
            cells += [_cell(group_runs, metric) for metric in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    legend = "Mean ± sample std (ddof=1) over seeds, n = seeds in the cell (one seed: its value). "
    if any(run.bn is not None for run in runs):
        legend += ("(adv BN) / (clean BN): the BN branch of a dual-BN encoder the row was evaluated "
                   "through, each with its own head. ")
    legend += "".join(sorted({f"[{run.head} head]: {HEAD_NOTES[run.head]}. " for run in runs
                              if run.head != DEFAULT_HEAD}))
    lines += ["", legend + _sample_counts(runs), ""]
    return "\n".join(lines)


def _check_unique(runs: Sequence[RunRecord]) -> None:
    seen: Dict[tuple, Path] = {}
    for run in runs:
        key = (run.label, run.dataset, run.protocol, run.seed)
        if key in seen:
            raise ValueError(f"duplicate run {key}: {seen[key]} and {run.path}")
        seen[key] = run.path


def _dataset_order(dataset: str) -> Tuple[int, str]:
    """Paper order (CIFAR-10, CIFAR-100, STL-10) first, then other datasets by name."""
    known = list(DATASET_TITLES)
    return (known.index(dataset) if dataset in known else len(known), dataset)


def _dataset_title(dataset: str) -> str:
    return DATASET_TITLES.get(dataset, dataset)


def _protocol_order(protocol: str) -> Tuple[int, str]:
    """SLF, then ALF, then AFF (losses by name within a mode)."""
    return (MODES.index(protocol.split(" ")[0].lower()), protocol)


def poc_summary(poc_dirs: Iterable[Union[str, os.PathLike]]) -> str:
    """Table 1 over `solo-ncp poc` folders (poc.json): one block per (dataset, eps); rows random
    noise and the push toward the n-th nearest cluster; mean ± sample std over the folders (seeds)."""
    groups: Dict[Tuple[str, float, int], List[dict]] = {}
    for poc_dir in poc_dirs:
        path = Path(poc_dir) / POC_FILE
        try:
            record = json.loads(path.read_text())
            settings = record["settings"]
            key = (str(settings["dataset"]), float(settings["eps"]), int(settings["n"]))
            for row in POC_ROWS:
                _require(all(_is_number(record[row][m]) for m in ("prob_dec", "attack_success")),
                         path, f"'{row}' needs numbers prob_dec and attack_success")
        except (KeyError, TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: not a poc.json of `solo-ncp poc` ({error!r})") from None
        groups.setdefault(key, []).append(record)
    lines = ["## Table 1: proof of concept (stage-1 encoder with an SLF head)", "",
             "| dataset | eps | perturbation | Prob. Dec. (%) | Attk. Succ. (%) | correct test images |",
             "|---|---|---|---|---|---|"]
    for (dataset, eps, n), records in sorted(groups.items(), key=lambda item: (_dataset_order(item[0][0]),
                                                                                 item[0][1:])):
        for row, label in POC_ROWS.items():
            name = f"{label} (n={n})" if row == "nbr" else label
            cells = [_mean_cell([r[row][m] for r in records]) for m in ("prob_dec", "attack_success")]
            counts = "/".join(str(c) for c in sorted({r["n_correct"] for r in records}))
            lines.append(f"| {_dataset_title(dataset)} | {eps * 255:.0f}/255 | {name} | "
                         f"{cells[0]} | {cells[1]} | {counts} |")
    lines += ["", "Mean ± sample std (ddof=1) over seeds, n = seeds in the cell; each seed's numbers are "
              "over its correctly classified test images.", ""]
    return "\n".join(lines)


def aggregate(run_dirs: Iterable[Union[str, os.PathLike]]) -> str:
    """Markdown summary of the runs in `run_dirs` (each BN branch of a run is its own row).

    Table 2: SLF runs; rows = methods, column groups = datasets (SA/RA/AA each).
    Table 3: for each dataset with ALF or AFF runs (CIFAR-10 in the paper); rows = methods, column
    groups = SLF and each adversarial fine-tuning present (e.g. "ALF (CE)", "AFF (TRADES)"). Each
    cell is the mean ± sample std over seeds with the seed count.
    Table 1: folders holding a poc.json instead of a metrics.json (`poc_summary`).
    """
    run_dirs = list(run_dirs)
    poc_dirs = [d for d in run_dirs if (Path(d) / POC_FILE).is_file() and not (Path(d) / METRICS_FILE).exists()]
    runs = [run for run_dir in run_dirs if run_dir not in poc_dirs for run in load_runs(run_dir)]
    if not runs and not poc_dirs:
        raise ValueError("aggregate needs at least one run directory")
    _check_unique(runs)
    datasets = sorted({run.dataset for run in runs}, key=_dataset_order)
    sections = [poc_summary(poc_dirs)] if poc_dirs else []
    slf_runs = [run for run in runs if run.mode == "slf"]
    if slf_runs:
        groups = [(_dataset_title(d), lambda run, d=d: run.dataset == d) for d in datasets]
        sections.append(_table("Table 2: standard linear fine-tuning (SLF)", groups, slf_runs))
    for dataset in datasets:
        dataset_runs = [run for run in runs if run.dataset == dataset]
        protocols = sorted({run.protocol for run in dataset_runs}, key=_protocol_order)
        if protocols != ["SLF"]:
            groups = [(p, lambda run, p=p: run.protocol == p) for p in protocols]
            title = f"Table 3: {_dataset_title(dataset)}, " + " vs ".join(protocols)
            sections.append(_table(title, groups, dataset_runs))
    return "\n".join(sections)
