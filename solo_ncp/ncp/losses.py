"""The stage-2 loss of NCP-ACL (Eq. 3) and DeACL, from the TRADES-like objective of DeACL.

CosSim(u, v) = -cos(u, v), the NEGATIVE cosine similarity, as in the paper.
"""
from typing import Dict

import torch
import torch.nn.functional as F


def neg_cosine(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """CosSim(u, v) = -cos(u, v) per row. u, v: (B, D) -> (B,)."""
    return -F.cosine_similarity(u, v, dim=1)


def ncp_acl_loss(
    student_clean: torch.Tensor,
    teacher: torch.Tensor,
    student_adv: torch.Tensor,
    lam: float,
) -> Dict[str, torch.Tensor]:
    """Eq. 3: CosSim(f2(x), f1(x)) + lam * CosSim(f2(x_adv), f2(x)), averaged over the batch.

    student_clean: f2(x) (B, D) through the clean BN; teacher: f1(x) (B, D), no gradient;
    student_adv: f2(x_adv) (B, D) through the adversarial BN. Gradients flow into both student
    terms, as in DeACL. Returns {"loss", "distill", "robust"} (scalars; loss = distill + lam * robust).
    """
    distill = neg_cosine(student_clean, teacher.detach()).mean()
    robust = neg_cosine(student_adv, student_clean).mean()
    return {"loss": distill + lam * robust, "distill": distill, "robust": robust}
