"""Stage-2 throughput: images/s of one NCP-ACL / DeACL step, and the per-epoch clustering's cost.

On the CPU or a GPU. One step = the framework-free `solo_ncp.ncp.stage2_step` (f2 and f1 on the
clean batch, 5-step PGD through the adversarial BN, Eq. 3 through both BN branches) + backward +
SGD update, on a dual-BN ResNet-18 student and a frozen ResNet-18 teacher, with Fashion-MNIST
images (padded to 32 px for the CIFAR stem; digits when Debian's files are absent). Data loading
and augmentation are not counted. Clustering = encoding N training images (eval mode, no gradient)
+ spherical k-means of the (N, 512) features with each available backend.

    python benchmarks/stage2_throughput.py                       # CPU, small batch, 4 steps
    python benchmarks/stage2_throughput.py --device cuda --batch-size 256 --precision fp32 bf16
    python benchmarks/stage2_throughput.py --device cuda --batch-size 256 --method ncp --combos

Prints one markdown table; every number is measured in this run (median of the timed steps).
`--combos [SWITCH ...]` times the step instead under every combination of the named speed switches
(none named: all of {fp32, bf16} x channels_last x cudnn.benchmark x torch.compile; cudnn.benchmark
only on a GPU), with those of `--fixed` kept on, each as a ratio to the plain fp32 step of the same
run, and skips the clustering. torch.compile compiles anew for every combination, so
benchmarks/gpu_check.sh varies it only on top of the others all on:

    python benchmarks/stage2_throughput.py --device cuda --batch-size 256 --method ncp \
        --combos compile --fixed bf16 channels_last cudnn_benchmark
"""
import argparse
import copy
import itertools
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterator, List, Tuple

import torch
import torch.nn.functional as F

from solo_ncp.cluster import spherical_kmeans
from solo_ncp.cluster.kmcuda_backend import kmcuda_module
from solo_ncp.data import build_dataset
from solo_ncp.data.datasets import DatasetNotFoundError
from solo_ncp.models.backbones import BackboneSpec, build_backbone
from solo_ncp.models.checkpoint import normalized_encoder
from solo_ncp.models.dual_bn import convert_dual_bn
from solo_ncp.ncp.speed import channels_last, compile_forward, use_channels_last
from solo_ncp.attacks import deacl_objective, ncp_objective, nearest_centroids
from solo_ncp.ncp.step import Stage2Config, adversarial_examples, cluster_space, stage2_step

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
MEAN, STD = (0.2860,) * 3, (0.3530,) * 3


