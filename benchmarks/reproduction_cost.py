"""What one seed of the paper's reproduction costs, timed at CIFAR-10's shape on one device.

Fashion-MNIST padded to 32 px, 3 channels: 50,000 training and 10,000 test images, ResNet-18 with
the CIFAR stem. Each part runs the project's own code on tensors already on the device (data
loading and solo-learn's CPU augmentations are not counted; Lightning's loop neither):

    simclr-epoch   one stage-1 epoch: two pad-crop-flip views, ResNet-18 + SimCLR projector,
                   solo-learn's `simclr_loss_func`, SGD; batch 512, fp16 autocast (the zoo's)
    select-k       encode 50,000 images + `sweep_k` over K = 10..300 step 5 (59 K); a sweep cut by
                   --select-k-limit is extrapolated from the K's it ran (taken spread over the range)
    ncp-epoch      `cluster_epoch` of 50,000 features (K = --k) + every stage-2 step of an epoch
    deacl-epoch    every stage-2 step of an epoch (DeACL clusters nothing)
    slf            `fine_tune` with the paper's head (A.3), --slf-epochs epochs, extrapolated to 25
    alf            `fine_tune` ALF (10-step PGD) on --alf-n images, extrapolated to 50,000 x 25 epochs
    pgd-20         `evaluate`: SA and PGD-20 RA on the 10,000 test images
    autoattack     AutoAttack (standard) on --aa-n images of the SLF classifier, extrapolated to 10,000
    autoattack-ub  the same on --aa-ub-n images of a classifier no attack can flip (its logits carry a
                   constant margin of 1,000 to the label): every attack runs its whole budget on every
                   image, the upper bound of a robust encoder's cost, extrapolated to 10,000

    python benchmarks/reproduction_cost.py --device cuda          (about 4 minutes on an H200)
    python benchmarks/reproduction_cost.py --quick                (CPU smoke run: 256 / 64 images)

Prints one markdown table: seconds measured, the figure for the whole part and whether that figure
is measured or extrapolated (and from what). The encoder is untrained (one SimCLR epoch): time per
image does not depend on the weights, except AutoAttack's (see autoattack-ub).
"""
import argparse
import sys
import time
from typing import Callable, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from solo_ncp.cluster.select_k import sweep_k
from solo_ncp.data import build_dataset
from solo_ncp.eval.autoattack import autoattack_accuracy
from solo_ncp.eval.linear import FineTuneConfig, fine_tune, pad_crop_flip
from solo_ncp.eval.protocol import EPOCHS, PAPER_LR_OTHER
from solo_ncp.eval.robust import evaluate
from solo_ncp.models.dual_bn import bn_branch
from solo_ncp.ncp.clustering import cluster_epoch
from solo_ncp.ncp.step import Stage2Config, stage2_step

from stage2_throughput import build_pair

FULL = dict(train_n=50_000, test_n=10_000, simclr_batch=512, stage2_batch=256,
            ks=list(range(10, 301, 5)), slf_epochs=5, alf_n=5_120, aa_n=1_000, aa_ub_n=100)
QUICK = dict(train_n=256, test_n=64, simclr_batch=64, stage2_batch=32,
             ks=[10, 20, 30], slf_epochs=1, alf_n=32, aa_n=4, aa_ub_n=2)
TEST_N_PAPER = 10_000


def padded_split(split: str, n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The first n Fashion-MNIST images of `split`, zero-padded 28 -> 32 px: x (n, 3, 32, 32) in
    [0, 1], y (n,) int64."""
    dataset = build_dataset("fashionmnist", split)
    x = torch.stack([dataset[i][0] for i in range(n)])
    y = torch.tensor([int(dataset[i][1]) for i in range(n)])
    return F.pad(x, (2, 2, 2, 2)), y


def synced(device: torch.device, fn: Callable[[], object]) -> Tuple[float, object]:
    """(seconds of fn() with the device drained before and after, its result)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, result


class SimCLRNet(nn.Module):
    """Encoder + solo-learn's SimCLR projector (Linear 512-2048, ReLU, Linear 2048-128)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.projector = nn.Sequential(nn.Linear(512, 2048), nn.ReLU(), nn.Linear(2048, 128))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))


def simclr_epoch(teacher: nn.Module, x: torch.Tensor, batch: int, device: torch.device) -> float:
    """Seconds of one SimCLR epoch over x (on the device), drop_last; trains `teacher` in place."""
    from solo.losses.simclr import simclr_loss_func

    net = SimCLRNet(teacher).to(device).train().requires_grad_(True)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.4, momentum=0.9, weight_decay=1e-5)
    rng = torch.Generator(device=device).manual_seed(0)

    def epoch():
        for i in range(len(x) // batch):
            images = x[i * batch:(i + 1) * batch]
            with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                z1, z2 = net(torch.cat([pad_crop_flip(images, 4, rng),
                                        pad_crop_flip(images, 4, rng)])).float().chunk(2)
                loss = simclr_loss_func(z1, z2, temperature=0.5)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    seconds, _ = synced(device, epoch)
    net.eval().requires_grad_(False)
    return seconds


@torch.no_grad()
def encode(model: nn.Module, x: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    """(N, 512) eval-mode features of x, on x's device."""
    return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])


