"""Options and loading shared by the commands that read an encoder checkpoint
(select-k, eval, poc, plot), and the linear head that eval and poc train on it.

`--dataset custom` (ImageFolders, solo_ncp.data.custom) takes its folders and image size from
--train-path, --val-path and --image-size, each by default from the checkpoint's record of the
custom data it was trained on (`solo_ncp.data`, written by solo-ncp pretrain and train), and its
normalisation from the checkpoint."""
import argparse
import math
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Sequence

from solo_ncp.data.custom import CUSTOM
from solo_ncp.eval.protocol import CROP_PADDING, DEFAULT_HEAD, EPOCHS, HEADS, head_crop_padding
from solo_ncp.models.branches import BRANCHES, DEFAULT_BN

if TYPE_CHECKING:  # torch is imported where used: the options are built without it
    import torch
    from torch.utils.data import Dataset

    from solo_ncp.data.registry import DatasetSpec
    from solo_ncp.models.checkpoint import LoadedEncoder

CUSTOM_OPTIONS = {"train_path": "--train-path", "val_path": "--val-path", "image_size": "--image-size"}
"""The options of --dataset custom: the record's key (and args' attribute) -> the option."""


FLOAT32_MAX = 3.4028234663852886e+38
"""torch.finfo(torch.float32).max, written out (the options are built without torch): the largest
magnitude of a real-valued option; torch computes in float32, and --lr 1e300 stopped its SGD with
"value cannot be converted to type float without overflow"."""
INT32_MAX = 2 ** 31 - 1
"""The largest value of a whole-number option (C's int): --epochs 99999999999999999999999 stopped
eval after its feature extraction with "Python int too large to convert to C ssize_t"."""


def finite_number(text: str) -> float:
    """argparse type of the real-valued options (--eps, --alpha, --lr, --beta): a decimal or a
    fraction ("8/255") within float32's range (FLOAT32_MAX); nan and inf are refused (every
    comparison with nan is false, so a NaN budget passed the range checks and gave a nonsense RA)."""
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number: give a decimal (0.0314) or a "
                                         "fraction (8/255)") from None
    except OverflowError:  # past a double's range, so past float32's
        value = math.inf
    if abs(value) > FLOAT32_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is outside float32's range [-{FLOAT32_MAX:.6g}, "
                                         f"{FLOAT32_MAX:.6g}], which torch computes in: give a number within it")
    return value


def path_text(text: str) -> str:
    """argparse type of the options naming a file or folder (--ckpt, --out, --data-dir, ...):
    `text`; ArgumentTypeError when it is empty, which Path reads as the current folder (`--out ''`
    wrote an evaluation into it, and a report nowhere)."""
    if not text:
        raise argparse.ArgumentTypeError("'' names no file or folder: give a path ('.' for the current folder)")
    return text


