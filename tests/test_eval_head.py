"""The linear head converges: folding is exact, and on a real encoder SLF reaches a converged convex probe."""
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from solo_ncp.eval import (
    FineTuneConfig,
    PreconditionedLinear,
    default_lr,
    extract_features,
    feature_affine,
    fine_tune,
)
from solo_ncp.eval.heads import STD_FLOOR, WHITEN_FLOOR, new_head
from solo_ncp.eval.protocol import DEFAULT_HEAD
from tests.conftest import host_independent

pytestmark = [pytest.mark.usefixtures("single_thread"), host_independent]


def correlated_features(n: int = 400, dim: int = 6) -> torch.Tensor:
    """Features with a shared mode and unequal scales, like pooled ReLU features."""
    g = torch.Generator().manual_seed(0)
    common = torch.randn(n, 1, generator=g)
    return 5.0 + torch.linspace(1, 5, dim) * (2.0 * common + torch.randn(n, dim, generator=g))


@pytest.mark.parametrize("kind", ["whitened", "standardized"])
def test_preconditioning_and_its_fold_into_one_linear(kind):
    features = correlated_features()
    mean, matrix = feature_affine(features, kind)
    z = (features.double() - features.double().mean(0)) @ matrix.double()
    covariance = z.T @ z / len(z)
    if kind == "whitened":  # identity up to the eigenvalue floor: 1.14 / (1.14 + 1e-4 * 279) = 0.976 at worst
        torch.testing.assert_close(covariance, torch.eye(6, dtype=torch.float64), atol=0.03, rtol=0)
    else:
        torch.testing.assert_close(covariance.diagonal(), torch.ones(6, dtype=torch.float64), atol=1e-5, rtol=0)
    head = new_head(kind, 6, 3, seed=0, affine=(mean, matrix))
    assert isinstance(head, PreconditionedLinear)
    assert torch.count_nonzero(head.linear.weight) == 0 and torch.count_nonzero(head.linear.bias) == 0
    with torch.no_grad():
        head.linear.weight.copy_(torch.randn(3, 6, generator=torch.Generator().manual_seed(1)))
        head.linear.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
        folded = head.fold()
        assert type(folded) is nn.Linear
        torch.testing.assert_close(folded(features), head(features), atol=1e-4, rtol=1e-5)


@pytest.fixture(scope="module")
def digits_features(digits_simclr_ckpt):
    """Frozen features of the tests' real 2-epoch SimCLR encoder on digits (train 1437, test 360)."""
    from solo_ncp.data import build_dataset
    from solo_ncp.models import load_encoder

    encoder = load_encoder(digits_simclr_ckpt).model
    splits = [build_dataset("digits", split) for split in ("train", "test")]
    features = [extract_features(encoder, DataLoader(s, batch_size=512), device="cpu", progress=False)
                for s in splits]
    return encoder, splits, features


def slf_test_accuracy(digits_features, cfg: FineTuneConfig) -> float:
    """SA of an SLF head trained with `cfg` on cached features (no augmentation)."""
    encoder, (train, _), (_, (test_x, test_y)) = digits_features
    tuned = fine_tune(encoder, train, 10, cfg, device="cpu", cache_features=True, progress=False)
    assert len(tuned.history) == 25
    with torch.no_grad():
        return 100.0 * (tuned.head(test_x).argmax(1) == test_y).float().mean().item()


@pytest.fixture(scope="module")
def convex_probe_accuracy(digits_features):
    """Test accuracy of a converged L2 logistic regression on the same features (standardised for
    lbfgs): C = 1 / (weight decay x N) makes its objective mean CE + (2e-4 / 2) ||W||^2, the head's."""
    _, _, ((train_x, train_y), (test_x, test_y)) = digits_features
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0 / (2e-4 * len(train_y)), max_iter=20000,
                                                               tol=1e-8))
    probe.fit(train_x.numpy(), train_y.numpy())
    return 100.0 * probe.score(test_x.numpy(), test_y.numpy())


def test_default_head_reaches_the_converged_convex_probe(digits_features, convex_probe_accuracy):
    """Defaults: whitened head, lr 0.1, 25 epochs, batch 512, x0.1 at 15 and 20, weight decay 2e-4.
    Measured over fixture re-runs: probe 95.3-96.9; whitened head 96.1-96.7 (at most 0.9 below the
    probe), standardised 93.1-94.7, the paper's plain head 87.5-94.2."""
    cfg = FineTuneConfig(lr=default_lr("digits", "slf", DEFAULT_HEAD))
    assert slf_test_accuracy(digits_features, cfg) == pytest.approx(convex_probe_accuracy, abs=2.0)


