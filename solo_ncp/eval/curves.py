"""Per-epoch training curves of a run folder (`solo-ncp pretrain` / `solo-ncp train`) from its
Lightning CSV logs, `<run>/logs/version_<attempt>/metrics.csv`, one version per attempt: the
loss terms, the online classifier's accuracies (the robust monitor's clean / PGD-20 ones among
them), the cluster objective and the centroid cosines, one panel each.

A column logged per step and per epoch is read from its `<name>_epoch` column (shown as `<name>`);
`<name>_step` columns are left out; a column logged per epoch only has no suffix. Epochs are
counted from 1 on the plots (the CSV counts from 0)."""
import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

from solo_ncp.eval.figures import new_figure, save_figure
from solo_ncp.io import wrong_kind

METRICS_CSV = "metrics.csv"
VERSION = re.compile(r"version_(\d+)$")

Series = Dict[int, float]
"""{epoch (0-based, as the CSV counts): value}."""


@dataclass
class Panel:
    """One subplot: its title, y-axis label and curves {column: (epochs from 1, values)}."""

    title: str
    ylabel: str
    curves: Dict[str, Tuple[List[int], List[float]]]


def _is_loss_term(name: str) -> bool:
    """The method's loss and its terms (`train_loss`, `train_nce_loss`, `train_distill_loss`,
    ...), not the online classifier's cross-entropy, whose scale is another."""
    return name.startswith("train_") and name.endswith("loss") and name != "train_class_loss"


def _is_accuracy(name: str) -> bool:
    """Top-1 accuracies in percent: the online classifier's on the training batches and the
    validation set, k-NN's, and the robust monitor's clean and PGD accuracies."""
    return name in ("train_acc1", "val_acc1", "val_knn_acc1") or name.startswith("val_robust/")


PANELS: Sequence[Tuple[str, str, Callable[[str], bool]]] = (
    ("loss terms", "loss", _is_loss_term),
    ("online accuracy", "top-1 accuracy (%)", _is_accuracy),
    ("cluster objective", "mean cosine to own centroid", lambda name: name == "cluster_objective"),
    ("centroid cosines", "mean cosine", lambda name: name.startswith("train_cos_")),
)
"""(title, y label, which columns) of each panel, in drawing order."""


def metrics_files(run: Path) -> List[Path]:
    """The run's `logs/version_<n>/metrics.csv` files in attempt order (n as a number); ValueError
    naming the folder and what is missing when there are none."""
    run = Path(run)
    problem = wrong_kind(run, "folder")
    if problem:
        raise ValueError(f"{run} {problem}: pass a run folder written by `solo-ncp pretrain` or "
                         "`solo-ncp train`")
    found = [(int(VERSION.match(path.parent.name).group(1)), path)
             for path in run.glob(f"logs/version_*/{METRICS_CSV}") if VERSION.match(path.parent.name)]
    if not found:
        raise ValueError(f"{run} holds no training logs (no logs/version_<attempt>/{METRICS_CSV}): "
                         "pass a run folder written by `solo-ncp pretrain` or `solo-ncp train`")
    return [path for _, path in sorted(found)]


def _column_name(column: str) -> str:
    """The metric a CSV column holds per epoch (`train_loss_epoch` -> `train_loss`); empty for
    per-step columns and for `epoch` / `step` themselves."""
    if column.endswith("_step") or column in ("epoch", "step"):
        return ""
    return column[: -len("_epoch")] if column.endswith("_epoch") else column


def _damaged(path: Path, problem: str) -> ValueError:
    """The error of a metrics.csv that cannot be read: the file, what is wrong with it and the fix."""
    return ValueError(f"{path} {problem}: put back the {METRICS_CSV} the run wrote, or delete {path.parent} "
                      "to plot the run without that attempt")


def _cut(path: Path, problem: str) -> ValueError:
    """The error of a metrics.csv cut short: Lightning 1.x rewrites the whole file at each save (2.x
    when a metric is new), so a process killed meanwhile leaves it empty or cut, and what it had
    logged is lost."""
    return ValueError(f"{path} {problem}: a process killed while writing it can leave it so (Lightning 1.x "
                      "rewrites the whole file at each save, 2.x when a metric is new), and what it had logged "
                      f"is lost: delete {path.parent} to plot the run without that attempt")


