"""The Lightning Trainer (1.9 or 2, the host's, see `compat`) every solo-ncp launcher uses: a
checked and locked run folder, CSV logs, atomic checkpoints carrying solo-ncp's metadata, resume
from `last.ckpt` through the safe loader, per-group learning rates from the first epoch, and
epochs whose randomness depends on (seed, epoch) alone."""
import random
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from solo_ncp.config import ConfigError, learning_rates, lightning_precision, select
from solo_ncp.io import atomic_torch_save, atomic_write_text, check_writable, folder_lock
from solo_ncp.launch.compat import (
    NO_STRATEGY,
    Callback,
    CSVLogger,
    LearningRateMonitor,
    ModelCheckpoint,
    TorchCheckpointIO,
    Trainer,
    trainer_precision,
)
from solo_ncp.launch.data import epoch_seed
from solo_ncp.models.checkpoint import META_KEY, CheckpointError, read_checkpoint, state_mismatch

LAST = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file and renames it (a kill never corrupts it);
    reads through `read_checkpoint` (weights only unless `trust`), as every solo-ncp load does."""

    def __init__(self, trust: bool = False):
        super().__init__()
        self.trust = trust

    def save_checkpoint(self, checkpoint: Dict, path, storage_options=None) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None) -> Dict:
        return read_checkpoint(path, trust=self.trust)


class LastCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint writing `last.ckpt` over the one a run resumed from, also when
    that checkpoint was written in another folder (a moved or copied run), where Lightning would
    write `last-v1.ckpt` beside it and a later --resume would read the stale `last.ckpt`."""

    def load_state_dict(self, state_dict: Dict) -> None:
        super().load_state_dict(state_dict)
        self.last_model_path = str(Path(self.dirpath) / LAST)


class CheckpointMeta(Callback):
    """Stores solo-ncp's metadata (backbone spec, normalisation, method, dataset) in every
    checkpoint under `solo_ncp`, as plain Python types so `weights_only=True` loads it."""

    def __init__(self, meta: Dict):
        self.meta = meta

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: Dict) -> None:
        checkpoint[META_KEY] = self.meta


class GroupLearningRates(Callback):
    """Starts every parameter group at its own lr when a run without warmup begins: solo-learn's
    LinearWarmupCosineAnnealingLR (pl_bolts' on 1.0.2, its own on main) puts all groups at one
    `warmup_start_lr` at epoch 0, and its cosine is chained (each epoch scales the previous lr),
    so with `warmup_epochs: 0` the online classifier would follow `optimizer.lr` instead of
    `classifier_lr` for the whole run. With warmup, groups rise from `warmup_start_lr` to their
    own lr, as written; a resumed run keeps the lrs of its checkpoint."""

    def on_train_start(self, trainer, pl_module) -> None:
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if getattr(scheduler, "warmup_epochs", None) == 0 and scheduler.last_epoch == 0:
                for group, lr in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
                    group["lr"] = lr


class EpochSeeds(Callback):
    """Reseeds Python's, NumPy's and torch's global RNGs from (seed, epoch) as each training
    epoch starts, so an epoch's batch order, augmentations, worker seeds and PGD starts do not
    depend on what ran before it: a resumed run repeats an uninterrupted one. (Both Lightnings
    make an epoch's loader iterator after this hook, except for a run's very first epoch.)"""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        seed = epoch_seed(self.seed, trainer.current_epoch)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)


@dataclass(frozen=True)
class RunFolder:
    """folder: where checkpoints, the config dump and logs of a run go; resume_from: its
    last.ckpt when resuming, else None."""

    folder: Path
    resume_from: Optional[Path]


def run_dir(cfg: DictConfig) -> Path:
    """`checkpoint.dir/name`: where checkpoints, the config dump and logs of a run go."""
    return Path(select(cfg, "checkpoint.dir", "trained_models")) / str(cfg.name)


def resume_checkpoint(folder: Path, resume: bool, auto_resume: bool) -> Optional[Path]:
    """`folder/last.ckpt` when resuming; refuses to start over an existing run silently."""
    last = folder / LAST
    if resume and not last.is_file():
        raise ConfigError(f"--resume: no {LAST} in {folder} to resume from")
    if last.is_file() and not (resume or auto_resume):
        raise ConfigError(
            f"{folder} already holds a run ({LAST}): pass --resume to continue it, or choose "
            "another name=... / checkpoint.dir=... to start a new one"
        )
    return last if last.is_file() else None


@contextmanager
def open_run(cfg: DictConfig, resume: bool) -> Iterator[RunFolder]:
    """The run folder of `cfg`, checked writable before any work and locked for the block (a
    second process training there is refused); its last.ckpt when resuming."""
    folder = check_writable(run_dir(cfg))
    with folder_lock(folder):
        yield RunFolder(folder, resume_checkpoint(
            folder, resume, bool(select(cfg, "auto_resume.enabled", False))))


