"""Fine-tuning for evaluation (Appendix A.3): a linear head on the frozen encoder, trained on clean
(SLF) or adversarial (ALF) images, or adversarial full fine-tuning (AFF) of encoder and head.

SLF/ALF: the encoder stays frozen (requires_grad False) and in eval mode for the whole training,
as in DeACL's SLF script (pantheon5100/DeACL, adv_slf.py: `model.eval(); classifier.train()`).
Its later adv_finetune.py calls `model.train()` in every mode, which lets BatchNorm running
statistics drift although the weights are frozen; we do not follow it. AFF trains a copy of the
encoder in train mode (BN statistics of the training batches, as adv_finetune.py); every attack
on the training images runs in eval mode (adv_finetune.py's trades_loss does the same).
Unlike DeACL's adv_slf.py, which keeps the epoch with the best test accuracy, the last epoch's
head is returned: the test set plays no part in training.
"""
import copy
import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm import tqdm

from solo_ncp.attacks import check_norm, cross_entropy_objective, pgd
from solo_ncp.eval import protocol
from solo_ncp.eval.heads import as_linear, feature_affine, new_head
from solo_ncp.eval.trades import trades_loss, trades_objective
from solo_ncp.models.inference import Device, eval_mode, extract_features

BatchLoss = Callable[[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]
"""(x, y) -> (scalar loss, logits (B, C) whose accuracy is reported)."""


@dataclass(frozen=True)
class FineTuneConfig:
    """Hyper-parameters of SLF / ALF / AFF (defaults: Appendix A.3; see solo_ncp.eval.protocol).

    lr: learning rate of every trained parameter. loss: "ce" or "trades" (alf/aff; slf is CE on
    clean images); beta: TRADES weight, only with loss "trades" (default protocol.TRADES_BETA).
    head: one of protocol.HEADS (solo_ncp.eval.heads). norm: the threat model of the training
    examples' PGD ("Linf" or "L2"); eps, alpha: its radius and step in [0, 1] pixel units; steps:
    its iterations. crop_padding: pixels of zero padding of the training images' `pad_crop_flip`
    (protocol.head_crop_padding: the value for an image size).
    """

    epochs: int = protocol.EPOCHS
    batch_size: int = protocol.BATCH_SIZE
    lr: float = protocol.PRECONDITIONED_LR
    momentum: float = protocol.MOMENTUM
    weight_decay: float = protocol.WEIGHT_DECAY
    milestones: Tuple[int, ...] = protocol.MILESTONES
    gamma: float = protocol.GAMMA
    mode: str = "slf"
    loss: str = "ce"
    beta: Optional[float] = None
    head: str = protocol.DEFAULT_HEAD
    norm: str = "Linf"
    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = protocol.TRAIN_PGD_STEPS
    crop_padding: int = protocol.CROP_PADDING
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in protocol.MODES:
            raise ValueError(f"mode must be one of {protocol.MODES}, got {self.mode!r}")
        if self.head not in protocol.HEADS:
            raise ValueError(f"head must be one of {protocol.HEADS}, got {self.head!r}")
        protocol.check_loss(self.mode, self.loss, self.beta)
        check_norm(self.norm)
        if self.loss == "trades" and self.beta is None:
            object.__setattr__(self, "beta", protocol.TRADES_BETA)
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")
        if self.eps < 0 or self.alpha < 0 or self.steps < 1:
            raise ValueError(f"need eps >= 0, alpha >= 0, steps >= 1; got {self.eps}, {self.alpha}, "
                             f"{self.steps}")

    @property
    def adversarial(self) -> bool:
        return self.mode != "slf"


@dataclass
class FineTuned:
    """What fine-tuning returns (everything on the training device, eval mode, frozen).

    head: nn.Linear on raw encoder features (B, D) -> logits (B, C), the standardisation folded in.
    encoder: the encoder the head belongs to: the one given (slf/alf, untouched) or the fine-tuned
        copy (aff). history: per epoch {"loss", "acc"}: the mean training loss and the training
        accuracy (%) over the epoch's batches as they were trained on (the logits of the CE term:
        clean images for slf and trades, adversarial ones for alf/aff with ce).
    """

    head: nn.Linear
    encoder: nn.Module
    history: List[Dict[str, float]] = field(default_factory=list)

    @property
    def classifier(self) -> nn.Sequential:
        """[0, 1] images -> logits: the encoder followed by the head."""
        return nn.Sequential(self.encoder, self.head)


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


@torch.no_grad()
def _feature_dim(encoder: nn.Module, train_set: Dataset, device: Device) -> int:
    """D of the encoder's output, probed on the first training image."""
    return encoder(train_set[0][0][None].to(device)).shape[1]


def _adversarial_loss(classifier: nn.Module, cfg: FineTuneConfig, generator: torch.Generator) -> BatchLoss:
    """ALF/AFF batch loss: PGD (cfg.norm, steps, eps, alpha, random start) in eval mode on the CE or the
    TRADES KL, then the loss in the classifier's current mode (train mode for AFF's encoder)."""

    def attack(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with eval_mode(classifier):
            if cfg.loss == "trades":
                with torch.no_grad():
                    objective = trades_objective(classifier, classifier(x))
            else:
                objective = cross_entropy_objective(classifier, y)
            return pgd(objective, x, eps=cfg.eps, alpha=cfg.alpha, steps=cfg.steps, generator=generator,
                       norm=cfg.norm)

    def batch_loss(x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x_adv = attack(x, y)
        if cfg.loss == "trades":
            clean_logits = classifier(x)
            return trades_loss(clean_logits, classifier(x_adv), y, cfg.beta), clean_logits
        adv_logits = classifier(x_adv)
        return F.cross_entropy(adv_logits, y), adv_logits

    return batch_loss


def _clean_loss(encoder: nn.Module, head: nn.Module, cached: bool) -> BatchLoss:
    """SLF batch loss: CE of the head on the frozen encoder's features (or on cached features)."""

    def batch_loss(x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if not cached:
            with torch.no_grad():
                x = encoder(x)
        logits = head(x)
        return F.cross_entropy(logits, y), logits

    return batch_loss


def fine_tune(
    encoder: nn.Module,
    train_set: Dataset,
    num_classes: int,
    cfg: FineTuneConfig,
    *,
    device: Device,
    augment: bool = True,
    cache_features: bool = False,
    progress: bool = True,
    num_workers: int = 0,
) -> FineTuned:
    """Train a head (slf, alf) or a copy of the encoder and a head (aff) on `train_set`.

    train_set yields (x: (C, H, W) float in [0, 1], y: int). The encoder maps a batch to features
    (B, D) with normalisation inside it; for dual-BN encoders the caller selects the branch.
    Images get `pad_crop_flip(cfg.crop_padding)` when `augment`. SGD (momentum, weight decay) with
    MultiStepLR(cfg.milestones, cfg.gamma) stepped per epoch. The whitened/standardised heads'
    statistics come from one pass over the un-augmented training images through the encoder (eval mode)
    before training.

    cache_features=True (SLF only): features are computed once, without augmentation (`augment`
    is then ignored), and the head is trained on them. Deterministic under cfg.seed. The given
    encoder's modes, weights and requires_grad flags are left as they were.
    """
    if cache_features and cfg.mode != "slf":
        raise ValueError(f"cache_features=True is SLF only: {cfg.mode.upper()} attacks images through the "
                         "encoder")
    rng = torch.Generator().manual_seed(cfg.seed)
    attack_rng = torch.Generator(device=device).manual_seed(cfg.seed)
    if cfg.mode == "aff":
        encoder = copy.deepcopy(encoder).requires_grad_(True)
    freeze = nullcontext() if cfg.mode == "aff" else _frozen(encoder)
    with eval_mode(encoder), freeze:
        affine = None
        if cache_features or cfg.head != protocol.PAPER_HEAD:
            plain_loader = DataLoader(train_set, batch_size=cfg.batch_size, num_workers=num_workers)
            features, labels = extract_features(encoder, plain_loader, device=device, progress=progress)
            affine = None if cfg.head == protocol.PAPER_HEAD else feature_affine(features, cfg.head)
            feature_dim = features.shape[1]
            if cache_features:
                train_set = TensorDataset(features, labels)
        else:
            feature_dim = _feature_dim(encoder, train_set, device)
        head = new_head(cfg.head, feature_dim, num_classes, cfg.seed, affine).to(device)
        if cfg.adversarial:
            batch_loss = _adversarial_loss(nn.Sequential(encoder, head), cfg, attack_rng)
        else:
            batch_loss = _clean_loss(encoder, head, cache_features)
        augment_batch = augment and not cache_features
        loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, generator=rng,
                            num_workers=num_workers)
        parameters = list(head.parameters()) + (list(encoder.parameters()) if cfg.mode == "aff" else [])
        if cfg.mode == "aff":
            encoder.train()

        def prepare(x: torch.Tensor) -> torch.Tensor:
            return pad_crop_flip(x, cfg.crop_padding, rng) if augment_batch else x

        history = _fit(parameters, loader, prepare, batch_loss, cfg, device=device, progress=progress)
    if cfg.mode == "aff":
        encoder.eval().requires_grad_(False)
    return FineTuned(as_linear(head).eval().requires_grad_(False), encoder, history)


def _fit(
    parameters: List[nn.Parameter],
    loader: DataLoader,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    batch_loss: BatchLoss,
    cfg: FineTuneConfig,
    *,
    device: Device,
    progress: bool,
) -> List[Dict[str, float]]:
    """SGD on `batch_loss` over `cfg.epochs` passes of `loader`; returns per-epoch loss and acc (%)."""
    optimizer = torch.optim.SGD(parameters, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(cfg.milestones), cfg.gamma)
    history = []
    epochs = tqdm(range(cfg.epochs), desc=f"fine-tune {cfg.mode}", disable=not progress)
    for epoch in epochs:
        loss_sum, correct, seen = 0.0, 0, 0
        for x, y in loader:
            x, y = prepare(x.to(device)), y.to(device)
            loss, logits = batch_loss(x, y)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                if not history and not seen:  # the first step, before any update: not the lr
                    raise FloatingPointError(f"non-finite fine-tuning loss {loss_value} at the first step, before any "
                                             "update: the encoder's features are not finite (its weights overflow "
                                             "float32 on these images, or the checkpoint is damaged); use another "
                                             "checkpoint")
                raise FloatingPointError(f"non-finite fine-tuning loss {loss_value} in epoch {epoch}: "
                                         f"{_divergence_fix(cfg)}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss_value * len(y)
            correct += (logits.detach().argmax(1) == y).sum().item()
            seen += len(y)
        history.append({"loss": loss_sum / seen, "acc": 100.0 * correct / seen})
        epochs.set_postfix(loss=f"{history[-1]['loss']:.4f}", acc=f"{history[-1]['acc']:.1f}",
                           lr=f"{scheduler.get_last_lr()[0]:.3g}")
        scheduler.step()
    if not all(torch.isfinite(p).all() for p in parameters):  # the last step diverged: no loss shows it
        raise FloatingPointError(f"the fine-tuned weights hold NaN or inf after the last step: {_divergence_fix(cfg)}")
    return history


def _divergence_fix(cfg: FineTuneConfig) -> str:
    """What to change when fine-tuning diverged: the lr, and the whitened head where another ran."""
    return "lower --lr" + (", or use --head whitened" if cfg.head != protocol.DEFAULT_HEAD else "")
