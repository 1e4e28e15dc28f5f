"""Proof of concept of Table 1 / Appendix A.1: random noise vs. a push toward the neighbour cluster.

On the test images the classifier (encoder + SLF head) gets right, two perturbations in the same
L-inf ball are compared: uniform random noise, and delta_nbr = `steps`-step PGD maximising
cos(f(x + d), C_nbr(x)) only (strategy "ii" of Eq. 4), where C_nbr(x) is the n-th nearest
centroid of the clean feature f(x). Clustering the training features is the caller's job.
"""
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from solo_ncp.attacks import ncp_objective, nearest_centroids, pgd
from solo_ncp.eval.protocol import POC_ROWS, encoder_text, nbr_target, two_decimals
from solo_ncp.eval.results import UNMEASURED
from solo_ncp.models.inference import Device, eval_mode



class _RowTally:
    """Running sums for one perturbation: true-class probability drop and flipped predictions."""

    def __init__(self) -> None:
        self.prob_drop = 0.0
        self.flipped = 0
        self.count = 0

    def add(self, classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, clean_prob: torch.Tensor) -> None:
        with torch.no_grad():
            logits = classifier(x)
        true_prob = F.softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
        self.prob_drop += (clean_prob - true_prob).sum().item()
        self.flipped += (logits.argmax(1) != y).sum().item()
        self.count += len(y)

    def summary(self) -> dict:
        """{"prob_dec": %, "attack_success": %, "n": images}; both rates None (null in poc.json) when
        no image was measured: a rate over no image is no measurement."""
        if self.count == 0:
            return {"prob_dec": None, "attack_success": None, "n": 0}
        return {
            "prob_dec": 100.0 * self.prob_drop / self.count,
            "attack_success": 100.0 * self.flipped / self.count,
            "n": self.count,
        }


def poc_table(
    classifier: nn.Module,
    encoder: nn.Module,
    centroids: torch.Tensor,
    test_set: Dataset,
    *,
    eps: float = 8 / 255,
    alpha: float = 2 / 255,
    steps: int = 5,
    n: int = 2,
    seed: int,
    device: Device,
    batch_size: int = 256,
    progress: bool = True,
) -> dict:
    """Table 1 numbers for one encoder.

    classifier: [0, 1] images -> logits (the encoder with its SLF head); encoder: images ->
    features (B, D) in the space of `centroids` (K, D), unit-norm. Both run in eval mode (restored
    after). eps, alpha in pixel units; n: rank of the neighbouring centroid (2 <= n <= K).
    Per row, over the correctly classified test images: "prob_dec" = mean drop of the true-class
    softmax probability in percentage points, "attack_success" = % now misclassified, "n" = count
    (both rates None where no test image is classified correctly: nothing was measured).

    Returns {"random_noise": row, "nbr": row, "n_correct", "n_total", "settings": {...}}.
    """
    generator = torch.Generator(device=device).manual_seed(seed)
    centroids = centroids.to(device)
    rows = {key: _RowTally() for key in POC_ROWS}
    total = 0
    with eval_mode(classifier), eval_mode(encoder):
        loader = DataLoader(test_set, batch_size=batch_size)
        for x, y in tqdm(loader, desc="proof of concept", disable=not progress, leave=False):
            x, y = x.to(device), torch.as_tensor(y).to(device)
            total += len(y)
            with torch.no_grad():
                logits = classifier(x)
            correct = logits.argmax(1) == y
            if not correct.any():
                continue
            x, y = x[correct], y[correct]
            clean_prob = F.softmax(logits[correct], dim=1).gather(1, y[:, None]).squeeze(1)
            with torch.no_grad():
                nearest = nearest_centroids(encoder(x), centroids, n=n)
            toward_nbr = ncp_objective(encoder, nearest.own, nearest.nbr, strategy="ii")
            perturbed = {
                "random_noise": pgd(toward_nbr, x, eps=eps, alpha=alpha, steps=0, generator=generator),
                "nbr": pgd(toward_nbr, x, eps=eps, alpha=alpha, steps=steps, generator=generator),
            }
            for key, x_perturbed in perturbed.items():
                rows[key].add(classifier, x_perturbed, y, clean_prob)
    return {
        **{key: tally.summary() for key, tally in rows.items()},
        "n_correct": rows["nbr"].count,
        "n_total": total,
        "settings": {"eps": eps, "alpha": alpha, "steps": steps, "n": n, "seed": seed},
    }


def poc_protocol(result: dict) -> str:
    """How a `solo-ncp poc` result was measured, in one line under its table: the encoder's branch,
    the head, K and the images clustered, δ_nbr's PGD and the test images its numbers are over
    (`result["settings"]` as the command records it)."""
    settings = result["settings"]
    return (f"Measured: {settings['dataset']}, {encoder_text(settings)}, {settings['head']} head (SLF); "
            f"K {settings['k']} spherical k-means on {settings['clustered_n']} training images; δ_nbr: PGD-"
            f"{settings['steps']}, L-inf eps {settings['eps'] * 255:.3g}/255, step {settings['alpha'] * 255:.3g}/255, "
            f"uniform random noise in the same ball; over the {result['n_correct']} of {result['n_total']} test images "
            "classified correctly.\n")


def format_poc_table(result: dict) -> str:
    """Two-row markdown table in the layout of Table 1 (values in %)."""
    n = result["settings"]["n"]
    lines = [
        "| perturbation | Prob. Dec. (%) | Attk. Succ. (%) | N |",
        "|---|---|---|---|",
    ]
    for key, label in POC_ROWS.items():
        row = result[key]
        name = f"{label} toward the {nbr_target(n)}" if key == "nbr" else label
        lines.append(f"| {name} | {_rate(row['prob_dec'])} | {_rate(row['attack_success'])} | {row['n']} |")
    return "\n".join(lines) + "\n"


def _rate(value) -> str:
    """A Table-1 rate (%) as printed: 2 decimals, UNMEASURED for None (a row over no image)."""
    return UNMEASURED if value is None else two_decimals(value)
