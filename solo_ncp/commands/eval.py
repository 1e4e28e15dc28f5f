"""`solo-ncp eval`: SLF or ALF linear head on a frozen encoder, then SA, PGD-20 RA and AutoAttack AA
on the test set; writes `metrics.json` atomically and prints a Table-2 style row."""
import argparse
from pathlib import Path

from solo_ncp.commands._encoder import add_encoder_arguments, device_of, first, load_args_encoder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_encoder_arguments(parser)
    parser.add_argument("--mode", choices=("slf", "alf"), default="slf")
    parser.add_argument("--out", required=True, help="run folder for metrics.json")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--lr", type=float, default=None,
                        help="head learning rate (default: 0.1 CIFAR-10, 10.0 CIFAR-100/STL-10)")
    parser.add_argument("--eps", type=float, default=8 / 255, help="L-inf budget in [0, 1] units")
    parser.add_argument("--alpha", type=float, default=2 / 255, help="PGD step in [0, 1] units")
    parser.add_argument("--pgd-steps", type=int, default=20, help="RA attack steps (PGD-20)")
    parser.add_argument("--aa-n", type=int, default=1000,
                        help="AutoAttack on the first N test images (0 skips it)")
    parser.add_argument("--train-n", type=int, default=None, help="use the first N training images")
    parser.add_argument("--test-n", type=int, default=None, help="use the first N test images")
    parser.add_argument("--cache-features", action="store_true",
                        help="SLF fast path: features computed once, no augmentation")
    parser.add_argument("--method", default=None, help="row label (default: from the checkpoint)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing metrics.json")


def run(args: argparse.Namespace) -> int:
    from torch import nn

    from solo_ncp.data import build_dataset, get_spec
    from solo_ncp.eval import LinearEvalConfig, evaluate, format_row, lr_for_dataset, train_linear_head
    from solo_ncp.eval.report import METRICS_FILE
    from solo_ncp.io import atomic_write_json, file_sha256

    out = Path(args.out) / METRICS_FILE
    if out.exists() and not args.overwrite:
        raise ValueError(f"{out} exists: pass --overwrite to replace it, or choose another --out")
    spec = get_spec(args.dataset)
    device = device_of(args)
    encoder = load_args_encoder(args)
    train_set = first(build_dataset(spec.name, "train", data_dir=args.data_dir), args.train_n, "--train-n")
    test_set = first(build_dataset(spec.name, "test", data_dir=args.data_dir), args.test_n, "--test-n")
    if args.aa_n > len(test_set):
        raise ValueError(f"--aa-n={args.aa_n} is larger than the test set ({len(test_set)} images)")
    cfg = LinearEvalConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr if args.lr is not None else lr_for_dataset(spec.name),
        mode=args.mode,
        eps=args.eps,
        alpha=args.alpha,
        seed=args.seed,
    )
    head = train_linear_head(encoder.model, train_set, spec.num_classes, cfg, device=device,
                             cache_features=args.cache_features)
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
