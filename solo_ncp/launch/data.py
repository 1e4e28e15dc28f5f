"""Data loaders of the launchers, built from a run config. The training loader's order and its
workers' seeds depend on (seed, epoch) alone, so a resumed run draws what an uninterrupted one
draws."""
from typing import Callable, Optional

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, RandomSampler, Subset

from solo_ncp.config import ConfigError, select
from solo_ncp.data import DatasetNotFoundError, build_dataset
from solo_ncp.data.datasets import DATA_DIR_FLAG

SAMPLER_STREAM, WORKER_STREAM, GLOBAL_STREAM = 0, 1, 2
"""Independent seed streams of one (seed, epoch): batch order, worker seeds, global RNGs."""


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """A 32-bit seed drawn from (seed, epoch, stream) by NumPy's SeedSequence."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


class EpochSampler(RandomSampler):
    """A RandomSampler whose permutation of epoch e is drawn from (seed, e) alone, and whose
    `worker_seeds` generator (the DataLoader's, drawing its workers' base seed) restarts from
    (seed, e) too. Lightning calls `set_epoch` at each epoch start; `epoch` is the epoch the run
    starts (or resumes) at, as Lightning may draw a run's first batches before calling it. A
    RandomSampler, so that Lightning swaps in its shuffling DistributedSampler under DDP."""

    def __init__(self, data_source: Dataset, seed: int, epoch: int = 0):
        super().__init__(data_source)
        self.seed = seed
        self.worker_seeds = torch.Generator()
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.worker_seeds.manual_seed(epoch_seed(self.seed, epoch, WORKER_STREAM))

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, SAMPLER_STREAM))
        return super().__iter__()


def config_dataset(cfg: DictConfig, split: str, transform: Optional[Callable]) -> Dataset:
    """`split` of `data.dataset` from `data.train_path`; `data.subset` keeps a fixed random
    subset of the training images, drawn with `data.subset_seed` (default 0) so that runs with
    different training seeds see the same images."""
    try:
        dataset = build_dataset(
            cfg.data.dataset, split, data_dir=select(cfg, "data.train_path"), transform=transform
        )
    except DatasetNotFoundError as err:
        raise DatasetNotFoundError(str(err).replace(DATA_DIR_FLAG, "data.train_path=<folder>")) from None
    subset = select(cfg, "data.subset")
    if subset is not None and split != "test":
        if not 0 < int(subset) <= len(dataset):
            raise ConfigError(f"data.subset={subset} must be in [1, {len(dataset)}]")
        generator = torch.Generator().manual_seed(int(select(cfg, "data.subset_seed", 0)))
        dataset = Subset(dataset, torch.randperm(len(dataset), generator=generator)[: int(subset)].tolist())
    return dataset


def train_loader(cfg: DictConfig, dataset: Dataset, start_epoch: int = 0) -> DataLoader:
    """Shuffled, drop-last loader of `optimizer.batch_size` (solo-learn's pretraining loader),
    ordered by an `EpochSampler` of `seed` starting at `start_epoch`; workers are started anew
    each epoch so their seeds follow the epoch too."""
    batch_size = int(cfg.optimizer.batch_size)
    if len(dataset) < batch_size:
        raise ConfigError(
            f"the training set has {len(dataset)} images, fewer than optimizer.batch_size="
            f"{batch_size}: lower the batch size"
        )
    sampler = EpochSampler(dataset, int(select(cfg, "seed", 5)), start_epoch)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        generator=sampler.worker_seeds,
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
