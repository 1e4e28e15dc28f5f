"""Markdown tables from run directories' metrics.json, in the layout of the paper's Tables 2 and 3.

metrics.json schema (written by the evaluation command):
    {"method": str, "dataset": str, "mode": "slf" | "alf", "seed": int,
     "bn": "clean" | "adv" | null,
     "metrics": {"sa": %, "ra": %, "aa": % | null, "sa_n": int, "ra_n": int, "aa_n": int, ...},
     "settings": {...}, "checkpoint": {"path": str, "sha256": str}}
Only the keys the tables need are checked; "settings" and "checkpoint" are provenance.
"""
import json
import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

METRICS = ("sa", "ra", "aa")
METRIC_TITLES = {"sa": "SA (%)", "ra": "RA (%)", "aa": "AA (%)"}
MODES = ("slf", "alf")
BN_BRANCHES = ("clean", "adv")
DATASET_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "stl10": "STL-10"}
METRICS_FILE = "metrics.json"
NOT_AVAILABLE = "n/a"


def _number(value: Optional[float]) -> str:
    return NOT_AVAILABLE if value is None else f"{value:.2f}"


def format_row(name: str, metrics: Mapping[str, Optional[float]]) -> str:
    """One Table-2 style markdown row `| name | SA | RA | AA |` (percent, 2 decimals; None -> n/a)."""
    return "| " + " | ".join([name] + [_number(metrics.get(key)) for key in METRICS]) + " |"


@dataclass(frozen=True)
class RunRecord:
    """The parts of one run's metrics.json that the tables use."""

    path: Path
    method: str
    dataset: str
    mode: str
    seed: int
    bn: Optional[str]
    metrics: Mapping[str, Optional[float]]

    @property
    def label(self) -> str:
        """Row label: the method, plus the evaluated BN branch when there is one."""
        return self.method if self.bn is None else f"{self.method} ({self.bn} BN)"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require(condition: bool, path: Path, message: str) -> None:
    if not condition:
        raise ValueError(f"{path}: {message}")


def load_run(run_dir: Union[str, os.PathLike]) -> RunRecord:
    """Read and check `run_dir/metrics.json`; FileNotFoundError / ValueError name the file."""
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
    _require(record.get("mode") in MODES, path, f"'mode' must be one of {MODES}, got {record.get('mode')!r}")
    seed = record.get("seed")
    _require(isinstance(seed, int) and not isinstance(seed, bool), path, "'seed' must be an int")
    _require(record.get("bn") in BN_BRANCHES + (None,), path, f"'bn' must be one of {BN_BRANCHES} or null")
    metrics = record.get("metrics")
    _require(isinstance(metrics, dict), path, "'metrics' must be an object")
    for key in ("sa", "ra"):
        _require(_is_number(metrics.get(key)), path, f"metrics.{key} must be a finite number")
    aa = metrics.get("aa")
    _require(aa is None or _is_number(aa), path, "metrics.aa must be a finite number or null")
    return RunRecord(
        path=path,
        method=record["method"],
        dataset=record["dataset"].lower(),
        mode=record["mode"],
        seed=seed,
        bn=record.get("bn"),
        metrics=metrics,
    )


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (ddof=1); the std of a single value is 0."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _cell(runs: Iterable[RunRecord], metric: str) -> str:
    values = [run.metrics[metric] for run in runs if run.metrics.get(metric) is not None]
    if not values:
        return NOT_AVAILABLE
    mean, std = mean_std(values)
    return f"{mean:.2f} ± {std:.2f} (n={len(values)})"


def _sample_counts(runs: Sequence[RunRecord]) -> str:
    """Footnote listing the distinct numbers of test images behind each metric."""
    parts = []
    for metric in METRICS:
        counts = sorted({run.metrics.get(f"{metric}_n") for run in runs} - {None, 0})
        parts.append(f"{metric.upper()} " + ("/".join(str(count) for count in counts) or NOT_AVAILABLE))
    return "Test images per run: " + "; ".join(parts) + "."


def _table(
    title: str,
    groups: Sequence[Tuple[str, Callable[[RunRecord], bool]]],
    runs: Sequence[RunRecord],
) -> str:
    """Rows = run labels (first-seen order); per group title, SA/RA/AA cells over the group's runs."""
    labels = list(dict.fromkeys(run.label for run in runs))
    header = ["Method"] + [f"{group} {METRIC_TITLES[metric]}" for group, _ in groups for metric in METRICS]
    lines = [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label in labels:
        cells = [label]
        for _, belongs in groups:
            group_runs = [run for run in runs if run.label == label and belongs(run)]
            cells += [_cell(group_runs, metric) for metric in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    legend = "Mean ± sample std (ddof=1) over seeds; n = seeds in the cell. "
    lines += ["", legend + _sample_counts(runs), ""]
    return "\n".join(lines)


def _check_unique(runs: Sequence[RunRecord]) -> None:
    seen: Dict[tuple, Path] = {}
    for run in runs:
        key = (run.label, run.dataset, run.mode, run.seed)
        if key in seen:
            raise ValueError(f"duplicate run {key}: {seen[key]} and {run.path}")
        seen[key] = run.path


def _dataset_order(dataset: str) -> Tuple[int, str]:
    """Paper order (CIFAR-10, CIFAR-100, STL-10) first, then other datasets by name."""
    known = list(DATASET_TITLES)
    return (known.index(dataset) if dataset in known else len(known), dataset)


def _dataset_title(dataset: str) -> str:
    return DATASET_TITLES.get(dataset, dataset)


def aggregate(run_dirs: Iterable[Union[str, os.PathLike]]) -> str:
    """Markdown summary of the runs in `run_dirs`.

    Table 2: SLF runs; rows = methods, column groups = datasets (SA/RA/AA each).
    Table 3: for each dataset with ALF runs (CIFAR-10 in the paper); rows = methods, column
    groups = SLF and ALF. Each cell is mean ± sample std over seeds with the seed count.
    """
    runs = [load_run(run_dir) for run_dir in run_dirs]
    if not runs:
        raise ValueError("aggregate needs at least one run directory")
    _check_unique(runs)
    datasets = sorted({run.dataset for run in runs}, key=_dataset_order)
    sections = []
    slf_runs = [run for run in runs if run.mode == "slf"]
    if slf_runs:
        groups = [(_dataset_title(d), lambda run, d=d: run.dataset == d) for d in datasets]
        sections.append(_table("Table 2: standard linear fine-tuning (SLF)", groups, slf_runs))
    for dataset in datasets:
        dataset_runs = [run for run in runs if run.dataset == dataset]
        if any(run.mode == "alf" for run in dataset_runs):
            groups = [(mode.upper(), lambda run, mode=mode: run.mode == mode) for mode in MODES]
            sections.append(_table(f"Table 3: {_dataset_title(dataset)}, SLF vs ALF", groups, dataset_runs))
    return "\n".join(sections)
