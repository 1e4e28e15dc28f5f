"""Markdown tables from run directories' metrics.json, in the layout of the paper's Tables 2 and 3.

Each head gets its own tables: the paper's head (Appendix A.3) under the paper's titles, any other
head under titles naming it as a second evaluation. Every table says how its numbers were measured:
the head and the BN-branch rows in its legend, the test images per seed in each column header, the
attacks (PGD settings, AutoAttack version) and how RA counts in its legend. A column whose runs were
measured on different numbers of test images, with different attacks, threat models or head training,
is refused (ValueError naming the setting, both values and the files), as is a cell averaging one
seed or one encoder twice, a Table-1 row averaging seeds of different PoC settings, and a result
given twice.

The files are read by `solo_ncp.eval.results`.
"""
import dataclasses
import hashlib
import math
import os
import statistics
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from solo_ncp.eval.protocol import (
    MODES,
    NCP_SETTINGS,
    PAPER_HEAD,
    POC_ROWS,
    RA_COUNTING,
    STAGE2_METHODS,
    encoder_text,
    nbr_target,
    two_decimals,
)
from solo_ncp.eval.results import (
    K_FILE,
    METRICS_FILE,
    NO_CORRECT_IMAGE,
    NOT_RECORDED,
    POC_FILE,
    POC_METRICS,
    UNMEASURED,
    ReportInputs,
    RunRecord,
    budget_text,
    encoder_sha256,
    read_inputs,
    read_poc,
)
from solo_ncp.run_files import BEST


METRICS = ("sa", "ra", "aa")
METRIC_TITLES = {"sa": "SA (%)", "ra": "RA (%)", "aa": "AA (%)"}
DATASET_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "stl10": "STL-10"}
NOT_AVAILABLE = "n/a"
HEAD_NOTES = {
    "whitened": "whitened head (a linear layer on whitened features): a second evaluation, not the "
                "paper's protocol",
    "standardized": "standardized head (a linear layer on per-dimension standardised features): a "
                    "second evaluation, not the paper's protocol",
    "paper": "the paper's head (Appendix A.3: a linear layer on the raw features, SGD)",
}
BRANCH_LEGEND = ("Rows: `(adv BN)` is a dual-BN encoder evaluated through its adversarial BN, the "
                 "row fixed in advance for comparison with the paper; `(clean BN) †` the same "
                 "encoder through its clean BN, a second row; a row without a branch is a one-BN "
                 "encoder. ")
BEST_LEGEND = (f" `[{BEST}]`: the stage-2 epoch of the best PGD-20 accuracy on training images held "
               "out of training (`checkpoint.save_best`); other rows: the last epoch.")


def _number(value: Optional[float]) -> str:
    return NOT_AVAILABLE if value is None else f"{value:.2f}"


def text_cell(text: str) -> str:
    """`text` (a row label: eval's --method, or a checkpoint's method) as one markdown table cell: `|`
    escaped, line breaks and other control characters as spaces, so no label adds a column or a line."""
    return "".join(" " if unicodedata.category(char) == "Cc" else char for char in text).replace("|", "\\|")


def format_row(name: str, metrics: Mapping[str, Optional[float]]) -> str:
    """One Table-2 style markdown row `| name | SA | RA | AA |` (percent, 2 decimals; None -> n/a)."""
    return "| " + " | ".join([text_cell(name)] + [_number(metrics.get(key)) for key in METRICS]) + " |"


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
    return f"{two_decimals(mean)}{spread} (n={len(values)})"


def _counts(runs: Iterable[RunRecord], metric: str) -> List[int]:
    """Distinct numbers of test images behind `metric` over the runs, 0 (not run) left out."""
    return sorted({run.metrics.get(f"{metric}_n") for run in runs} - {None, 0})


def _files(runs: Sequence[RunRecord]) -> str:
    """The metrics.json files behind `runs`, for an error message."""
    return ", ".join(sorted({str(run.path) for run in runs}))


