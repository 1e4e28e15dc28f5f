"""`solo-ncp demo` (what `make demo` runs): the whole NCP-ACL pipeline at CPU scale through the
real commands - SimCLR -> select-k -> ncp -> SLF eval (SA / PGD-20 RA / AutoAttack AA) - on
Fashion-MNIST from Debian's dataset-fashion-mnist (scikit-learn's digits when it is absent),
ending with a markdown summary of every artefact."""
import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from solo_ncp.commands._encoder import path_text, seed_number
from solo_ncp.config.overrides import override_of


@dataclass(frozen=True)
class DemoScale:
    """What the demo trains: a fixed training subset and few epochs (see `cpu_scale_overrides`);
    `aa_attacks`: None for AutoAttack's standard version, else its attacks as version "custom"."""

    dataset: str
    crop_size: int
    subset: int
    stage1_epochs: int
    stage2_epochs: int
    k_range: Tuple[int, int, int]
    test_n: int
    aa_n: int
    slf_epochs: int
    aa_attacks: Optional[Tuple[str, ...]] = None


SCALES = {
    "fashionmnist": DemoScale("fashionmnist", 28, 2000, 3, 1, (5, 40, 5), 500, 20, 15),
    "digits": DemoScale("digits", 8, 1437, 3, 1, (5, 40, 5), 360, 20, 15),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=None, type=path_text, help="run folder (default runs/demo-<time>)")
    parser.add_argument("--dataset", choices=sorted(SCALES), default=None,
                        help="default: fashionmnist if Debian's files are there, else digits")
    parser.add_argument("--seed", type=seed_number, default=0, help="seed of every step of the demo (default 0)")


def _dataset(requested) -> str:
    from solo_ncp.data import DatasetNotFoundError, build_dataset

    if requested:
        return requested
    try:
        build_dataset("fashionmnist", "test")
        return "fashionmnist"
    except DatasetNotFoundError:
        print("[demo] Fashion-MNIST not found (install Debian's dataset-fashion-mnist): "
              "using scikit-learn's digits instead")
        return "digits"


def _run_again(out: Path) -> str:
    """How a stopped or failed demo goes on: a demo does not resume (a stage's own line names its
    command's --resume, which runs no demo)."""
    return f"run it again with another --out ({out} keeps what its finished stages wrote)"


def _demo_interrupted(err: KeyboardInterrupt, out: Path) -> KeyboardInterrupt:
    """The interruption of a demo stage, its line composed for the demo (`_run_again`)."""
    from solo_ncp.interrupt import as_interrupted

    interrupted = as_interrupted(err)
    interrupted.line = (f"interrupted: solo-ncp demo stopped by {interrupted.signal_name}: a demo does not resume; "
                        f"{_run_again(out)}")
    return interrupted