def integer(text: str) -> int:
    """`text` as an int; ArgumentTypeError when it is not a whole number."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def at_most_int32(value: int) -> int:
    """`value`; ArgumentTypeError when it is above INT32_MAX (lower bounds: the commands' checks)."""
    if value > INT32_MAX:
        raise argparse.ArgumentTypeError(f"{value} is above 2**31 - 1 = {INT32_MAX}, the largest whole number "
                                         "solo-ncp takes: pass a smaller one")
    return value


def whole_number(text: str) -> int:
    """argparse type of the whole-number options (--epochs, --batch-size, --train-n, --k, ...): an
    integer up to 2**31 - 1."""
    return at_most_int32(integer(text))


SEED_RANGE = 2 ** 63
"""Seeds are whole numbers in [0, 2**63): torch's generators take 64 bits, NumPy's SeedSequence no
negative numbers."""


def seed_number(text: str) -> int:
    """argparse type of --seed: a whole number in [0, 2**63) (a larger one stopped the command deep
    in torch with "Overflow when unpacking long long")."""
    value = integer(text)
    if not 0 <= value < SEED_RANGE:
        raise argparse.ArgumentTypeError(f"{value} is outside [0, 2**63 - 1]")
    return value


def add_encoder_arguments(parser: argparse.ArgumentParser, bn_choices: Sequence[str] = BRANCHES,
                          bn_default: Optional[str] = None, bn_help: Optional[str] = None,
                          from_run: bool = False) -> None:
    """The encoder's options; `from_run`: --ckpt, --dataset and --seed may be left out, for the
    command to take them from a run folder (left None)."""
    run_default = " (default: the run's {})" if from_run else ""
    parser.add_argument("--ckpt", required=not from_run, type=path_text,
                        help="encoder checkpoint (solo-ncp or solo-learn), or a folder written by "
                             "`solo-ncp export` (or its encoder.pt)" + run_default.format("last.ckpt"))
    parser.add_argument("--dataset", required=not from_run,
                        help="cifar10, cifar100, stl10, fashionmnist, digits, custom (ImageFolders)"
                             + run_default.format("data.dataset"))
    parser.add_argument("--data-dir", default=None, type=path_text, help="folder holding the dataset (not custom's)")
    record = " (default: the checkpoint's, where solo-ncp pretrain/train recorded its custom data)"
    parser.add_argument("--train-path", default=None, type=path_text,
                        help="--dataset custom: ImageFolder of the training images" + record)
    parser.add_argument("--val-path", default=None, type=path_text,
                        help="--dataset custom: ImageFolder of the test images" + record)
    parser.add_argument("--image-size", type=whole_number, default=None,
                        help="--dataset custom: side in pixels its images are resized and "
                             "centre-cropped to" + record)
    parser.set_defaults(custom=None)
    parser.add_argument("--bn", choices=bn_choices, default=bn_default,
                        help=bn_help or f"BN branch of a dual-BN encoder (default {DEFAULT_BN}, as "
                                        "ACL/DeACL; an exported encoder: the branch it holds)")
    parser.add_argument("--seed", type=seed_number, default=None if from_run else 0,
                        help="seed of everything random in the command"
                             + (run_default.format("seed") if from_run else " (default 0)"))
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--batch-size", type=whole_number, default=512,
                        help="images per batch: encoding, and in eval the head's training "
                             "(default %(default)s)")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="allow checkpoints that need a full (unsafe) unpickling")


def checked_device(value: str) -> "torch.device":
    """`--device` as a torch device: auto (CUDA when one is visible, else the CPU), cpu, cuda or
    cuda:N. ValueError naming the value and the fix (`--device cpu`) for a string torch does not
    read as a device, a device type other than cpu and cuda, or a CUDA device not visible here."""
    import torch

    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {value!r} is not a device solo-ncp runs on (auto, cpu, cuda, "
                         "cuda:N): pass --device cpu, or --device auto")
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.type == "cuda" and visible == 0:
        raise ValueError(f"--device {value}: no CUDA device is visible here: pass --device cpu, or "
                         "--device auto (the CPU when there is no CUDA device)")
    if device.type == "cuda" and (device.index or 0) >= visible:
        raise ValueError(f"--device {value}: {visible} CUDA device(s) are visible (cuda:0 to "
                         f"cuda:{visible - 1}): pass one of them, or --device cpu")
    return device


def device_of(args: argparse.Namespace) -> "torch.device":
    """The checked `--device` (`checked_device`)."""
    return checked_device(args.device)


def check_data_options(args: argparse.Namespace) -> None:
    """ValueError for a --dataset no run can read, or data options that do not go with it
    (--data-dir with custom or with a dataset whose images come installed, digits; custom's options
    with another), before any loading."""
    from solo_ncp.data import get_spec

    if args.dataset == CUSTOM:
        if args.data_dir is not None:
            raise ValueError("--data-dir is for the registered datasets: --dataset custom reads "
                             "--train-path and --val-path (default: the folders its checkpoint records)")
        if args.image_size is not None and args.image_size < 1:
            raise ValueError(f"--image-size must be >= 1 (pixels), got {args.image_size}")
        return
    reads_folder = bool(get_spec(args.dataset).folder)
    if args.data_dir is not None and not reads_folder:
        raise ValueError(f"--data-dir is not read for {args.dataset}, whose images come installed with its Python "
                         "package: drop it")
    given = [option for key, option in CUSTOM_OPTIONS.items() if getattr(args, key) is not None]
    if given:
        folder = f", or pass --data-dir, the folder holding {args.dataset}" if reads_folder else ""
        raise ValueError(f"{given[0]} is for --dataset custom: drop it{folder}")