def _csv_rows(path: Path) -> Iterator[Tuple[int, Dict[str, str]]]:
    """(line number, {column: value}) of each row of a Lightning CSV log (UTF-8, a leading BOM
    accepted); ValueError naming the file when it is not a file, is empty or ends within its header
    line (`_cut`), is not UTF-8, has a header without the `step` column Lightning always writes (a
    spreadsheet's ';' between fields) or a row with more fields than the header. A kill can cut the
    file anywhere, within a character too: a last line without its line end is left out (a value in
    it may be cut), with a note naming it."""
    problem = wrong_kind(path, "file")
    if problem:
        raise _damaged(path, problem)
    data = path.read_bytes()
    if not data:
        raise _cut(path, "is empty (0 bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.reason != "unexpected end of data":
            line = data.count(b"\n", 0, err.start) + 1
            raise _damaged(path, f"is not UTF-8 text (byte 0x{data[err.start]:02x} on line {line})") from None
        text = data[:err.start].decode("utf-8")  # cut within a character: what comes before it is whole
    text = text.removeprefix("\ufeff")
    if "\n" not in text:
        raise _cut(path, f"ends within its header line ({len(data)} bytes, no line end)")
    if not text.endswith(("\n", "\r")):
        cut_line = text.count("\n") + 1
        print(f"[solo-ncp] note: {path} ends within line {cut_line} (no line end: a process killed while "
              "Lightning wrote it can leave it so): plotted without that line")
        text = text[:text.rindex("\n") + 1]
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader)
    if "step" not in header:
        raise _damaged(path, "has no 'step' column in its header: it is not the comma-separated CSV Lightning "
                             "writes (a spreadsheet may have saved it again with ';' between fields)")
    for values in reader:
        if len(values) > len(header):
            raise _damaged(path, f"line {reader.line_num} has {len(values)} fields, more than the "
                                 f"{len(header)} of its header")
        yield reader.line_num, dict(zip(header, values))


def _number(path: Path, line: int, column: str, text: str) -> float:
    """`text`, the value of `column` on `line` of the file, as a float; ValueError naming them when
    it is not a number."""
    try:
        return float(text)
    except ValueError:
        raise _damaged(path, f"line {line} has {column} {text!r}, not a number") from None


def epoch_series(paths: Sequence[Path]) -> Dict[str, Series]:
    """{metric: {epoch: value}} from the CSV files, read in order: rows without an epoch (the
    learning rates') are skipped, and an epoch a later attempt logged again (after a resume)
    takes that attempt's value. A file that is not such a CSV log, or a value that is not a number
    (an epoch not a whole one), is a ValueError naming the file, the line and the fix."""
    series: Dict[str, Series] = {}
    for path in paths:
        for line, row in _csv_rows(path):
            if not row.get("epoch"):
                continue
            epoch = _number(path, line, "epoch", row["epoch"])
            if not epoch.is_integer():
                raise _damaged(path, f"line {line} has epoch {row['epoch']!r}, not a whole number")
            for column, value in row.items():
                name = _column_name(column)
                if name and value:
                    series.setdefault(name, {})[int(epoch)] = _number(path, line, column, value)
    return series


def curve_panels(series: Dict[str, Series]) -> List[Panel]:
    """The PANELS that have at least one metric in `series`, each curve over epochs counted from 1."""
    panels = []
    for title, ylabel, wanted in PANELS:
        curves = {name: ([epoch + 1 for epoch in sorted(values)], [values[e] for e in sorted(values)])
                  for name, values in sorted(series.items()) if wanted(name)}
        if curves:
            panels.append(Panel(title, ylabel, curves))
    return panels


def run_panels(run: Path) -> List[Panel]:
    """The panels of the run folder's CSV logs; ValueError when there are no logs, or no metric
    logged per epoch yet (a run stopped in its first epoch)."""
    paths = metrics_files(run)
    panels = curve_panels(epoch_series(paths))
    if not panels:
        raise ValueError(f"{run}: its {len(paths)} {METRICS_CSV} file(s) hold no per-epoch loss, "
                         "accuracy or cluster metric yet: plot it after its first epoch")
    return panels


def plot_panels(panels: Sequence[Panel], title: str, path: Path):
    """Draws each panel as a subplot (two columns; a marker per epoch, integer epoch ticks, half an
    epoch of margin) under `title` and writes the PNG to `path`, atomically. Returns the
    matplotlib Figure. The PNG is `solo-ncp plot`'s
    result (`save_figure(..., result=True)`)."""
    from matplotlib.ticker import MaxNLocator

    columns = min(2, len(panels))
    rows = -(-len(panels) // columns)
    figure = new_figure(5.2 * columns, 3.4 * rows + 0.5)
    for index, panel in enumerate(panels):
        axes = figure.add_subplot(rows, columns, index + 1)
        for name, (epochs, values) in panel.curves.items():
            axes.plot(epochs, values, marker="o", markersize=3, label=name)
        epochs = [epoch for epochs, _ in panel.curves.values() for epoch in epochs]
        axes.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        axes.margins(y=0.1)
        axes.set_title(panel.title, fontsize=10)
        axes.set_xlabel("epoch")
        axes.set_ylabel(panel.ylabel)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    save_figure(figure, path, result=True)
    return figure
