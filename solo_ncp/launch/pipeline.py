"""Running the real `solo-ncp` commands one after another (the demo and the proxy benchmark)."""
import time
from pathlib import Path
from typing import List, Sequence

from solo_ncp.config.overrides import override_of


class StageFailed(ValueError):
    """A stage ended with an error (already printed by that stage)."""


def run_stage(title: str, argv: Sequence[str]) -> float:
    """Runs `solo-ncp <argv>` in this process; returns its wall time in seconds."""
    from solo_ncp.cli import main

    print(f"\n[pipeline] === {title}: solo-ncp {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    if main(list(argv)) != 0:
        raise StageFailed(f"stage '{title}' failed (its error is printed above)")
    return time.perf_counter() - start


def cpu_scale_overrides(dataset: str, crop_size: int, subset: int, out: Path, seed: int) -> List[str]:
    """Config overrides shared by CPU-sized runs: a fixed training subset, ResNet-18 with the
    ImageNet stem (stride-2 conv + max-pool, about 6x cheaper than the CIFAR stem on 28 px),
    no validation pass, runs under `out`."""
    return [f"data.dataset={dataset}", f"augmentations.0.crop_size={crop_size}",
            f"data.subset={subset}", "backbone.kwargs.cifar=false", "data.num_workers=0",
            override_of("checkpoint.dir", out), f"seed={seed}", "scheduler.warmup_epochs=0",
            "data.val=false", "log_every_n_steps=5"]