def _column_images(group: str, metric: str, runs: Sequence[RunRecord]) -> str:
    """The test images per seed behind column (`group`, `metric`): "[n=10000]", or "[not run]";
    ValueError naming the files when its runs differ in that number or in the attack."""
    counts = _counts(runs, metric)
    if len(counts) > 1:
        raise ValueError(f"column {group} {metric.upper()} mixes runs on {' and '.join(map(str, counts))} "
                         f"test images ({_files(runs)}): evaluate every run on the same test images "
                         f"(`solo-ncp eval --test-n` / `--aa-n`)")
    if metric in ("ra", "aa"):
        used = sorted({run.attacks[metric] for run in runs if run.metrics.get(metric) is not None})
        if len(used) > 1:
            raise ValueError(f"column {group} {metric.upper()} mixes attacks ({'; '.join(used)}) in "
                             f"{_files(runs)}: evaluate every run with the same attack settings")
    return f"[n={counts[0]}]" if counts else "[not run]"


def _metric_title(group: str, metric: str, runs: Sequence[RunRecord]) -> str:
    """Column title: group, metric and the test images per seed behind it."""
    return f"{group} {METRIC_TITLES[metric]} {_column_images(group, metric, runs)}"


Columns = Sequence[Tuple[str, Sequence[RunRecord]]]
"""A table's columns: (title, its runs)."""


def _per_column(name: str, columns: Columns, texts: Callable[[Sequence[RunRecord]], Iterable[str]],
                none: str) -> str:
    """`<name>: <text>.` where every column's runs have one text (`texts(runs)`), else each text after
    the columns that have it, `<name>: CIFAR-10, CIFAR-100: <text>; STL-10: <other>.`; `none` where
    no column has one."""
    titles: Dict[str, List[str]] = {}
    for title, runs in columns:
        for text in dict.fromkeys(texts(runs)):
            titles.setdefault(text, []).append(title)
    if len(titles) <= 1:
        return f"{name}: {next(iter(titles), none)}."
    return f"{name}: " + "; ".join(f"{', '.join(group)}: {text}" for text, group in titles.items()) + "."


def _attack_legend(columns: Columns) -> str:
    """How RA and AA were measured (per column where the columns differ) and counted."""
    parts = [_per_column(name, columns, lambda runs, metric=metric: sorted(
        {run.attacks[metric] for run in runs if run.metrics.get(metric) is not None}), "not run")
        for metric, name in (("ra", "RA"), ("aa", "AA"))]
    ra = " / ".join(sorted({_ra_attack(run.settings) for _, runs in columns for run in runs}))
    return " ".join(parts) + f" Counting: {RA_COUNTING.format(ra=ra)}."


def _object(value: object) -> Mapping:
    """`value` where it is a JSON object, else {} (a key an older file lacks)."""
    return value if isinstance(value, dict) else {}


def _ra_attack(settings: Mapping) -> str:
    """"PGD-20": the attack behind RA with the steps metrics.json's `settings` recorded."""
    steps = _object(settings.get("ra")).get("steps")
    return f"PGD-{steps}" if steps is not None else f"PGD (steps {NOT_RECORDED})"


def _threat_model(ra: Mapping) -> str:
    """"L-inf eps 8/255" or "L2 eps 0.5" of metrics.json's settings.ra."""
    try:
        return budget_text(ra, "eps")
    except (KeyError, TypeError, ValueError):
        return NOT_RECORDED


def _head_training(settings: Mapping) -> Dict[str, object]:
    """How a result's head was trained, by setting: the training images, feature caching and
    settings.fine_tune but its seed (the result's seed, which differs between seeds) and, with
    cached features (unaugmented images), the crop padding it never used."""
    fine_tune = _object(settings.get("fine_tune"))
    unused = ("seed", "crop_padding") if settings.get("cache_features") is True else ("seed",)
    return {"training images (train_n)": settings.get("train_n", NOT_RECORDED),
            "cache_features": settings.get("cache_features", NOT_RECORDED),
            **{f"fine_tune.{key}": value for key, value in fine_tune.items() if key not in unused}}


def _column_settings(settings: Mapping) -> Dict[str, object]:
    """What the runs of one column share beyond the dataset, mode, loss and head that make it (its
    test images and attacks: `_column_images`), from metrics.json's `settings`: the threat model and
    the head's training."""
    return {"threat model": _threat_model(_object(settings.get("ra"))), **_head_training(settings)}