def real_images(n: int, size: int) -> torch.Tensor:
    """(n, 3, size, size) in [0, 1]: Fashion-MNIST training images (digits if it is absent),
    zero-padded or cropped to `size` around the centre, repeated when n exceeds the set."""
    try:
        dataset = build_dataset("fashionmnist", "train")
    except DatasetNotFoundError:
        print("Fashion-MNIST not found: using scikit-learn's digits", file=sys.stderr)
        dataset = build_dataset("digits", "train")
    x = torch.stack([dataset[i % len(dataset)][0] for i in range(n)])
    pad = size - x.shape[-1]
    return F.pad(x, (pad // 2, pad - pad // 2) * 2) if pad >= 0 else x[..., :size, :size]


def median_seconds(fn: Callable[[], None], device: torch.device, warmup: int, repeats: int) -> float:
    def synced():
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        synced()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        synced()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build_pair(stem: str, device: torch.device):
    """(student f2: Normalize + dual-BN ResNet-18 starting as f1, teacher f1: Normalize +
    ResNet-18, frozen, eval mode)."""
    backbone = build_backbone(BackboneSpec(cifar=stem == "cifar"))
    teacher = normalized_encoder(copy.deepcopy(backbone), MEAN, STD).to(device).eval()
    teacher.requires_grad_(False)
    student = normalized_encoder(convert_dual_bn(backbone), MEAN, STD).to(device)
    return student, teacher


@dataclass(frozen=True)
class Combo:
    """One setting of the step's speed switches (the `method_kwargs` of the same names)."""

    precision: str = "fp32"
    channels_last: bool = False
    cudnn_benchmark: bool = False
    compile: bool = False


SWITCHES = ("bf16", "channels_last", "cudnn_benchmark", "compile")
"""The speed switches `--combos` varies (bf16: precision bf16 instead of fp32)."""


def all_combos(device: torch.device, vary, fixed) -> Tuple[List[Combo], List[str]]:
    """The plain fp32 step (every switch off) first, then every combination of the switches in
    `vary` with those in `fixed` on and the rest off (cudnn_benchmark only on a GPU), and a note
    per switch left out."""
    vary = [name for name in SWITCHES if name in vary and name not in fixed]
    skipped = []
    if device.type != "cuda" and "cudnn_benchmark" in set(vary) | set(fixed):
        vary = [name for name in vary if name != "cudnn_benchmark"]
        fixed = [name for name in fixed if name != "cudnn_benchmark"]
        skipped.append("cudnn.benchmark on (no cuDNN on the CPU)")
    combos = [Combo()]
    for values in itertools.product((False, True), repeat=len(vary)):
        on = set(fixed) | {name for name, value in zip(vary, values) if value}
        combo = Combo("bf16" if "bf16" in on else "fp32", "channels_last" in on,
                      "cudnn_benchmark" in on, "compile" in on)
        if combo not in combos:
            combos.append(combo)
    return combos, skipped


def build_step(args, device: torch.device, method: str, combo: Combo, x_all):
    """(one stage-2 step + backward + SGD update, the step's 5-step PGD alone on the same batch),
    both closures, with the switches of `combo`, alternating between two batches of x_all."""
    torch.backends.cudnn.benchmark = combo.cudnn_benchmark
    student, teacher = build_pair(args.stem, device)
    if combo.channels_last:
        use_channels_last(student, teacher)
        x_all = channels_last(x_all)
    if combo.compile:
        torch._dynamo.reset()
        compile_forward(student.backbone, teacher)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.5, momentum=0.9, weight_decay=5e-4)
    cfg = Stage2Config(perturbation=method, lam=6.0)
    centroids = F.normalize(torch.randn(args.k, 512, device=device), dim=1)
    dtype = PRECISIONS[combo.precision]
    batches = iter(range(10**9))

    def batch():
        i = next(batches) % 2
        return x_all[i * args.batch_size:(i + 1) * args.batch_size]

    def one_step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = stage2_step(student, teacher, batch(), cfg,
                              centroids=centroids if method == "ncp" else None)
        optimizer.zero_grad(set_to_none=True)
        out.losses["loss"].backward()
        optimizer.step()

    def pgd_only():
        x = batch()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            if method == "ncp":
                with torch.no_grad():
                    features = cluster_space(student, x, cfg)
                choice = nearest_centroids(features, centroids, cfg.neighbor_rank)
                objective = ncp_objective(student, choice.own, choice.nbr, cfg.strategy)
            else:
                with torch.no_grad():
                    objective = deacl_objective(student, teacher(x))
            adversarial_examples(student, x, objective, cfg)

    return one_step, pgd_only


def step_seconds(args, device: torch.device, method: str, combo: Combo, x_all) -> float:
    """Median seconds of one stage-2 step + backward + SGD update with the switches of `combo`."""
    one_step, _ = build_step(args, device, method, combo, x_all)
    return median_seconds(one_step, device, args.warmup, args.steps)


def profile_rows(args, device: torch.device) -> Iterator[str]:
    """Where the step's time goes, with the `--fixed` switches on: per method the step's median,
    the median of its 5-step PGD alone (same batch, same switches) and their ratio, then
    torch.profiler's top kernels of 3 steps by device time."""
    from torch.profiler import ProfilerActivity, profile

    x_all = real_images(args.batch_size * 2, args.image_size).to(device)
    fixed = set(args.fixed)
    combo = Combo("bf16" if "bf16" in fixed else "fp32", "channels_last" in fixed,
                  "cudnn_benchmark" in fixed, "compile" in fixed)
    tables = []
    for method in args.method:
        one_step, pgd_only = build_step(args, device, method, combo, x_all)
        step_s = median_seconds(one_step, device, args.warmup, args.steps)
        pgd_s = median_seconds(pgd_only, device, args.warmup, args.steps)
        yield (f"| {method} | {', '.join(sorted(fixed)) or 'plain fp32'} | {step_s * 1e3:.1f} ms | "
               f"{pgd_s * 1e3:.1f} ms | {100 * pgd_s / step_s:.0f}% | "
               f"{(step_s - pgd_s) * 1e3:.1f} ms |")
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            for _ in range(3):
                one_step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
        tables.append(f"\n{method}, 3 steps, top kernels by device time:\n\n"
                      + prof.key_averages().table(sort_by=sort, row_limit=args.profile_rows))
    yield from tables


def step_rows(args, device: torch.device) -> Iterator[str]:
    x_all = real_images(args.batch_size * 2, args.image_size).to(device)
    for precision in args.precision:
        combo = Combo(precision, cudnn_benchmark=device.type == "cuda")
        for method in args.method:
            seconds = step_seconds(args, device, method, combo, x_all)
            yield (f"| {method} step (5-step PGD) | {precision} | {args.batch_size} | "
                   f"{args.image_size}, {args.stem} | {seconds * 1e3:.1f} ms | "
                   f"{args.batch_size / seconds:,.0f} img/s |")


def combo_rows(args, device: torch.device) -> Iterator[str]:
    """One row per method and combination: time, img/s and the ratio to the plain fp32 step
    (every switch off) of the same method, measured in this run."""
    x_all = real_images(args.batch_size * 2, args.image_size).to(device)
    combos, skipped = all_combos(device, args.combos, args.fixed)
    on = lambda flag: "on" if flag else "off"
    for method in args.method:
        baseline = None
        for combo in combos:
            seconds = step_seconds(args, device, method, combo, x_all)
            baseline = baseline or seconds
            yield (f"| {method} | {combo.precision} | {on(combo.channels_last)} | "
                   f"{on(combo.cudnn_benchmark)} | {on(combo.compile)} | {seconds * 1e3:.1f} ms | "
                   f"{args.batch_size / seconds:,.1f} | {baseline / seconds:.2f}x |")
    for note in skipped:
        yield f"\nNot timed: {note}."


def encoded_features(args, device: torch.device):
    """Yields the timing row of encoding --cluster-n images; returns their (N, 512) features."""
    student, _ = build_pair(args.stem, device)
    student.eval()
    x = real_images(args.cluster_n, args.image_size)
    batch = 512

    def encode():
        with torch.no_grad():
            return torch.cat([student(x[i:i + batch].to(device, non_blocking=True))
                              for i in range(0, len(x), batch)])

    seconds = median_seconds(encode, device, 1, args.repeats)
    yield (f"| encode training set (eval, no grad) | fp32 | {batch} | {args.image_size}, {args.stem} "
           f"| {seconds:.2f} s for {args.cluster_n:,} | {args.cluster_n / seconds:,.0f} img/s |")
    return encode()


def clustering_rows(args, device: torch.device) -> Iterator[str]:
    """Encoding --cluster-n images, then spherical k-means of their (N, 512) features (with
    --planted: of planted unit vectors around max(--cluster-k) centres, noise 1.0, instead) per
    K, seed and backend: time and objective."""
    if args.planted:
        from clustering import planted_unit_vectors

        features = planted_unit_vectors(args.cluster_n, 512, max(args.cluster_k), 1.0, 0).to(device)
    else:
        features = yield from encoded_features(args, device)
    backends = ["torch"] + (["kmcuda"] if device.type == "cuda" and kmcuda_module() else [])
    for k in args.cluster_k:
        for seed in range(args.cluster_seeds):
            objectives = {}
            for backend in backends:
                run = lambda: spherical_kmeans(features, k, seed=seed, backend=backend)
                seconds = median_seconds(run, device, 1, args.repeats)
                objectives[backend] = run().objective
                gap = objectives[backend] - objectives["torch"]
                yield (f"| spherical k-means K={k} seed {seed} ({backend}) | fp32 | - | - | "
                       f"{seconds * 1e3:.1f} ms for {args.cluster_n:,} x 512 | objective "
                       f"{objectives[backend]:.5f} ({gap:+.5f} vs torch) |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32, help="pixels (CIFAR: 32)")
    parser.add_argument("--stem", choices=("cifar", "imagenet"), default="cifar",
                        help="cifar: 3x3 conv, no max-pool (the paper's); imagenet: the proxy's")
    parser.add_argument("--precision", nargs="+", choices=tuple(PRECISIONS), default=["fp32"])
    parser.add_argument("--method", nargs="+", choices=("ncp", "deacl"), default=["ncp", "deacl"])
    parser.add_argument("--k", type=int, default=10, help="clusters (CIFAR-10's silhouette K)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--cluster-n", type=int, default=5000,
                        help="training images encoded and clustered (CIFAR-10: 50,000)")
    parser.add_argument("--repeats", type=int, default=1, help="timed clustering repeats")
    parser.add_argument("--cluster-k", type=int, nargs="+", default=[10],
                        help="K of the timed clusterings (kmcuda's verdict: 70 300)")
    parser.add_argument("--cluster-seeds", type=int, default=1, help="seeds per K of the clusterings")
    parser.add_argument("--planted", action="store_true",
                        help="cluster planted unit vectors instead of the encoder's features")
    parser.add_argument("--clustering-only", action="store_true",
                        help="time only the encoding and the clusterings (torch and, on a GPU with "
                             "libKMCUDA, kmcuda: time and objective)")
    parser.add_argument("--combos", nargs="*", choices=SWITCHES, default=None,
                        help="time the step under every combination of these speed switches "
                             "(none named: all four), each against the plain fp32 step")
    parser.add_argument("--fixed", nargs="+", choices=SWITCHES, default=[],
                        help="with --combos: switches kept on in every combination")
    parser.add_argument("--profile", action="store_true",
                        help="where the step's time goes with the --fixed switches: the 5-step PGD's "
                             "share and torch.profiler's top kernels")
    parser.add_argument("--profile-rows", type=int, default=15, help="kernels listed with --profile")
    args = parser.parse_args(argv)
    if args.combos == []:
        args.combos = list(SWITCHES)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            sys.exit("--device cuda but no CUDA device is visible: use --device cpu")
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU, {torch.get_num_threads()} threads"
    print(f"## Stage-2 throughput on {name} (torch {torch.__version__})\n")
    if args.profile:
        print(f"Batch {args.batch_size}, {args.image_size} px, {args.stem} stem.\n")
        print("| method | switches | step | 5-step PGD alone | PGD share | rest (loss forwards, "
              "backward, update) |")
        print("|---|---|---|---|---|---|")
        tables = (profile_rows(args, device),)
    elif args.combos is not None:
        print(f"Batch {args.batch_size}, {args.image_size} px, {args.stem} stem.\n")
        print("| method | precision | channels_last | cudnn.benchmark | compile | time | img/s | "
              "vs plain fp32 |")
        print("|---|---|---|---|---|---|---|---|")
        tables = (combo_rows(args, device),)
    else:
        print("| what | precision | batch | px, stem | time | throughput |")
        print("|---|---|---|---|---|---|")
        tables = ((clustering_rows(args, device),) if args.clustering_only
                  else (step_rows(args, device), clustering_rows(args, device)))
    for rows in tables:
        for row in rows:
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
