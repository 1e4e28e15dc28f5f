"""TRADES (Zhang et al., 2019) for adversarial fine-tuning, as in DeACL's trades/trades.py.

loss = CE(logits_clean, y) + beta * KL(p_clean || p_adv), with p = softmax(logits), the CE
averaged over the batch and the KL summed over classes and averaged over the batch (DeACL:
`KLDivLoss(size_average=False)(log_softmax(adv), softmax(clean)) / batch_size`). The gradient
flows through both p_clean and p_adv, as in TRADES. The adversarial example maximises the same
KL with p_clean held fixed (computed once, without gradient).
"""
import torch
import torch.nn.functional as F
from torch import nn

from solo_ncp.attacks import Objective


def kl_clean_adv(clean_logits: torch.Tensor, adv_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(p_clean || p_adv) = sum_c p_clean,c (log p_clean,c - log p_adv,c), in nats.

    clean_logits, adv_logits: (B, C). Returns (B,).
    """
    clean_log_probs = F.log_softmax(clean_logits, dim=1)
    adv_log_probs = F.log_softmax(adv_logits, dim=1)
    return (clean_log_probs.exp() * (clean_log_probs - adv_log_probs)).sum(1)


def trades_loss(clean_logits: torch.Tensor, adv_logits: torch.Tensor, targets: torch.Tensor,
                beta: float) -> torch.Tensor:
    """Scalar CE(clean_logits, targets).mean() + beta * KL(p_clean || p_adv).mean().

    clean_logits, adv_logits: (B, C); targets: (B,) class indices.
    """
    return F.cross_entropy(clean_logits, targets) + beta * kl_clean_adv(clean_logits, adv_logits).mean()


def trades_objective(classifier: nn.Module, clean_logits: torch.Tensor) -> Objective:
    """PGD objective x -> KL(p_clean || softmax(classifier(x))) per sample (B,), p_clean fixed.

    clean_logits: (B, C), the classifier's logits on the clean batch (detached here).
    """
    clean_logits = clean_logits.detach()

    def objective(x: torch.Tensor) -> torch.Tensor:
        return kl_clean_adv(clean_logits, classifier(x))

    return objective
