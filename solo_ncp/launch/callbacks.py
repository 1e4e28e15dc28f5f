"""The Lightning callbacks (and the checkpoint I/O plugin) every solo-ncp training runs with,
spelled the same in Lightning 1.9 and 2: atomic checkpoints read through the safe loader,
`last.ckpt` over the one resumed from, the epoch history, the held-out robust monitor and
`best.ckpt`, solo-ncp's metadata in every checkpoint, signals raised again where Lightning
swallowed them, a stop at a non-finite loss, per-group learning rates, per-epoch seeds and the
progress bar's loss."""
import random
import warnings
from pathlib import Path
from typing import Dict, Mapping, Optional

import numpy as np
import torch

from solo_ncp.interrupt import raise_pending
from solo_ncp.io import atomic_torch_save
from solo_ncp.launch.compat import Callback, ModelCheckpoint, TorchCheckpointIO, TQDMProgressBar
from solo_ncp.launch.data import epoch_seed
from solo_ncp.launch.resume import start_groups_at_own_lrs
from solo_ncp.models.checkpoint import BEST_META, META_KEY, read_checkpoint
from solo_ncp.run_files import LAST


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file and renames it (a kill never corrupts it);
    reads through `read_checkpoint` (weights only unless `trust`), as every solo-ncp load does."""

    def __init__(self, trust: bool = False):
        super().__init__()
        self.trust = trust

    def save_checkpoint(self, checkpoint: Dict, path, storage_options=None) -> None:
        atomic_torch_save(without_functions(checkpoint), path)

    def load_checkpoint(self, path, map_location=None) -> Dict:
        return read_checkpoint(path, trust=self.trust)


def without_functions(checkpoint: Dict) -> Dict:
    """`checkpoint` without the functions its schedulers' states hold: solo-learn 1.0.2 puts a
    `functools.partial` over the scheduler's own `get_lr` there (SimSiam's fixed predictor lr),
    which torch.save failed to pickle after a whole epoch, and which no safe load would read back;
    the scheduler a resume builds has it again."""
    if "lr_schedulers" not in checkpoint:
        return checkpoint
    schedulers = [{key: value for key, value in state.items() if not callable(value)}
                  for state in checkpoint["lr_schedulers"]]
    return {**checkpoint, "lr_schedulers": schedulers}


class LastCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint writing `last.ckpt` over the one a run resumed from, where
    Lightning would write `last-v1.ckpt` beside it and a later --resume, eval or export would read
    the stale `last.ckpt`: when that checkpoint was written in another folder (a moved or copied
    run), and when this callback's saved state is not restored at all (Lightning keys it by
    `every_n_epochs`, so a resume that changed checkpoint.frequency skipped it)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.last_model_path = str(Path(self.dirpath) / LAST)

    def load_state_dict(self, state_dict: Dict) -> None:
        super().load_state_dict(state_dict)
        self.last_model_path = str(Path(self.dirpath) / LAST)


def epoch_checkpoint_name(run_name: str, epoch: int) -> str:
    """`<run name>-ep=<epoch>.ckpt`, solo-learn main's Checkpointer's name without its W&B
    version (a solo-ncp run folder holds one run); `epoch` counts from 0, as the checkpoint's
    `epoch` key and Lightning's `current_epoch` do: `ep=9` holds the weights after 10 epochs."""
    return f"{run_name}-ep={epoch}.ckpt"


def sync_epoch_metrics(trainer) -> Dict:
    """The epoch's metrics (`trainer.callback_metrics`), computed now on this rank if not yet:
    a metric logged with sync_dist costs a barrier and an all_reduce on every rank, once an
    epoch. Rank 0's progress bar computes them in its on_train_epoch_end, the other ranks' bars
    are off, so a callback that runs after the bar must call this on every rank before its own
    collective (Lightning 2's `save_checkpoint` ends in a barrier) or rank 0's syncs meet the
    other ranks' collective and DDP deadlocks; ModelCheckpoint reads them first for the same
    reason."""
    return trainer.callback_metrics


class EpochCheckpoints(Callback):
    """Keeps a checkpoint after every `frequency`-th epoch (epochs f, 2f, ... counted from 1, so
    the last epoch of a run of a multiple of f epochs is among them), named by
    `epoch_checkpoint_name`, in `folder`, besides `last.ckpt`. Written as `last.ckpt` is, by
    `trainer.save_checkpoint` at the same point of the epoch (atomic, with solo-ncp's metadata); an
    epoch a resumed run trains again overwrites its file. Runs before the ModelCheckpoint that
    writes `last.ckpt` (Lightning calls checkpoint callbacks last), so a kill between the two
    leaves the epoch to be trained again, never a `last.ckpt` without its history file."""

    def __init__(self, folder: Path, run_name: str, frequency: int):
        self.folder = folder
        self.run_name = run_name
        self.frequency = frequency

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch
        if (epoch + 1) % self.frequency == 0:
            sync_epoch_metrics(trainer)
            trainer.save_checkpoint(self.folder / epoch_checkpoint_name(self.run_name, epoch))