def test_paper_head_does_not_converge_on_raw_features(digits_features, convex_probe_accuracy):
    """Why the default changed: with Appendix A.3's settings on raw features the head stays below
    the probe (measured over fixture re-runs, whose SimCLR differs slightly between runs and CPUs:
    87.5-94.2 against probes of 95.3-96.9; the closest, 94.2 against 96.1, on an AVX2-only CPU).
    And proof that the test above can fail: at a tenth of that lr the paper head lands far outside
    the 2-point band (86.4 against 96.1 on that CPU)."""
    paper_lr = default_lr("digits", "slf", "paper")
    assert slf_test_accuracy(digits_features, FineTuneConfig(head="paper", lr=paper_lr)) < convex_probe_accuracy
    slower = slf_test_accuracy(digits_features, FineTuneConfig(head="paper", lr=paper_lr / 10))
    assert slower != pytest.approx(convex_probe_accuracy, abs=2.0)


def digits_with_unlike_splits(real_build_dataset):
    """build_dataset for `solo-ncp eval` / `poc`: digits' first 64 training images as they are and
    32 test images inverted and dimmed (0.3 (1 - x)), whose features have quite other statistics."""

    def build(name, split, **kwargs):
        dataset = real_build_dataset(name, split, **kwargs)
        count = 64 if split == "train" else 32
        x = torch.stack([dataset[i][0] for i in range(count)])
        y = torch.tensor([dataset[i][1] for i in range(count)])
        return TensorDataset(x if split == "train" else 0.3 * (1.0 - x), y)

    return build


def fitted_affines(monkeypatch) -> list:
    """Keeps (features, (mean, matrix)) of every `feature_affine` call the evaluation makes."""
    from solo_ncp.eval import linear

    fitted, real = [], linear.feature_affine

    def recording(features, kind):
        affine = real(features, kind)
        fitted.append((features.clone(), affine))
        return affine

    monkeypatch.setattr(linear, "feature_affine", recording)
    return fitted


def expected_matrix(train: np.ndarray, kind: str) -> np.ndarray:
    """What heads.py documents, from numpy on the training features (N, D): standardized:
    diag(1 / population std), a std below STD_FLOOR taken as 1; whitened: (C + floor I)^(-1/2),
    C the population covariance, floor = WHITEN_FLOOR x its largest eigenvalue, found here as the
    inverse of the square root's square (a symmetric positive definite matrix M with M M = that)."""
    if kind == "standardized":
        std = train.std(axis=0)
        return np.diag(1.0 / np.where(std < STD_FLOOR, 1.0, std))
    covariance = np.cov(train, rowvar=False, ddof=0)
    floor = max(WHITEN_FLOOR * np.linalg.eigvalsh(covariance).max(), STD_FLOOR**2)
    return np.linalg.inv(covariance + floor * np.eye(len(covariance)))


@pytest.mark.parametrize("command, head", [("eval", "standardized"), ("eval", "whitened"),
                                           ("poc", "whitened")])
def test_head_statistics_come_from_the_training_split(digits_simclr_ckpt, tmp_path, monkeypatch,
                                                      command, head):
    """`solo-ncp eval` and `poc` fit the head's mean and matrix on the training images' features
    (un-augmented, eval mode), never on the test split's."""
    from solo_ncp import data
    from solo_ncp.cli import main
    from solo_ncp.models import load_encoder

    splits = digits_with_unlike_splits(data.build_dataset)
    monkeypatch.setattr("solo_ncp.data.build_dataset", splits)
    fitted = fitted_affines(monkeypatch)
    options = (["--aa-n", "0", "--pgd-steps", "1", "--cache-features"] if command == "eval"
               else ["--k", "4", "--steps", "1"])
    assert main([command, "--ckpt", str(digits_simclr_ckpt), "--dataset", "digits", "--out",
                 str(tmp_path), "--epochs", "1", "--head", head, *options]) == 0
    encoder = load_encoder(digits_simclr_ckpt).model.eval()
    with torch.no_grad():
        train, test = (encoder(splits("digits", split).tensors[0]).double().numpy()
                       for split in ("train", "test"))
    (features, (mean, matrix)), = fitted
    np.testing.assert_allclose(features.numpy(), train, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mean.numpy(), train.mean(axis=0), rtol=1e-5, atol=1e-5)
    assert np.abs(test.mean(axis=0) - train.mean(axis=0)).max() > 0.1
    if head == "standardized":
        np.testing.assert_allclose(matrix.numpy(), expected_matrix(train, head), rtol=1e-4, atol=1e-6)
    else:
        square = matrix.double().numpy() @ matrix.double().numpy()
        np.testing.assert_allclose(matrix.numpy(), matrix.numpy().T, atol=1e-5)
        np.testing.assert_allclose(square, expected_matrix(train, head), rtol=1e-4, atol=1e-3)
