"""`solo-ncp select-k`: the number of clusters K for stage 2, by the cosine silhouette of spherical
k-means over a sweep of K on the stage-1 encoder's training-set features (paper Fig. 2)."""
import argparse
from pathlib import Path

from solo_ncp.commands._encoder import (
    add_encoder_arguments,
    check_batch_size,
    check_data_options,
    claimed_out,
    clustered_features,
    dataset_of,
    dataset_split,
    device_of,
    first,
    load_args_encoder,
    note_single_bn,
    path_text,
    whole_number,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_encoder_arguments(parser)
    parser.add_argument("--k-min", type=whole_number, default=10,
                        help="smallest K of the sweep (default %(default)s)")
    parser.add_argument("--k-max", type=whole_number, default=300,
                        help="largest K of the sweep (default %(default)s)")
    parser.add_argument("--k-step", type=whole_number, default=5,
                        help="step between the swept K (default %(default)s)")
    parser.add_argument("--out", required=True, type=path_text, help="folder for silhouette.csv/.png and k.json")
    parser.add_argument("--train-n", type=whole_number, default=None, help="use the first N training images")
    parser.add_argument("--backend", choices=("auto", "torch", "kmcuda"), default="torch",
                        help="k-means implementation: torch (default; CPU or GPU). kmcuda "
                             "(libKMCUDA, optional; auto picks it for a GPU when it imports) failed "
                             "its correctness test on an H200: README, 'GPU extras'")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing k.json")


def check_arguments(args: argparse.Namespace) -> None:
    """ValueError naming the problem and the fix for every option no run can use (no I/O)."""
    check_batch_size(args)
    if not 2 <= args.k_min <= args.k_max or args.k_step < 1:
        raise ValueError(f"need 2 <= --k-min <= --k-max and --k-step >= 1, got "
                         f"{args.k_min}, {args.k_max}, {args.k_step}")
    check_data_options(args)
    device = device_of(args)
    if args.backend == "kmcuda":
        from solo_ncp.cluster.kmcuda_backend import check_kmcuda_runs

        check_kmcuda_runs("--backend kmcuda", None if device.type == "cuda" else
                          f"and --device is {device}: pass --device cuda", "--backend torch")
    if len(swept_k(args)) < 2:
        widen = "widen --k-min..--k-max"
        fix = (f"lower --k-step to {args.k_max - args.k_min} or less, or {widen}" if args.k_max > args.k_min
               else widen)
        raise ValueError(f"--k-min {args.k_min} --k-max {args.k_max} --k-step {args.k_step} sweeps only "
                         f"K={args.k_min}: the silhouette chooses among two or more K: {fix}")


def swept_k(args: argparse.Namespace) -> range:
    """The K of the sweep: --k-min to --k-max, every --k-step."""
    return range(args.k_min, args.k_max + 1, args.k_step)


def check_sweep_fits(args: argparse.Namespace, n: int) -> None:
    """ValueError when the sweep reaches a K the silhouette of `n` training images cannot score
    (it needs K <= n - 1), with the option that mends it."""
    swept = swept_k(args)
    if swept[-1] >= n:
        fix = (f"pass --train-n {args.k_min + 1} or more (the sweep starts at --k-min {args.k_min})"
               if args.k_min >= n else f"pass --k-max <= {n - 1}, or more images (--train-n)")
        raise ValueError(f"the sweep reaches K={swept[-1]}, and the silhouette needs K <= N-1 = {n - 1} for the {n} "
                         f"training images: {fix}")


def run(args: argparse.Namespace) -> int:
    from torch.nn import functional as F

    from solo_ncp.cluster import sweep_k, write_k_selection
    from solo_ncp.cluster.select_k import K_FILE, K_SELECTION_FILES
    from solo_ncp.eval.figures import check_matplotlib
    from solo_ncp.models.checkpoint import source_record

    check_arguments(args)
    check_matplotlib()
    device = device_of(args)
    out = Path(args.out)
    with claimed_out(args, K_FILE, K_SELECTION_FILES, reads={"--ckpt": args.ckpt}):
        encoder = load_args_encoder(args)
        note_single_bn(args, encoder, "its features are those of its one BN (k.json: bn null)")
        spec = dataset_of(args, encoder, test=False)
        train_set = first(dataset_split(args, spec, "pretrain"), args.train_n, "--train-n")
        check_sweep_fits(args, len(train_set))
        swept = swept_k(args)
        features = F.normalize(clustered_features(args, encoder, train_set, device).to(device), dim=1)
        scores = sweep_k(features, swept, seed=args.seed,
                         backend=args.backend)
        selection = write_k_selection(scores, out, {"dataset": spec.name, "seed": args.seed,
                                                    "n": len(train_set), "ckpt": str(args.ckpt), "bn": encoder.bn,
                                                    "ckpt_sha256": source_record(encoder)["sha256"]})
        print(f"[solo-ncp] best K = {selection['k']} (silhouette {scores[selection['k']]:.4f}) over "
              f"K = {args.k_min}..{args.k_max} step {args.k_step} on {len(train_set)} images; wrote "
              f"{out / 'k.json'}, {out / 'silhouette.csv'}, {out / 'silhouette.png'}")
        if len(scores) > 1 and len(set(scores.values())) == 1:
            print(f"[solo-ncp] warning: every K scored silhouette {scores[selection['k']]:.4f}: the features "
                  "show no clusters to choose K by (a collapsed encoder?), and K is the tie rule's (the "
                  "smallest), not the data's")
        return 0
