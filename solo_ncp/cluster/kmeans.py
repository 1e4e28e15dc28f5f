"""Spherical k-means: cosine assignment, normalised-mean centroids, chunked over samples."""

from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

import numpy as np
import torch

from .kmcuda_backend import kmcuda_labels, resolve_backend
from .seeding import DEFAULT_CHAIN_LENGTH, check_init, initial_centroids, local_trials
from .validation import ArrayLike, check_num_clusters, unit_rows

CHUNK_SIZES = {"cpu": 1024, "cuda": 8192}
"""Rows assigned per block by default: on the CPU a (1024, 512) float32 block (2 MB) stays in
cache from its matmul to its cluster sums (one Lloyd iteration 1.15x one whole matmul at 50,000 x
512, K = 70, 2 threads, against 1.27x with 8192 rows: benchmarks/clustering.py --sections lloyd);
on a GPU fewer, larger blocks launch fewer kernels."""


@dataclass(frozen=True)
class KMeansResult:
    """Result of `spherical_kmeans`; tensors live on the features' device.

    centroids: (K, D) unit-norm cluster directions.
    labels: (N,) int64 cluster index of each sample, every cluster non-empty: the last
        assignment, whose clusters' normalised means are `centroids`. Where Lloyd stops on tol or
        max_iter (not on repeated labels) a few samples are nearer another centroid.
    objective: mean cosine similarity of each sample to its centroid, in [-1, 1].
    n_iter: Lloyd iterations run by the torch implementation (after kmcuda when it ran), in the
        kept run when several seedings ran (n_init > 1).
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
    the assigned rows (K, D). Only a (chunk_size, K) block of similarities exists at a time, and
    each chunk of rows is added to the sums right after its matmul, while it is still in cache
    (x is read from memory once per iteration, not twice).
    """
    n = x.shape[0]
    labels = torch.empty(n, dtype=torch.int64, device=x.device)
    best = torch.empty(n, dtype=x.dtype, device=x.device)
    sums = torch.zeros_like(centroids)
    centroids_t = centroids.T.contiguous()
    similarities = x.new_empty((min(chunk_size, n), centroids.shape[0]))
    for start in range(0, n, chunk_size):
        chunk = slice(start, start + chunk_size)
        rows = x[chunk]
        block = torch.matmul(rows, centroids_t, out=similarities[: rows.shape[0]])
        torch.max(block, dim=1, out=(best[chunk], labels[chunk]))
        sums.index_add_(0, labels[chunk], rows)
    return labels, best, sums


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
    the labels repeat, or when the objective improves by less than tol relative to the last one;
    the first iteration compares with the starting centroids' objective (mean cosine to the most
    similar one), so a start at a fixed point (a warm start from converged centroids) takes one.
    Zero centroid rows are allowed: they attract only rows with negative similarity elsewhere.
    """
    n = x.shape[0]
    previous_labels, previous_objective = None, None
    for iteration in range(1, max_iter + 1):
        labels, best, sums = _assign(x, centroids, chunk_size)
        if previous_objective is None:
            previous_objective = float(best.sum(dtype=torch.float64)) / n
        _fill_empty_clusters(x, labels, best, sums)
        centroids, total_cosine = _normalised_means(sums, centroids)
        objective = total_cosine / n
        if objective - previous_objective <= tol * abs(previous_objective) or (
            previous_labels is not None and torch.equal(labels, previous_labels)
        ):
            break
        previous_labels, previous_objective = labels, objective
    return KMeansResult(
        centroids=centroids, labels=labels, objective=objective, n_iter=iteration, backend=backend
    )


def check_n_init(n_init: int, name: str = "n_init") -> int:
    """Validate the number of seedings to run (keeping the best); `name`: the option's name in
    the error message."""
    if isinstance(n_init, bool) or not isinstance(n_init, (int, np.integer)) or n_init < 1:
        raise ValueError(
            f"{name}={n_init!r} must be an integer >= 1: the number of seedings to run, keeping "
            "the clustering with the best objective (1 = a single run)"
        )
    return int(n_init)


def run_seeds(seed: int, n_init: int) -> List[int]:
    """The seeds of the n_init seedings of `spherical_kmeans(..., seed=seed, n_init=n_init)`.

    The first is `seed` itself, so n_init = 1 is the single run with that seed and a larger n_init
    never does worse with the same seed; the others are drawn below 2³¹ (kmcuda takes 32-bit
    seeds) from a CPU torch.Generator seeded with `seed`, so neighbouring seeds share no run.
    """
    check_n_init(n_init)
    generator = torch.Generator().manual_seed(seed)
    derived = torch.randint(2**31, (n_init - 1,), generator=generator).tolist()
    return [seed, *derived]


def spherical_kmeans(
    features: ArrayLike,
    k: int,
    *,
    init: Union[str, torch.Tensor, np.ndarray] = "afk-mc2",
    n_init: int = 1,
    n_local_trials: Optional[int] = None,
    chain_length: int = DEFAULT_CHAIN_LENGTH,
    max_iter: int = 100,
    tol: float = 1e-4,
    seed: int = 0,
    backend: str = "torch",
    chunk_size: Optional[int] = None,
) -> KMeansResult:
    """Spherical k-means of features (N, D) into K clusters by cosine similarity.

    Rows are L2-normalised first. init: "afk-mc2", "k-means++" (both greedy, see
    `solo_ncp.cluster.seeding`) or initial centroids (K, D), e.g. the last epoch's (warm start).
    n_init: seedings to run, each from one seed of `run_seeds(seed, n_init)`; the result with
        the highest objective is kept (the first on ties). Given centroids allow only n_init=1.
    n_local_trials: D² draws per centre of the seeding (None: 2 + int(ln K); 1: non-greedy).
    chain_length: AFK-MC²'s Metropolis chain length.
    backend: "torch" (the default, CPU or GPU), "kmcuda" (libKMCUDA, CUDA tensors) or "auto"
        (kmcuda for CUDA tensors when libKMCUDA imports, else torch). kmcuda seeds with its own
        (non-greedy) AFK-MC² or k-means++: n_local_trials and chain_length apply to torch only.
    chunk_size bounds the similarity block to (chunk_size, K) (None: CHUNK_SIZES of the device; the
    result does not depend on it beyond float rounding of the cluster sums). All randomness comes from a
    torch.Generator seeded with each run's seed: on CPU equal inputs give bitwise equal results;
    on CUDA index_add_ sums in nondeterministic order, so results can differ in the last bits.
    Numpy input is accepted and gives CPU tensors.
    """
    x = unit_rows(features)
    k = check_num_clusters(k, x.shape[0])
    chunk_size = CHUNK_SIZES.get(x.device.type, CHUNK_SIZES["cuda"]) if chunk_size is None else chunk_size
    if max_iter < 1:
        raise ValueError(f"max_iter={max_iter} must be >= 1")
    if tol < 0:
        raise ValueError(f"tol={tol} must be >= 0")
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be >= 1")
    if chain_length < 1:
        raise ValueError(f"chain_length={chain_length} must be >= 1")
    local_trials(n_local_trials, k)
    init = check_init(init, x, k)
    if check_n_init(n_init) > 1 and not isinstance(init, str):
        raise ValueError(
            f"n_init={n_init} would repeat one run: given init centroids are deterministic, so "
            "pass n_init=1 (or a seeding name as init)"
        )
    backend = resolve_backend(x, backend)
    best = None
    for run_seed in run_seeds(seed, n_init):
        if backend == "kmcuda":
            labels = kmcuda_labels(x, k, init=init, tol=tol, seed=run_seed)
            centroids = _centroids_from_labels(x, labels, k)
        else:
            generator = torch.Generator(device=x.device).manual_seed(run_seed)
            centroids = initial_centroids(
                x, k, init, generator, n_local_trials=n_local_trials, chain_length=chain_length
            )
        result = _lloyd(
            x, centroids, max_iter=max_iter, tol=tol, chunk_size=chunk_size, backend=backend
        )
        if best is None or result.objective > best.objective:
            best = result
    return best
