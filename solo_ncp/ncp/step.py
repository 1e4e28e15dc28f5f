"""One stage-2 training step of NCP-ACL (Algorithm 1, inner loop) or DeACL, host-independent.

Modes and BN branches, decided here once for every host:
- centroid choice, the online classifier and the memory bank use f2(x) in eval mode through the
  `cluster_bn` branch (clean by default), without gradient: the features the epoch's clustering
  saw (DeACL trains its online classifier on eval-mode features too);
- PGD runs the student in eval mode (as DeACL's public code does) through the adversarial BN, so
  the attack neither depends on the batch composition nor moves any running statistic;
- the loss runs the student in train mode. Dual BN (Jiang et al. 2020, NCP-ACL): x through the
  clean BN and x_adv through the adversarial BN, two forwards. Single BN (DeACL as published,
  `mocov2_distillation_AT.py` lines 227-228): ONE forward of cat([x, x_adv]), so BatchNorm
  normalises with, and its running statistics follow, the joint batch;
- the teacher f1 is frozen and always in eval mode.
"""
from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from solo_ncp.attacks import check_norm, deacl_objective, ncp_objective, nearest_centroids, pgd
from solo_ncp.attacks.objectives import NCP_STRATEGIES
from solo_ncp.eval.protocol import NCP_SETTINGS, STAGE2_METHODS
from solo_ncp.models.dual_bn import BRANCHES, bn_branch
from solo_ncp.models.inference import eval_mode
from solo_ncp.ncp.losses import ncp_acl_loss

PERTURBATIONS = STAGE2_METHODS
"""Each stage-2 method is named after its perturbation."""
ASSIGNMENTS = ("nearest", "index")


@dataclass(frozen=True)
class Stage2Config:
    """perturbation: "ncp" (Eq. 4) or "deacl" (Eq. 2). strategy: NCP's "i", "ii" or "iii".
    neighbor_rank: n of the n-th nearest centroid. lam: weight of the robust term of Eq. 3.
    norm: the PGD ball, "Linf" (the paper's) or "L2"; eps, alpha: its radius and step in [0, 1]
    pixel units; steps: PGD iterations.
    assign: "nearest" = C_x / C_nbr ranked against f2(x) of the current view (Algorithm 1);
        "index" = the sample's cluster from the epoch's k-means and the n-th nearest centroid
        to its epoch feature (Section 3.2 (iii): "the cluster it belongs to").
    dual_bn: True = separate clean / adversarial BatchNorms (NCP-ACL); False = one BatchNorm and
        the joint clean + adversarial batch (DeACL as published).
    cluster_bn: the branch whose eval-mode features are clustered and rank C_x / C_nbr ("clean"
        or "adv"; "adv" needs dual_bn)."""

    perturbation: str = "ncp"
    strategy: str = "iii"
    neighbor_rank: int = 2
    lam: float = NCP_SETTINGS["lam"]
    norm: str = NCP_SETTINGS["norm"]
    eps: float = NCP_SETTINGS["eps"]
    alpha: float = NCP_SETTINGS["alpha"]
    steps: int = NCP_SETTINGS["steps"]
    assign: str = NCP_SETTINGS["assign"]
    dual_bn: bool = NCP_SETTINGS["dual_bn"]
    cluster_bn: str = NCP_SETTINGS["cluster_bn"]

    def __post_init__(self):
        for name, value, allowed in (
            ("perturbation", self.perturbation, PERTURBATIONS),
            ("strategy", self.strategy, NCP_STRATEGIES),
            ("assign", self.assign, ASSIGNMENTS),
            ("cluster_bn", self.cluster_bn, BRANCHES),
        ):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {', '.join(allowed)}")
        check_norm(self.norm)
        if self.neighbor_rank < 2:
            raise ValueError(f"neighbor_rank={self.neighbor_rank} must be >= 2")
        if self.eps < 0 or self.alpha <= 0 or self.steps < 1 or self.lam < 0:
            raise ValueError("need eps >= 0, alpha > 0, steps >= 1 and lam >= 0")
        if self.cluster_bn == "adv" and not self.dual_bn:
            raise ValueError(
                "cluster_bn='adv' needs dual_bn: true (a single-BN student has no adversarial "
                "branch): set method_kwargs.dual_bn=true or method_kwargs.cluster_bn=clean"
            )


