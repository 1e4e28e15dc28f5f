"""Tests for solo_ncp.attacks: the L-inf PGD and its objectives."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from solo_ncp.attacks import (
    cross_entropy_objective,
    deacl_objective,
    ncp_objective,
    nearest_centroids,
    pgd,
)

EPS = 8 / 255
ALPHA = 2 / 255
TOLERANCE = 1e-6


pytestmark = pytest.mark.usefixtures("single_thread")


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(batch: int = 6, seed: int = 0) -> torch.Tensor:
    """(B, 3, 8, 8) in [0, 1] with some pixels exactly at the box edges."""
    x = torch.rand(batch, 3, 8, 8, generator=_seeded(seed))
    x[:, 0, 0, :] = 0.0
    x[:, 0, 1, :] = 1.0
    return x


def _tiny_cnn(seed: int = 0, num_classes: int = 4) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(32, num_classes),
        )


def _flatten_encoder(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1)


def test_pgd_stays_in_ball_and_box_and_increases_objective():
    model = _tiny_cnn().eval()
    x = _images()
    targets = torch.arange(len(x)) % 4
    objective = cross_entropy_objective(model, targets)
    x_adv = pgd(objective, x, eps=EPS, alpha=ALPHA, steps=10, generator=_seeded(1))

    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert (x_adv - x).abs().max() <= EPS + TOLERANCE
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    with torch.no_grad():
        assert (objective(x_adv) > objective(x)).all()
    assert all(parameter.grad is None for parameter in model.parameters())


def test_pgd_leaves_module_modes_alone_and_works_under_no_grad():
    model = _tiny_cnn().train()
    objective = cross_entropy_objective(model, torch.zeros(6, dtype=torch.long))
    with torch.no_grad():
        pgd(objective, _images(), eps=EPS, alpha=ALPHA, steps=2, generator=_seeded(0))
    assert all(module.training for module in model.modules())
    model.eval()
    pgd(objective, _images(), eps=EPS, alpha=ALPHA, steps=2, generator=_seeded(0))
    assert not any(module.training for module in model.modules())


def _box_aware_minimiser(x: torch.Tensor, weights: torch.Tensor, eps: float) -> torch.Tensor:
    """argmin of <w, x'> over |x' - x|_inf <= eps, 0 <= x' <= 1: per pixel, the end of its interval."""
    lower, upper = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    return torch.where(weights > 0, lower, upper)


def test_pgd20_reaches_the_box_aware_optimum_of_a_linear_margin():
    x = _images(batch=5, seed=3)
    weights = torch.randn(x[0].numel(), generator=_seeded(4))
    weights = torch.where(weights.abs() < 1e-3, torch.ones_like(weights), weights)

    def negative_margin(z: torch.Tensor) -> torch.Tensor:
        return -(z.flatten(1) @ weights + 0.3)

    x_adv = pgd(negative_margin, x, eps=EPS, alpha=ALPHA, steps=20, generator=_seeded(5))
    optimum = _box_aware_minimiser(x.flatten(1), weights, EPS).view_as(x)
    torch.testing.assert_close(x_adv, optimum, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(negative_margin(x_adv), negative_margin(optimum), atol=1e-4, rtol=0)


def test_pgd20_cross_entropy_on_a_two_class_linear_classifier_reaches_the_worst_case():
    x = _images(batch=6, seed=6)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        classifier = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), 2))
    targets = torch.tensor([0, 1, 0, 1, 1, 0])
    x_adv = pgd(cross_entropy_objective(classifier, targets), x, eps=EPS, alpha=ALPHA, steps=20, generator=_seeded(8))

    weight = classifier[1].weight.detach()
    true_minus_other = weight[targets] - weight[1 - targets]
    optimum = torch.stack(
        [_box_aware_minimiser(x[i].flatten(), true_minus_other[i], EPS) for i in range(len(x))]
    ).view_as(x)
    torch.testing.assert_close(x_adv, optimum, atol=TOLERANCE, rtol=0)


