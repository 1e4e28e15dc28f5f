"""`solo-ncp export`: a trained encoder as plain PyTorch files for torchvision, solo-learn's
main_linear.py and RobustBench (see solo_ncp.models.export): encoder.pt (one BN branch folded in),
solo_learn.ckpt, model.py and export.json; with --head, the classifier `solo-ncp eval` evaluated on
this encoder (classifier.pt, [0, 1] images -> logits) and RobustBench's model_info.json."""
import argparse
from pathlib import Path

from solo_ncp.commands._encoder import claimed_out, path_text
from solo_ncp.io import read_json, resolved
from solo_ncp.models.branches import BRANCHES, DEFAULT_BN


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, type=path_text,
                        help="encoder checkpoint (solo-ncp or solo-learn), or an export folder")
    parser.add_argument("--bn", choices=BRANCHES, default=None,
                        help=f"BN branch of a dual-BN encoder to fold in (default {DEFAULT_BN}); a "
                             "single-BN encoder (stage 1) has only its clean one")
    parser.add_argument("--out", required=True, type=path_text,
                        help="folder for encoder.pt, solo_learn.ckpt, model.py, export.json (and "
                             "classifier.pt, model_info.json)")
    parser.add_argument("--head", default=None, type=path_text, metavar="EVAL_DIR",
                        help="a `solo-ncp eval --out` folder of this checkpoint: also export its "
                             "classifier (normalisation, encoder, the branch's linear head)")
    parser.add_argument("--dataset", default=None,
                        help="only for a checkpoint without solo-ncp metadata (plain solo-learn): "
                             "the registered dataset whose solo-learn mean/std it was trained with "
                             "(custom data's are recorded by solo-ncp pretrain and train)")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="allow checkpoints that need a full (unsafe) unpickling")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier export in --out (never another command's folder)")


def read_evaluation(eval_dir: Path, out: Path) -> dict:
    """eval's metrics.json of `eval_dir`, checked as `solo-ncp report` checks it."""
    from solo_ncp.eval.results import METRICS_FILE, load_runs

    if resolved(eval_dir) == resolved(out):
        raise ValueError(f"--out {out} is the --head folder: eval's files would be overwritten; "
                         "choose another --out")
    load_runs(eval_dir)
    return read_json(eval_dir / METRICS_FILE)


def note_unused_dataset(args: argparse.Namespace, encoder) -> None:
    """A note when --dataset names another dataset than the one a checkpoint with solo-ncp metadata
    records: its recorded normalisation is exported, and export.json records its dataset (eval's
    note on a checkpoint of another dataset; --dataset is for a plain solo-learn checkpoint)."""
    from solo_ncp.models.checkpoint import assumed_normalization

    trained_on = encoder.meta.get("dataset")
    if args.dataset is None or args.dataset == trained_on or assumed_normalization(encoder):
        return
    recorded = f"was trained on {trained_on}" if trained_on else "records no dataset"
    print(f"[solo-ncp] note: {args.ckpt} {recorded} and records its normalisation: --dataset {args.dataset} "
          f"is not used (it is for a plain solo-learn checkpoint); export.json: dataset {trained_on or 'null'}")


def run(args: argparse.Namespace) -> int:
    from solo_ncp.data import CUSTOM, get_spec
    from solo_ncp.data.registry import DATASETS
    from solo_ncp.models import load_encoder
    from solo_ncp.models.checkpoint import EXPORT_INFO
    from solo_ncp.models.export import EXPORT_FILES, robustbench_caveat, write_export

    out = Path(args.out)
    with claimed_out(args, EXPORT_INFO, EXPORT_FILES, reads={"--ckpt": args.ckpt, "--head": args.head}):
        eval_dir = Path(args.head) if args.head else None
        evaluation = read_evaluation(eval_dir, out) if eval_dir else None
        spec = get_spec(args.dataset) if args.dataset not in (None, CUSTOM) else None  # custom: recorded
        normalization = {"mean": spec.mean, "std": spec.std} if spec else None
        encoder = load_encoder(args.ckpt, normalization=normalization, bn=args.bn, trust=args.trust_checkpoint)
        if args.bn is not None and not encoder.branches and args.bn != "clean":
            raise ValueError(f"{args.ckpt} is a single-BN encoder: it has no {args.bn} branch; pass "
                             "--bn clean or leave --bn out")
        note_unused_dataset(args, encoder)
        if args.dataset and not encoder.meta.get("dataset"):  # a plain checkpoint: the dataset given
            encoder.meta["dataset"] = args.dataset
        evaluated = DATASETS.get(evaluation["dataset"]) if evaluation else None  # custom: None
        info = write_export(encoder, out, evaluation, eval_dir,
                            num_classes=evaluated.num_classes if evaluated else None)
        branch = f"its {info['bn']} BN branch" if info["bn"] else "single BN"
        print(f"[solo-ncp] exported {args.ckpt} ({info['backbone']['name']}, {branch}) to {out}: "
              + ", ".join(sorted(p.name for p in out.iterdir() if not p.name.startswith("."))))
        if "classifier" in info:
            metrics = info["classifier"]["evaluation"]["metrics"]
            print(f"[solo-ncp] classifier.pt: [0, 1] images -> {info['classifier']['num_classes']} logits; "
                  f"eval's SA {metrics['sa']:.2f}% on {metrics['sa_n']} test images")
            caveat = robustbench_caveat(evaluation, {"metrics": metrics})
            if caveat:
                print(f"[solo-ncp] warning: {caveat}")
        return 0
