"""Datasets in [0, 1] pixel space and their transforms."""
from solo_ncp.data.datasets import (
    ArrayImageDataset,
    DatasetNotFoundError,
    IndexedDataset,
    build_dataset,
)
from solo_ncp.data.registry import DATASETS, DatasetSpec, get_spec
from solo_ncp.data.transforms import (
    find_normalization,
    normalization_of,
    simclr_transform,
    weak_augmentation,
)

__all__ = [
    "ArrayImageDataset",
    "DATASETS",
    "DatasetNotFoundError",
    "DatasetSpec",
    "IndexedDataset",
    "build_dataset",
    "find_normalization",
    "get_spec",
    "normalization_of",
    "simclr_transform",
    "weak_augmentation",
]
