"""Wall-clock seconds of the parts of an evaluation (head training, PGD-20, AutoAttack)."""
import time
from contextlib import contextmanager
from typing import Dict, Iterator

import torch


@contextmanager
def timed(timings: Dict[str, float], key: str, device: torch.device) -> Iterator[None]:
    """Add the seconds the block takes to timings[key]; CUDA work queued in it is waited for."""
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    try:
        yield
    finally:
        if cuda:
            torch.cuda.synchronize(device)
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - start
