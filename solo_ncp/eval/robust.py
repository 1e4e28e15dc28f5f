"""Standard accuracy (SA), PGD-20 robust accuracy (RA) and AutoAttack accuracy (AA), Section 4.1."""
import os
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from solo_ncp.attacks import cross_entropy_objective, pgd
from solo_ncp.eval.autoattack import autoattack_accuracy
from solo_ncp.eval.timing import timed
from solo_ncp.models.inference import Device, eval_mode


def _first_images(test_set: Dataset, n: int, batch_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The first n (x, y) of `test_set` stacked: x (n, C, H, W), y (n,)."""
    batches = list(DataLoader(Subset(test_set, range(n)), batch_size=batch_size))
    return torch.cat([x for x, _ in batches]), torch.cat([torch.as_tensor(y) for _, y in batches])


def evaluate(
    classifier: nn.Module,
    test_set: Dataset,
    *,
    norm: str = "Linf",
    eps: float = 8 / 255,
    alpha: float = 2 / 255,
    steps: int = 20,
    batch_size: int = 256,
    aa_batch_size: Optional[int] = None,
    aa_n: Optional[int] = None,
    aa_version: str = "standard",
    aa_attacks: Optional[Sequence[str]] = None,
    aa_log_path: Optional[Union[str, os.PathLike]] = None,
    device: Device,
    seed: int,
    progress: bool = True,
    timings: Optional[Dict[str, float]] = None,
) -> dict:
    """SA, RA and AA of `classifier` (one module: [0, 1] images -> logits) on `test_set`.

    The classifier (normalisation, encoder with its BN branch already chosen, head) runs in eval
    mode for every metric; its modes are restored afterwards. test_set yields (x: (C, H, W) in
    [0, 1], y: int). RA: `steps`-step PGD in the `norm` ball ("Linf" or "L2"; eps, alpha in pixel
    units) on the cross-entropy,
    `batch_size` images at a time; a sample counts as robust only if it is classified correctly
    both clean and under attack (as AutoAttack counts), so RA <= SA. The random start is drawn
    from a CPU generator seeded by `seed`, serially in test-set order, so each image's start (and
    its result) does not depend on `batch_size` or on the device's RNG. AA: AutoAttack
    `aa_version` (with `aa_attacks` for "custom"), in the same `norm` ball, on the first `aa_n` test
    images, `aa_batch_size`
    (default `batch_size`) at a time, its per-attack log written to `aa_log_path` when given;
    aa_n None or 0 skips it (aa recorded as None, aa_n as 0). AutoAttack reseeds its random
    starts for every batch (pyautoattack's behaviour), so its per-image results, unlike PGD's,
    may depend on `aa_batch_size`. `timings`: when given, receives the seconds of each part,
    {"pgd": SA and RA, "autoattack": AA (only when run)}.

    Returns {"sa", "sa_n", "ra", "ra_n", "aa", "aa_n"}: accuracies in percent of the images
    evaluated, *_n the number of test images behind each.
    """
    aa_n = aa_n or 0
    if not 0 <= aa_n <= len(test_set):
        raise ValueError(f"aa_n={aa_n} must be in [0, {len(test_set)}] (the size of the test set)")
    timings = {} if timings is None else timings
    generator = torch.Generator().manual_seed(seed)
    clean_correct = robust_correct = seen = 0
    with eval_mode(classifier), timed(timings, "pgd", device):
        loader = DataLoader(test_set, batch_size=batch_size)
        for x, y in tqdm(loader, desc=f"PGD-{steps}", disable=not progress, leave=False):
            x, y = x.to(device), torch.as_tensor(y).to(device)
            with torch.no_grad():
                clean_hit = classifier(x).argmax(1) == y
            objective = cross_entropy_objective(classifier, y)
            x_adv = pgd(objective, x, eps=eps, alpha=alpha, steps=steps, generator=generator, norm=norm)
            with torch.no_grad():
                robust_hit = clean_hit & (classifier(x_adv).argmax(1) == y)
            clean_correct += clean_hit.sum().item()
            robust_correct += robust_hit.sum().item()
            seen += len(y)
    metrics = {
        "sa": 100.0 * clean_correct / seen,
        "sa_n": seen,
        "ra": 100.0 * robust_correct / seen,
        "ra_n": seen,
        "aa": None,
        "aa_n": 0,
    }
    if aa_n:
        aa_batch_size = aa_batch_size or batch_size
        with timed(timings, "autoattack", device):
            x_aa, y_aa = _first_images(test_set, aa_n, aa_batch_size)
            result = autoattack_accuracy(classifier, x_aa, y_aa, norm=norm, eps=eps, n=aa_n, device=device,
                                         seed=seed,
                                         version=aa_version, attacks=aa_attacks, batch_size=aa_batch_size,
                                         log_path=aa_log_path, progress=progress)
        metrics.update(aa=result.accuracy, aa_n=result.n)
    return metrics
