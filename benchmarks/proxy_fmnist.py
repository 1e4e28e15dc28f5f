"""Fashion-MNIST proxy of the paper's comparison at CPU scale: `solo-ncp reproduce` with a budget.

    python benchmarks/proxy_fmnist.py [--seeds 0,1,2] [--no-alf] [--quick] [--out runs/proxy-fmnist]
    python benchmarks/proxy_fmnist.py --seeds 0 --speed precision=bf16-mixed \
        +method_kwargs.channels_last=true +method_kwargs.cudnn_benchmark=true --out runs/proxy-speed
    python benchmarks/proxy_fmnist.py --table4 [--seeds 0,1,2] [--out runs/proxy-table4]
    python benchmarks/proxy_fmnist.py --aa-n 0 --out runs/proxy-reread

One `solo-ncp reproduce` call (printed before it starts): per seed its own SimCLR stage 1 and K,
the proof of concept, the stage-2 encoders `ncp` (λ 6), `deacl` as published (λ 2, one BN), the
λ-matched ablation `deacl_matched` and `ncp` with `cluster_bn: adv` (row `ncp-advbn`); SLF for every
encoder under the paper's head and again under the whitened head, and ALF (paper's head) for `ncp`
and `deacl` (`--no-alf` drops it), both BN branches. Run the same line again to continue an
interrupted run (reproduce skips finished steps).

`--table4` runs the paper's Table 4 at proxy scale instead: NCP's perturbation strategies i, ii and
iii (`ncp-i`, `ncp-ii`, `ncp-iii`) against `deacl_matched`, with stage 2 long enough for the
per-epoch re-clustering to matter (15 epochs), on 3,000 training images with a 30-epoch stage 1 per
seed (about 1.3 h per seed on 2 cores, measured: README "Table 4 at proxy scale"); SLF under both
heads, adversarial BN branch only (the pre-registered row), no ALF.

`--speed OVERRIDE ...` checks that the stage-2 speed switches leave the results alone: `ncp` and
`deacl` run as they are and as `ncp-fast` / `deacl-fast` with the overrides, from the same stage 1,
seed and data (stage 1 at most 15 epochs), SLF only and without AutoAttack; the differences table
pairs each with its plain run.

`--stage1-epochs N` and `--aa-n N` change those two settings of the chosen scale. The last line
above is README's "Fashion-MNIST proxy" under both heads: AutoAttack on 20 images costs more there
than every other evaluation step together and ranks nothing, so that run leaves it out.

Beside the table it prints, measured in the same run, the SA of a logistic-regression probe on the
raw pixels of the same training images (the encoder's SLF head sees the same first N images and is
tested on the same first test images): a stage 1 worth defending reaches at least that.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.preprocessing import StandardScaler
from sklearn.pipeline import make_pipeline

from solo_ncp.cli import main as solo_ncp
from solo_ncp.eval.protocol import WEIGHT_DECAY
from solo_ncp.eval.report import mean_std
from solo_ncp.eval.results import load_runs
from solo_ncp.io import atomic_write_text

METHODS = "ncp,deacl,deacl_matched,ncp-advbn=ncp"
FULL = dict(subset=5000, stage1_epochs=60, stage2_epochs=3, stage1_batch=256, stage2_batch=128,
            crop_min_scale=0.3, k=(5, 60, 5), test_n=1000, aa_n=20, slf_epochs=25, alf_epochs=5,
            alf_n=1000)
"""Stage 1 measured here (seed 0, 5,000 images, SLF whitened head, 1,000 test images): 30 epochs with
the zoo's crops (min scale 0.08) SA 80.8 in 892 s; with min scale 0.3 SA 82.4 in 356 s (28 px
Fashion-MNIST objects fill the frame: small crops lose them). 60 epochs are the budget's choice:
the 3-seed run gave SA 81.27 ± 0.06 against raw-pixel probes of 80.70 (head's regulariser) and 82.50
(C tuned by cross-validation)."""
TABLE4 = dict(FULL, subset=3000, stage1_epochs=30, stage2_epochs=15)
"""--table4's scale: FULL with 3,000 images, a 30-epoch stage 1 and 15-epoch stage-2 runs."""
TABLE4_METHODS = ("ncp-i", "ncp-ii", "ncp-iii", "deacl_matched")
QUICK = dict(subset=512, stage1_epochs=1, stage2_epochs=1, stage1_batch=256, stage2_batch=128,
             crop_min_scale=0.3, k=(5, 15, 5), test_n=100, aa_n=4, slf_epochs=2, alf_epochs=1,
             alf_n=128)


SPEED_STAGE1_EPOCHS = 15
"""--speed's stage 1 (at most): its encoder is the same for both arms of the check."""
SPEED_METHODS = ("ncp", "deacl")
"""With --speed: the stage-2 methods run twice, as they are and as `<method>-fast` with the switches."""


def reproduce_argv(seeds: str, out: Path, scale: dict, alf: bool, speed=(), table4: bool = False) -> list:
    """`speed`: overrides (the speed switches) that turn the run into SPEED_METHODS as they are
    and as `<method>-fast` with the overrides, instead of METHODS; `table4`: TABLE4_METHODS."""
    k_min, k_max, k_step = scale["k"]
    evals = ["--eval", "slf"] + ([] if speed else ["--eval", "slf-whitened"])
    evals += ["--eval", "alf=ncp,deacl"] if alf else []
    branch = ["--eval-options=--bn adv"] if table4 else []
    if speed:
        methods = ",".join([*SPEED_METHODS, *(f"{m}-fast={m}" for m in SPEED_METHODS)])
        per_method = [f"{m}-fast:{override}" for m in SPEED_METHODS for override in speed]
    elif table4:
        methods = ",".join(f"{label}=ncp" if label.startswith("ncp-") else label for label in TABLE4_METHODS)
        per_method = [f"{label}:method_kwargs.strategy={label[4:]}" for label in TABLE4_METHODS
                      if label.startswith("ncp-")]
    else:
        methods, per_method = METHODS, ["ncp-advbn:method_kwargs.cluster_bn=adv"]
    return [
        "reproduce", "--dataset", "fashionmnist", "--seeds", seeds, "--methods", methods, *evals,
        "--out", str(out),
        f"--select-k-options=--k-min {k_min} --k-max {k_max} --k-step {k_step}",
        f"--eval-options=--epochs {scale['slf_epochs']} --test-n {scale['test_n']} "
        f"--aa-n {scale['aa_n']} --batch-size 128 --cache-features", *branch,
        f"--eval-options=alf=--epochs {scale['alf_epochs']} --train-n {scale['alf_n']}",
        f"--poc-options=--epochs {scale['slf_epochs']} --test-n {scale['test_n']} --cache-features",
        # ResNet-18 with the ImageNet stem (about 6x cheaper than the CIFAR stem on 28 px)
        f"data.subset={scale['subset']}", "backbone.kwargs.cifar=false", "data.num_workers=0",
        "data.val=false", "scheduler.warmup_epochs=0", "log_every_n_steps=5",
        f"simclr:max_epochs={scale['stage1_epochs']}", f"simclr:optimizer.batch_size={scale['stage1_batch']}",
        f"simclr:augmentations.0.rrc.crop_min_scale={scale['crop_min_scale']}",
        f"stage2:max_epochs={scale['stage2_epochs']}", f"stage2:optimizer.batch_size={scale['stage2_batch']}",
        *per_method,
    ]


def pixel_probes(train_n: int, test_n: int) -> dict:
    """SA (%) on the first `test_n` test images of L2 logistic regressions (lbfgs, standardised
    pixels) on the raw pixels of the first `train_n` training images: "head's regulariser" with
    C = 1 / (weight decay x N), the SLF head's; "tuned" with C chosen by 3-fold cross-validation
    on those training images over 1e-3..1e1."""
    from solo_ncp.data import build_dataset

    def pixels(split: str, n: int):
        dataset = build_dataset("fashionmnist", split)
        x = np.stack([dataset[i][0][0].numpy().ravel() for i in range(n)])
        return x, np.array([dataset[i][1] for i in range(n)])

    (train_x, train_y), (test_x, test_y) = pixels("train", train_n), pixels("test", test_n)
    probes = {
        "head's regulariser": LogisticRegression(C=1.0 / (WEIGHT_DECAY * train_n), max_iter=5000),
        "tuned": LogisticRegressionCV(Cs=np.logspace(-3, 1, 5), cv=3, max_iter=5000),
    }
    return {name: 100.0 * make_pipeline(StandardScaler(), probe).fit(train_x, train_y).score(test_x, test_y)
            for name, probe in probes.items()}


COMPARISONS = (("ncp", "deacl"), ("ncp", "deacl_matched"), ("ncp", "ncp-advbn"),
               ("deacl_matched", "deacl"), ("ncp", "simclr"), ("deacl", "simclr"))
"""(A, B) pairs whose per-seed differences A - B the summary tests against twice their standard
error; a one-BN encoder (simclr, deacl) is compared with each branch of a dual-BN one."""
SPEED_COMPARISONS = tuple((f"{m}-fast", m) for m in SPEED_METHODS)
TABLE4_COMPARISONS = tuple((label, "deacl_matched") for label in TABLE4_METHODS[:3])


def paired_differences(out: Path, comparisons=COMPARISONS, metrics_compared=("sa", "ra", "aa")) -> str:
    """Markdown table of A - B in `metrics_compared` (points) for every pair of `comparisons`, mode
    and BN branch evaluated in both, paired by seed (the seeds share their stage 1 and test images): mean
    difference, its standard error sd(d) / sqrt(n) over the n seeds, and whether |mean| > 2 SE
    (with one seed: the difference alone, SE "-"). Two one-BN encoders give one row (BN "one").
    AA is on few images (20 at the proxy's scale: 5-point steps), so its SE is coarse; a metric
    a run did not measure (AA with --aa-n 0) is "n/a"."""
    cells, one_bn = {}, set()
    for metrics in sorted(out.glob("s*/eval-*/metrics.json")):
        for run in load_runs(metrics.parent):
            if run.bn is None:
                one_bn.add(run.method)
            for bn in ("adv", "clean") if run.bn is None else (run.bn,):
                cells[(run.method, run.mode, run.head, bn, run.seed)] = run.metrics
    lines = [f"| A - B | mode | head | BN | n | {' | '.join(f'{m.upper()} diff ± SE' for m in metrics_compared)} "
             "| > 2 SE |", "|---|---|---|---|---|" + "---|" * (len(metrics_compared) + 1)]
    modes = sorted({key[1] for key in cells})
    heads = sorted({key[2] for key in cells}, key=lambda head: head != "paper")
    for a, b in comparisons:
        branches = ("adv",) if {a, b} <= one_bn else ("adv", "clean")
        for mode, head, bn in ((mode, head, bn) for mode in modes for head in heads for bn in branches):
            seeds = sorted(s for (m, md, hd, br, s) in cells if (m, md, hd, br) == (a, mode, head, bn)
                           and (b, mode, head, bn, s) in cells)
            if not seeds:
                continue
            label = "one" if len(branches) == 1 else bn
            both = [(cells[(a, mode, head, bn, s)], cells[(b, mode, head, bn, s)]) for s in seeds]
            diffs = {metric: [x[metric] - y[metric] for x, y in both
                              if x.get(metric) is not None and y.get(metric) is not None]
                     for metric in metrics_compared}
            row = f"| {a} - {b} | {mode.upper()} | {head} | {label} | {len(seeds)} | "
            if len(seeds) == 1:
                lines.append(row + " | ".join(f"{d[0]:+.2f} ± -" if d else "n/a" for d in diffs.values())
                             + " | - |")
                continue
            stats = {metric: (mean_std(values)[0], mean_std(values)[1] / len(values) ** 0.5)
                     for metric, values in diffs.items() if len(values) > 1}
            exceed = [m.upper() for m, (mean, se) in stats.items() if abs(mean) > 2 * se]
            lines.append(row + " | ".join(f"{stats[m][0]:+.2f} ± {stats[m][1]:.2f}" if m in stats else "n/a"
                                          for m in metrics_compared)
                         + f" | {', '.join(exceed) or 'none'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated")
    parser.add_argument("--no-alf", action="store_true", help="SLF only (ALF is the slow part on CPUs)")
    parser.add_argument("--quick", action="store_true", help="a minutes-long smoke run")
    parser.add_argument("--out", default=None, help="default runs/proxy-fmnist (--table4: runs/proxy-table4)")
    parser.add_argument("--table4", action="store_true",
                        help="the paper's Table 4 at proxy scale: strategies i, ii, iii against "
                             "deacl_matched, 15-epoch stage 2, both heads")
    parser.add_argument("--speed", nargs="+", default=(), metavar="OVERRIDE",
                        help="speed check instead of the comparison: ncp and deacl as they are and "
                             "with these overrides (e.g. precision=bf16-mixed "
                             "+method_kwargs.channels_last=true), SLF only, no AutoAttack")
    parser.add_argument("--stage1-epochs", type=int, default=None,
                        help="SimCLR epochs per seed (default: the scale's)")
    parser.add_argument("--aa-n", type=int, default=None,
                        help="test images AutoAttack runs on (default: the scale's; 0: no AutoAttack)")
    args = parser.parse_args(argv)
    if args.table4 and args.speed:
        parser.error("--table4 and --speed are separate runs: pass one")
    scale = QUICK if args.quick else TABLE4 if args.table4 else FULL
    if args.table4 and args.quick:
        scale = dict(QUICK, stage2_epochs=2)
    given = {"stage1_epochs": args.stage1_epochs, "aa_n": args.aa_n}
    scale = dict(scale, **{key: value for key, value in given.items() if value is not None})
    if args.speed:  # both arms start from one stage 1, so a shorter one serves
        scale = dict(scale, aa_n=0, stage1_epochs=min(scale["stage1_epochs"], SPEED_STAGE1_EPOCHS))
    out = Path(args.out or ("runs/proxy-table4" if args.table4 else "runs/proxy-fmnist"))
    command = reproduce_argv(args.seeds, out, scale, alf=not (args.no_alf or args.speed or args.table4),
                             speed=args.speed, table4=args.table4)
    print("[proxy] solo-ncp " + " ".join(command), flush=True)
    start = time.perf_counter()
    if solo_ncp(command) != 0:
        return 2
    hours = (time.perf_counter() - start) / 3600
    probes = pixel_probes(scale["subset"], scale["test_n"])
    table = (out / "report" / "report.md").read_text()
    summary = "\n".join([
        f"## Fashion-MNIST proxy (seeds {args.seeds}; this call {hours:.2f} h on this machine)", "",
        f"ResNet-18 (ImageNet stem), {scale['subset']} training images; per seed SimCLR "
        f"{scale['stage1_epochs']} epochs (batch {scale['stage1_batch']}, crops of scale "
        f"{scale['crop_min_scale']}..1) and K by silhouette over "
        f"K = {scale['k'][0]}..{scale['k'][1]} step {scale['k'][2]}; every stage-2 run "
        f"{scale['stage2_epochs']} epochs (batch {scale['stage2_batch']}, eps 8/255, 5-step PGD). "
        f"Heads: SLF {scale['slf_epochs']} epochs on cached features; SA and PGD-20 RA on the first "
        f"{scale['test_n']} test images, "
        + (f"AutoAttack (standard) on the first {scale['aa_n']}." if scale["aa_n"] else "no AutoAttack."), "",
        f"Raw-pixel logistic-regression probes, same {scale['subset']} training and {scale['test_n']} "
        "test images: " + ", ".join(f"{name} SA {sa:.2f}%" for name, sa in probes.items())
        + " (compare the simclr row's SA).", "",
        table, "",
        "Paired differences over seeds (A - B, points; SE = sd of the per-seed differences / sqrt(n)):", "",
        paired_differences(out, SPEED_COMPARISONS, ("sa", "ra")) if args.speed else
        paired_differences(out, TABLE4_COMPARISONS if args.table4 else COMPARISONS),
    ])
    atomic_write_text(out / "summary.md", summary)
    print("\n" + summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
