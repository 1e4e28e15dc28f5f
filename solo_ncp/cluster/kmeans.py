"""Spherical k-means: cosine assignment, normalised-mean centroids, chunked over samples."""

from dataclasses import dataclass
from typing import Tuple, Union

import numpy as np
import torch

from .kmcuda_backend import kmcuda_labels, resolve_backend
from .seeding import check_init, initial_centroids
from .validation import ArrayLike, check_num_clusters, unit_rows

DEFAULT_CHUNK_SIZE = 8192


@dataclass(frozen=True)
class KMeansResult:
    """Result of `spherical_kmeans`; tensors live on the features' device.

    centroids: (K, D) unit-norm cluster directions.
    labels: (N,) int64 cluster index of each sample, every cluster non-empty.
    objective: mean cosine similarity of each sample to its centroid, in [-1, 1].
    n_iter: Lloyd iterations run by the torch implementation (after kmcuda when it ran).
    backend: "torch" or "kmcuda".
    """

    centroids: torch.Tensor
    labels: torch.Tensor
    objective: float
    n_iter: int
    backend: str


def _assign(
    x: torch.Tensor, centroids: torch.Tensor, chunk_size: int
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Assign each unit row of x (N, D) to its most similar centroid (K, D).

    Returns labels (N,) int64, similarity to the assigned centroid (N,) and per-cluster sums of
    the assigned rows (K, D). Only a (chunk_size, K) block of similarities exists at a time.
    """
    n = x.shape[0]
    labels = torch.empty(n, dtype=torch.int64, device=x.device)
    best = torch.empty(n, dtype=x.dtype, device=x.device)
    centroids_t = centroids.T.contiguous()
    similarities = x.new_empty((min(chunk_size, n), centroids.shape[0]))
    for start in range(0, n, chunk_size):
        chunk = slice(start, start + chunk_size)
        rows = x[chunk]
        block = torch.matmul(rows, centroids_t, out=similarities[: rows.shape[0]])
        torch.max(block, dim=1, out=(best[chunk], labels[chunk]))
    return labels, best, torch.zeros_like(centroids).index_add_(0, labels, x)


def _fill_empty_clusters(
    x: torch.Tensor, labels: torch.Tensor, best: torch.Tensor, sums: torch.Tensor
) -> None:
    """Give every empty cluster the worst-served sample of a cluster that can spare one (in place).

    Samples are taken in order of increasing similarity to their centroid (ties by index), never
    emptying their own cluster; labels and sums are updated to match.
    """
    counts = torch.bincount(labels, minlength=sums.shape[0]).tolist()
    empty = [cluster for cluster, count in enumerate(counts) if count == 0]
    if not empty:
        return
    worst_first = torch.argsort(best, stable=True).tolist()
    donors = (index for index in worst_first if counts[int(labels[index])] > 1)
    for cluster in empty:
        index = next(donors)
        source = int(labels[index])
        counts[source] -= 1
        counts[cluster] += 1
        sums[source] -= x[index]
        sums[cluster] = x[index]
        labels[index] = cluster


def _normalised_means(sums: torch.Tensor, fallback: torch.Tensor) -> Tuple[torch.Tensor, float]:
    """Unit centroids from cluster sums (K, D), keeping `fallback` rows where a sum is zero.

    Also returns Σ_k |sum_k|: the total cosine of all members to their new centroids.
    """
    norms = torch.linalg.vector_norm(sums, dim=1)
    centroids = torch.where((norms > 0)[:, None], sums / norms.clamp_min(1e-30)[:, None], fallback)
    return centroids, float(norms.sum(dtype=torch.float64))


def _centroids_from_labels(x: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Unit mean direction (K, D) of each cluster's rows of x (N, D); zero rows for empty clusters."""
    sums = torch.zeros((k, x.shape[1]), dtype=x.dtype, device=x.device).index_add_(0, labels, x)
    return _normalised_means(sums, torch.zeros_like(sums))[0]


def _lloyd(
    x: torch.Tensor,
    centroids: torch.Tensor,
    *,
    max_iter: int,
    tol: float,
    chunk_size: int,
    backend: str = "torch",
) -> KMeansResult:
    """Spherical Lloyd iterations on unit rows x (N, D) from initial centroids (K, D).

    Each iteration assigns every row to its most similar centroid, re-seeds empty clusters and
    moves each centroid to its cluster's normalised mean. Stops after max_iter iterations, when
    the labels repeat, or when the objective improves by less than tol relative to the last one.
    Zero centroid rows are allowed: they attract only rows with negative similarity elsewhere.
    """
    n = x.shape[0]
    previous_labels, previous_objective = None, None
    for iteration in range(1, max_iter + 1):
        labels, best, sums = _assign(x, centroids, chunk_size)
        _fill_empty_clusters(x, labels, best, sums)
        centroids, total_cosine = _normalised_means(sums, centroids)
        objective = total_cosine / n
        if previous_labels is not None and (
            torch.equal(labels, previous_labels)
            or objective - previous_objective <= tol * abs(previous_objective)
        ):
            break
        previous_labels, previous_objective = labels, objective
    return KMeansResult(
        centroids=centroids, labels=labels, objective=objective, n_iter=iteration, backend=backend
    )


def spherical_kmeans(
    features: ArrayLike,
    k: int,
    *,
    init: Union[str, torch.Tensor, np.ndarray] = "afk-mc2",
    max_iter: int = 100,
    tol: float = 1e-4,
    seed: int = 0,
    backend: str = "torch",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> KMeansResult:
    """Spherical k-means of features (N, D) into K clusters by cosine similarity.

    Rows are L2-normalised first. init: "afk-mc2", "k-means++" or initial centroids (K, D).
    backend: "torch" (the default, CPU or GPU), "kmcuda" (libKMCUDA, CUDA tensors) or "auto"
        (kmcuda for CUDA tensors when libKMCUDA imports, else torch).
    chunk_size bounds the similarity block to (chunk_size, K). All randomness comes from a
    torch.Generator seeded with `seed`: on CPU equal inputs give bitwise equal results; on CUDA
    index_add_ sums in nondeterministic order, so results can differ in the last bits.
    Numpy input is accepted and gives CPU tensors.
    """
    x = unit_rows(features)
    k = check_num_clusters(k, x.shape[0])
    if max_iter < 1:
        raise ValueError(f"max_iter={max_iter} must be >= 1")
    if tol < 0:
        raise ValueError(f"tol={tol} must be >= 0")
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be >= 1")
    init = check_init(init, x, k)
    if resolve_backend(x, backend) == "kmcuda":
        labels = kmcuda_labels(x, k, init=init, tol=tol, seed=seed)
        centroids = _centroids_from_labels(x, labels, k)
        return _lloyd(
            x, centroids, max_iter=max_iter, tol=tol, chunk_size=chunk_size, backend="kmcuda"
        )
    generator = torch.Generator(device=x.device).manual_seed(seed)
    centroids = initial_centroids(x, k, init, generator)
    return _lloyd(x, centroids, max_iter=max_iter, tol=tol, chunk_size=chunk_size)
