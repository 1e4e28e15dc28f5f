"""The project's one L-inf projected gradient ascent (PGD) in [0, 1] pixel space."""
from typing import Callable, Optional

import torch

Objective = Callable[[torch.Tensor], torch.Tensor]
"""Maps x: (B, C, H, W) in [0, 1] to per-sample values (B,) that the attack maximises."""


def _project(x: torch.Tensor, delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Clip `delta` to the L-inf ball of radius `eps` and keep `x + delta` inside [0, 1]."""
    delta = delta.clamp(-eps, eps)
    return (x + delta).clamp(0.0, 1.0) - x


def _uniform_start(x: torch.Tensor, eps: float, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Noise uniform in [-eps, eps], drawn on the generator's device, returned on x's device."""
    device = generator.device if generator is not None else x.device
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
) -> torch.Tensor:
    """Maximise `objective` over the L-inf ball of radius `eps` around `x`, clipped to [0, 1].

    x: (B, C, H, W) float in [0, 1]. eps, alpha: pixel units (8/255 is the usual budget).
    Starts from x plus uniform noise in [-eps, eps] (drawn with `generator` when given) or from x,
    then takes `steps` sign-gradient ascent steps of size `alpha`, each followed by the projection.
    With steps=0 and random_start=True it returns uniform random noise in the ball (clamped).

    Gradients are taken with respect to the perturbation only (torch.autograd.grad), so nothing
    accumulates in any parameter's `.grad`. The attack never changes module modes: the caller
    decides train/eval mode and, for dual-BN encoders, which BN branch the objective runs through.
    With BatchNorm in train mode the per-sample values depend on the whole batch, so callers
    normally attack in eval mode.

    Returns x_adv: (B, C, H, W), detached, with |x_adv - x| <= eps and 0 <= x_adv <= 1.
    """
    if not x.is_floating_point():
        raise TypeError(f"pgd expects a floating-point x, got {x.dtype}")
    if eps < 0 or alpha < 0:
        raise ValueError(f"eps and alpha must be >= 0, got eps={eps}, alpha={alpha}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    x = x.detach()
    delta = _uniform_start(x, eps, generator) if random_start else torch.zeros_like(x)
    delta = _project(x, delta, eps)
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
        delta = _project(x, delta.detach() + alpha * grad.sign(), eps)
    return (x + delta).detach()
