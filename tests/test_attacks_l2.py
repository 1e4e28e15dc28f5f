"""L2 PGD against torchattacks' PGDL2 (transcribed), the closed-form worst case of a linear score,
the ball and the box, its random start, and the threat-model check."""
import pytest
import torch
from torch import nn

from solo_ncp.attacks import check_norm, cross_entropy_objective, pgd
from tests.test_attacks import _images, _seeded, _tiny_cnn

EPS = 0.5
ALPHA = EPS / 4

pytestmark = pytest.mark.usefixtures("single_thread")


def torchattacks_pgdl2(model: nn.Module, images, labels, eps, alpha, steps, start):
    """torchattacks 3.5.1 `PGDL2.forward` (attacks/pgdl2.py), transcribed; its random start
    (normal direction, radius uniform in [0, eps]) is replaced by `start`."""
    eps_for_division = 1e-10
    batch_size = len(images)
    adv_images = torch.clamp(images.clone().detach() + start, min=0, max=1).detach()
    loss = nn.CrossEntropyLoss()
    for _ in range(steps):
        adv_images.requires_grad = True
        cost = loss(model(adv_images), labels)
        grad = torch.autograd.grad(cost, adv_images, retain_graph=False, create_graph=False)[0]
        grad_norms = torch.norm(grad.view(batch_size, -1), p=2, dim=1) + eps_for_division
        grad = grad / grad_norms.view(batch_size, 1, 1, 1)
        adv_images = adv_images.detach() + alpha * grad
        delta = adv_images - images
        delta_norms = torch.norm(delta.view(batch_size, -1), p=2, dim=1)
        factor = eps / delta_norms
        factor = torch.min(factor, torch.ones_like(delta_norms))
        delta = delta * factor.view(-1, 1, 1, 1)
        adv_images = torch.clamp(images + delta, min=0, max=1).detach()
    return adv_images


def l2_norms(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)


@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_l2_equals_torchattacks_pgdl2(random_start):
    model = _tiny_cnn().eval()
    x = _images(8)
    y = torch.arange(8) % 4
    start = (pgd(cross_entropy_objective(model, y), x, eps=EPS, alpha=ALPHA, steps=0, norm="L2",
                 generator=_seeded(3)) - x) if random_start else torch.zeros_like(x)
    ours = pgd(cross_entropy_objective(model, y), x, eps=EPS, alpha=ALPHA, steps=20, norm="L2",
               random_start=random_start, generator=_seeded(3))
    reference = torchattacks_pgdl2(model, x, y, EPS, ALPHA, 20, start)
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=0)
    assert (l2_norms(ours - x) <= EPS + 1e-6).all() and ours.min() >= 0 and ours.max() <= 1
    assert (l2_norms(ours - x) > 0.9 * EPS).any()


def test_pgd_l2_reaches_the_closed_form_worst_case_of_a_linear_score():
    """Away from the box edges, max w.(x + d) over ||d||_2 <= eps is at d = eps w / ||w||_2
    (Cauchy-Schwarz). From x, each step of eps / 4 goes along w, so the fifth reaches it exactly
    (a random start would approach it only geometrically)."""
    w = torch.randn(3 * 8 * 8, generator=_seeded(1))
    x = torch.full((4, 3, 8, 8), 0.5)
    eps = 0.3
    x_adv = pgd(lambda z: z.flatten(1) @ w, x, eps=eps, alpha=eps / 4, steps=20, norm="L2",
                random_start=False)
    expected = x + (eps * w / w.norm()).view(1, 3, 8, 8)
    torch.testing.assert_close(x_adv, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(x_adv.flatten(1) @ w, (x.flatten(1) @ w) + eps * w.norm(), atol=1e-4, rtol=0)


def test_pgd_l2_random_start_radius_is_uniform_in_the_ball_radius():
    """steps=0: each start lies in the ball; its radius is eps * U(0, 1): mean eps / 2 and
    standard deviation eps / sqrt(12), here within 4 standard errors over 4,000 images."""
    n = 4000
    x = torch.full((n, 3, 4, 4), 0.5)
    start = pgd(lambda z: z.flatten(1).sum(1), x, eps=0.2, alpha=0.1, steps=0, norm="L2", generator=_seeded(5))
    radius = l2_norms(start - x) / 0.2
    assert radius.max() <= 1 + 1e-6
    se = (1 / 12) ** 0.5 / n ** 0.5
    assert abs(radius.mean().item() - 0.5) < 4 * se
    assert abs(radius.std().item() - (1 / 12) ** 0.5) < 0.01


@pytest.mark.parametrize("norm", ["L3", "linf", "l2", ""])
def test_an_unknown_norm_is_refused_naming_the_two(norm):
    with pytest.raises(ValueError, match="norm must be one of Linf, L2"):
        check_norm(norm)
    with pytest.raises(ValueError, match="norm must be one of Linf, L2"):
        pgd(lambda z: z.flatten(1).sum(1), torch.zeros(1, 1, 2, 2), eps=0.1, alpha=0.1, steps=1, norm=norm)
