"""Linear fine-tuning on a frozen encoder: standard (SLF) and adversarial (ALF), Appendix A.3.

The encoder stays frozen (requires_grad False) and in eval mode for the whole training, as in
DeACL's SLF script (pantheon5100/DeACL, adv_slf.py: `model.eval(); classifier.train()` in
`train`). Its later adv_finetune.py calls `model.train()` in every mode, which lets BatchNorm
running statistics drift although the weights are frozen; we do not follow it.
Unlike DeACL, which keeps the epoch with the best test accuracy, the last epoch's head is
returned: the test set plays no part in training.
"""
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm import tqdm

from solo_ncp.attacks import cross_entropy_objective, pgd
from solo_ncp.models.inference import Device, eval_mode, extract_features

LINEAR_EVAL_MODES = ("slf", "alf")

LR_BY_DATASET = {"cifar10": 0.1, "cifar100": 10.0, "stl10": 10.0}
"""Appendix A.3.1 (SLF). A.3.2 states ALF's learning rate for CIFAR-10 only (0.1, the same as
SLF); for ALF on other datasets we assume the SLF table."""
DEFAULT_LR = 0.1


def lr_for_dataset(name: str) -> float:
    """Linear fine-tuning learning rate for a dataset name (case-insensitive); 0.1 if unlisted."""
    return LR_BY_DATASET.get(name.lower(), DEFAULT_LR)


@dataclass(frozen=True)
class LinearEvalConfig:
    """Hyper-parameters of SLF / ALF (defaults: Appendix A.3). eps, alpha: [0, 1] pixel units."""

    epochs: int = 25
    batch_size: int = 512
    lr: float = DEFAULT_LR
    momentum: float = 0.9
    weight_decay: float = 2e-4
    milestones: Tuple[int, ...] = (15, 20)
    gamma: float = 0.1
    mode: str = "slf"
    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 10
    crop_padding: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in LINEAR_EVAL_MODES:
            raise ValueError(f"mode must be one of {LINEAR_EVAL_MODES}, got {self.mode!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")


def pad_crop_flip(x: torch.Tensor, padding: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Per sample: zero-pad by `padding`, crop back to H x W at a random offset, flip with p=1/2.

    The batch version of torchvision's RandomCrop(size, padding) + RandomHorizontalFlip().
    x: (B, C, H, W) in [0, 1]; returns the same shape on x's device. Random numbers are drawn
    with `generator` (on its device), so a seeded generator makes the augmentation reproducible.
    """
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    batch, _, height, width = x.shape
    rng_device = generator.device if generator is not None else torch.device("cpu")
    offsets = torch.randint(0, 2 * padding + 1, (2, batch), generator=generator, device=rng_device)
    flip = torch.rand(batch, generator=generator, device=rng_device) < 0.5
    columns = torch.arange(width, device=rng_device)
    rows = offsets[0, :, None] + torch.arange(height, device=rng_device)
    cols = offsets[1, :, None] + torch.where(flip[:, None], columns.flip(0), columns)
    padded = F.pad(x, (padding, padding, padding, padding)).permute(0, 2, 3, 1)
    sample = torch.arange(batch, device=x.device)[:, None, None]
    crops = padded[sample, rows.to(x.device)[:, :, None], cols.to(x.device)[:, None, :]]
    return crops.permute(0, 3, 1, 2).contiguous()


@contextmanager
def _frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Set requires_grad False on every parameter; restore each flag on exit."""
    flags = [(parameter, parameter.requires_grad) for parameter in module.parameters()]
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield module
    finally:
        for parameter, requires_grad in flags:
            parameter.requires_grad_(requires_grad)


def _new_head(in_features: int, num_classes: int, seed: int) -> nn.Linear:
    """nn.Linear with PyTorch's default init drawn from `seed`, leaving the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Linear(in_features, num_classes)


@torch.no_grad()
def _feature_dim(encoder: nn.Module, train_set: Dataset, device: Device) -> int:
    """D of the encoder's output, probed on the first training image."""
    return encoder(train_set[0][0][None].to(device)).shape[1]


def train_linear_head(
    encoder: nn.Module,
    train_set: Dataset,
    num_classes: int,
    cfg: LinearEvalConfig,
    *,
    device: Device,
    augment: bool = True,
    cache_features: bool = False,
    progress: bool = True,
    num_workers: int = 0,
) -> nn.Linear:
    """Train a linear head on the frozen `encoder`; return the last epoch's head (on `device`).

    train_set yields (x: (C, H, W) float in [0, 1], y: int). The encoder must map a batch to
    features (B, D) with normalisation inside it; for dual-BN encoders the caller selects the
    branch. cfg.mode "slf": clean images, with `pad_crop_flip(cfg.crop_padding)` when `augment`.
    cfg.mode "alf": each (augmented) batch is replaced by cfg.steps-step PGD (cfg.eps, cfg.alpha,
    random start) on the head's cross-entropy through the frozen encoder before the head's step.
    SGD (momentum, weight decay) with MultiStepLR(cfg.milestones, cfg.gamma) stepped per epoch.

    cache_features=True (SLF only): features are computed once, without augmentation (`augment`
    is then ignored), and the head is trained on them. Deterministic under cfg.seed.
    The encoder's modes and requires_grad flags are restored on return.
    """
    if cache_features and cfg.mode == "alf":
        raise ValueError("cache_features=True is SLF only: ALF attacks images through the encoder")
    rng = torch.Generator().manual_seed(cfg.seed)
    attack_rng = torch.Generator(device=device).manual_seed(cfg.seed)
    with eval_mode(encoder), _frozen(encoder):
        if cache_features:
            plain_loader = DataLoader(train_set, batch_size=cfg.batch_size, num_workers=num_workers)
            features, labels = extract_features(encoder, plain_loader, device=device, progress=progress)
            train_set = TensorDataset(features, labels)
            feature_dim = features.shape[1]
        else:
            feature_dim = _feature_dim(encoder, train_set, device)
        head = _new_head(feature_dim, num_classes, cfg.seed).to(device)
        classifier = nn.Sequential(encoder, head)

        def batch_features(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            if cache_features:
                return x
            if augment:
                x = pad_crop_flip(x, cfg.crop_padding, rng)
            if cfg.mode == "alf":
                objective = cross_entropy_objective(classifier, y)
                x = pgd(objective, x, eps=cfg.eps, alpha=cfg.alpha, steps=cfg.steps, generator=attack_rng)
            with torch.no_grad():
                return encoder(x)

        loader = DataLoader(
            train_set, batch_size=cfg.batch_size, shuffle=True, generator=rng, num_workers=num_workers
        )
        _fit(head, loader, batch_features, cfg, device=device, progress=progress)
    return head.eval()


def _fit(
    head: nn.Linear,
    loader: DataLoader,
    batch_features: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    cfg: LinearEvalConfig,
    *,
    device: Device,
    progress: bool,
) -> None:
    """SGD on the head's cross-entropy over `cfg.epochs` passes of `loader`."""
    optimizer = torch.optim.SGD(
        head.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(cfg.milestones), cfg.gamma)
    head.train()
    epochs = tqdm(range(cfg.epochs), desc=f"linear {cfg.mode}", disable=not progress)
    for epoch in epochs:
        loss_sum, seen = 0.0, 0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(head(batch_features(x, y)), y)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"non-finite linear-head loss {loss_value} in epoch {epoch}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss_value * len(y)
            seen += len(y)
        epochs.set_postfix(loss=f"{loss_sum / seen:.4f}", lr=f"{scheduler.get_last_lr()[0]:.3g}")
        scheduler.step()
