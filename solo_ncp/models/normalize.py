"""Per-channel normalisation as the first layer of a model, so inputs stay in [0, 1]; unit-length
features for a linear monitor."""
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Normalize(nn.Module):
    """(x - mean) / std per channel. x: (B, C, H, W) in [0, 1]; mean/std: C floats."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class UnitFeatures(nn.Module):
    """features (B, D) -> (B, D): each row minus its mean over the D dimensions, then divided by its
    L2 norm (LayerNorm without affine, at unit length). What the stage-2 online classifier reads:
    one learning rate then suits it whatever the encoder's feature norm (about 40 on
    Fashion-MNIST, where lr 0.5 on raw features diverged), and centring each row removes the
    direction that ReLU features (all >= 0) share, which unit length alone keeps."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features - features.mean(dim=1, keepdim=True), dim=1)
