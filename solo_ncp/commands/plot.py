"""`solo-ncp plot RUN`: PNGs of a training run folder (`solo-ncp pretrain` / `solo-ncp train`),
titled with its dataset, N, encoder and seed. By default curves.png: per-epoch curves of the CSV
logs of every attempt (loss terms, online and robust accuracy, cluster objective, centroid
cosines). With --embedding instead embedding.png: a 2-D embedding (UMAP if umap-learn is
installed, else t-SNE) of the encoder's test features coloured by class, with the spherical
k-means centroids of those features (K: --k, else the K the checkpoint was trained with, which a
stage-2 checkpoint records)."""
import argparse
from pathlib import Path
from typing import Dict, List, Optional

from solo_ncp.commands._encoder import SEED_RANGE, add_encoder_arguments, check_batch_size, path_text, whole_number

CURVES_PNG, EMBEDDING_PNG = "curves.png", "embedding.png"
EMBEDDING_ONLY = "options of --embedding only"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=path_text,
                        help="run folder: config.yaml, last.ckpt, logs/version_*/metrics.csv")
    parser.add_argument("--out", default=None, type=path_text, help="folder for the PNGs (default: the run folder)")
    parser.add_argument("--embedding", action="store_true",
                        help=f"draw {EMBEDDING_PNG} instead of {CURVES_PNG}: a 2-D embedding (UMAP "
                             "if umap-learn imports, else scikit-learn's t-SNE; the title says "
                             "which) of the encoder's test features coloured by class, with the "
                             "spherical k-means centroids of those features")
    add_embedding_arguments(parser.add_argument_group(EMBEDDING_ONLY))


def add_embedding_arguments(parser) -> None:
    """The options only --embedding reads (curves.png is drawn from the run's logs alone)."""
    parser.add_argument("--k", type=whole_number, default=None,
                        help="clusters of the embedding (default: the K the checkpoint was trained "
                             "with, which a stage-2 checkpoint records; a stage-1 or deacl one has none)")
    parser.add_argument("--test-n", type=whole_number, default=None,
                        help="embed the first N test images (default: the whole test split)")
    add_encoder_arguments(parser, from_run=True)


def given_embedding_options(args: argparse.Namespace) -> List[str]:
    """The options of `add_embedding_arguments` whose value is not their default, i.e. given (one
    given with its default value, such as --device auto, is not seen: it changes nothing)."""
    parser = argparse.ArgumentParser()
    add_embedding_arguments(parser)
    defaults = vars(parser.parse_args([]))
    return [f"--{dest.replace('_', '-')}" for dest, default in defaults.items() if getattr(args, dest) != default]


def check_arguments(args: argparse.Namespace) -> None:
    """ValueError for embedding options given without --embedding (they were ignored: a damaged
    --ckpt was never read, --device cuda never checked), or with values no embedding can use,
    before anything is read."""
    given = [] if args.embedding else given_embedding_options(args)
    if given:
        them = "it" if len(given) == 1 else "them"
        raise ValueError(f"{', '.join(given)}: only --embedding ({EMBEDDING_PNG}) reads {them}, and "
                         f"{CURVES_PNG} is drawn from the run's logs alone: add --embedding, or drop {them}")
    check_batch_size(args)
    if args.k is not None and args.k < 2:
        raise ValueError(f"--k must be >= 2 (clusters to mark), got {args.k}")


def run_config(run: Path) -> Dict:
    """The run's config.yaml as a plain dict (`read_config_file`; {} when it has none)."""
    from solo_ncp.config import read_config_file

    path = run / "config.yaml"
    if not path.is_file():
        return {}
    try:
        return read_config_file(path)
    except ValueError as err:
        raise ValueError(f"cannot read {path} ({err})") from None


def trained_k(meta: Dict) -> Optional[int]:
    """The K a checkpoint was trained with, from its solo-ncp metadata; None where it records none
    (a stage-1 or plain solo-learn checkpoint, an export) or 0 (a method without clusters: deacl)."""
    k = meta.get("k")
    return k if isinstance(k, int) and not isinstance(k, bool) and k > 0 else None


