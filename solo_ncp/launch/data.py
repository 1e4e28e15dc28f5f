"""Data loaders of the launchers, built from a run config."""
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Subset

from solo_ncp.config import ConfigError, custom_data_of, select
from solo_ncp.data import DatasetNotFoundError, build_dataset
from solo_ncp.data.datasets import DATA_DIR_FLAG, dataset_length


def epoch_seed(seed: int, epoch: int) -> int:
    """A 32-bit seed drawn from (seed, epoch) by NumPy's SeedSequence."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def config_dataset(cfg: DictConfig, split: str, transform: Optional[Callable]) -> Dataset:
    """`split` of `data.dataset` from `data.train_path` (custom data: its "test" split from
    `data.val_path`); `data.subset` keeps a fixed random subset of the training images, drawn with
    `data.subset_seed` (default 0) so that runs with different training seeds see the same images."""
    try:
        dataset = build_dataset(cfg.data.dataset, split, data_dir=select(cfg, "data.train_path"),
                                transform=transform, custom=custom_data_of(cfg))
    except DatasetNotFoundError as err:
        raise DatasetNotFoundError(str(err).replace(DATA_DIR_FLAG, "data.train_path=<folder>")) from None
    subset = select(cfg, "data.subset")
    if subset is not None and split != "test":
        if not 0 < int(subset) <= len(dataset):
            raise ConfigError(f"data.subset={subset} must be in [1, {len(dataset)}]")
        generator = torch.Generator().manual_seed(int(select(cfg, "data.subset_seed", 0)))
        dataset = Subset(dataset, torch.randperm(len(dataset), generator=generator)[: int(subset)].tolist())
    return dataset


def held_out_split(length: int, n: int, seed: int) -> Tuple[List[int], List[int]]:
    """(indices trained on, indices held out) of a training set of `length` images: `n` of them,
    the first `n` of a permutation drawn by `torch.randperm` from a generator seeded with `seed`, are
    held out (in that drawn order); the rest are trained on, in increasing order. ConfigError when
    `n` leaves fewer than one image to train on."""
    check_held_out(length, n)
    order = torch.randperm(length, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[n:]), order[:n]


def check_held_out(length: int, n: int) -> None:
    """ConfigError when holding out `n` of `length` training images for the robust monitor leaves
    fewer than one to train on."""
    if not 0 < n < length:
        raise ConfigError(
            f"method_kwargs.val_robust_n={n} training images held out for the robust monitor leave "
            f"{max(length - n, 0)} of the {length} to train on: lower method_kwargs.val_robust_n"
        )


def check_batch_fits(length: int, batch_size: int) -> None:
    """ConfigError when a drop-last loader of `batch_size` over `length` images has no batch."""
    if length < batch_size:
        raise ConfigError(
            f"the training set has {length} images, fewer than optimizer.batch_size="
            f"{batch_size}: lower the batch size"
        )


def training_images(cfg: DictConfig) -> Optional[int]:
    """How many images a training of `cfg` reads: `data.subset`, else the size of the pretraining
    split (`dataset_length`); None where that is not known: no `data.dataset`, or its files are
    not here."""
    subset = select(cfg, "data.subset")
    if subset is not None:
        return int(subset)
    if not select(cfg, "data.dataset"):
        return None
    try:
        return dataset_length(cfg.data.dataset, "pretrain", data_dir=select(cfg, "data.train_path"),
                              custom=custom_data_of(cfg))
    except (DatasetNotFoundError, ConfigError):
        return None


def check_stage2_sizes(cfg: DictConfig, options: dict, length: Optional[int]) -> None:
    """The checks a stage-2 training makes of its `length` training images (`training_images`;
    None: not known, nothing checked), made from config `cfg` and its stage-2 `options` (checked
    ones, with their defaults) before any training: the robust monitor's held-out images, a fixed K
    (`method_kwargs.k`) and the batch size against what is left."""
    from solo_ncp.methods.stage2_options import check_clusters_fit

    if length is None:
        return
    held_out = options["val_robust_n"] if options["val_robust_every"] else None
    if held_out is not None:
        check_held_out(length, held_out)
        length -= held_out
    if str(cfg.method) == "ncp" and options["k"] is not None:
        check_clusters_fit(options["k"], "method_kwargs.k", length, held_out)
    check_batch_fits(length, int(cfg.optimizer.batch_size))


def train_loader(cfg: DictConfig, dataset: Dataset) -> DataLoader:
    """Shuffled, drop-last loader of `optimizer.batch_size` (solo-learn's pretraining loader). Its
    order and its workers' seeds are drawn from torch's global RNG when each epoch's iterator is
    made, after `callbacks.EpochSeeds` reseeded it; workers are started anew each epoch for that."""
    batch_size = int(cfg.optimizer.batch_size)
    check_batch_fits(len(dataset), batch_size)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=int(select(cfg, "data.num_workers", 4)),
        pin_memory=torch.cuda.is_available(),
    )


def eval_loader(cfg: DictConfig, dataset: Dataset) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=int(cfg.optimizer.batch_size),
        shuffle=False,
        num_workers=int(select(cfg, "data.num_workers", 4)),
        pin_memory=torch.cuda.is_available(),
    )
