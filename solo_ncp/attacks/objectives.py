"""Attack objectives for `pgd`: factories returning x -> per-sample values (B,) to maximise.

Sign convention of the paper (Eq. 2 and 4): CosSim(u, v) = -cos(u, v), the NEGATIVE cosine
similarity. Every objective below is written with plain cosines, cos = F.cosine_similarity.
"""
from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from solo_ncp.attacks.pgd import Objective

NCP_STRATEGIES = ("i", "ii", "iii")
"""Appendix B.1: (i) away from the own centroid, (ii) toward the neighbour, (iii) both (NCP-ACL)."""


def cross_entropy_objective(classifier: nn.Module, targets: torch.Tensor) -> Objective:
    """Per-sample cross-entropy of `classifier(x)` logits (B, num_classes) against targets (B,).

    Used for PGD-20 evaluation (RA) and for adversarial linear fine-tuning (ALF).
    """

    def objective(x: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(classifier(x), targets, reduction="none")

    return objective


def ncp_objective(
    encoder: Callable[[torch.Tensor], torch.Tensor],
    own_centroids: torch.Tensor,
    nbr_centroids: torch.Tensor,
    strategy: str = "iii",
) -> Objective:
    """Eq. 4: CosSim(f(x+d), C_x) - CosSim(f(x+d), C_nbr) = -cos(f, C_x) + cos(f, C_nbr).

    own_centroids, nbr_centroids: (B, D), the rows C_x and C_nbr(x) for each sample (see
    `nearest_centroids`). strategy "i" keeps only -cos(f, C_x) (away from the own cluster),
    "ii" only +cos(f, C_nbr) (toward the neighbour, the proof of concept of Table 1),
    "iii" both (the paper's default).
    """
    if strategy not in NCP_STRATEGIES:
        raise ValueError(f"strategy must be one of {NCP_STRATEGIES}, got {strategy!r}")
    if own_centroids.shape != nbr_centroids.shape or own_centroids.dim() != 2:
        raise ValueError(
            "own_centroids and nbr_centroids must both be (B, D); got "
            f"{tuple(own_centroids.shape)} and {tuple(nbr_centroids.shape)}"
        )

    def objective(x: torch.Tensor) -> torch.Tensor:
        features = encoder(x)
        away_from_own = -F.cosine_similarity(features, own_centroids, dim=1)
        toward_nbr = F.cosine_similarity(features, nbr_centroids, dim=1)
        if strategy == "i":
            return away_from_own
        if strategy == "ii":
            return toward_nbr
        return away_from_own + toward_nbr

    return objective


def deacl_objective(
    encoder: Callable[[torch.Tensor], torch.Tensor], teacher_features: torch.Tensor
) -> Objective:
    """DeACL's Eq. 2: maximise CosSim(f(x+d), z1) = -cos(f(x+d), z1), z1 = teacher's features (B, D)."""

    def objective(x: torch.Tensor) -> torch.Tensor:
        return -F.cosine_similarity(encoder(x), teacher_features, dim=1)

    return objective


class NearestCentroids(NamedTuple):
    """Per-sample centroid choice; the rows are unit-norm centroids."""

    own: torch.Tensor
    """(B, D): C_x, the nearest centroid (rank 1), or the given own cluster's."""
    nbr: torch.Tensor
    """(B, D): C_nbr(x), the n-th nearest centroid (the (n-1)-th nearest but a given own one)."""
    own_index: torch.Tensor
    """(B,) int64: row of `own` in the centroid matrix (the given own_index, if one was)."""
    nbr_index: torch.Tensor
    """(B,) int64: row of `nbr` in the centroid matrix."""


@torch.no_grad()
def nearest_centroids(
    features: torch.Tensor,
    centroids: torch.Tensor,
    n: int = 2,
    own_index: Optional[torch.Tensor] = None,
) -> NearestCentroids:
    """Rank centroids by cosine similarity to each feature; pick ranks 1 and n.

    features: (B, D); centroids: (K, D); both are L2-normalised here, so any scale is fine.
    n: rank of the neighbouring cluster, 2 <= n <= K (the paper uses n = 2, Appendix B.2).
    own_index: (B,) int64, each sample's own cluster when it is given rather than ranked (the
    epoch's k-means labels, which need not be the nearest centroid: Lloyd stops before its last
    assignment); the neighbour is then the (n-1)-th nearest of the other K - 1 centroids, never the
    own one, and rank n whenever the own cluster is the nearest.
    The choice is discrete, so the result carries no gradient.
    """
    if features.dim() != 2 or centroids.dim() != 2 or features.shape[1] != centroids.shape[1]:
        raise ValueError(
            f"features (B, D) and centroids (K, D) must share D; got {tuple(features.shape)} "
            f"and {tuple(centroids.shape)}"
        )
    num_centroids = centroids.shape[0]
    if not 2 <= n <= num_centroids:
        raise ValueError(f"n must be in [2, K={num_centroids}], got {n}")
    unit_centroids = F.normalize(centroids, dim=1)
    similarity = F.normalize(features, dim=1) @ unit_centroids.T
    if own_index is None:
        ranked = similarity.topk(n, dim=1).indices
        own_index, nbr_index = ranked[:, 0], ranked[:, n - 1]
    else:
        in_range = bool(((own_index >= 0) & (own_index < num_centroids)).all())
        if own_index.shape != (features.shape[0],) or not in_range:
            raise ValueError(
                f"own_index must hold one centroid row in [0, {num_centroids}) per feature row; got "
                f"shape {tuple(own_index.shape)} for {features.shape[0]} rows"
            )
        others = similarity.scatter(1, own_index[:, None], float("-inf"))
        nbr_index = others.topk(n - 1, dim=1).indices[:, n - 2]
    return NearestCentroids(unit_centroids[own_index], unit_centroids[nbr_index], own_index, nbr_index)
