"""AutoAttack accuracy (Croce & Hein, 2020) through the `pyautoattack` package (imported lazily).

pyautoattack 0.2 API: `AutoAttack(model, *, attacks=None, device, eps, norm, seed, version)`,
`run_standard_evaluation(x, y, /, *, batch_size) -> (x_adv, y_adv)`; its progress and per-attack
robust accuracies go to the `logging` logger "auto-attack" (DEBUG level) when the adversary's
`verbose` attribute is set, and are not returned: they are captured here from that logger.
"""
import logging
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Union

import torch
from torch import nn

from solo_ncp.eval.protocol import AA_ATTACKS, AA_VERSIONS
from solo_ncp.io import atomic_write_text
from solo_ncp.models.inference import Device, eval_mode

AUTOATTACK_LOGGER = "auto-attack"


class _ListHandler(logging.Handler):
    """Collects formatted log messages in a list."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def _captured_autoattack_log(echo: bool) -> Iterator[List[str]]:
    """Yield the list that receives AutoAttack's log lines; also print them to stderr if `echo`."""
    logger = logging.getLogger(AUTOATTACK_LOGGER)
    collector = _ListHandler()
    handlers: List[logging.Handler] = [collector]
    if echo:
        handlers.append(logging.StreamHandler(sys.stderr))
    previous_level = logger.level
    logger.setLevel(logging.DEBUG)
    for handler in handlers:
        logger.addHandler(handler)
    try:
        yield collector.lines
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
        logger.setLevel(previous_level)


@dataclass
class AutoAttackResult:
    """AutoAttack on n images. accuracy: percent of the n images classified correctly both clean
    and on x_adv (AutoAttack's own count, checked again here); robust: (n,) bool, that test per
    image; x_adv: (n, C, H, W) on the CPU, the adversarial images (an image no attack broke, or one
    misclassified clean, is its clean image); log: AutoAttack's per-attack log lines."""

    accuracy: float
    n: int
    robust: torch.Tensor
    x_adv: torch.Tensor
    log: List[str]


@torch.no_grad()
def _predictions(classifier: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """classifier(x).argmax(1) batch by batch, in fp32: x (N, C, H, W) -> (N,)."""
    batches = (x[i : i + batch_size].float() for i in range(0, len(x), batch_size))
    return torch.cat([classifier(batch).argmax(1) for batch in batches])


def autoattack_accuracy(
    classifier: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str = "Linf",
    eps: float,
    n: int,
    device: Device,
    seed: int,
    version: str = "standard",
    attacks: Optional[Sequence[str]] = None,
    batch_size: int = 256,
    log_path: Optional[Union[str, os.PathLike]] = None,
    progress: bool = True,
) -> AutoAttackResult:
    """AutoAttack robust accuracy (%) of `classifier` on the first `n` of (x, y), in the `norm` ball
    ("Linf" or "L2": AutoAttack's own versions of each attack for that threat model).

    classifier: [0, 1] images -> logits, normalisation inside; run in eval mode (restored after)
    and in fp32 (autocast disabled, x cast to float32). x: (N, C, H, W) in [0, 1]; y: (N,).
    eps in pixel units. `version`: one of AA_VERSIONS; `attacks` (names in AA_ATTACKS) picks a
    subset and needs version="custom". The per-attack log is always captured and returned;
    `progress` only decides whether it is also printed; with `log_path` it is also written to
    that file (atomically). The global torch RNG is left as it was (AutoAttack reseeds it).
    """
    from pyautoattack import AutoAttack

    if version not in AA_VERSIONS:
        raise ValueError(f"AutoAttack version must be one of {AA_VERSIONS}, got {version!r}")
    if (version == "custom") != (attacks is not None):
        raise ValueError("AutoAttack: version 'custom' needs `attacks`, and `attacks` needs version 'custom'")
    unknown = sorted(set(attacks or ()) - set(AA_ATTACKS))
    if unknown or (attacks is not None and not attacks):
        raise ValueError(f"AutoAttack attacks must be a non-empty subset of {AA_ATTACKS}, got {attacks}")
    if not 0 < n <= len(x):
        raise ValueError(f"AutoAttack needs 1 <= n <= {len(x)} (the images given), got n={n}")
    x, y = x[:n].float().to(device), y[:n].to(device)
    device_type = torch.device(device).type
    with eval_mode(classifier), torch.random.fork_rng(), _captured_autoattack_log(progress) as log, \
            torch.autocast(device_type, enabled=False):
        adversary = AutoAttack(
            classifier,
            attacks=list(attacks) if attacks is not None else None,
            device=device,
            eps=eps,
            norm=norm,
            seed=seed,
            version=version,
        )
        adversary.verbose = True
        x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
        clean_hit = _predictions(classifier, x, batch_size) == y
        robust = clean_hit & (_predictions(classifier, x_adv, batch_size) == y)
    if log_path is not None:
        atomic_write_text(log_path, "".join(f"{line}\n" for line in log))
    return AutoAttackResult(100.0 * robust.sum().item() / n, n, robust.cpu(), x_adv.detach().cpu(), list(log))
