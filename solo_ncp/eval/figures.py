"""The paper's figures as PNGs: Fig. 2 (silhouette against K, from select-k folders) and Fig. 3
(SA / RA / AA against K, from the K-sweep's evaluations; the silhouette's K hatched)."""
import os
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from solo_ncp.eval.report import ABLATIONS, METRICS, METRIC_TITLES, ablation_runs, mean_std, selection_encoder
from solo_ncp.eval.results import RunRecord
from solo_ncp.io import atomic_write

FIG3 = ABLATIONS[2]


def encoder_label(ckpt) -> str:
    """A checkpoint path as `<its folder>/<its name>` (e.g. `simclr-cifar10/last.ckpt`), the run
    it comes from being more telling than `last.ckpt`."""
    path = Path(ckpt)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def run_title(what: str, dataset, n, encoder, seed) -> str:
    """A figure's two-line title: `<what>` over `<dataset>, N = <n> images, encoder <encoder>,
    seed <seed>`; `?` stands for a fact that is not known (None)."""
    dataset, n, encoder, seed = ("?" if value is None else value for value in (dataset, n, encoder, seed))
    return f"{what}\n{dataset}, N = {n} images, encoder {encoder}, seed {seed}"


def check_matplotlib() -> None:
    """Imports matplotlib, which reads MPLBACKEND as it loads: a command that draws calls it before
    its work, so that a backend matplotlib does not know is one error naming the variable, not one
    after the work (solo-ncp draws on the Agg canvas, whatever the backend)."""
    try:
        import matplotlib  # noqa: F401
    except ValueError:
        if "MPLBACKEND" not in os.environ:
            raise
        raise ValueError(f"MPLBACKEND={os.environ['MPLBACKEND']!r} is no backend matplotlib knows: unset it, or "
                         "set MPLBACKEND=Agg") from None


def new_figure(width: float, height: float):
    """A matplotlib Figure of width x height inches at 150 dpi on the Agg canvas (no GUI backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=150)
    FigureCanvasAgg(figure)
    return figure


def drawable(text: str) -> str:
    """`text` drawn as written: each character matplotlib's fonts cannot take (a path's bytes that
    are not UTF-8, which Python holds as lone surrogates) as `?`, and each `$` escaped (a path or
    label with two read as mathtext, and `a$\\frac{$b` failed the command after its work)."""
    return text.encode("utf-8", "replace").decode("utf-8").replace("$", r"\$")


def save_figure(figure, path: Path, result: bool = False) -> Path:
    """Lays `figure` out and writes it to `path` as a PNG, atomically; returns `path`. `result`:
    the PNG is the running command's whole result (`atomic_write`). Every text is made `drawable`
    first: a title naming a path of non-UTF-8 bytes, or of `$`s, failed the command after its work."""
    from matplotlib.text import Text

    for text in figure.findobj(Text):
        text.set_text(drawable(text.get_text()))
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"), result=result)
    return path


def figure2(selections: Sequence[Dict], path: Path) -> Path:
    """Silhouette against K, one line per k.json (its dataset and seed, and its encoder where two
    share them), its best K starred; integer K ticks."""
    from matplotlib.ticker import MaxNLocator

    figure = new_figure(6, 4)
    axes = figure.add_subplot()
    names = [f"{s['dataset'] or '?'}, seed {s['seed'] if s['seed'] is not None else '?'}" for s in selections]
    for name, selection in zip(names, selections):
        ks = sorted(selection["scores"])
        label = name if names.count(name) == 1 else f"{name}, {selection_encoder(selection)}"
        line, = axes.plot(ks, [selection["scores"][k] for k in ks], marker="o", markersize=2, label=label)
        best = selection["k"]
        axes.plot([best], [selection["scores"][best]], marker="*", markersize=12, color=line.get_color(),
                  label=f"best K = {best}")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("number of clusters K")
    axes.set_ylabel("mean cosine silhouette")
    axes.set_title("Fig. 2: silhouette of spherical k-means of the stage-1 features", fontsize=10)
    axes.margins(x=0.05, y=0.15)
    axes.legend(fontsize=7)
    return save_figure(figure, path)


def figure3_bars(runs: Sequence[RunRecord]) -> List[Tuple[str, bool, Dict[str, float]]]:
    """[(row, is the silhouette's K, {metric: mean over seeds})] of the K-sweep's runs (one dataset,
    head and BN branch), in K order."""
    rows: Dict[str, List[RunRecord]] = {}
    for run in ablation_runs(runs, FIG3):
        rows.setdefault(run.method, []).append(run)
    bars = []
    for row, members in rows.items():
        means = {metric: mean_std([r.metrics[metric] for r in members])[0] for metric in METRICS
                 if all(r.metrics.get(metric) is not None for r in members)}
        bars.append((row, members[0].encoder.get("k_source") == "k_file", means))
    return bars


def figure3(bars: Sequence[Tuple[str, bool, Dict[str, float]]], title: str, path: Path) -> Path:
    """Grouped bars of SA / RA / AA (mean over seeds) per K (`figure3_bars`); the silhouette's K
    hatched."""
    figure = new_figure(max(5.0, 1.0 + 0.9 * len(bars)), 3.8)
    axes = figure.add_subplot()
    width = 0.8 / len(METRICS)
    for m, metric in enumerate(METRICS):
        for i, (row, silhouette, means) in enumerate(bars):
            if metric in means:
                axes.bar(i + (m - 1) * width, means[metric], width, color=f"C{m}",
                         hatch="//" if silhouette else None, edgecolor="tab:red" if silhouette else None,
                         label=METRIC_TITLES[metric] if i == 0 else None)
    axes.bar(0, 0, 0, color="white", hatch="//", edgecolor="tab:red", label="the silhouette's K (*)")
    axes.set_xticks(range(len(bars)))
    axes.set_xticklabels([row.replace(" (silhouette)", "*") for row, _, _ in bars], fontsize=8)
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(0, 119)
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=7, loc="upper center", ncol=4)
    return save_figure(figure, path)
