"""Choose the number of clusters K by the cosine silhouette (the paper's Fig. 2 procedure)."""

import os
from pathlib import Path
from typing import Dict, Iterable, Optional, Union

from solo_ncp.eval.protocol import best_k
from solo_ncp.io import atomic_write_json, atomic_write_text, staged_outputs
from .kmeans import spherical_kmeans
from .silhouette import cosine_silhouette
from .validation import ArrayLike, check_features

SCORES_CSV, SCORES_PNG, K_FILE = "silhouette.csv", "silhouette.png", "k.json"
K_SELECTION_FILES = (SCORES_CSV, SCORES_PNG, K_FILE)
"""The files `write_k_selection` writes."""

PathLike = Union[str, os.PathLike]


def sweep_k(
    features: ArrayLike,
    ks: Iterable[int],
    *,
    seed: int = 0,
    backend: str = "torch",
    progress: bool = True,
) -> Dict[int, float]:
    """Silhouette score of a spherical k-means clustering of features (N, D) for every K in ks.

    Returns {K: mean cosine silhouette}, in the order of ks.
    """
    from tqdm.auto import tqdm

    x = check_features(features)
    ks = [int(k) for k in ks]
    if not ks:
        raise ValueError(
            "ks is empty: pass at least one number of clusters, e.g. range(10, 301, 5)"
        )
    scores: Dict[int, float] = {}
    for k in tqdm(ks, desc="silhouette over K", unit="K", disable=not progress):
        result = spherical_kmeans(x, k, seed=seed, backend=backend)
        scores[k] = cosine_silhouette(x, result.labels)
    return scores


def plot_scores(scores: Dict[int, float], best: int, path: Path, about: Optional[Dict] = None):
    """Writes the silhouette-vs-K curve as a PNG to `path`, atomically: integer K ticks, the best K
    starred inside the frame, titled with the sweep's dataset, N (images clustered), encoder
    checkpoint and seed (`about`: k.json's {"dataset", "n", "ckpt", "seed"}, '?' where absent).
    Returns the matplotlib Figure."""
    from matplotlib.ticker import MaxNLocator

    from solo_ncp.eval.figures import encoder_label, new_figure, run_title, save_figure

    about = about or {}
    ks = sorted(scores)
    figure = new_figure(5.5, 3.8)
    axes = figure.add_subplot()
    axes.plot(ks, [scores[k] for k in ks], marker="o", markersize=3)
    axes.axvline(best, color="tab:red", linestyle="--", linewidth=1)
    axes.plot([best], [scores[best]], marker="*", markersize=14, color="tab:red",
              linestyle="none", label=f"best K = {best}")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.margins(x=0.08, y=0.2)
    axes.set_xlabel("number of clusters K")
    axes.set_ylabel("mean cosine silhouette")
    ckpt = about.get("ckpt")
    axes.set_title(run_title("silhouette of spherical k-means", about.get("dataset"), about.get("n"),
                             encoder_label(ckpt) if ckpt else None, about.get("seed")), fontsize=9)
    axes.legend(fontsize=8)
    save_figure(figure, path)
    return figure


def write_k_selection(scores: Dict[int, float], out_dir: PathLike, about: Optional[Dict] = None) -> dict:
    """Write silhouette.csv, silhouette.png and k.json for a K sweep into out_dir, replacing those
    of an earlier sweep (`staged_outputs`: a failed or interrupted write leaves the earlier sweep
    whole, never a mix of two).

    Returns the k.json content: {"k": best K, "scores": {"<K>": silhouette, ...}, **about}; `about`
    describes the sweep (e.g. {"dataset", "seed", "n", "ckpt", "ckpt_sha256"}: Fig. 2's legend, and
    what stage 2 compares with its teacher).
    """
    best = best_k(scores)
    out_dir = Path(out_dir)
    ks = sorted(scores)
    rows = "".join(f"{k},{scores[k]:.8f}\n" for k in ks)
    selection = {"k": best, "scores": {str(k): float(scores[k]) for k in ks}, **(about or {})}
    with staged_outputs(out_dir, K_SELECTION_FILES, K_FILE) as staging:
        atomic_write_text(staging / SCORES_CSV, "k,silhouette\n" + rows)
        plot_scores(scores, best, staging / SCORES_PNG, about)
        atomic_write_json(staging / K_FILE, selection)
    return selection