def whole_value(value) -> Optional[int]:
    """A config value that is a whole number (1e3 too, as a run config takes it) as an int; None for
    any other (text, true/false, 2.5, a list)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        return None
    return int(value)


def run_seed(value) -> Optional[int]:
    """A run config's seed as an int; None where it is no seed (not a whole number in [0, 2**63))."""
    seed = whole_value(value)
    return seed if seed is not None and 0 <= seed < SEED_RANGE else None


def text_value(value) -> Optional[str]:
    """A config value that is text, not empty; None for any other."""
    return value if isinstance(value, str) and value else None


def data_block(config: Dict) -> Dict:
    """The run config's `data` block; {} where it has none or it is not a block of keys."""
    data = config.get("data")
    return data if isinstance(data, dict) else {}


def well_formed_data(data: Dict) -> bool:
    """Whether the keys of a run config's data block that `training_images` reads are of their kind:
    data.subset a whole number >= 1, data.dataset and data.train_path text (each may be left out)."""
    subset = data.get("subset")
    return ((subset is None or (whole_value(subset) or 0) >= 1)
            and all(isinstance(data.get(key), (str, type(None))) for key in ("dataset", "train_path")))


def title_images(config: Dict) -> Optional[int]:
    """The title's N: `training_images` of the run config; None (shown as ?) where its data block is
    missing or malformed (`well_formed_data`) or names a dataset whose images cannot be counted (an
    unknown name, custom data without its folders)."""
    from omegaconf import OmegaConf

    from solo_ncp.launch.data import training_images

    data = config.get("data")
    if not isinstance(data, dict) or not well_formed_data(data):
        return None
    try:
        return training_images(OmegaConf.create(config))
    except ValueError:
        return None


def draw_curves(run: Path, config: Dict, out: Path):
    """curves.png of the run's CSV logs into `out`; returns (its path, the Panels drawn, the Figure).
    The title's facts the config lacks or holds malformed show as ? (the curves need none of them)."""
    from solo_ncp.eval.curves import metrics_files, plot_panels, run_panels
    from solo_ncp.eval.figures import encoder_label, run_title

    panels = run_panels(run)
    attempts = len(metrics_files(run))
    method = text_value(config.get("method"))
    what = f"{method + ' ' if method else ''}training curves ({attempts} attempt{'s' * (attempts > 1)})"
    title = run_title(what, text_value(data_block(config).get("dataset")), title_images(config),
                      encoder_label(run / "last.ckpt"), run_seed(config.get("seed")))
    figure = plot_panels(panels, title, out / CURVES_PNG)
    return out / CURVES_PNG, panels, figure


def malformed(run: Path, key: str, value, expected: str, option: str) -> ValueError:
    """The error of a key of the run's config.yaml that --embedding needs and cannot use: the file,
    the key, its value, what it should be and the option to pass instead."""
    return ValueError(f"{run / 'config.yaml'} has {key} {value!r}, not {expected}: pass {option}")


def run_dataset(run: Path, config: Dict) -> str:
    """The run config's data.dataset; ValueError where it has none or a malformed one."""
    data = config.get("data")
    if data is not None and not isinstance(data, dict):
        raise malformed(run, "data", data, "a block of keys", "--dataset")
    dataset = (data or {}).get("dataset")
    if dataset is not None and not isinstance(dataset, str):
        raise malformed(run, "data.dataset", dataset, "a dataset name", "--dataset")
    if not dataset:
        raise ValueError(f"{run} has no config.yaml naming data.dataset: pass --dataset")
    return dataset


def run_config_seed(run: Path, config: Dict) -> int:
    """The run config's seed, the one its training took where it sets none (or null: TRAINING_SEED);
    ValueError where it is malformed."""
    from solo_ncp.config.settings import TRAINING_SEED

    value = config.get("seed")
    seed = TRAINING_SEED if value is None else run_seed(value)
    if seed is None:
        raise malformed(run, "seed", value, "a whole number in [0, 2**63 - 1]", "--seed")
    return seed