def _refuse_mixed(what: str, entries: Sequence[Tuple[Path, Mapping[str, object]]], fix: str) -> None:
    """ValueError when `entries` ((file, {setting: value}), the results averaged together) differ
    in a setting: it names `what`, the setting, both values with their files, and `fix`."""
    for (first_file, first), (file, settings) in zip(entries, entries[1:]):
        for name in dict.fromkeys([*first, *settings]):
            if first.get(name, NOT_RECORDED) != settings.get(name, NOT_RECORDED):
                raise ValueError(f"{what} mixes {name} {first.get(name, NOT_RECORDED)} ({first_file}) and "
                                 f"{settings.get(name, NOT_RECORDED)} ({file}): {fix}")


COLUMN_FIX = ("a column averages runs of one protocol: evaluate every run alike (`solo-ncp eval`'s --norm, "
              "--eps, --train-n, --epochs, --lr, --batch-size, --cache-features), or report them in separate "
              "`solo-ncp report` calls")


def head_training_text(settings: Mapping) -> str:
    """"25 epochs, SGD lr 0.1, momentum 0.9, weight decay 0.0002, x0.1 at epochs 15, 20, batch 128,
    images padded 4 px, cropped, flipped" (an adversarial fine-tuning adds its PGD): how metrics.json's
    settings say the head was trained, naming only the lr milestones reached (NOT_RECORDED where it
    is not recorded)."""
    fine_tune = _object(settings.get("fine_tune"))
    epochs, lr = fine_tune.get("epochs"), fine_tune.get("lr")
    if not isinstance(epochs, int) or lr is None:
        return f"training {NOT_RECORDED}"
    reached = [m for m in fine_tune.get("milestones") or [] if isinstance(m, int) and m < epochs]
    decay = f", x{fine_tune.get('gamma')} at epochs {', '.join(map(str, reached))}" if reached else ", constant lr"
    text = (f"{epochs} epochs, SGD lr {lr}, momentum {fine_tune.get('momentum', NOT_RECORDED)}, weight decay "
            f"{fine_tune.get('weight_decay', NOT_RECORDED)}{decay}, batch {fine_tune.get('batch_size', NOT_RECORDED)}, "
            f"{_head_images_text(settings)}")
    if fine_tune.get("mode", "slf") == "slf":
        return text
    try:
        attack = f"PGD-{fine_tune['steps']}, {budget_text(fine_tune, 'eps')}, step {budget_text(fine_tune, 'alpha')}"
    except (KeyError, TypeError, ValueError):
        attack = f"PGD {NOT_RECORDED}"
    return f"{text}, on {attack} training examples"


def _head_images_text(settings: Mapping) -> str:
    """"images padded 4 px, cropped, flipped" (eval's pad_crop_flip at its recorded crop_padding) or
    "unaugmented images (cached features)": what the head of metrics.json's settings trained on."""
    if settings.get("cache_features") is True:
        return "unaugmented images (cached features)"
    padding = _object(settings.get("fine_tune")).get("crop_padding")
    if not isinstance(padding, int) or isinstance(padding, bool):
        return f"image augmentation {NOT_RECORDED}"
    return f"images padded {padding} px, cropped, flipped" if padding else "images flipped (no padding)"


def _head_training_legend(columns: Columns) -> str:
    """"Head training: 25 epochs, ..." of a table's columns, one text when they share it, else each
    text after the columns trained so (a column shares one: `_check_column`)."""
    return _per_column("Head training", columns, lambda runs: [head_training_text(run.settings) for run in runs],
                       NOT_RECORDED) + " "


def _check_column(group: str, runs: Sequence[RunRecord]) -> None:
    """ValueError naming the setting when the runs of column `group` differ in `_column_settings`."""
    _refuse_mixed(f"column {group}", [(run.path, _column_settings(run.settings)) for run in runs], COLUMN_FIX)


def _check_seeds(cell: str, runs: Sequence[RunRecord]) -> None:
    """ValueError naming both folders when two runs of one cell (`cell`: its row and column) are
    one seed, or evaluate one encoder (checkpoint.sha256): a cell averages training seeds."""
    seeds: Dict[int, RunRecord] = {}
    for run in runs:
        other = seeds.setdefault(run.seed, run)
        if other is not run:
            raise ValueError(f"duplicate run: {other.path.parent} and {run.path.parent} are both seed "
                             f"{run.seed} of {cell}: pass one of them, or give the other its own row "
                             "(`solo-ncp eval --method LABEL`)")
    _refuse_one_encoder_twice(cell, [(run.path.parent, run.seed, run.checkpoint_sha256) for run in runs])


