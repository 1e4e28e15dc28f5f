"""`solo-ncp poc`: the paper's Table 1 - random noise vs a perturbation toward the neighbouring
cluster (Appendix A.1) on the frozen stage-1 encoder with an SLF head. The K clusters are of the
split select-k chose K on (the "pretrain" split: STL-10's train + unlabeled, else the training
set; its first --train-n images), the head is trained on the labelled training set."""
import argparse
from pathlib import Path

from solo_ncp.commands._encoder import (
    add_encoder_arguments,
    add_head_arguments,
    check_data_options,
    check_head_arguments,
    check_pgd_step,
    claimed_out,
    clustered_features,
    dataset_of,
    dataset_split,
    device_of,
    evaluation_splits,
    fine_tune_record,
    finite_number,
    first,
    load_args_encoder,
    note_single_bn,
    path_text,
    train_head,
    whole_number,
)
from solo_ncp.threat_model import check_attack_sizes, warn_of_budget

POC_JSON, POC_TABLE = "poc.json", "poc.md"
POC_FILES = (POC_JSON, POC_TABLE)
"""The files poc writes into --out."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_encoder_arguments(parser)
    add_head_arguments(parser, modes=False)
    parser.add_argument("--k", type=whole_number, required=True,
                        help="clusters of the pretraining split's features (select-k's K)")
    parser.add_argument("--n", type=whole_number, default=2, help="rank of the neighbouring centroid (default 2)")
    parser.add_argument("--out", required=True, type=path_text, help="folder for poc.json and poc.md")
    parser.add_argument("--eps", type=finite_number, default=8 / 255,
                        help="L-inf budget in [0, 1] pixel units (default 8/255)")
    parser.add_argument("--alpha", type=finite_number, default=2 / 255,
                        help="PGD step in [0, 1] pixel units (default 2/255)")
    parser.add_argument("--steps", type=whole_number, default=5, help="PGD steps of delta_nbr (default 5)")


def check_arguments(args: argparse.Namespace) -> None:
    """ValueError naming the problem and the fix for every option no run can use (no I/O): all
    before the head is trained."""
    check_head_arguments(args)
    check_attack_sizes("Linf", args.eps, args.alpha)
    check_pgd_step(args.alpha)
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1 (the paper's delta_nbr takes 5 PGD steps), got {args.steps}")
    if args.k < 2:
        raise ValueError(f"--k={args.k}: K must be >= 2 clusters (select-k's K)")
    if not 2 <= args.n <= args.k:
        raise ValueError(f"--n={args.n} must be in [2, --k={args.k}]: the rank of the neighbouring centroid "
                         "(1 is the image's own)")
    check_data_options(args)
    device_of(args)


def run(args: argparse.Namespace) -> int:
    from torch import nn

    from solo_ncp.cluster import spherical_kmeans
    from solo_ncp.eval import format_poc_table, poc_table
    from solo_ncp.eval.poc import poc_protocol
    from solo_ncp.io import atomic_write_json, atomic_write_text, staged_outputs
    from solo_ncp.models.checkpoint import source_record

    check_arguments(args)
    warn_of_budget("Linf", args.eps, l2_switch=None)
    device = device_of(args)
    out = Path(args.out)
    with claimed_out(args, POC_JSON, POC_FILES, reads={"--ckpt": args.ckpt}):
        encoder = load_args_encoder(args)
        note_single_bn(args, encoder, "the PoC runs through its one BN (poc.json: settings.bn null)")
        spec = dataset_of(args, encoder)
        train_set, test_set = evaluation_splits(args, spec)
        cluster_set = first(dataset_split(args, spec, "pretrain"), args.train_n, "--train-n")
        if args.k > len(cluster_set):
            raise ValueError(f"--k {args.k} is more clusters than the {len(cluster_set)} training images clustered: "
                             f"pass --k <= {len(cluster_set)}, or more images (--train-n)")
        features = clustered_features(args, encoder, cluster_set, device)
        head, head_cfg = train_head(args, encoder, spec, train_set)
        clusters = spherical_kmeans(features.to(device), args.k, seed=args.seed)
        result = poc_table(nn.Sequential(encoder.model, head), encoder.model, clusters.centroids,
                           test_set, eps=args.eps, alpha=args.alpha, steps=args.steps, n=args.n,
                           seed=args.seed, device=device, batch_size=args.batch_size)
        result["settings"].update(k=args.k, dataset=spec.name, bn=encoder.bn, method=encoder.meta.get("method"),
                                  clustered_n=len(cluster_set),
                                  checkpoint={**source_record(encoder), "path": str(args.ckpt)},
                                  head=head_cfg.head, fine_tune=fine_tune_record(head_cfg),
                                  cache_features=args.cache_features, train_n=len(train_set), test_n=len(test_set))
        table = format_poc_table(result) + "\n" + poc_protocol(result)
        with staged_outputs(out, POC_FILES, POC_JSON) as staging:
            atomic_write_json(staging / POC_JSON, result)
            atomic_write_text(staging / POC_TABLE, table)
        print(table)
        print(f"[solo-ncp] {result['n_correct']} of {result['n_total']} test images classified "
              f"correctly (eps={args.eps:.4f}, K={args.k}); wrote {out / POC_TABLE}")
        return 0