def fill_from_run(args: argparse.Namespace, run: Path, config: Dict) -> None:
    """--ckpt, --dataset and --seed left out: the run's last.ckpt, data.dataset and seed."""
    args.ckpt = args.ckpt or str(run / "last.ckpt")
    args.dataset = args.dataset or run_dataset(run, config)
    if args.seed is None:
        args.seed = run_config_seed(run, config)


def check_embeddable_k(args: argparse.Namespace, k: int, n: int) -> None:
    """ValueError naming where K came from (--k, or the checkpoint) when it is more clusters than
    the `n` test images embedded, with the fixes that work: more images, or a smaller --k."""
    if k <= n:
        return
    source = f"--k {k}" if args.k is not None else f"K={k}, the K {args.ckpt} was trained with,"
    embedded = f"--test-n {args.test_n}" if args.test_n is not None else "the whole test split"
    more = f"raise --test-n to {k} or more" if args.test_n is not None else f"use a test split of {k} or more images"
    raise ValueError(f"{source} is more clusters than the {n} test images embedded ({embedded}): {more}"
                     + (f", or pass --k {n} or less" if n >= 2 else ""))


def draw_embedding(args: argparse.Namespace, run: Path, config: Dict, out: Path):
    """embedding.png of the encoder's test features and their k-means centroids into `out`;
    returns (its path, the Embedding drawn, the Figure)."""
    from torch.utils.data import DataLoader

    from solo_ncp.cluster import spherical_kmeans
    from solo_ncp.commands._encoder import (
        check_data_options,
        dataset_of,
        dataset_split,
        device_of,
        first,
        load_args_encoder,
        note_single_bn,
    )
    from solo_ncp.eval.embedding import embed_with_centroids, plot_embedding
    from solo_ncp.eval.figures import encoder_label, run_title
    from solo_ncp.models.inference import extract_features

    fill_from_run(args, run, config)
    check_data_options(args)
    encoder = load_args_encoder(args)
    note_single_bn(args, encoder, "the embedding is of its one BN's features (the title names no branch)")
    k = args.k if args.k is not None else trained_k(encoder.meta)
    if k is None:
        raise ValueError(f"{args.ckpt} records no K it was trained with (a stage-1 or deacl checkpoint?): "
                         "pass --k, the number of clusters to mark")
    spec = dataset_of(args, encoder)
    test_set = first(dataset_split(args, spec, "test"), args.test_n, "--test-n")
    check_embeddable_k(args, k, len(test_set))
    features, labels = extract_features(encoder.model, DataLoader(test_set, batch_size=args.batch_size),
                                        device=device_of(args))
    clusters = spherical_kmeans(features, k, seed=args.seed)
    embedding = embed_with_centroids(features.numpy(), labels.numpy(), clusters.centroids.cpu().numpy(),
                                     args.seed)
    branch = f", {encoder.bn} BN" if encoder.bn else ""
    title = run_title(f"{embedding.method} of the test features and their k-means centroids (K = {k})",
                      spec.name, len(test_set), encoder_label(args.ckpt) + branch, args.seed)
    figure = plot_embedding(embedding, title, out / EMBEDDING_PNG)
    return out / EMBEDDING_PNG, embedding, figure


def run(args: argparse.Namespace) -> int:
    from solo_ncp.eval.curves import metrics_files
    from solo_ncp.eval.figures import check_matplotlib
    from solo_ncp.io import check_writable

    check_arguments(args)
    check_matplotlib()
    run_folder = Path(args.run)
    out = Path(args.out) if args.out else run_folder
    if not args.embedding:
        metrics_files(run_folder)  # no logs: the error before anything else
    check_writable(out)
    config = run_config(run_folder)
    if args.embedding:
        path = draw_embedding(args, run_folder, config, out)[0]
    else:
        path = draw_curves(run_folder, config, out)[0]
    print(f"[solo-ncp] wrote {path}")
    return 0
