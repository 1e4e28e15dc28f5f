"""L-inf PGD in [0, 1] pixel space and the objectives it maximises (framework-free)."""
from solo_ncp.attacks.objectives import (
    NCP_STRATEGIES,
    NearestCentroids,
    cross_entropy_objective,
    deacl_objective,
    ncp_objective,
    nearest_centroids,
)
from solo_ncp.attacks.pgd import Objective, pgd

__all__ = [
    "NCP_STRATEGIES",
    "NearestCentroids",
    "Objective",
    "cross_entropy_objective",
    "deacl_objective",
    "ncp_objective",
    "nearest_centroids",
    "pgd",
]
