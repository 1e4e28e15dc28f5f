"""`solo-ncp eval`: SLF or ALF linear head on a frozen encoder, then SA, PGD-20 RA and AutoAttack AA
on the test set; writes `metrics.json` atomically and prints a Table-2 style row."""
import argparse
from pathlib import Path

from solo_ncp.commands._encoder import (
    add_encoder_arguments,
    add_head_arguments,
    device_of,
    evaluation_splits,
    load_args_encoder,
    refuse_overwrite,
    train_head,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_encoder_arguments(parser)
    add_head_arguments(parser)
    parser.add_argument("--mode", choices=("slf", "alf"), default="slf")
    parser.add_argument("--out", required=True, help="run folder for metrics.json")
    parser.add_argument("--eps", type=float, default=8 / 255, help="L-inf budget in [0, 1] units")
    parser.add_argument("--alpha", type=float, default=2 / 255, help="PGD step in [0, 1] units")
    parser.add_argument("--pgd-steps", type=int, default=20, help="RA attack steps (PGD-20)")
    parser.add_argument("--aa-n", type=int, default=1000,
                        help="AutoAttack on the first N test images (0 skips it)")
    parser.add_argument("--method", default=None, help="row label (default: from the checkpoint)")


def run(args: argparse.Namespace) -> int:
    from torch import nn

    from solo_ncp.data import get_spec
    from solo_ncp.eval import evaluate, format_row
    from solo_ncp.eval.report import METRICS_FILE
    from solo_ncp.io import atomic_write_json, file_sha256

    out = Path(args.out) / METRICS_FILE
    refuse_overwrite(out, args.overwrite)
    spec = get_spec(args.dataset)
    device = device_of(args)
    encoder = load_args_encoder(args)
    train_set, test_set = evaluation_splits(args, spec)
    if args.aa_n > len(test_set):
        raise ValueError(f"--aa-n={args.aa_n} is larger than the test set ({len(test_set)} images)")
    head, cfg = train_head(args, encoder, spec, train_set, args.mode, eps=args.eps, alpha=args.alpha)
    classifier = nn.Sequential(encoder.model, head)
    metrics = evaluate(classifier, test_set, eps=args.eps, alpha=args.alpha, steps=args.pgd_steps,
                       batch_size=args.batch_size, aa_n=args.aa_n, device=device, seed=args.seed)
    method = args.method or encoder.meta.get("method", "encoder")
    record = {
        "method": method,
        "dataset": spec.name,
        "mode": args.mode,
        "seed": args.seed,
        "bn": encoder.bn,
        "metrics": metrics,
        "settings": {
            "linear": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
            "cache_features": args.cache_features,
            "ra": {"eps": args.eps, "alpha": args.alpha, "steps": args.pgd_steps},
            "aa": {"version": "standard", "eps": args.eps, "n": metrics["aa_n"]},
            "train_n": len(train_set),
        },
        "checkpoint": {"path": str(args.ckpt), "sha256": file_sha256(args.ckpt)},
    }
    atomic_write_json(out, record)
    label = method if encoder.bn is None else f"{method} ({encoder.bn} BN)"
    print("| Method | SA(%) | RA(%) | AA(%) |\n|---|---|---|---|")
    print(format_row(label, metrics))
    print(f"[solo-ncp] SA/RA on {metrics['sa_n']} test images, AA on {metrics['aa_n']}; wrote {out}")
    return 0