def load_args_encoder(args: argparse.Namespace, bn: Optional[str] = None, note: bool = True):
    """The checkpoint's encoder (Normalize + backbone), frozen, on the chosen device, through BN
    branch `bn` (default: --bn when it names a branch, else the encoder's own, see `load_encoder`)
    if it has dual BN; a plain solo-learn checkpoint gets the dataset's solo-learn normalisation
    (custom data has none: such a checkpoint is refused). `note`: say when the checkpoint was
    trained on another dataset."""
    from solo_ncp.data import get_spec
    from solo_ncp.models import load_encoder
    from solo_ncp.models.checkpoint import assumed_normalization

    spec = None if args.dataset == CUSTOM else get_spec(args.dataset)
    normalization = None if spec is None else {"mean": spec.mean, "std": spec.std}
    encoder = load_encoder(args.ckpt, normalization=normalization,
                           bn=bn or (args.bn if args.bn in BRANCHES else None),
                           trust=args.trust_checkpoint)
    trained_on = encoder.meta.get("dataset")
    if note and trained_on and trained_on != args.dataset:
        print(f"[solo-ncp] note: {args.ckpt} was trained on {trained_on}, evaluated on {args.dataset}")
    assumed = assumed_normalization(encoder)
    if note and assumed:
        print(f"[solo-ncp] note: {assumed} ({args.dataset}'s solo-learn statistics)")
    encoder.model.to(device_of(args))
    return encoder


def note_single_bn(args: argparse.Namespace, encoder: "LoadedEncoder", outcome: str) -> None:
    """A note when --bn names a branch and the encoder is single-BN (a stage-1 or plain solo-learn
    checkpoint): it has no branches, and the command runs its one BN, as `outcome` says (eval's
    note, for select-k, poc and plot)."""
    if args.bn in BRANCHES and not encoder.branches:
        print(f"[solo-ncp] note: {args.ckpt} is a single-BN encoder: --bn {args.bn} names no branch of it; "
              f"{outcome}")


def dataset_of(args: argparse.Namespace, encoder: "LoadedEncoder", test: bool = True) -> "DatasetSpec":
    """The DatasetSpec of --dataset; for custom also `args.custom` (CustomData, read by
    `dataset_split`): each of --train-path, --val-path (only with `test`: the command reads the test
    split) and --image-size, else the checkpoint's record, checked; the encoder's normalisation."""
    from solo_ncp.data import custom_data, get_spec

    if args.dataset != CUSTOM:
        return get_spec(args.dataset)
    record = encoder.meta.get("data") or {}
    needed = ("train_path", "val_path", "image_size") if test else ("train_path", "image_size")
    values = {key: getattr(args, key) if getattr(args, key) is not None else record.get(key)
              for key in CUSTOM_OPTIONS}
    missing = [CUSTOM_OPTIONS[key] for key in needed if values[key] is None]
    if missing:
        trained_on = encoder.meta.get("dataset") or "data it does not name"
        raise ValueError(f"--dataset custom needs {', '.join(missing)}: {args.ckpt} records none (it was "
                         f"trained on {trained_on}): pass {' '.join(f'{m} ...' for m in missing)}")
    args.custom = custom_data(values["train_path"], values["val_path"] if test else None,
                              values["image_size"], encoder.normalization["mean"],
                              encoder.normalization["std"], (CUSTOM_OPTIONS["train_path"],
                                                             CUSTOM_OPTIONS["val_path"]))
    return args.custom.spec


