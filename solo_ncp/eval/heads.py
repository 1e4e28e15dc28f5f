"""The linear head trained on an encoder: the default whitened head, which converges within the
paper's 25 epochs at the paper's learning rate whatever the encoder's feature scale and
correlations, the standardised head, or the paper's plain head (Appendix A.3).

Why precondition. The paper's head (SGD lr 0.1, momentum 0.9, raw features) is stable only if the
lr is small against the curvature of the cross-entropy in the weights, which scales with the top
eigenvalue of the feature covariance, and it converges in a direction at a rate proportional to
that direction's eigenvalue. Pooled ReLU features of real encoders are large (norm 20-180 on our
ResNet-18s) and strongly correlated: after per-dimension standardisation the top eigenvalue of the
correlation matrix still holds 43-55 % of the total variance (220-282 of 512 on the Fashion-MNIST
demo and digits encoders). Measured with the paper's settings on cached features (25 epochs,
batch 512, lr 0.1, x0.1 at 15 and 20), against scikit-learn's LogisticRegression (lbfgs, converged,
C = 1 / (weight decay x N)): on the Fashion-MNIST demo encoder (2,000 training images, 500 test
images) the raw head oscillates (epoch losses 12, 24, 22, 11, ..., 3.5) to SA 66.4 where the
logistic regression gets 75.4, and the standardised head, stable at lr 0.1, has barely moved in the
weaker directions (SA 72.4); on digits (the tests' 2-epoch SimCLR) 87.5 and 94.7 against 95.8.
Whitening (ZCA: z = (f - mean) @ C^(-1/2), C the training features' covariance, each
eigenvalue floored at WHITEN_FLOOR x the largest, like the eps of a BatchNorm) gives every direction
with non-negligible variance the same curvature, so 25 epochs reach the convex optimum
(SA 75.8 and 96.7). The statistics come from one pass over the un-augmented training images through
the encoder as it is before training (eval mode) and stay fixed; the head starts at zero, so
directions the training features do not span keep zero weight. Afterwards the affine map is folded
into the Linear, so the saved head is one `nn.Linear` on raw features, as the paper's:
W' = W M^T, b' = b - W' @ mean, for z = (f - mean) @ M. Weight decay acts on the weights of the
preconditioned problem.

Measured caveat: the more converged head also has lower PGD-20 RA on the Fashion-MNIST demo encoder
(whitened 45.0, standardised 50.0, paper 44.0, the converged logistic regression 40.5, on 200
test images): RA depends on how far the head is trained, so compare RA only across runs with one head.
"""
from typing import Optional, Tuple

import torch
from torch import nn

from solo_ncp.eval.protocol import HEADS, PAPER_HEAD

STD_FLOOR = 1e-6
"""A feature dimension whose training-set std is below this (a dead unit) is centred, not scaled."""
WHITEN_FLOOR = 1e-4
"""Covariance eigenvalues are raised by this fraction of the largest before the inverse square
root: directions with less variance than that are damped, not amplified."""

Affine = Tuple[torch.Tensor, torch.Tensor]
"""(mean (D,), matrix (D, D)): the map f -> (f - mean) @ matrix."""


def feature_affine(features: torch.Tensor, kind: str) -> Affine:
    """The preconditioning map of head `kind` ("whitened" or "standardized") fitted on features (N, D).

    Computed in float64, returned as float32. standardized: matrix = diag(1 / std) (population
    std; a std below STD_FLOOR is replaced by 1). whitened: matrix = U diag((lambda + floor)^-1/2) U^T
    for the eigen-decomposition U diag(lambda) U^T of the population covariance, floor =
    WHITEN_FLOOR * max(lambda).
    """
    if features.dim() != 2 or len(features) == 0:
        raise ValueError(f"features must be (N, D) with N >= 1, got {tuple(features.shape)}")
    features = features.double()
    mean = features.mean(0)
    centred = features - mean
    if kind == "standardized":
        std = centred.pow(2).mean(0).sqrt()
        matrix = torch.diag(1.0 / torch.where(std < STD_FLOOR, torch.ones_like(std), std))
    elif kind == "whitened":
        eigenvalues, eigenvectors = torch.linalg.eigh(centred.T @ centred / len(features))
        eigenvalues = eigenvalues.clamp_min(0.0)
        floor = max(WHITEN_FLOOR * eigenvalues.max().item(), STD_FLOOR**2)
        matrix = (eigenvectors * (eigenvalues + floor).rsqrt()) @ eigenvectors.T
    else:
        raise ValueError(f"no feature preconditioning for head {kind!r}")
    return mean.float(), matrix.float()


class PreconditionedLinear(nn.Module):
    """Linear layer on preconditioned features: f (B, D) -> linear((f - mean) @ matrix) (B, C).

    mean (D,), matrix (D, D): buffers, fixed (not trained); `linear` is trained. `fold()` returns
    the equivalent `nn.Linear` on raw features.
    """

    def __init__(self, linear: nn.Linear, mean: torch.Tensor, matrix: torch.Tensor):
        super().__init__()
        dim = linear.in_features
        if mean.shape != (dim,) or matrix.shape != (dim, dim):
            raise ValueError(f"need mean ({dim},) and matrix ({dim}, {dim}), got {tuple(mean.shape)}, "
                             f"{tuple(matrix.shape)}")
        self.linear = linear
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("matrix", matrix.detach().clone())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear((features - self.mean) @ self.matrix)

    @torch.no_grad()
    def fold(self) -> nn.Linear:
        """nn.Linear with weight W M^T and bias b - W M^T mean (computed in float64)."""
        weight = self.linear.weight.double() @ self.matrix.double().T
        bias = self.linear.bias.double() - weight @ self.mean.double()
        folded = nn.Linear(self.linear.in_features, self.linear.out_features).to(self.linear.weight.device)
        folded.weight.copy_(weight)
        folded.bias.copy_(bias)
        return folded


def new_head(kind: str, in_features: int, num_classes: int, seed: int,
             affine: Optional[Affine] = None) -> nn.Module:
    """A head to train. "paper": nn.Linear with PyTorch's default init drawn from `seed` (the
    global RNG left untouched). "whitened" / "standardized": a zero-initialised nn.Linear inside
    PreconditionedLinear(`affine`, from `feature_affine`)."""
    if kind not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {kind!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        linear = nn.Linear(in_features, num_classes)
    if kind == PAPER_HEAD:
        return linear
    if affine is None:
        raise ValueError(f"the {kind} head needs the training features' affine map (feature_affine)")
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    return PreconditionedLinear(linear, *affine)


def as_linear(head: nn.Module) -> nn.Linear:
    """The trained head as one nn.Linear on raw features (folds a PreconditionedLinear)."""
    return head.fold() if isinstance(head, PreconditionedLinear) else head