def _refuse_one_encoder_twice(cell: str, results: Sequence[Tuple[Path, object, Optional[str]]]) -> None:
    """ValueError naming both folders when two `results` (folder, seed, `encoder_sha256`) averaged
    in `cell` are of one encoder: the same checkpoint, or an export and its checkpoint."""
    encoders: Dict[str, Tuple[Path, object]] = {}
    for folder, seed, sha in results:
        other = encoders.setdefault(sha, (folder, seed)) if sha else (folder, seed)
        if other[0] != folder:
            raise ValueError(f"{other[0]} (seed {other[1]}) and {folder} (seed {seed}) evaluate one encoder "
                             f"(checkpoint sha256 {sha[:12]}...) in {cell}: a cell averages training seeds, and one "
                             "checkpoint is one seed: pass the evaluations of encoders trained with different "
                             "seeds (`solo-ncp reproduce --seeds 0,1,2`)")


def _table(
    title: str,
    groups: Sequence[Tuple[str, Callable[[RunRecord], bool]]],
    runs: Sequence[RunRecord],
) -> str:
    """Rows = run labels (methods in first-seen order, a dual-BN encoder's adv row before its clean
    one); per group title, SA/RA/AA cells over the group's runs. All runs share one head."""
    heads = sorted({run.head for run in runs})
    if len(heads) > 1:
        raise ValueError(f"{title}: its runs mix heads ({', '.join(heads)}) in {_files(runs)}: each head "
                         "needs its own table")
    (head,) = heads
    methods = list(dict.fromkeys(run.method for run in runs))
    labels = sorted(dict.fromkeys(run.label for run in runs),
                    key=lambda label: next((methods.index(run.method), run.bn == "clean")
                                           for run in runs if run.label == label))
    header = ["Method"]
    columns = [(group, [run for run in runs if belongs(run)]) for group, belongs in groups]
    for group, column in columns:
        _check_column(group, column)
        header += [_metric_title(group, metric, column) for metric in METRICS]
    lines = [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label in labels:
        cells = [text_cell(label)]
        for group, belongs in groups:
            group_runs = [run for run in runs if run.label == label and belongs(run)]
            _check_seeds(f"row {label}, column {group}", group_runs)
            cells += [_cell(group_runs, metric) for metric in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    legend = (f"Head: {HEAD_NOTES[head]}. {_head_training_legend(columns)}{BRANCH_LEGEND}Cells: mean ± sample std (ddof=1) over "
              "seeds, n = seeds in the cell (one seed: its value); [n=...] in a column header: "
              "test images per seed. " + _attack_legend(columns)
              + (BEST_LEGEND if any(run.best for run in runs) else ""))
    lines += ["", legend, ""]
    return "\n".join(lines)


def _dataset_order(dataset: str) -> Tuple[int, str]:
    """Paper order (CIFAR-10, CIFAR-100, STL-10) first, then other datasets by name."""
    known = list(DATASET_TITLES)
    return (known.index(dataset) if dataset in known else len(known), dataset)


def dataset_title(dataset: str) -> str:
    return DATASET_TITLES.get(dataset, dataset)


def _protocol_order(protocol: str) -> Tuple[int, str]:
    """SLF, then ALF, then AFF (losses by name within a mode)."""
    return (MODES.index(protocol.split(" ")[0].lower()), protocol)


UNRECORDED_HEAD = "not recorded"
"""The SLF head of a poc.json written before poc recorded it (poc's default then: whitened)."""


def head_tag(head: str) -> str:
    """What a table title adds for SLF head `head`: nothing for the paper's (its protocol)."""
    if head == PAPER_HEAD:
        return ""
    if head == UNRECORDED_HEAD:
        return " (SLF head not recorded: a poc.json of before it was; not known to be the paper's protocol)"
    return f" ({head} head: a second evaluation, not the paper's protocol)"


PocRecords = List[Tuple[Path, dict]]
"""The poc.json files of one Table-1 row block and their records."""
SILHOUETTE_K = "each seed's silhouette K"
"""The K of PoC seeds each run at the best K of its encoder's and seed's select-k (`reproduce`)."""
POC_FIX = ("a row averages seeds of one protocol: run `solo-ncp poc` alike for every seed (--k, --steps, "
           "--alpha, --test-n, --train-n, --epochs, --lr, --bn; a K read from each seed's select-k counts "
           "as one when its select-k folder is given to report too), or report them in separate calls")


def poc_summary(poc_dirs: Iterable[Union[str, os.PathLike]], selections: Sequence[Dict] = ()) -> str:
    """Table 1 over `solo-ncp poc` folders (poc.json): one table per SLF head (the paper's first,
    an unrecorded one last), one block per (dataset, eps) in it; rows random noise and the push
    toward the n-th nearest cluster; mean ± sample std over the folders (seeds). `selections`:
    the select-k results (k.json) given beside them, which tell a silhouette K (`_poc_settings`)."""
    heads: Dict[str, Dict[Tuple[str, float, int], PocRecords]] = {}
    for poc_dir in poc_dirs:
        key, record = read_poc(poc_dir)
        method = record["settings"].get("method")
        if method in STAGE2_METHODS:
            raise ValueError(f"{poc_dir} is a poc of a stage-2 ({method}) encoder, and Table 1 is the proof of "
                             "concept on the stage-1 encoder (the paper's SimCLR): pass the poc of the stage-1 "
                             "checkpoint its training started from")
        head = record["settings"].get("head") or UNRECORDED_HEAD
        heads.setdefault(head, {}).setdefault(key, []).append((Path(poc_dir) / POC_FILE, record))
    order = sorted(heads, key=lambda head: (head != PAPER_HEAD, head == UNRECORDED_HEAD, head))
    return "\n".join(_poc_table(heads[head], head, selections) for head in order)


def _poc_k(settings: Mapping, selections: Sequence[Dict]) -> object:
    """A poc's K as its protocol names it: SILHOUETTE_K when it is the best K of a select-k of the
    same encoder and seed among `selections`, else the K it was given. Same encoder: the same
    checkpoint sha256, or, for a k.json of before select-k recorded one (fec12b0), the same
    checkpoint path as both commands were given it."""
    checkpoint = _object(settings.get("checkpoint"))
    sha, path = checkpoint.get("sha256"), checkpoint.get("path")

    def same_encoder(selection: Dict) -> bool:
        if selection["ckpt_sha256"] is not None:
            return selection["ckpt_sha256"] == sha
        return None not in (path, selection["ckpt"]) and os.path.normpath(path) == os.path.normpath(selection["ckpt"])

    silhouette = sha is not None and any(same_encoder(s) and (s["seed"], s["k"]) == (settings.get("seed"), settings.get("k"))
                                         for s in selections)
    return SILHOUETTE_K if silhouette else settings.get("k", NOT_RECORDED)


def _poc_settings(record: Mapping, selections: Sequence[Dict]) -> Dict[str, object]:
    """What the seeds of one Table-1 row block share beyond its head, dataset, eps and n."""
    settings = record["settings"]
    return {"K": _poc_k(settings, selections), "PGD steps": settings.get("steps", NOT_RECORDED),
            "step size alpha": settings.get("alpha", NOT_RECORDED),
            "test images": record.get("n_total", NOT_RECORDED), "encoder": encoder_text(settings),
            "clustered images (clustered_n)": settings.get("clustered_n", NOT_RECORDED),
            **_head_training(settings)}


def _check_poc_block(block: str, records: PocRecords, selections: Sequence[Dict]) -> None:
    """ValueError naming the setting, or both folders of one seed, when the seeds of Table-1 row
    block `block` are not seeds of one protocol."""
    _refuse_mixed(f"Table 1 row {block}",
                  [(path, _poc_settings(record, selections)) for path, record in records], POC_FIX)
    seeds: Dict[object, Path] = {}
    for path, record in records:
        other = seeds.setdefault(record["settings"].get("seed"), path)
        if other is not path:
            raise ValueError(f"duplicate poc: {other.parent} and {path.parent} are both seed "
                             f"{record['settings'].get('seed')} of Table 1 row {block}: pass one of them")
    _refuse_one_encoder_twice(f"Table 1 row {block}", [
        (path.parent, record["settings"].get("seed"), encoder_sha256(_object(record["settings"].get("checkpoint"))))
        for path, record in records])


def _in_255ths(value: object) -> str:
    """A recorded L-inf size as "2/255" (NOT_RECORDED as it is)."""
    return f"{value * 255:.3g}/255" if isinstance(value, (int, float)) else str(value)


def _poc_legend(block: str, records: Sequence[Mapping], selections: Sequence[Dict]) -> str:
    """The protocol of Table-1 row block `block` (its poc.json `records`, in seed order): its seeds,
    their K (one, or each seed's silhouette K), PGD steps and step size, test images, the encoder
    and its BN branch, how the head trained, and the seeds left out of its means (`_measured`)."""
    settings = _poc_settings(records[0], selections)
    seeds = ", ".join(map(_seed_text, records))
    if settings["K"] == SILHOUETTE_K:
        k = f"K {', '.join(str(record['settings'].get('k', NOT_RECORDED)) for record in records)} ({SILHOUETTE_K})"
    else:
        k = f"K {settings['K']}"
    unmeasured = [_seed_text(record) for record in records if not _measured(record)]
    left_out = (f" Left out of its means: seed {', '.join(unmeasured)} ({NO_CORRECT_IMAGE}: "
                "nothing measured)." if unmeasured else "")
    return (f"{block}: seeds {seeds}; {k}; δ_nbr by PGD-{settings['PGD steps']} with step "
            f"{_in_255ths(settings['step size alpha'])}; {settings['test images']} test images per seed; "
            f"{settings['encoder']}; head: {head_training_text(records[0]['settings'])}.{left_out}")


def _seed_text(record: Mapping) -> str:
    """A poc record's seed as a legend names it."""
    return str(record["settings"].get("seed", NOT_RECORDED))


def _measured(record: Mapping) -> bool:
    """Whether a poc record (one seed) measured Table 1's rates: some test image was classified
    correctly (with none, poc.json's rates are null, or 0.0 in files of older solo-ncp)."""
    return record["n_correct"] > 0


def _poc_cell(records: Sequence[Mapping], row: str, metric: str) -> str:
    """A Table-1 cell: `_mean_cell` of `metric` of `row` over the seeds that measured it
    (`_measured`); UNMEASURED where none did."""
    values = [record[row][metric] for record in records if _measured(record)]
    return _mean_cell(values) if values else UNMEASURED


def _seed_order(record: Mapping) -> Tuple[bool, int]:
    """Sort key of a poc record by its seed (an unrecorded seed last)."""
    seed = record["settings"].get("seed")
    return (not isinstance(seed, int), seed if isinstance(seed, int) else 0)


def _correct_images(records: Sequence[Mapping]) -> str:
    """"824, 805, 799 of 1000": each seed's correctly classified test images (`records` in seed
    order), of the test images each seed was given (one number: `_check_poc_block`)."""
    return f"{', '.join(str(r['n_correct']) for r in records)} of {records[0].get('n_total', NOT_RECORDED)}"


def _poc_table(groups: Mapping[Tuple[str, float, int], PocRecords], head: str,
               selections: Sequence[Dict]) -> str:
    """Table 1 of the poc.json records of one SLF head, one row block per (dataset, eps, n): its
    random-noise row and its δ_nbr row, measured in the same poc runs."""
    lines = [f"## Table 1{head_tag(head)}: proof of concept (stage-1 encoder with an SLF head)", "",
             "| dataset | eps | δ_nbr toward | perturbation | Prob. Dec. (%) | Attk. Succ. (%) "
             "| correct test images per seed |",
             "|---|---|---|---|---|---|---|"]
    legends = []
    for (dataset, eps, n), entries in sorted(groups.items(), key=lambda item: (_dataset_order(item[0][0]),
                                                                                 item[0][1:])):
        target = nbr_target(n)
        block = f"{dataset_title(dataset)} {eps * 255:.0f}/255 δ_nbr toward the {target}"
        _check_poc_block(block, entries, selections)
        records = sorted((record for _, record in entries), key=_seed_order)
        legends.append(_poc_legend(block, records, selections))
        correct = _correct_images(records)
        for row, label in POC_ROWS.items():
            cells = [_poc_cell(records, row, metric) for metric in POC_METRICS]
            lines.append(f"| {dataset_title(dataset)} | {eps * 255:.0f}/255 | {target} | {label} | "
                         f"{cells[0]} | {cells[1]} | {correct} |")
    lines += ["", "Mean ± sample std (ddof=1) over seeds, n = seeds in the cell; each seed's numbers are "
              "over its correctly classified test images (last column: their number per seed, in seed "
              "order, of the test images each seed was given). A block's random-noise row is measured in "
              "the same poc runs as its δ_nbr row. Protocol per row: " + " ".join(legends), ""]
    return "\n".join(lines)


def selection_encoder(selection: Mapping) -> str:
    """The checkpoint a k.json's sweep clustered the features of: its path as select-k was given it,
    else the start of its sha256, else NOT_RECORDED."""
    if selection.get("ckpt"):
        return selection["ckpt"]
    return f"sha256 {selection['ckpt_sha256'][:12]}" if selection.get("ckpt_sha256") else NOT_RECORDED


def figure2_table(selections: Sequence[Dict]) -> str:
    """Markdown: the best K and its silhouette per (dataset, seed), over how many images, of which
    encoder (two sweeps of one dataset and seed are two encoders' or two sweeps')."""
    lines = ["## Fig. 2: silhouette score against K", "",
             "| dataset | seed | K swept | best K | silhouette | training images | encoder |",
             "|---|---|---|---|---|---|---|"]
    for s in selections:
        ks = sorted(s["scores"])
        lines.append(f"| {s['dataset'] or '?'} | {s['seed'] if s['seed'] is not None else '?'} | "
                     f"{ks[0]}..{ks[-1]} ({len(ks)}) | {s['k']} | {s['scores'][s['k']]:.4f} | "
                     f"{s['n'] if s['n'] is not None else '?'} | {text_cell(selection_encoder(s))} |")
    return "\n".join(lines + [""])


RESULT_FILES = (METRICS_FILE, POC_FILE, K_FILE)
"""The result files of a report folder, in the order `read_inputs` takes the first present."""


def read_report_inputs(run_dirs: Iterable[Union[str, os.PathLike]]) -> ReportInputs:
    """`read_inputs(run_dirs)`, after which a folder given twice, or two holding byte-identical
    results, is a ValueError naming both (one result would count as two seeds)."""
    folders = [Path(folder) for folder in run_dirs]
    inputs = read_inputs(folders)
    files: Dict[Path, Path] = {}
    contents: Dict[str, Path] = {}
    for folder in folders:
        result = next(folder / name for name in RESULT_FILES if (folder / name).exists())
        other = files.setdefault(result.resolve(), folder)
        if other is not folder:
            raise ValueError(f"{folder} is {other} given again: pass each result folder once (its result "
                             "would count as a second seed)")
        other = contents.setdefault(hashlib.sha256(result.read_bytes()).hexdigest(), folder)
        if other is not folder:
            raise ValueError(f"{other / result.name} and {result} are byte-identical: one result given "
                             "twice would count as two seeds: pass one of them (a second seed is a run "
                             "of its own, with another --seed)")
    return inputs


def aggregate(run_dirs: Iterable[Union[str, os.PathLike]]) -> str:
    """`tables` of `read_report_inputs(run_dirs)`."""
    return tables(read_report_inputs(run_dirs))


def tables(inputs: ReportInputs) -> str:
    """Markdown summary of the inputs' runs (each BN branch of a run is its own row).

    Table 2: SLF runs; rows = methods, column groups = datasets (SA/RA/AA each).
    Table 3: for each dataset with ALF or AFF runs (CIFAR-10 in the paper); rows = methods, column
    groups = SLF and each adversarial fine-tuning present (e.g. "ALF (CE)", "AFF (TRADES)"). Each
    cell is the mean ± sample std over seeds with the seed count.
    Table 1: folders holding a poc.json instead of a metrics.json (`poc_summary`).
    Tables 4, 5 and Fig. 3: NCP encoders whose recorded settings vary (`ABLATIONS`).
    Fig. 2: select-k folders (k.json): the best K per dataset and seed.
    """
    runs = inputs.runs
    if not runs and not inputs.poc_dirs and not inputs.selections:
        raise ValueError("aggregate needs at least one run directory")
    sections = [poc_summary(inputs.poc_dirs, inputs.selections)] if inputs.poc_dirs else []
    if inputs.selections:
        sections.append(figure2_table(inputs.selections))
    for head in sorted({run.head for run in runs}, key=lambda head: head != PAPER_HEAD):
        sections += _head_tables([run for run in runs if run.head == head], head)
    return "\n".join(sections)


@dataclass(frozen=True)
class Ablation:
    """One of the paper's ablations of NCP: the setting it varies, the others it holds at the
    paper's values, its title and how a row names its value."""

    setting: str
    fixed: Mapping[str, object]
    title: str
    row: Callable[[RunRecord], str]


def _strategy_row(run: RunRecord) -> str:
    strategy = run.encoder["strategy"]
    return f"strategy ({strategy})" + (" (ours)" if strategy == "iii" else "")


def _rank_row(run: RunRecord) -> str:
    rank = run.encoder["neighbor_rank"]
    return f"n = {rank}" + (" (NCP-ACL)" if rank == 2 else "")


def _k_row(run: RunRecord) -> str:
    return f"K = {run.encoder['k']}" + (" (silhouette)" if run.encoder.get("k_source") == "k_file" else "")


ABLATIONS = (
    Ablation("strategy", {"neighbor_rank": 2, "k_source": "k_file"},
             "Table 4: perturbation strategies (Appendix B.1)", _strategy_row),
    Ablation("neighbor_rank", {"strategy": "iii", "k_source": "k_file"},
             "Table 5: the n-th nearest cluster targeted (Appendix B.2)", _rank_row),
    Ablation("k", {"strategy": "iii", "neighbor_rank": 2},
             "Fig. 3: accuracy against the number of clusters K", _k_row),
)
"""Tables 4 and 5 and Fig. 3, read from what each encoder's checkpoint recorded (not its label)."""


def _at_ours(encoder: Mapping) -> bool:
    """Whether an NCP encoder's other stage-2 settings are `NCP_SETTINGS` (each one it does not record,
    an older checkpoint's, is taken as being so)."""
    def same(value, ours) -> bool:
        if isinstance(ours, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
            return math.isclose(value, ours, rel_tol=1e-9)
        return value == ours

    return all(encoder.get(key) is None or same(encoder[key], ours) for key, ours in NCP_SETTINGS.items())


def ablation_runs(runs: Sequence[RunRecord], ablation: Ablation) -> List[RunRecord]:
    """The NCP runs of `ablation` (its fixed settings at the paper's values, the other stage-2
    settings at ours: `_at_ours`), each renamed to its row (e.g. "strategy (i)"), sorted by the varied
    setting; [] when no seed of a dataset has two values of it (no ablation was run: each seed's own
    silhouette K is not a K sweep)."""
    chosen = [run for run in runs if run.encoder.get("strategy") is not None and _at_ours(run.encoder)
              and all(run.encoder.get(key) == value for key, value in ablation.fixed.items())]
    values_per_seed: Dict[tuple, set] = {}
    for run in chosen:
        values_per_seed.setdefault((run.dataset, run.seed), set()).add(run.encoder[ablation.setting])
    if all(len(values) < 2 for values in values_per_seed.values()):
        return []
    chosen.sort(key=lambda run: (run.encoder[ablation.setting], run.encoder.get("k_source") != "k_file"))
    return [dataclasses.replace(run, method=ablation.row(run)) for run in chosen]


def _head_tables(runs: Sequence[RunRecord], head: str) -> List[str]:
    """Tables 2 and 3 of the runs of one head; titled as the paper's for the paper's head."""
    tag = head_tag(head)
    datasets = sorted({run.dataset for run in runs}, key=_dataset_order)
    tables = []
    slf_runs = [run for run in runs if run.mode == "slf"]
    groups = [(dataset_title(d), lambda run, d=d: run.dataset == d) for d in datasets]
    if slf_runs:
        tables.append(_table(f"Table 2{tag}: standard linear fine-tuning (SLF)", groups, slf_runs))
    for ablation in ABLATIONS:
        rows = ablation_runs(slf_runs, ablation)
        if rows:
            title = ablation.title.replace(":", f"{tag}, SLF:", 1)
            tables.append(_table(title, groups, rows))
    for dataset in datasets:
        dataset_runs = [run for run in runs if run.dataset == dataset]
        protocols = sorted({run.protocol for run in dataset_runs}, key=_protocol_order)
        if protocols != ["SLF"]:
            groups = [(p, lambda run, p=p: run.protocol == p) for p in protocols]
            title = f"Table 3{tag}: {dataset_title(dataset)}, " + " vs ".join(protocols)
            tables.append(_table(title, groups, dataset_runs))
    return tables
