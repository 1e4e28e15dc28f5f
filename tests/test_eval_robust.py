"""SA / RA / AA counted the way the field counts them: planted models and direct re-checks."""
import torch
from torch import nn
from torch.utils.data import Subset, TensorDataset

from solo_ncp.eval import autoattack_accuracy, eval_mode, evaluate
from tests.test_eval import digits, make_encoder, small_config, train_head  # noqa: F401 (fixture)

import pytest

pytestmark = pytest.mark.usefixtures("single_thread")


class PlantedScalarModel(nn.Module):
    """Two classes on 1-pixel images v = x[:, 0, 0, 0]; logits (0, g(v)), so class 0 iff g(v) < 0.

    Around 0.1: g = -1 (correct, flat: no attack moves it). Around 0.3: g = 50 (v - 0.3) - 0.5,
    correct at 0.3 and wrong from 0.31 up, so PGD (which raises g) breaks it. Around 0.5: g = +1
    only within 1e-6 of 0.5, else -1, flat: wrong on the clean image, correct anywhere a random
    start lands. Above 0.6: g = +1 (wrong everywhere).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.flatten(1)[:, 0]
        g = torch.full_like(v, -1.0)
        g = torch.where((v > 0.2) & (v < 0.4), 50.0 * (v - 0.3) - 0.5, g)
        spike = torch.where((v - 0.5).abs() < 1e-6, torch.ones_like(v), -torch.ones_like(v))
        g = torch.where((v > 0.45) & (v < 0.55), spike, g)
        g = torch.where(v > 0.6, torch.ones_like(v), g)
        return torch.stack([torch.zeros_like(v), g], dim=1)


def test_ra_counts_an_image_only_if_correct_both_clean_and_under_attack():
    # Hand count, label 0 everywhere: 0.1 right/right, 0.3 right/wrong, 0.5 wrong/right, 0.7 wrong/wrong.
    # SA = 2/4. RA (clean AND adversarial correct) = 1/4; "adversarial correct" alone would say 2/4.
    x = torch.tensor([0.1, 0.3, 0.5, 0.7]).reshape(4, 1, 1, 1)
    y = torch.zeros(4, dtype=torch.long)
    metrics = evaluate(PlantedScalarModel(), TensorDataset(x, y), eps=0.05, alpha=0.01, steps=10, batch_size=4,
                       device="cpu", seed=0, progress=False)
    assert metrics["sa"] == 50.0
    assert metrics["ra"] == 25.0
    assert metrics["sa_n"] == metrics["ra_n"] == 4


@pytest.fixture(scope="module")
def breakable_classifier(digits):
    """A digits classifier (random projection + BN + whitened SLF head); at eps 0.015 on the first 20
    test images: clean 100 %, PGD-20 95 %, AutoAttack (APGD-CE, APGD-T) 90 %."""
    encoder = make_encoder()
    return nn.Sequential(encoder, train_head(encoder, digits[0], small_config(), cache_features=True))


def test_autoattack_scores_its_adversarial_images_and_is_no_weaker_than_pgd(digits, breakable_classifier):
    eps, n = 0.015, 20
    x, y = (tensor[:n] for tensor in digits[1].tensors)
    result = autoattack_accuracy(breakable_classifier, x, y, eps=eps, n=n, device="cpu", seed=0,
                                 version="custom", attacks=["apgd-ce", "apgd-t"], progress=False)
    with torch.no_grad(), eval_mode(breakable_classifier):
        clean_hit = breakable_classifier(x).argmax(1) == y
        adv_hit = breakable_classifier(result.x_adv).argmax(1) == y
    clean = 100.0 * clean_hit.float().mean().item()
    pgd = evaluate(breakable_classifier, Subset(digits[1], range(n)), eps=eps, alpha=eps / 4, steps=20,
                   device="cpu", seed=0, progress=False)["ra"]
    assert result.n == n and result.x_adv.shape == x.shape
    assert (result.x_adv - x).abs().max().item() <= eps + 1e-6
    assert 0.0 <= result.x_adv.min().item() and result.x_adv.max().item() <= 1.0
    assert result.accuracy == pytest.approx(100.0 * (clean_hit & adv_hit).float().mean().item())
    assert torch.equal(result.robust, clean_hit & adv_hit)
    # AutoAttack must break some right images, and (a stronger attack) no fewer than PGD-20 on the
    # same ones; PGD-20 breaking fewer than it (95 % against 90 %) is this data's, not a rule.
    assert result.accuracy < clean and result.accuracy <= pgd


def test_standard_autoattack_runs_its_four_linf_attacks_and_is_no_weaker_than_its_first(
        digits, breakable_classifier):
    """AutoAttack's standard L-inf version (eval's default) is APGD-CE, APGD-T, FAB-T and Square
    (Croce & Hein 2020, Sec. 5), each on what the previous left robust: every one reports in the
    log, and with the same seed its accuracy is at most that of APGD-CE alone (which runs first)."""
    eps, n = 0.015, 10
    x, y = (tensor[:n] for tensor in digits[1].tensors)
    standard, first = (autoattack_accuracy(breakable_classifier, x, y, eps=eps, n=n, device="cpu", seed=0,
                                           progress=False, **version)
                       for version in ({}, {"version": "custom", "attacks": ["apgd-ce"]}))
    reported = [name for name in ("apgd-ce", "apgd-t", "fab-t", "square", "apgd-dlr")
                if any(line.startswith(f"robust accuracy after {name.upper()}") for line in standard.log)]
    assert reported == ["apgd-ce", "apgd-t", "fab-t", "square"], standard.log
    assert standard.accuracy <= first.accuracy
    assert not (standard.robust & ~first.robust).any()
    assert (standard.x_adv - x).abs().max().item() <= eps + 1e-6


def test_pgd_results_do_not_depend_on_the_batch_split(digits, breakable_classifier):
    # One PGD step from a start anywhere in a wide ball: the start decides most outcomes (a new
    # seed moves RA), so a start drawn per batch rather than per image would move it too.
    test = Subset(digits[1], range(50))
    runs = [(7, 0), (7, 1)] + [(50, seed) for seed in range(5)]
    ra = {(batch_size, seed): evaluate(breakable_classifier, test, eps=0.3, alpha=0.01, steps=1,
                                       batch_size=batch_size, device="cpu", seed=seed, progress=False)["ra"]
          for batch_size, seed in runs}
    assert ra[7, 0] == ra[50, 0] and ra[7, 1] == ra[50, 1]
    assert len({ra[50, seed] for seed in range(5)}) > 1


class DtypeRecorder(nn.Module):
    """A linear classifier on flattened images that records the dtype of every logits tensor."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(in_features, num_classes)
        self.dtypes = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.linear(x.flatten(1))
        self.dtypes.add(logits.dtype)
        return logits


def test_autoattack_runs_in_fp32_under_a_callers_autocast(digits):
    x, y = (tensor[:6] for tensor in digits[1].tensors)
    model = DtypeRecorder(x[0].numel(), 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(x).dtype == torch.bfloat16  # the autocast is live for the caller
        model.dtypes.clear()
        autoattack_accuracy(model, x, y, eps=0.03, n=6, device="cpu", seed=0, version="custom",
                            attacks=["apgd-ce"], progress=False)
    assert model.dtypes == {torch.float32}