@dataclass
class StepOutput:
    """losses: {"loss", "distill", "robust"}; eval_features: (B, D) f2(x), eval mode, cluster_bn
    branch, no gradient; x_adv: (B, C, H, W) in [0, 1].
    For "ncp" (None for DeACL): centroid_changed, the fraction of x_adv whose nearest centroid
    differs from C_x; centroid_cos, mean cosines {"clean_own", "clean_nbr", "adv_own", "adv_nbr"}
    of f2(x) and f2(x_adv) (both eval mode, cluster_bn branch) to C_x and C_nbr: whether the
    attack moved the features away from C_x and toward C_nbr in the space the centroids live in."""

    losses: Dict[str, torch.Tensor]
    eval_features: torch.Tensor
    centroid_changed: Optional[torch.Tensor]
    x_adv: torch.Tensor
    centroid_cos: Optional[Dict[str, torch.Tensor]] = None


def adversarial_examples(student: nn.Module, x: torch.Tensor, objective, cfg: Stage2Config):
    """PGD on `objective` with the student in eval mode through the adversarial BN; the student's
    modes and branches are restored afterwards."""
    with eval_mode(student), bn_branch(student, "adv"):
        return pgd(objective, x, eps=cfg.eps, alpha=cfg.alpha, steps=cfg.steps, norm=cfg.norm)


@torch.no_grad()
def cluster_space(student: nn.Module, x: torch.Tensor, cfg: Stage2Config) -> torch.Tensor:
    """f2(x) in eval mode through the `cfg.cluster_bn` branch: (B, D), no gradient."""
    with eval_mode(student), bn_branch(student, cfg.cluster_bn):
        return student(x)


def student_features(student: nn.Module, x: torch.Tensor, x_adv: torch.Tensor,
                     dual_bn: bool):
    """(f2(x), f2(x_adv)), each (B, D), in the student's current (train) mode: through the clean
    and the adversarial BN (dual BN), or one forward of the joint batch (single BN)."""
    if not dual_bn:
        return student(torch.cat([x, x_adv])).split(len(x))
    with bn_branch(student, "clean"):
        clean = student(x)
    with bn_branch(student, "adv"):
        adv = student(x_adv)
    return clean, adv


def _centroid_cos(clean, adv, own, nbr) -> Dict[str, torch.Tensor]:
    return {"clean_own": F.cosine_similarity(clean, own, dim=1).mean(),
            "clean_nbr": F.cosine_similarity(clean, nbr, dim=1).mean(),
            "adv_own": F.cosine_similarity(adv, own, dim=1).mean(),
            "adv_nbr": F.cosine_similarity(adv, nbr, dim=1).mean()}


def stage2_step(
    student: nn.Module,
    teacher: nn.Module,
    x: torch.Tensor,
    cfg: Stage2Config,
    *,
    centroids: Optional[torch.Tensor] = None,
    assigned: Optional[torch.Tensor] = None,
) -> StepOutput:
    """Eq. 3 for one batch. student: Normalize + encoder (f2), dual BN iff cfg.dual_bn; teacher:
    Normalize + encoder (f1), frozen; x: (B, C, H, W) in [0, 1]. centroids: (K, D) unit-norm,
    needed for "ncp"; assigned: (B, 2) int64 (own, neighbour) centroid rows, for assign="index"."""
    eval_features = cluster_space(student, x, cfg)
    with torch.no_grad():
        teacher_features = teacher(x)
    if cfg.perturbation == "ncp":
        if centroids is None:
            raise ValueError("perturbation 'ncp' needs the epoch's centroids")
        if cfg.assign == "index":
            if assigned is None:
                raise ValueError("assign='index' needs each sample's (own, neighbour) centroids")
            own_index = assigned[:, 0]
            own, nbr = centroids[own_index], centroids[assigned[:, 1]]
        else:
            choice = nearest_centroids(eval_features, centroids, cfg.neighbor_rank)
            own_index, own, nbr = choice.own_index, choice.own, choice.nbr
        objective = ncp_objective(student, own, nbr, cfg.strategy)
    else:
        objective = deacl_objective(student, teacher_features)
    x_adv = adversarial_examples(student, x, objective, cfg)

    clean, adv = student_features(student, x, x_adv, cfg.dual_bn)
    losses = ncp_acl_loss(clean, teacher_features, adv, cfg.lam)
    if cfg.perturbation != "ncp":
        return StepOutput(losses, eval_features, None, x_adv)
    adv_eval = cluster_space(student, x_adv, cfg)
    changed = (nearest_centroids(adv_eval, centroids, 2).own_index != own_index).float().mean()
    return StepOutput(losses, eval_features, changed, x_adv,
                      _centroid_cos(eval_features, adv_eval, own, nbr))
