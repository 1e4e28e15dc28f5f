"""One stage-2 training step of NCP-ACL (Algorithm 1, inner loop) or DeACL, host-independent.

Modes and BN branches, decided here once for every host:
- centroid choice and the online classifier use f2(x) in eval mode through the clean BN, without
  gradient (the features the epoch's clustering saw; DeACL trains its online classifier on
  eval-mode features too);
- PGD runs the student in eval mode (as DeACL's public code does) through the adversarial BN, so
  the attack neither depends on the batch composition nor moves any running statistic;
- the loss runs the student in train mode: x through the clean BN, x_adv through the adversarial
  BN (dual BN of Jiang et al. 2020); the teacher f1 is frozen and always in eval mode.
"""
from dataclasses import dataclass
from typing import Dict, Optional

import torch
from torch import nn

from solo_ncp.attacks import deacl_objective, ncp_objective, nearest_centroids, pgd
from solo_ncp.attacks.objectives import NCP_STRATEGIES
from solo_ncp.models.inference import eval_mode
from solo_ncp.models.dual_bn import bn_branch
from solo_ncp.ncp.losses import ncp_acl_loss

PERTURBATIONS = ("ncp", "deacl")
ASSIGNMENTS = ("nearest", "index")


@dataclass(frozen=True)
class Stage2Config:
    """perturbation: "ncp" (Eq. 4) or "deacl" (Eq. 2). strategy: NCP's "i", "ii" or "iii".
    neighbor_rank: n of the n-th nearest centroid. lam: weight of the robust term of Eq. 3.
    eps, alpha: L-inf budget and PGD step in [0, 1] pixel units; steps: PGD iterations.
    assign: "nearest" = C_x / C_nbr ranked against f2(x) of the current view (Algorithm 1);
        "index" = the sample's cluster from the epoch's k-means and the n-th nearest centroid
        to its epoch feature (Section 3.2 (iii): "the cluster it belongs to")."""

    perturbation: str = "ncp"
    strategy: str = "iii"
    neighbor_rank: int = 2
    lam: float = 6.0
    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 5
    assign: str = "nearest"

    def __post_init__(self):
        for name, value, allowed in (
            ("perturbation", self.perturbation, PERTURBATIONS),
            ("strategy", self.strategy, NCP_STRATEGIES),
            ("assign", self.assign, ASSIGNMENTS),
        ):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {', '.join(allowed)}")
        if self.neighbor_rank < 2:
            raise ValueError(f"neighbor_rank={self.neighbor_rank} must be >= 2")
        if self.eps < 0 or self.alpha <= 0 or self.steps < 1 or self.lam < 0:
            raise ValueError("need eps >= 0, alpha > 0, steps >= 1 and lam >= 0")


@dataclass
class StepOutput:
    """losses: {"loss", "distill", "robust"}; eval_features: (B, D) f2(x), eval mode, clean BN,
    no gradient; centroid_changed: fraction of x_adv whose nearest centroid differs from C_x
    (None for DeACL); x_adv: (B, C, H, W) in [0, 1]."""

    losses: Dict[str, torch.Tensor]
    eval_features: torch.Tensor
    centroid_changed: Optional[torch.Tensor]
    x_adv: torch.Tensor


def adversarial_examples(student: nn.Module, x: torch.Tensor, objective, cfg: Stage2Config):
    """PGD on `objective` with the student in eval mode through the adversarial BN; the student's
    modes and branches are restored afterwards."""
    with eval_mode(student), bn_branch(student, "adv"):
        return pgd(objective, x, eps=cfg.eps, alpha=cfg.alpha, steps=cfg.steps)


def stage2_step(
    student: nn.Module,
    teacher: nn.Module,
    x: torch.Tensor,
    cfg: Stage2Config,
    *,
    centroids: Optional[torch.Tensor] = None,
    assigned: Optional[torch.Tensor] = None,
) -> StepOutput:
    """Eq. 3 for one batch. student: Normalize + dual-BN encoder (f2); teacher: Normalize +
    encoder (f1), frozen; x: (B, C, H, W) in [0, 1]. centroids: (K, D) unit-norm, needed for "ncp";
    assigned: (B, 2) int64 (own, neighbour) centroid rows, needed for assign="index"."""
    with torch.no_grad(), eval_mode(student), bn_branch(student, "clean"):
        eval_features = student(x)
    with torch.no_grad():
        teacher_features = teacher(x)
    own_index = None
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

    with bn_branch(student, "clean"):
        clean = student(x)
    with bn_branch(student, "adv"):
        adv = student(x_adv)
    losses = ncp_acl_loss(clean, teacher_features, adv, cfg.lam)
    changed = None
    if own_index is not None:
        adv_nearest = nearest_centroids(adv.detach(), centroids, 2).own_index
        changed = (adv_nearest != own_index).float().mean()
    return StepOutput(losses, eval_features, changed, x_adv)
