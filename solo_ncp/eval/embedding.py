"""A 2-D embedding of an encoder's features coloured by class, with the spherical k-means
centroids of those features embedded together with them (t-SNE has no transform for new points:
features and centroids are fitted jointly). UMAP (cosine) when `umap-learn` imports, else
scikit-learn's t-SNE (cosine)."""
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple

import numpy as np

from solo_ncp.eval.figures import new_figure, save_figure


@dataclass
class Embedding:
    """points: (N, 2) coordinates of the features; labels: (N,) their classes; centroids: (K, 2)
    coordinates of the k-means centroids; method: "UMAP" or "t-SNE"."""

    points: np.ndarray
    labels: np.ndarray
    centroids: np.ndarray
    method: str


def embed_2d(vectors: np.ndarray, seed: int) -> Tuple[np.ndarray, str]:
    """(M, D) unit vectors -> ((M, 2) coordinates, the method's name): UMAP with the cosine metric
    when umap-learn imports, else t-SNE with the cosine metric, PCA start and a perplexity of at
    most 30 (below M / 3 for small M), seeded with `seed`. t-SNE runs on one OpenMP thread: its
    OpenMP runtime's threads and torch's (another libgomp) slow each other down by 10x or more."""
    try:
        import umap
    except ImportError:
        umap = None
    if umap is not None:
        reducer = umap.UMAP(n_components=2, metric="cosine", n_neighbors=min(15, len(vectors) - 1),
                            random_state=seed)
        return reducer.fit_transform(vectors), "UMAP"
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    tsne = TSNE(n_components=2, metric="cosine", init="pca", perplexity=min(30.0, (len(vectors) - 1) / 3),
                random_state=seed)
    with threadpool_limits(limits=1, user_api="openmp"):
        return tsne.fit_transform(vectors), "t-SNE"


def embed_with_centroids(features: np.ndarray, labels: np.ndarray, centroids: np.ndarray,
                         seed: int) -> Embedding:
    """The features (N, D), unit-normalised, and the centroids (K, D), unit, embedded jointly."""
    features = features / np.linalg.norm(features, axis=1, keepdims=True).clip(min=1e-12)
    coordinates, method = embed_2d(np.concatenate([features, centroids]).astype(np.float32), seed)
    n = len(features)
    return Embedding(coordinates[:n], np.asarray(labels), coordinates[n:], method)


def plot_embedding(embedding: Embedding, title: str, path: Path):
    """Scatter of the embedded features, one colour per class (legend beside the axes), the
    centroids as black crosses; written to `path` as a PNG, atomically. The coordinates have no
    unit, so the axes have no ticks. Returns the matplotlib Figure. The PNG is `solo-ncp plot`'s
    result (`save_figure(..., result=True)`)."""
    classes = np.unique(embedding.labels)
    colours = "tab10" if len(classes) <= 10 else "tab20"
    figure = new_figure(6.8, 5.2)
    axes = figure.add_subplot()
    for index, label in enumerate(classes):
        mine = embedding.points[embedding.labels == label]
        axes.scatter(mine[:, 0], mine[:, 1], s=10, alpha=0.75, color=_colour(colours, index),
                     label=str(label))
    axes.scatter(embedding.centroids[:, 0], embedding.centroids[:, 1], s=90, marker="X",
                 color="black", edgecolors="white", linewidths=0.8,
                 label=f"k-means centroid\n(K = {len(embedding.centroids)})")
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_xlabel(f"{embedding.method} 1")
    axes.set_ylabel(f"{embedding.method} 2")
    axes.set_title(title, fontsize=9)
    axes.legend(title="class", fontsize=7, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    save_figure(figure, path, result=True)
    return figure


def _colour(colormap: str, index: int):
    """The index-th colour of a qualitative matplotlib colormap (cycling)."""
    from matplotlib import colormaps

    cmap = colormaps[colormap]
    return cmap(index % cmap.N)
