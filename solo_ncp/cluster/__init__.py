"""Spherical k-means, greedy AFK-MC² / k-means++ seeding, the exact cosine silhouette and K selection.

Module-level imports are torch, numpy and the standard library only; scikit-learn, matplotlib,
tqdm and libKMCUDA are imported inside the functions that need them.
"""

from .kmcuda_backend import BACKENDS, kmcuda_module, resolve_backend
from .kmeans import KMeansResult, run_seeds, spherical_kmeans
from .seeding import INIT_METHODS, afk_mc2, initial_centroids, kmeans_plus_plus
from .select_k import best_k, sweep_k, write_k_selection
from .silhouette import cosine_silhouette

__all__ = [
    "BACKENDS",
    "INIT_METHODS",
    "KMeansResult",
    "afk_mc2",
    "best_k",
    "cosine_silhouette",
    "initial_centroids",
    "kmcuda_module",
    "kmeans_plus_plus",
    "resolve_backend",
    "run_seeds",
    "spherical_kmeans",
    "sweep_k",
    "write_k_selection",
]