def test_generator_makes_pgd_deterministic():
    model = _tiny_cnn().eval()
    objective = cross_entropy_objective(model, torch.zeros(6, dtype=torch.long))
    x = _images()
    first = pgd(objective, x, eps=EPS, alpha=ALPHA, steps=3, generator=_seeded(11))
    again = pgd(objective, x, eps=EPS, alpha=ALPHA, steps=3, generator=_seeded(11))
    other = pgd(objective, x, eps=EPS, alpha=ALPHA, steps=3, generator=_seeded(12))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_zero_steps_give_uniform_noise_in_the_ball_without_calling_the_objective():
    def never_called(z: torch.Tensor) -> torch.Tensor:
        raise AssertionError("objective must not run for steps=0")

    x = torch.full((64, 3, 8, 8), 0.5)
    noisy = pgd(never_called, x, eps=EPS, alpha=ALPHA, steps=0, generator=_seeded(0))
    noise = noisy - x
    assert noise.abs().max() <= EPS + TOLERANCE
    assert noise.min() < -0.9 * EPS and noise.max() > 0.9 * EPS
    assert abs(noise.mean().item()) < 0.05 * EPS
    assert torch.equal(pgd(never_called, x, eps=EPS, alpha=ALPHA, steps=0, random_start=False), x)


def test_pgd_rejects_objectives_that_are_not_per_sample():
    with pytest.raises(ValueError, match="per-sample"):
        pgd(lambda z: z.sum(), _images(), eps=EPS, alpha=ALPHA, steps=1)
    with pytest.raises(ValueError):
        pgd(lambda z: z.flatten(1).sum(1), _images(), eps=EPS, alpha=ALPHA, steps=-1)


def _unit(degrees: float, scale: float = 1.0) -> list:
    return [scale * math.cos(math.radians(degrees)), scale * math.sin(math.radians(degrees))]


def test_nearest_centroids_ranks_by_cosine_not_euclidean_distance():
    # The 0-degree centroid is far away in Euclidean distance but the nearest by angle.
    centroids = torch.tensor([_unit(0, 10.0), _unit(30, 0.9), _unit(90, 2.0), _unit(180, 1.0)])
    features = torch.tensor([_unit(10, 3.0), _unit(100, 0.5)])
    # Angles to the features at 10 and 100 degrees: [10, 20, 80, 170] and [100, 70, 10, 80].
    expected_nbr = {2: [1, 1], 3: [2, 3], 4: [3, 0]}
    for n, nbr_index in expected_nbr.items():
        chosen = nearest_centroids(features, centroids, n=n)
        assert chosen.own_index.tolist() == [0, 2]
        assert chosen.nbr_index.tolist() == nbr_index
        torch.testing.assert_close(chosen.own, F.normalize(centroids, dim=1)[[0, 2]])
        torch.testing.assert_close(chosen.nbr, F.normalize(centroids, dim=1)[nbr_index])
    for bad_n in (1, 5):
        with pytest.raises(ValueError, match="n must be in"):
            nearest_centroids(features, centroids, n=bad_n)


