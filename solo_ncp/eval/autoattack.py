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
from typing import Iterator, List, Optional, Sequence, Union

import torch
from torch import nn

from solo_ncp.models.inference import Device, eval_mode
from solo_ncp.io import atomic_write_text

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


def autoattack_accuracy(
    classifier: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    n: int,
    device: Device,
    seed: int,
    version: str = "standard",
    attacks: Optional[Sequence[str]] = None,
    batch_size: int = 256,
    log_path: Optional[Union[str, os.PathLike]] = None,
    progress: bool = True,
) -> dict:
    """L-inf AutoAttack robust accuracy (%) of `classifier` on the first `n` of (x, y).

    classifier: [0, 1] images -> logits, normalisation inside; run in eval mode (restored after).
    x: (N, C, H, W) in [0, 1]; y: (N,). eps in pixel units. `attacks` picks a subset and needs
    version="custom" (pyautoattack refuses it otherwise). The per-attack log is always captured
    and returned; `progress` only decides whether it is also printed. With `log_path` it is also
    written to that file. The global torch RNG is left as it was (AutoAttack reseeds it).

    Returns {"aa": percent, "aa_n": n, "aa_log": [lines]}.
    """
    from pyautoattack import AutoAttack

    if not 0 < n <= len(x):
        raise ValueError(f"AutoAttack needs 1 <= n <= {len(x)} (the images given), got n={n}")
    x, y = x[:n].to(device), y[:n].to(device)
    with eval_mode(classifier), torch.random.fork_rng(), _captured_autoattack_log(progress) as log:
        adversary = AutoAttack(
            classifier,
            attacks=list(attacks) if attacks is not None else None,
            device=device,
            eps=eps,
            norm="Linf",
            seed=seed,
            version=version,
        )
        adversary.verbose = True
        x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
        with torch.no_grad():
            robust = sum(
                (classifier(x_adv[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum().item()
                for i in range(0, n, batch_size)
            )
    if log_path is not None:
        atomic_write_text(log_path, "".join(f"{line}\n" for line in log))
    return {"aa": 100.0 * robust / n, "aa_n": n, "aa_log": list(log)}
