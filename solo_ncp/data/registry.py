"""What solo-ncp knows about each dataset: classes, image size, normalisation, expected files."""
from dataclasses import dataclass
from typing import Tuple

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.247, 0.243, 0.261)


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not on disk; the message names the folder and files to provide."""


@dataclass(frozen=True)
class DatasetSpec:
    """Static facts about a dataset.

    image_size: side length in pixels of the images the encoder sees.
    mean/std: per-channel statistics used by stage 1 (solo-learn's transforms normalise with them);
        later stages put the same numbers into the model as a `Normalize` layer.
    solo_transform: which solo-learn 1.0.2 pretraining transform family the dataset uses.
    cifar_stem: default for solo-learn's `backbone_args.cifar` (3x3 stride-1 conv, no max-pool).
    folder/files: the layout under `--data-dir` that an offline run expects.
    """

    name: str
    num_classes: int
    image_size: int
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    solo_transform: str
    cifar_stem: bool
    folder: str
    files: Tuple[str, ...]


DATASETS = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "cifar10", 10, 32, CIFAR_MEAN, CIFAR_STD, "cifar10", True, "cifar-10-batches-py",
            ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
             "test_batch", "batches.meta"),
        ),
        DatasetSpec(
            "cifar100", 100, 32, CIFAR_MEAN, CIFAR_STD, "cifar100", True, "cifar-100-python",
            ("train", "test", "meta"),
        ),
        DatasetSpec(
            "stl10", 10, 96, (0.4914, 0.4823, 0.4466), CIFAR_STD, "stl10", False, "stl10_binary",
            ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "unlabeled_X.bin"),
        ),
        DatasetSpec(
            "fashionmnist", 10, 28, (0.2860,) * 3, (0.3530,) * 3, "custom", True, "fashion-mnist",
            ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
        ),
        DatasetSpec(
            "digits", 10, 8, (0.3053,) * 3, (0.3760,) * 3, "custom", True, "", (),
        ),
    )
}


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}: choose one of {', '.join(sorted(DATASETS))}, or custom (an ImageFolder "
            "of your own: README, 'Your own images')"
        ) from None
