"""Fine-tuning modes and losses: TRADES by hand, AFF trains the encoder, ALF does not, config checks."""
import math

import pytest
import torch

from solo_ncp.eval import FineTuneConfig, fine_tune, trades_loss
from tests.test_eval import NUM_CLASSES, digits, make_encoder, small_config  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")


def softmax(logits):
    exps = [math.exp(value) for value in logits]
    return [value / sum(exps) for value in exps]


def test_trades_loss_matches_a_hand_computation_on_two_samples():
    clean = [[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]]
    adv = [[1.0, 1.0, 0.0], [0.0, 2.0, 2.0]]
    targets = [0, 2]
    beta = 6.0
    # CE(clean) averaged over the 2 samples + beta * KL(p_clean || p_adv) averaged over the 2 samples.
    ce = sum(-math.log(softmax(row)[t]) for row, t in zip(clean, targets)) / 2
    kl = sum(
        sum(p * math.log(p / q) for p, q in zip(softmax(c), softmax(a))) for c, a in zip(clean, adv)
    ) / 2
    expected = ce + beta * kl
    got = trades_loss(torch.tensor(clean), torch.tensor(adv), torch.tensor(targets), beta)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # First sample by hand: p_clean = (e^2, 1, 1) / (e^2 + 2), p_adv = (e, e, 1) / (2e + 1).
    p = [math.exp(2) / (math.exp(2) + 2), 1 / (math.exp(2) + 2), 1 / (math.exp(2) + 2)]
    q = [math.e / (2 * math.e + 1), math.e / (2 * math.e + 1), 1 / (2 * math.e + 1)]
    first = trades_loss(torch.tensor(clean[:1]), torch.tensor(adv[:1]), torch.tensor(targets[:1]), beta)
    assert first.item() == pytest.approx(-math.log(p[0]) + beta * sum(a * math.log(a / b) for a, b in zip(p, q)),
                                         rel=1e-6)


def state(module):
    return {key: value.clone() for key, value in module.state_dict().items()}


@pytest.mark.parametrize("loss", ["ce", "trades"])
def test_aff_trains_a_copy_of_the_encoder_and_alf_leaves_it_alone(digits, loss):
    settings = dict(epochs=1, milestones=(1,), eps=0.05, alpha=0.0125, steps=2, loss=loss)
    encoder = make_encoder()
    before = state(encoder)

    alf = fine_tune(encoder, digits[0], NUM_CLASSES, small_config(mode="alf", **settings), device="cpu",
                    augment=False, progress=False)
    assert alf.encoder is encoder
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())

    aff = fine_tune(encoder, digits[0], NUM_CLASSES, small_config(mode="aff", **settings), device="cpu",
                    augment=False, progress=False)
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    tuned = aff.encoder.state_dict()
    assert not torch.equal(tuned["1.weight"], before["1.weight"])  # the encoder's Linear was trained
    assert not torch.equal(tuned["2.running_mean"], before["2.running_mean"])  # in train mode (BN statistics)
    # Train-mode forwards: one per batch (CE on x_adv) or two (TRADES: x and x_adv); attacks run in eval mode.
    batches = math.ceil(len(digits[0]) / 64)
    assert tuned["2.num_batches_tracked"].item() == batches * (2 if loss == "trades" else 1)
    assert not aff.encoder.training and not any(p.requires_grad for p in aff.encoder.parameters())
    assert len(aff.history) == 1 and math.isfinite(aff.history[0]["loss"])


@pytest.mark.parametrize("settings, message", [
    (dict(mode="alf", loss="ce", beta=6.0), "--beta"),
    (dict(mode="slf", loss="trades"), "--mode alf or aff"),
    (dict(mode="alf", loss="trades", beta=-1.0), "--beta must be >= 0"),
    (dict(mode="alf", steps=0), "steps >= 1"),
    (dict(eps=-0.1), "eps >= 0"),
    (dict(epochs=0), "epochs"),
    (dict(head="linear"), "head must be one of"),
])
def test_fine_tune_config_rejects_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        FineTuneConfig(**settings)
