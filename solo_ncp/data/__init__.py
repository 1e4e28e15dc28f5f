"""Datasets in [0, 1] pixel space and their transforms (imported on first use: solo_ncp/_lazy.py)."""
from solo_ncp._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "solo_ncp.data.custom": ("CUSTOM", "CustomData", "config_custom_data", "custom_data"),
    "solo_ncp.data.datasets": ("ArrayImageDataset", "IndexedDataset", "build_dataset"),
    "solo_ncp.data.registry": ("DATASETS", "DatasetNotFoundError", "DatasetSpec", "get_spec"),
    "solo_ncp.data.transforms": ("find_normalization", "normalization_of", "simclr_transform",
                                 "weak_augmentation"),
})
