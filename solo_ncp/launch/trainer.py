"""The Lightning Trainer (1.9 or 2, the host's, see `compat`) every solo-ncp launcher uses: run
folder, CSV logs, atomic checkpoints carrying solo-ncp's metadata, and resume from `last.ckpt`."""
from pathlib import Path
from typing import Dict, List, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from solo_ncp.config import ConfigError, lightning_precision, select
from solo_ncp.io import atomic_torch_save, atomic_write_text
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
from solo_ncp.models.checkpoint import META_KEY

LAST = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file and renames it: a kill never corrupts it."""

    def save_checkpoint(self, checkpoint: Dict, path, storage_options=None) -> None:
        atomic_torch_save(checkpoint, path)


class CheckpointMeta(Callback):
    """Stores solo-ncp's metadata (backbone spec, normalisation, method, dataset) in every
    checkpoint under `solo_ncp`, as plain Python types so `weights_only=True` loads it."""

    def __init__(self, meta: Dict):
        self.meta = meta

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: Dict) -> None:
        checkpoint[META_KEY] = self.meta


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


def build_trainer(cfg: DictConfig, folder: Path, meta: Dict, callbacks: List[Callback] = ()):
    """A Trainer writing `last.ckpt` every `checkpoint.frequency` epochs into `folder` and the
    learning rates of every epoch into the CSV log (`lr-<optimizer>` columns)."""
    accelerator, devices = accelerator_and_devices(cfg)
    n_devices = len(devices) if isinstance(devices, list) else devices
    cuda = accelerator != "cpu" and torch.cuda.is_available()
    precision = trainer_precision(lightning_precision(cfg), cuda)
    checkpoint = ModelCheckpoint(
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
        strategy=(cfg.get("strategy") or NO_STRATEGY) if multi else NO_STRATEGY,
        sync_batchnorm=bool(cfg.get("sync_batchnorm", False)) and multi,
        precision=precision,
        logger=CSVLogger(save_dir=str(folder), name="logs"),  # logs/version_<attempt>
        callbacks=[checkpoint, CheckpointMeta(meta), LearningRateMonitor("epoch"), *callbacks],
        plugins=[AtomicCheckpointIO()],
        log_every_n_steps=int(cfg.get("log_every_n_steps", 50)),
        num_sanity_val_steps=0,
        limit_train_batches=cfg.get("limit_train_batches", 1.0),
        limit_val_batches=cfg.get("limit_val_batches", 1.0),
    )


def save_config(cfg: DictConfig, folder: Path) -> Path:
    """Dumps the resolved config next to the checkpoints (atomic)."""
    return atomic_write_text(folder / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))


def fit(cfg: DictConfig, model, train_set, val_set, meta: Dict, resume: bool) -> Path:
    """Trains `model` under the run folder of `cfg`; returns the path of `last.ckpt`."""
    from solo_ncp.launch.data import eval_loader, train_loader

    folder = run_dir(cfg)
    ckpt = resume_checkpoint(folder, resume, bool(select(cfg, "auto_resume.enabled", False)))
    save_config(cfg, folder)
    trainer = build_trainer(cfg, folder, meta)
    val_loader = eval_loader(cfg, val_set) if val_set is not None else None
    trainer.fit(model, train_loader(cfg, train_set), val_loader, ckpt_path=str(ckpt) if ckpt else None)
    return folder / LAST