def test_a_given_own_cluster_is_never_its_own_neighbour():
    """k-means labels need not be the nearest centroid (assign=index): the neighbour is then
    ranked among the other centroids, so Eq. 4 never compares a centroid with itself."""
    centroids = torch.tensor([_unit(0, 10.0), _unit(30, 0.9), _unit(90, 2.0), _unit(180, 1.0)])
    features = torch.tensor([_unit(10, 3.0), _unit(100, 0.5)])
    # Own clusters given: 1 (30 degrees, rank 2) and 3 (180 degrees, rank 3). Angles to the
    # others, nearest first: 0 (10), 2 (80), 3 (170); and 2 (10), 1 (70), 0 (100).
    expected_nbr = {2: [0, 2], 3: [2, 1], 4: [3, 0]}
    for n, nbr_index in expected_nbr.items():
        chosen = nearest_centroids(features, centroids, n=n, own_index=torch.tensor([1, 3]))
        assert chosen.own_index.tolist() == [1, 3]
        assert chosen.nbr_index.tolist() == nbr_index
        torch.testing.assert_close(chosen.own, F.normalize(centroids, dim=1)[[1, 3]])
        torch.testing.assert_close(chosen.nbr, F.normalize(centroids, dim=1)[nbr_index])
    nearest = torch.tensor([0, 2])
    for n in (2, 3, 4):
        ranked = nearest_centroids(features, centroids, n=n)
        given = nearest_centroids(features, centroids, n=n, own_index=nearest)
        assert given.nbr_index.tolist() == ranked.nbr_index.tolist()
    for bad_own in (torch.tensor([1, 4]), torch.tensor([-1, 0]), torch.tensor([1])):
        with pytest.raises(ValueError, match="own_index must hold one centroid row in"):
            nearest_centroids(features, centroids, own_index=bad_own)


def test_ncp_objective_values_follow_eq4_with_negative_cosine():
    own, nbr = torch.tensor([_unit(20)]), torch.tensor([_unit(70)])
    cos_own_nbr = math.cos(math.radians(50))
    at_own = torch.tensor(_unit(20)).view(1, 1, 1, 2)
    at_nbr = torch.tensor(_unit(70)).view(1, 1, 1, 2)
    expected = {
        "i": (-1.0, -cos_own_nbr),
        "ii": (cos_own_nbr, 1.0),
        "iii": (-1.0 + cos_own_nbr, -cos_own_nbr + 1.0),
    }
    for strategy, (value_at_own, value_at_nbr) in expected.items():
        objective = ncp_objective(_flatten_encoder, own, nbr, strategy=strategy)
        assert objective(at_own).item() == pytest.approx(value_at_own, abs=1e-6)
        assert objective(at_nbr).item() == pytest.approx(value_at_nbr, abs=1e-6)
    with pytest.raises(ValueError, match="strategy"):
        ncp_objective(_flatten_encoder, own, nbr, strategy="iv")


def test_ncp_pgd_moves_away_from_own_and_toward_the_neighbour():
    own, nbr = torch.tensor([_unit(20)]), torch.tensor([_unit(70)])
    x = torch.tensor(_unit(35, 0.5)).view(1, 1, 1, 2)

    def cosines(z: torch.Tensor):
        f = _flatten_encoder(z)
        return F.cosine_similarity(f, own).item(), F.cosine_similarity(f, nbr).item()

    cos_own, cos_nbr = cosines(x)
    for strategy in ("i", "ii", "iii"):
        objective = ncp_objective(_flatten_encoder, own, nbr, strategy=strategy)
        x_adv = pgd(objective, x, eps=0.1, alpha=0.02, steps=10, random_start=False)
        adv_own, adv_nbr = cosines(x_adv)
        assert objective(x_adv).item() > objective(x).item()
        if strategy in ("i", "iii"):
            assert adv_own < cos_own
        if strategy in ("ii", "iii"):
            assert adv_nbr > cos_nbr


def test_deacl_objective_pushes_away_from_the_teacher():
    teacher = torch.tensor([_unit(40)])
    objective = deacl_objective(_flatten_encoder, teacher)
    at_teacher = torch.tensor(_unit(40, 0.5)).view(1, 1, 1, 2)
    assert objective(at_teacher).item() == pytest.approx(-1.0, abs=1e-6)
    x = torch.tensor(_unit(50, 0.5)).view(1, 1, 1, 2)
    x_adv = pgd(objective, x, eps=0.1, alpha=0.02, steps=10, random_start=False)
    assert F.cosine_similarity(_flatten_encoder(x_adv), teacher) < F.cosine_similarity(_flatten_encoder(x), teacher)