def spread(ks: List[int]) -> List[int]:
    """ks reordered so that every prefix samples the whole range: every 4th K, then the next ..."""
    return [k for offset in range(4) for k in ks[offset::4]]


def select_k_seconds(model: nn.Module, x: torch.Tensor, ks: List[int], limit: float,
                     device: torch.device) -> Tuple[float, int, float]:
    """(seconds measured, K's swept, seconds extrapolated to all of ks): encode + silhouette sweep,
    stopped after the first K that ends past `limit` seconds."""
    encode_s, features = synced(device, lambda: encode(model, x))
    swept, sweep_s = 0, 0.0
    for k in spread(ks):
        seconds, _ = synced(device, lambda: sweep_k(features, [k], progress=False))
        swept, sweep_s = swept + 1, sweep_s + seconds
        if encode_s + sweep_s > limit:
            break
    return encode_s + sweep_s, swept, encode_s + sweep_s * len(ks) / swept


def stage2_epoch(method: str, student: nn.Module, teacher: nn.Module, x: torch.Tensor, batch: int,
                 k: int, device: torch.device) -> Tuple[float, float]:
    """(seconds of the per-epoch clustering (0 for deacl), seconds of every step of one epoch):
    fp32, lr 0.5, λ 6, dual BN."""
    cfg = Stage2Config(perturbation=method, lam=6.0)
    cluster_s, centroids = 0.0, None
    if method == "ncp":
        def clusters():
            with bn_branch(student, cfg.cluster_bn):
                features = encode(student.eval(), x)
            return cluster_epoch(features, k, seed=0).centroids
        cluster_s, centroids = synced(device, clusters)
        centroids = centroids.to(device)
    student.train()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.5, momentum=0.9, weight_decay=5e-4)

    def epoch():
        for i in range(len(x) // batch):
            out = stage2_step(student, teacher, x[i * batch:(i + 1) * batch], cfg, centroids=centroids)
            optimizer.zero_grad(set_to_none=True)
            out.losses["loss"].backward()
            optimizer.step()

    steps_s, _ = synced(device, epoch)
    return cluster_s, steps_s


class UnflippableHead(nn.Module):
    """logits = head(f) + 1,000 on column `label`: every attack fails, so AutoAttack spends its
    whole budget on every image, at the real encoder's cost per forward and backward."""

    def __init__(self, head: nn.Linear, label: int):
        super().__init__()
        self.head, self.label = head, label

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.head(features)
        margin = torch.zeros_like(logits)
        margin[:, self.label] = 1000.0
        return logits + margin


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--quick", action="store_true", help="CPU smoke run on 256 / 64 images")
    parser.add_argument("--k", type=int, default=10, help="clusters of the per-epoch clustering")
    parser.add_argument("--select-k-limit", type=float, default=60.0,
                        help="seconds after which the K sweep stops and is extrapolated")
    parser.add_argument("--parts", nargs="+", default=None, help="a subset of the parts (default all)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda but no CUDA device is visible: use --device cpu")
    scale = QUICK if args.quick else FULL
    torch.manual_seed(0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    x_train, y_train = padded_split("train", scale["train_n"])
    x_test, y_test = padded_split("test", scale["test_n"])
    x_dev = x_train.to(device)
    student, teacher = build_pair("cifar", device)
    rows: List[str] = []

    def row(part: str, measured_s: float, whole_s: float, how: str) -> None:
        rows.append(f"| {part} | {measured_s:,.1f} s | {whole_s:,.1f} s | {how} |")
        print(rows[-1], flush=True)

    wanted = lambda part: args.parts is None or part in args.parts
    print(f"## Reproduction cost on {name} (torch {torch.__version__}), Fashion-MNIST padded to "
          f"32 px: {scale['train_n']:,} training / {scale['test_n']:,} test images, ResNet-18 CIFAR "
          "stem\n", flush=True)
    print("| part | timed | whole part | figure is |\n|---|---|---|---|", flush=True)
    if wanted("simclr-epoch"):
        seconds = simclr_epoch(teacher, x_dev, scale["simclr_batch"], device)
        row(f"SimCLR epoch (batch {scale['simclr_batch']}, fp16 autocast)", seconds, seconds, "measured")
    if wanted("select-k"):
        ks = scale["ks"]
        seconds, swept, whole = select_k_seconds(teacher, x_dev, ks, args.select_k_limit, device)
        how = "measured" if swept == len(ks) else f"extrapolated from {swept} of {len(ks)} K"
        row(f"select-k: encode + K = {ks[0]}..{ks[-1]} ({len(ks)} K)", seconds, whole, how)
    for method in ("ncp", "deacl"):
        if wanted(f"{method}-epoch"):
            cluster_s, steps_s = stage2_epoch(method, student, teacher, x_dev, scale["stage2_batch"],
                                              args.k, device)
            what = f"{method} epoch (batch {scale['stage2_batch']}, fp32"
            what += f", clustering K={args.k} {cluster_s:.1f} s)" if method == "ncp" else ")"
            row(what, cluster_s + steps_s, cluster_s + steps_s, "measured")
    classifier = None
    with bn_branch(student, "adv"):
        if wanted("slf") or wanted("pgd-20") or any(wanted(p) for p in ("autoattack", "autoattack-ub")):
            cfg = FineTuneConfig(head="paper", lr=PAPER_LR_OTHER, epochs=scale["slf_epochs"])
            seconds, tuned = synced(device, lambda: fine_tune(
                student.eval(), TensorDataset(x_train, y_train), 10, cfg, device=device, progress=False))
            classifier = tuned.classifier
            if wanted("slf"):
                epochs = f"{cfg.epochs} epoch{'s' * (cfg.epochs != 1)}"
                row(f"SLF, paper's head ({cfg.epochs} of {EPOCHS} epochs)", seconds,
                    seconds * EPOCHS / cfg.epochs, f"extrapolated from {epochs}")
        if wanted("alf"):
            n = scale["alf_n"]
            cfg = FineTuneConfig(head="paper", lr=PAPER_LR_OTHER, epochs=1, mode="alf")
            seconds, _ = synced(device, lambda: fine_tune(
                student.eval(), TensorDataset(x_train[:n], y_train[:n]), 10, cfg, device=device,
                progress=False))
            row(f"ALF, paper's head (1 epoch of {n:,} images)", seconds,
                seconds * EPOCHS * scale["train_n"] / n,
                f"extrapolated to {scale['train_n']:,} images x {EPOCHS} epochs")
        test_set = TensorDataset(x_test, y_test)
        if wanted("pgd-20"):
            seconds, _ = synced(device, lambda: evaluate(classifier, test_set, device=device, seed=0,
                                                         progress=False))
            row(f"SA + PGD-20 RA on {len(test_set):,} test images", seconds,
                seconds * TEST_N_PAPER / len(test_set),
                "measured" if len(test_set) == TEST_N_PAPER else f"extrapolated to {TEST_N_PAPER:,}")
        for part, n in (("autoattack", scale["aa_n"]), ("autoattack-ub", scale["aa_ub_n"])):
            if not wanted(part):
                continue
            model, y = classifier, y_test
            if part == "autoattack-ub":
                model = nn.Sequential(classifier[0], UnflippableHead(classifier[1], 0))
                y = torch.zeros_like(y_test)
            seconds, result = synced(device, lambda: autoattack_accuracy(
                model, x_test, y, eps=8 / 255, n=n, device=device, seed=0, batch_size=n,
                progress=False))
            label = "every image robust (upper bound)" if part == "autoattack-ub" else \
                f"this encoder, AA {result.accuracy:.1f}%"
            row(f"AutoAttack standard on {n:,} images, {label}", seconds,
                seconds * TEST_N_PAPER / n, f"extrapolated to {TEST_N_PAPER:,} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