def dataset_split(args: argparse.Namespace, spec: "DatasetSpec", split: str) -> "Dataset":
    """`split` of the dataset of `spec` in [0, 1] pixels: from --data-dir, or custom's folders
    (`dataset_of`)."""
    from solo_ncp.data import build_dataset

    return build_dataset(spec.name, split, data_dir=args.data_dir, custom=args.custom)


def first(dataset: "Dataset", n, what: str) -> "Dataset":
    """The first `n` samples of `dataset` (all when n is None); n beyond its size is an error."""
    from torch.utils.data import Subset

    if n is None:
        return dataset
    if not 0 < n <= len(dataset):
        raise ValueError(f"{what}={n} must be in [1, {len(dataset)}] (the size of the split)")
    return Subset(dataset, range(n))


def clustered_features(args: argparse.Namespace, encoder: "LoadedEncoder", dataset: "Dataset",
                       device: "torch.device") -> "torch.Tensor":
    """The encoder's features (N, D) float32 of `dataset`'s images, in order, for spherical k-means;
    ValueError naming --ckpt where a row holds NaN or inf or its norm overflows float32 (weights that
    overflow on it, as `check_weights` reads only the weights) or is all zero (no direction for the
    cosine)."""
    import torch
    from torch.utils.data import DataLoader

    from solo_ncp.eval import extract_features

    features, _ = extract_features(encoder.model, DataLoader(dataset, batch_size=args.batch_size), device=device)
    nonfinite = ~torch.isfinite(torch.linalg.vector_norm(features, dim=1))  # NaN, inf, or a norm beyond float32
    zero = ~nonfinite & (features == 0).all(dim=1)
    for rows, kind, cause in ((nonfinite, "NaN, inf or overflowing", "its weights overflow float32 on them, or "
                               "the file is damaged"), (zero, "all-zero", "a zero row has no direction for the "
                                                        "cosine; a diverged or damaged checkpoint")):
        if rows.any():
            raise ValueError(f"the encoder of {args.ckpt} gives {kind} features for {int(rows.sum())} of "
                             f"{len(features)} training images (first: image {int(rows.nonzero()[0])}): {cause}; "
                             "use another checkpoint of that run")
    return features


def add_head_arguments(parser: argparse.ArgumentParser, modes: bool = True) -> None:
    """Options of the head (Appendix A.3) and of the splits it is trained/tested on; `modes`: the
    command has eval's --mode (AFF's own learning rate)."""
    parser.add_argument("--epochs", type=whole_number, default=EPOCHS, help=f"fine-tuning epochs (paper: {EPOCHS})")
    parser.add_argument("--head", choices=HEADS, default=DEFAULT_HEAD,
                        help="whitened (default) / standardized: trained on features whitened / "
                             "standardised with the training set's statistics, folded into the saved "
                             "Linear; paper: Appendix A.3's head on raw features")
    parser.add_argument("--lr", type=finite_number, default=None,
                        help="learning rate (default: 0.1 whitened/standardized head; paper head 0.1 "
                             "CIFAR-10, 10 CIFAR-100/STL-10" + ("; 0.01 for --mode aff)" if modes else ")"))
    parser.add_argument("--train-n", type=whole_number, default=None, help="use the first N training images")
    parser.add_argument("--test-n", type=whole_number, default=None, help="use the first N test images")
    parser.add_argument("--crop-padding", type=whole_number, default=None,
                        help=f"pixels of zero padding before the head's random crop (+ flip) of its training "
                             f"images (default: {CROP_PADDING}, DeACL's, at 32 px and above; smaller images the "
                             f"same fraction of the side, 1 at 8 px; 0: flip only)")
    parser.add_argument("--cache-features", action="store_true",
                        help="SLF fast path: features computed once, no augmentation")
    parser.add_argument("--overwrite", action="store_true", help="replace existing results")