def check_resumable(path: Path, model, trust: bool = False) -> None:
    """Refuses, with one message, a checkpoint Lightning could not resume `model` from:
    unreadable or unsafe for the safe loader, not a training checkpoint, or weights of other
    names or shapes than `model`'s (another K, say)."""
    ckpt = read_checkpoint(path, trust=trust)
    state = ckpt.get("state_dict")
    if not isinstance(state, dict) or not isinstance(ckpt.get("epoch"), int):
        raise CheckpointError(
            f"{path} is not a training checkpoint (no state_dict and epoch): cannot resume from "
            "it; start a new run with another name=... / checkpoint.dir=..."
        )
    detail = state_mismatch(model.state_dict(), state)
    if detail:
        raise CheckpointError(
            f"{path} was written by a run of another configuration ({detail}): resume with the "
            "config it was trained with, or start a new run with another name=..."
        )


def accelerator_and_devices(cfg: DictConfig):
    accelerator = str(cfg.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"accelerator={accelerator} but no CUDA device is visible: override with "
            "accelerator=cpu devices=1 to run on the CPU"
        )
    devices = cfg.get("devices", 1)
    devices = list(devices) if OmegaConf.is_list(devices) else devices
    return accelerator, devices


def build_trainer(cfg: DictConfig, folder: Path, meta: Dict, callbacks: List[Callback] = (),
                  trust: bool = False):
    """A Trainer writing `last.ckpt` every `checkpoint.frequency` epochs into `folder` and the
    learning rates of every epoch into the CSV log (`lr-<optimizer>` columns); it resumes
    through the safe loader (any pickle only if `trust`)."""
    accelerator, devices = accelerator_and_devices(cfg)
    n_devices = len(devices) if isinstance(devices, list) else devices
    cuda = accelerator != "cpu" and torch.cuda.is_available()
    precision = trainer_precision(lightning_precision(cfg), cuda)
    checkpoint = LastCheckpoint(
        dirpath=str(folder),
        save_last=True,
        save_top_k=0,
        every_n_epochs=int(select(cfg, "checkpoint.frequency", 1)),
    )
    multi = isinstance(n_devices, int) and n_devices > 1
    return Trainer(
        max_epochs=int(cfg.max_epochs),
        accelerator=accelerator,
        devices=devices,
        num_nodes=int(select(cfg, "num_nodes", 1)),
        strategy=(cfg.get("strategy") or NO_STRATEGY) if multi else NO_STRATEGY,
        sync_batchnorm=bool(select(cfg, "sync_batchnorm", False)) and multi,
        precision=precision,
        logger=CSVLogger(save_dir=str(folder), name="logs"),  # logs/version_<attempt>
        callbacks=[checkpoint, CheckpointMeta(meta), LearningRateMonitor("epoch"),
                   GroupLearningRates(), EpochSeeds(int(select(cfg, "seed", 5))), *callbacks],
        plugins=[AtomicCheckpointIO(trust)],
        accumulate_grad_batches=int(select(cfg, "accumulate_grad_batches", 1)),
        log_every_n_steps=int(select(cfg, "log_every_n_steps", 50)),
        num_sanity_val_steps=0,
        limit_train_batches=select(cfg, "limit_train_batches", 1.0),
        limit_val_batches=select(cfg, "limit_val_batches", 1.0),
    )


def save_config(cfg: DictConfig, folder: Path) -> Path:
    """Dumps the resolved config next to the checkpoints (atomic)."""
    return atomic_write_text(folder / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))


def stopped_message(message: str, last: Path) -> str:
    """A training-stopped (NaN loss) message followed by which checkpoint is actually left."""
    kept = (f"{last} (the last completed checkpoint) is kept" if last.is_file()
            else "no checkpoint was written before it stopped")
    return f"{message}; {kept}"


def fit(cfg: DictConfig, model, train_set, val_set, meta: Dict, run: RunFolder,
        trust: bool = False) -> Path:
    """Trains `model` in `run` (see `open_run`), resuming from its last.ckpt if set; prints and
    logs the learning rates; returns the path of `last.ckpt`."""
    from solo_ncp.launch.data import eval_loader, train_loader

    if run.resume_from:
        check_resumable(run.resume_from, model, trust)
    rates = learning_rates(cfg)
    print(f"[solo-ncp] {rates.describe()}", flush=True)
    save_config(cfg, run.folder)
    trainer = build_trainer(cfg, run.folder, meta, trust=trust)
    trainer.logger.log_hyperparams({"learning_rate": {
        **asdict(rates), "factor": rates.factor, "lr": rates.lr, "classifier_lr": rates.classifier_lr}})
    val_loader = eval_loader(cfg, val_set) if val_set is not None else None
    try:
        trainer.fit(model, train_loader(cfg, train_set), val_loader,
                    ckpt_path=str(run.resume_from) if run.resume_from else None)
    except FloatingPointError as err:
        raise FloatingPointError(stopped_message(str(err), run.folder / LAST)) from None
    return run.folder / LAST
