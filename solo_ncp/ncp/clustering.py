"""Per-epoch clustering of the student's representations (Algorithm 1, first two lines).

Under DDP each rank encodes a shard of the training set; the shards are gathered, rank 0 runs
spherical k-means and broadcasts the centroids, so every rank holds bit-identical centroids.
Each epoch's k-means can start from the last epoch's centroids (init "warm"), which the slowly
moving features leave close to a good optimum.
"""
import time
from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.distributed as dist

from solo_ncp.cluster import INIT_METHODS, spherical_kmeans
from solo_ncp.cluster.kmeans import check_n_init

KMEANS_INITS = ("warm", *INIT_METHODS)
WARM_FALLBACK = "afk-mc2"


@dataclass
class EpochClusters:
    """centroids: (K, D) unit-norm; labels: (N,) int64, each sample's k-means cluster (not
    always its nearest centroid: see `KMeansResult`);
    stats: clustering time (s), objective (mean cosine), Lloyd iterations, whether it started
    from the previous centroids (1) or from a seeding (0), cluster sizes min/median/max."""

    centroids: torch.Tensor
    labels: torch.Tensor
    stats: Dict[str, float]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Under DDP, gives every rank rank 0's buffers of `module` (BatchNorm running statistics):
    each rank updates its own in every training step, so without this the shards of one
    clustering pass would be encoded by slightly different encoders, none of them exactly the
    one rank 0 checkpoints."""
    if _distributed():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def gather_rows(rows: torch.Tensor, indices: torch.Tensor, total: int) -> torch.Tensor:
    """Reassembles per-rank rows (n_r, D) with their global indices (n_r,) into (total, D) on every
    rank. Without DDP it only reorders."""
    if not _distributed():
        out = rows.new_empty((total, rows.shape[1]))
        out[indices] = rows
        return out
    counts = [torch.zeros(1, dtype=torch.long, device=rows.device) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, torch.tensor([rows.shape[0]], device=rows.device))
    longest = int(max(c.item() for c in counts))
    padded_rows = rows.new_zeros((longest, rows.shape[1]))
    padded_rows[: rows.shape[0]] = rows
    padded_idx = indices.new_full((longest,), -1)
    padded_idx[: indices.shape[0]] = indices
    all_rows = [torch.empty_like(padded_rows) for _ in counts]
    all_idx = [torch.empty_like(padded_idx) for _ in counts]
    dist.all_gather(all_rows, padded_rows)
    dist.all_gather(all_idx, padded_idx)
    out = rows.new_empty((total, rows.shape[1]))
    for r, i in zip(all_rows, all_idx):
        keep = i >= 0
        out[i[keep]] = r[keep]
    return out


def _starts_warm(init: str, previous_centroids: Optional[torch.Tensor], k: int, dim: int) -> bool:
    """Whether `cluster_epoch` starts from previous_centroids: init "warm" and centroids (K, D)
    exist. init must be one of KMEANS_INITS."""
    if init not in KMEANS_INITS:
        raise ValueError(
            f"kmeans init={init!r} is unknown: set method_kwargs.kmeans_init to one of "
            f"{', '.join(KMEANS_INITS)}"
        )
    return (init == "warm" and previous_centroids is not None
            and tuple(previous_centroids.shape) == (k, dim))


def cluster_epoch(
    features: torch.Tensor,
    k: int,
    *,
    seed: int,
    max_iter: int = 100,
    backend: str = "torch",
    init: str = WARM_FALLBACK,
    n_init: int = 1,
    previous_centroids: Optional[torch.Tensor] = None,
) -> EpochClusters:
    """Spherical k-means of the whole training set's features (N, D) on rank 0, broadcast to all.

    Every rank must call it with the same `features` (see `gather_rows`). init: "warm" starts
    Lloyd from previous_centroids (K, D), the last epoch's; without them (first epoch) or when
    their shape is not (K, D) (K or D changed) it seeds with AFK-MC² like init "afk-mc2".
    "afk-mc2" / "k-means++" seed afresh from `seed`, keeping the best of n_init seedings."""
    start = time.perf_counter()
    if not torch.isfinite(features).all():
        raise ValueError(
            "the student's features contain NaN/inf, so they cannot be clustered: training "
            "diverged (lower optimizer.lr or check the stage-1 checkpoint)"
        )
    check_n_init(n_init)
    warm = _starts_warm(init, previous_centroids, k, features.shape[1])
    seeding = WARM_FALLBACK if init == "warm" else init
    if not _distributed() or dist.get_rank() == 0:
        result = spherical_kmeans(features, k, init=previous_centroids if warm else seeding,
                                  n_init=1 if warm else n_init, max_iter=max_iter, seed=seed,
                                  backend=backend)
        centroids, labels = result.centroids.contiguous(), result.labels.contiguous()
        summary = [result.objective, result.n_iter]
    else:
        centroids = features.new_empty((k, features.shape[1]))
        labels = torch.empty(features.shape[0], dtype=torch.long, device=features.device)
        summary = [0.0, 0.0]
    summary = torch.tensor(summary, dtype=torch.float64, device=features.device)
    if _distributed():
        dist.broadcast(centroids, src=0)
        dist.broadcast(labels, src=0)
        dist.broadcast(summary, src=0)
    sizes = torch.bincount(labels, minlength=k).float()
    stats = {
        "cluster_time_s": time.perf_counter() - start,
        "cluster_objective": float(summary[0]),
        "cluster_iterations": float(summary[1]),
        "cluster_warm_start": float(warm),
        "cluster_size_min": float(sizes.min()),
        "cluster_size_median": float(sizes.median()),
        "cluster_size_max": float(sizes.max()),
    }
    return EpochClusters(centroids, labels, stats)
