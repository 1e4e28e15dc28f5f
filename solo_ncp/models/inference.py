"""Inference-mode helpers: run a module in eval mode and extract features over a loader."""
from contextlib import contextmanager
from typing import Iterable, Iterator, Tuple, Union

import torch
from torch import nn
from tqdm import tqdm

Device = Union[str, torch.device]


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put `module` and all its submodules in eval mode; restore each one's own mode on exit."""
    modes = [(submodule, submodule.training) for submodule in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for submodule, training in modes:
            submodule.training = training


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    loader: Iterable[Tuple[torch.Tensor, torch.Tensor]],
    *,
    device: Device,
    progress: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Encode every batch of `loader` in eval mode, without gradients.

    loader yields (x: (B, C, H, W) in [0, 1], y: (B,)). Returns features (N, D) float32 and
    labels (N,), both on the CPU. The encoder's modes are restored afterwards.
    """
    features, labels = [], []
    with eval_mode(encoder):
        for x, y in tqdm(loader, desc="features", disable=not progress, leave=False):
            features.append(encoder(x.to(device)).float().cpu())
            labels.append(torch.as_tensor(y).cpu())
    return torch.cat(features), torch.cat(labels)