def check_batch_size(args: argparse.Namespace) -> None:
    """ValueError for a --batch-size below 1 (torch's DataLoader refused it naming no option)."""
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")


def check_pgd_step(alpha: Optional[float]) -> None:
    """ValueError for a PGD step (--alpha) of 0, which leaves the attack at its random start (a
    negative one: threat_model.check_attack_sizes; None: the default, not yet chosen)."""
    if alpha == 0:
        raise ValueError("--alpha must be > 0 (the PGD step: at 0 the attack stays at its random start), "
                         "got 0: leave --alpha out for its default")


def check_head_arguments(args: argparse.Namespace) -> None:
    """ValueError for head options no run can use, before any loading."""
    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    if args.lr is not None and not args.lr > 0:
        raise ValueError(f"--lr must be > 0, got {args.lr}")
    check_batch_size(args)
    if args.crop_padding is not None and args.crop_padding < 0:
        raise ValueError(f"--crop-padding must be >= 0 (0: flip only), got {args.crop_padding}")
    if args.crop_padding is not None and args.cache_features:
        raise ValueError("--crop-padding and --cache-features exclude each other: cached features are of "
                         "unaugmented images; leave one out")
    for option, value in (("--train-n", args.train_n), ("--test-n", args.test_n)):
        if value is not None and value < 1:
            raise ValueError(f"{option} must be >= 1 (or left out for the whole split), got {value}")


@contextmanager
def claimed_out(args: argparse.Namespace, record: str, outputs, reads) -> Iterator[None]:
    """--out checked before any work, and held for the block. Not a training run's folder nor
    another command's, no input of `reads` among the `outputs` (`io.check_out_folder`), writable;
    then its lock (`io.folder_lock`: a second command writing there is refused, as its staging would
    remove this one's files); then its result `record` not there unless --overwrite."""
    from solo_ncp.io import check_out_folder, check_writable, folder_lock

    check_out_folder(args.out, record, outputs, reads=reads)
    check_writable(args.out)
    with folder_lock(args.out):
        path = Path(args.out) / record
        if path.exists() and not args.overwrite:
            raise ValueError(f"{path} exists: pass --overwrite to replace it, or choose another --out")
        yield


def evaluation_splits(args: argparse.Namespace, spec):
    """(train, test) datasets in [0, 1], cut to --train-n / --test-n."""
    return (first(dataset_split(args, spec, "train"), args.train_n, "--train-n"),
            first(dataset_split(args, spec, "test"), args.test_n, "--test-n"))


def head_config(args: argparse.Namespace, spec, mode: str = "slf", **settings):
    """The FineTuneConfig of --epochs/--batch-size/--head/--lr/--crop-padding/--seed for `mode`; the
    learning rate defaults to solo_ncp.eval.protocol.default_lr, the padding to head_crop_padding of
    the dataset's image size. `settings`: further FineTuneConfig fields."""
    from solo_ncp.eval import FineTuneConfig, default_lr

    lr = args.lr if args.lr is not None else default_lr(spec.name, mode, args.head)
    padding = args.crop_padding if args.crop_padding is not None else head_crop_padding(spec.image_size)
    return FineTuneConfig(epochs=args.epochs, batch_size=args.batch_size, mode=mode, head=args.head,
                          lr=lr, crop_padding=padding, seed=args.seed, **settings)


def fine_tune_record(cfg) -> dict:
    """A FineTuneConfig as the plain dict metrics.json and poc.json record (tuples as lists)."""
    return {key: (list(value) if isinstance(value, tuple) else value) for key, value in vars(cfg).items()}


def train_head(args: argparse.Namespace, encoder, spec, train_set):
    """The SLF linear head (nn.Linear on raw features) on the frozen encoder; returns (head, its
    FineTuneConfig)."""
    from solo_ncp.eval import fine_tune

    cfg = head_config(args, spec)
    tuned = fine_tune(encoder.model, train_set, spec.num_classes, cfg, device=device_of(args),
                      cache_features=args.cache_features)
    return tuned.head, cfg
