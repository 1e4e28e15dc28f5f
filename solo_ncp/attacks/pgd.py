"""The project's one projected gradient ascent (PGD) in [0, 1] pixel space, in the L-inf or the L2
ball (solo_ncp.threat_model.NORMS)."""
from typing import Callable, Optional

import torch

from solo_ncp.threat_model import check_norm

Objective = Callable[[torch.Tensor], torch.Tensor]
"""Maps x: (B, C, H, W) in [0, 1] to per-sample values (B,) that the attack maximises."""
DIVISION_EPS = 1e-10
"""Added to a gradient's L2 norm before dividing by it (torchattacks' `eps_for_division`)."""


def _l2_norms(t: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norms of t: (B, ...) -> (B, 1, ..., 1), broadcastable against t."""
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.dim() - 1)))


def _project(x: torch.Tensor, delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Bring `delta` into the `norm` ball of radius `eps` (L-inf: clip each pixel; L2: scale down
    each sample whose norm exceeds eps), then keep `x + delta` inside [0, 1]."""
    if norm == "L2":
        delta = delta * (eps / _l2_norms(delta).clamp_min(DIVISION_EPS)).clamp(max=1.0)
    else:
        delta = delta.clamp(-eps, eps)
    return (x + delta).clamp(0.0, 1.0) - x


def _ascent_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent step of unit size in `norm`: sign(grad) for L-inf, grad / ||grad||_2 for L2."""
    if norm == "L2":
        return grad / (_l2_norms(grad) + DIVISION_EPS)
    return grad.sign()


def _random_start(x: torch.Tensor, eps: float, norm: str, generator: Optional[torch.Generator]) -> torch.Tensor:
    """A random point of the ball, drawn on the generator's device, returned on x's device.
    L-inf: each pixel uniform in [-eps, eps]. L2: a Gaussian direction scaled to a radius uniform in
    [0, eps] per sample (torchattacks' PGDL2 start)."""
    device = generator.device if generator is not None else x.device
    if norm == "L2":
        direction = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
        radius = torch.rand((len(x),) + (1,) * (x.dim() - 1), generator=generator, device=device, dtype=x.dtype)
        return (direction / _l2_norms(direction) * radius * eps).to(x.device)
    noise = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype)
    return ((2.0 * noise - 1.0) * eps).to(x.device)


def pgd(
    objective: Objective,
    x: torch.Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    random_start: bool = True,
    generator: Optional[torch.Generator] = None,
    norm: str = "Linf",
) -> torch.Tensor:
    """Maximise `objective` over the `norm` ball ("Linf" or "L2") of radius `eps` around `x`, clipped to [0, 1].

    x: (B, C, H, W) float in [0, 1]. eps, alpha: pixel units (L-inf: 8/255 is the usual budget;
    L2: the per-image Euclidean norm over all C*H*W pixels, 0.5 is the usual CIFAR budget).
    Starts from a random point of the ball (`_random_start`, drawn with `generator` when given) or
    from x, then takes `steps` ascent steps of size `alpha` (L-inf: alpha * sign(grad); L2:
    alpha * grad / ||grad||_2), each followed by the projection onto the ball and into [0, 1].
    With steps=0 and random_start=True it returns the random start (clamped).

    Gradients are taken with respect to the perturbation only (torch.autograd.grad), so nothing
    accumulates in any parameter's `.grad`. The attack never changes module modes: the caller
    decides train/eval mode and, for dual-BN encoders, which BN branch the objective runs through.
    With BatchNorm in train mode the per-sample values depend on the whole batch, so callers
    normally attack in eval mode.

    Returns x_adv: (B, C, H, W), detached, with ||x_adv - x|| <= eps in `norm` and 0 <= x_adv <= 1.
    """
    if not x.is_floating_point():
        raise TypeError(f"pgd expects a floating-point x, got {x.dtype}")
    check_norm(norm)
    if eps < 0 or alpha < 0:
        raise ValueError(f"eps and alpha must be >= 0, got eps={eps}, alpha={alpha}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    x = x.detach()
    delta = _random_start(x, eps, norm, generator) if random_start else torch.zeros_like(x)
    delta = _project(x, delta, eps, norm)
    for _ in range(steps):
        delta.requires_grad_(True)
        with torch.enable_grad():
            values = objective(x + delta)
            if values.shape != x.shape[:1]:
                raise ValueError(
                    f"objective must return per-sample values of shape {tuple(x.shape[:1])}, "
                    f"got {tuple(values.shape)}"
                )
            (grad,) = torch.autograd.grad(values.sum(), delta)
        delta = _project(x, delta.detach() + alpha * _ascent_direction(grad, norm), eps, norm)
    return (x + delta).detach()