class RobustMonitor(Callback):
    """After every `every`-th epoch (epochs N, 2N, ... counted from 1) the stage-2 method measures
    its online classifier's clean and PGD-20 accuracy on its held-out training images
    (`measure_val_robust`, which logs them). With `best` (a path: `checkpoint.save_best`), the run
    is saved there whenever that PGD-20 accuracy beats every earlier measurement (on a tie the
    earlier epoch stays), and every checkpoint's metadata records the best so far (`BEST_META`).

    A plain callback, so on both Lightning versions it runs before the checkpoint callback that
    writes last.ckpt: last.ckpt holds the best so far (this callback's state) and a resumed run
    compares with it; a kill between the two saves repeats the epoch, which writes the same
    best.ckpt again."""

    def __init__(self, every: int, best: Optional[Path] = None):
        self.every = every
        self.best = best
        self.kept: Optional[Dict] = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch
        if (epoch + 1) % self.every:
            return
        measured = pl_module.measure_val_robust()
        if self.best is None or (self.kept is not None and measured["ra"] <= self.kept["pgd20_acc"]):
            return
        self.kept = {"epoch": int(epoch), "pgd20_acc": measured["ra"], "clean_acc": measured["sa"]}
        sync_epoch_metrics(trainer)
        trainer.save_checkpoint(self.best)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: Dict) -> None:
        if self.kept is not None:
            checkpoint[META_KEY] = {**checkpoint.get(META_KEY, {}), BEST_META: dict(self.kept)}

    def state_dict(self) -> Dict:
        return {} if self.kept is None else {"kept": dict(self.kept)}

    def load_state_dict(self, state_dict: Dict) -> None:
        self.kept = state_dict.get("kept")


class CheckpointMeta(Callback):
    """Stores solo-ncp's metadata (backbone spec, normalisation, method, dataset) in every
    checkpoint under `solo_ncp`, as plain Python types so `weights_only=True` loads it."""

    def __init__(self, meta: Dict):
        self.meta = meta

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: Dict) -> None:
        checkpoint[META_KEY] = self.meta


class CaughtInterrupt(Callback):
    """The KeyboardInterrupt (an `Interrupted`: SIGINT, SIGTERM or SIGHUP) Lightning caught: its fit then
    ends normally after a graceful shutdown, with `trainer.interrupted` set."""

    def __init__(self):
        self.caught: Optional[KeyboardInterrupt] = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.caught = exception


class PendingInterrupt(Callback):
    """Raises a signal's `Interrupted` again as a training batch starts or ends, or a validation
    batch starts, when its first raise was swallowed (see `solo_ncp.interrupt`): the training
    stops within the step it arrived in, before the epoch's checkpoint."""

    def on_train_batch_start(self, *args) -> None:
        raise_pending()

    def on_train_batch_end(self, *args) -> None:
        raise_pending()

    def on_validation_batch_start(self, *args) -> None:
        raise_pending()


class FiniteLoss(Callback):
    """Stops a training at the end of the step whose loss is NaN or inf, before any checkpoint
    holds the weights it produced (FloatingPointError; `fit` names the checkpoint kept). solo-learn's
    methods do not check: a VICReg stage 1 on digits went on to write NaN weights and exit 0. (Stage
    2 checks in its own step, under main's own launcher too.)"""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *rest) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor) and not torch.isfinite(loss).all():
            raise FloatingPointError(
                f"{type(pl_module).__name__} loss is {loss.item()} at epoch {trainer.current_epoch}, step {batch_idx}: "
                "training stopped. Lower optimizer.lr, or check the method's options")


class GroupLearningRates(Callback):
    """Starts every parameter group at its own lr when a run without warmup begins (see
    `start_groups_at_own_lrs`); a resumed run's lrs are rebuilt by `ResumedSchedule`."""

    def on_train_start(self, trainer, pl_module) -> None:
        for config in trainer.lr_scheduler_configs:
            start_groups_at_own_lrs(config.scheduler)


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


class LoggedLossBar(TQDMProgressBar):
    """Lightning's progress bar, where a `loss` the method logs with prog_bar=True replaces,
    without a warning, Lightning 1.9's running mean of what training_step returns (for stage 2
    that adds the online classifier's cross-entropy, which the bar shows as `clf_loss`)."""

    def get_metrics(self, trainer, pl_module):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The progress bar already tracks")
            return super().get_metrics(trainer, pl_module)
