"""Dual batch normalisation (Jiang et al. 2020, used by NCP-ACL): every BatchNorm2d of a backbone
becomes a pair, one for clean and one for adversarial inputs, with separate affine parameters and
running statistics. The branch is chosen for the whole model with `bn_branch(model, "adv")`, never
by threading arguments through `forward`.

State-dict keys gain a `.clean` / `.adv` level: `layer1.0.bn1.clean.weight`, `...adv.running_mean`.
"""
import copy
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from solo_ncp.models.branches import BRANCHES, DEFAULT_BN  # noqa: F401  DEFAULT_BN re-exported


class DualBatchNorm2d(nn.Module):
    """Two BatchNorm2d sharing nothing; `branch` says which one `forward` uses."""

    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        self.clean = copy.deepcopy(bn)
        self.adv = copy.deepcopy(bn)
        self.branch = "clean"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.branch)(x)

    def extra_repr(self) -> str:
        return f"branch={self.branch}"


def convert_dual_bn(module: nn.Module) -> nn.Module:
    """Replaces every BatchNorm2d of `module` (in place, recursively) by a DualBatchNorm2d whose two
    branches start as copies of it. Returns `module` (or the new layer if `module` is a BN)."""
    if isinstance(module, nn.BatchNorm2d):
        return DualBatchNorm2d(module)
    for name, child in module.named_children():
        setattr(module, name, convert_dual_bn(child))
    return module


def has_dual_bn(module: nn.Module) -> bool:
    return any(isinstance(m, DualBatchNorm2d) for m in module.modules())


def _check(branch: str) -> None:
    if branch not in BRANCHES:
        raise ValueError(f"unknown BN branch {branch!r}: choose 'clean' or 'adv'")


def set_bn_branch(module: nn.Module, branch: str) -> None:
    _check(branch)
    for m in module.modules():
        if isinstance(m, DualBatchNorm2d):
            m.branch = branch


@contextmanager
def bn_branch(module: nn.Module, branch: str) -> Iterator[nn.Module]:
    """Runs the block with every dual BN of `module` on `branch`, then restores the previous ones."""
    _check(branch)
    duals = [m for m in module.modules() if isinstance(m, DualBatchNorm2d)]
    previous = [m.branch for m in duals]
    for m in duals:
        m.branch = branch
    try:
        yield module
    finally:
        for m, b in zip(duals, previous):
            m.branch = b


def collapse_dual_bn(module: nn.Module, branch: str) -> nn.Module:
    """Replaces every DualBatchNorm2d by its `branch` BatchNorm2d (in place): a plain backbone for
    evaluation through one branch. Returns `module`."""
    _check(branch)
    if isinstance(module, DualBatchNorm2d):
        return getattr(module, branch)
    for name, child in module.named_children():
        setattr(module, name, collapse_dual_bn(child, branch))
    return module