def run(args: argparse.Namespace) -> int:
    from solo_ncp.io import atomic_write_text, check_writable
    from solo_ncp.launch.pipeline import StageFailed, cpu_scale_overrides, run_stage
    from solo_ncp.zoo import config_path

    scale = SCALES[_dataset(args.dataset)]
    out = Path(args.out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    if out.exists():
        raise ValueError(f"{out} exists: pass another --out so no earlier result is overwritten")
    check_writable(out)
    common = cpu_scale_overrides(scale.dataset, scale.crop_size, scale.subset, out, args.seed)
    simclr = out / "simclr" / "last.ckpt"
    ncp = out / "ncp" / "last.ckpt"
    k_dir, eval_dir = out / "select-k", out / "eval-slf"
    k_min, k_max, k_step = scale.k_range
    encoder_args = ["--dataset", scale.dataset, "--seed", str(args.seed)]
    try:
        timings = {
            "stage 1 (SimCLR)": run_stage("stage 1: SimCLR", [
                "pretrain", "--config", str(config_path("fashionmnist/simclr")), *common,
                "name=simclr", f"max_epochs={scale.stage1_epochs}", "optimizer.batch_size=256"]),
            "select-k": run_stage("K selection", [
                "select-k", "--ckpt", str(simclr), *encoder_args, "--k-min", str(k_min),
                "--k-max", str(k_max), "--k-step", str(k_step), "--train-n", str(scale.subset),
                "--out", str(k_dir)]),
            "stage 2 (ncp)": run_stage("stage 2: NCP adversarial training", [
                "train", "--config", str(config_path("fashionmnist/ncp")), *common, "name=ncp",
                f"max_epochs={scale.stage2_epochs}", "optimizer.batch_size=128",
                override_of("method_kwargs.teacher_ckpt", simclr), "method_kwargs.k=null",
                override_of("method_kwargs.k_file", k_dir / "k.json")]),
            "SLF eval": run_stage("evaluation: SLF head, SA / PGD-20 RA / AutoAttack AA", [
                "eval", "--ckpt", str(ncp), *encoder_args, "--mode", "slf", "--cache-features",
                "--epochs", str(scale.slf_epochs), "--train-n", str(scale.subset),
                "--test-n", str(scale.test_n), "--aa-n", str(scale.aa_n), "--batch-size", "128",
                *(["--aa-version", "custom", "--aa-attacks", *scale.aa_attacks] if scale.aa_attacks else []),
                "--out", str(eval_dir)]),
        }
    except KeyboardInterrupt as err:
        raise _demo_interrupted(err, out) from None
    except StageFailed as err:
        raise StageFailed(f"{err}: a demo does not resume; once that is mended, {_run_again(out)}") from None
    k = json.loads((k_dir / "k.json").read_text())["k"]
    record = json.loads((eval_dir / "metrics.json").read_text())
    m, aa = record["metrics"], record["settings"]["aa"]
    summary = "\n".join([
        f"# solo-ncp demo on {scale.dataset}",
        "",
        f"Training subset {scale.subset} images; ResNet-18 (ImageNet stem); SimCLR "
        f"{scale.stage1_epochs} epochs; ncp {scale.stage2_epochs} epoch"
        f"{'s' if scale.stage2_epochs != 1 else ''} (lambda 6, eps 8/255, "
        f"5-step PGD, strategy iii); K = {k} chosen by silhouette over K = {k_min}..{k_max} "
        f"step {k_step}. A CPU-sized run: the numbers show the pipeline works, not the paper's "
        "accuracy.",
        "",
        "| Method | SA(%) | RA(%) | AA(%) | head's final training loss / accuracy(%) |",
        "|---|---|---|---|---|",
        *[f"| ncp ({b['bn']} BN), SLF | {b['metrics']['sa']:.2f} | {b['metrics']['ra']:.2f} | "
          f"{b['metrics']['aa']:.2f} | {b['metrics']['train_loss']:.3f} / "
          f"{b['metrics']['train_acc']:.1f} |" for b in record["branches"]],
        "",
        f"SA and RA (PGD-20) on the first {m['sa_n']} test images, AA (AutoAttack {aa['version']}"
        f"{': ' + ', '.join(aa['attacks']) if aa['attacks'] else ''}) on the first {m['aa_n']}; "
        f"the {record['head']} head (`solo-ncp eval`'s default; the paper's "
        "tables use `--head paper`).",
        "",
        "| stage | seconds |",
        "|---|---|",
        *[f"| {name} | {seconds:.0f} |" for name, seconds in timings.items()],
        "",
        "Artefacts:",
        f"- stage-1 checkpoint: {simclr}",
        f"- silhouette curve: {k_dir / 'silhouette.png'} (scores: {k_dir / 'silhouette.csv'}, "
        f"choice: {k_dir / 'k.json'})",
        f"- stage-2 checkpoint: {ncp} (training logs: {out / 'ncp' / 'logs'})",
        f"- evaluation: {eval_dir / 'metrics.json'}",
        "",
    ])
    atomic_write_text(out / "summary.md", summary)
    print("\n" + summary)
    print(f"[demo] summary written to {out / 'summary.md'}")
    return 0
