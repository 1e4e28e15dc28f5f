"""PGD (L-inf or L2) in [0, 1] pixel space and the objectives it maximises (framework-free)."""
from solo_ncp.attacks.objectives import (
    NCP_STRATEGIES,
    NearestCentroids,
    cross_entropy_objective,
    deacl_objective,
    ncp_objective,
    nearest_centroids,
)
from solo_ncp.attacks.pgd import Objective, pgd
from solo_ncp.threat_model import NORMS, check_norm

__all__ = [
    "NCP_STRATEGIES",
    "NORMS",
    "NearestCentroids",
    "Objective",
    "check_norm",
    "cross_entropy_objective",
    "deacl_objective",
    "ncp_objective",
    "nearest_centroids",
    "pgd",
]
