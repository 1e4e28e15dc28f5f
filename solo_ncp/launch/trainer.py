"""The Lightning Trainer (1.9 or 2, the host's, see `compat`) every solo-ncp launcher uses: a
checked and locked run folder, CSV logs (plus W&B and TensorBoard when the config's `wandb:` /
`tensorboard:` blocks enable them), atomic checkpoints carrying solo-ncp's metadata (`last.ckpt`,
and a history every `checkpoint.frequency` epochs with `checkpoint.keep_prev`), resume from
`last.ckpt` through the safe loader with the config checked and the lr schedule rebuilt (see
`resume`), per-group learning rates from the first epoch, and epochs whose randomness depends on
(seed, epoch) alone."""
import os
import random
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from solo_ncp.config import (
    ConfigError,
    WandbSettings,
    checkpoint_history,
    learning_rates,
    lightning_precision,
    logger_settings,
    select,
)
from solo_ncp.interrupt import Interrupted, as_interrupted, raise_pending
from solo_ncp.io import atomic_torch_save, atomic_write_text, check_writable, folder_lock
from solo_ncp.launch.compat import (
    NO_STRATEGY,
    Callback,
    CSVLogger,
    LearningRateMonitor,
    ModelCheckpoint,
    TensorBoardLogger,
    TorchCheckpointIO,
    TQDMProgressBar,
    Trainer,
    WandbLogger,
    trainer_precision,
)
from solo_ncp.launch.data import epoch_seed
from solo_ncp.launch.resume import (
    CONFIG,
    ResumedSchedule,
    check_resume_config,
    describe_changes,
    start_groups_at_own_lrs,
)
from solo_ncp.models.checkpoint import (
    BEST_META,
    META_KEY,
    CheckpointError,
    read_checkpoint,
    state_mismatch,
)
from solo_ncp.run_files import BEST, LAST

WANDB_RUN_ID = "wandb_run_id"
"""The key of the W&B run id in a checkpoint's solo-ncp metadata: `--resume` continues that run."""


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
    """The KeyboardInterrupt (an `Interrupted`: SIGINT or SIGTERM) Lightning caught: its fit then
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


RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")
"""Environment variables in which launchers (Lightning's DDP children, torchrun, SLURM, a node of
a multi-node run) tell a process its rank."""


def is_first_process() -> bool:
    """Whether this process is rank 0 of its run: every rank variable set is 0. The other ranks
    share its run folder, so they neither lock it nor are refused by its lock. Read before the
    Trainer exists, so not Lightning's `rank_zero_only.rank`: that takes the first of RANK,
    LOCAL_RANK, SLURM_PROCID set and so calls the first process of node 1 of a multi-node run
    started by Lightning's launcher (NODE_RANK=1 only) rank 0."""
    return all(os.environ.get(name, "0") == "0" for name in RANK_VARIABLES)


@contextmanager
def open_run(cfg: DictConfig, resume: bool) -> Iterator[RunFolder]:
    """The run folder of `cfg`, checked writable before any work and locked for the block by rank
    0 (a second run training there is refused); its last.ckpt when resuming, after `cfg` was
    checked against the run's config.yaml (`check_resume_config`: a refused key stops here,
    the applied ones are printed). The accelerator is checked here too, before any work."""
    folder = check_writable(run_dir(cfg))
    with folder_lock(folder) if is_first_process() else nullcontext(folder):
        resume_from = resume_checkpoint(folder, resume,
                                        bool(select(cfg, "auto_resume.enabled", False)))
        changes = check_resume_config(folder, cfg) if resume_from else []
        accelerator_and_devices(cfg)
        if changes and is_first_process():
            print(f"[solo-ncp] --resume with a changed config: {describe_changes(changes)}",
                  flush=True)
        yield RunFolder(folder, resume_from)


def check_resumable(path: Path, model, trust: bool = False) -> Dict:
    """Refuses, with one message, a checkpoint Lightning could not resume `model` from:
    unreadable or unsafe for the safe loader, not a training checkpoint, or weights of other
    names or shapes than `model`'s (another K, say). Returns its solo-ncp metadata."""
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
    return dict(ckpt.get(META_KEY) or {})


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


def start_wandb(settings: WandbSettings, cfg: DictConfig, folder: Path,
                run_id: Optional[str]) -> WandbLogger:
    """Lightning's WandbLogger for the run named `cfg.name`, writing under `folder/wandb/`; W&B
    run `run_id` continued (`resume="allow"`), or a new run when None; `offline` goes to W&B as
    `mode="offline"` (Lightning's `offline=True` would set WANDB_MODE for the rest of the
    process, for every later run of `demo` or `reproduce`). The W&B run starts here,
    with the resolved config as its W&B config (as solo-learn main's main_pretrain.py logs it), so
    a W&B that cannot start stops the command before any training."""
    import wandb

    try:
        logger = WandbLogger(name=str(cfg.name), project=settings.project, entity=settings.entity,
                             save_dir=str(folder), id=run_id, resume="allow",
                             mode="offline" if settings.offline else None)
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    except wandb.errors.Error as err:
        raise ValueError(
            f"W&B could not start the run ({err}): log in with `wandb login`, or set "
            f"wandb.offline=true to write it under {folder / 'wandb'} for a later `wandb sync`"
        ) from None
    return logger


def build_loggers(cfg: DictConfig, folder: Path, wandb_run_id: Optional[str] = None) -> List:
    """The CSV logger (`folder/logs/version_<attempt>`, always), then TensorBoard's
    (`folder/tensorboard/version_<attempt>`) and W&B's (see `start_wandb`) when the config's
    blocks enable them."""
    settings = logger_settings(cfg)
    loggers = [CSVLogger(save_dir=str(folder), name="logs")]
    if settings.tensorboard:
        loggers.append(TensorBoardLogger(save_dir=str(folder), name="tensorboard",
                                         default_hp_metric=False))
    if settings.wandb:
        loggers.append(start_wandb(settings.wandb, cfg, folder, wandb_run_id))
    return loggers


@contextmanager
def wandb_run_finished(enabled: bool) -> Iterator[None]:
    """Finishes the process's W&B run (if `enabled` and one started) when the block ends, marked
    failed (exit code 1) if it raised: Lightning's WandbLogger would hand a run left open to the
    next training of this process (`demo` and `reproduce` run several)."""
    if not enabled:
        yield
        return
    import wandb

    exit_code = 1
    try:
        yield
        exit_code = 0
    finally:
        if wandb.run is not None:
            wandb.finish(exit_code=exit_code)


class LoggedLossBar(TQDMProgressBar):
    """Lightning's progress bar, where a `loss` the method logs with prog_bar=True replaces,
    without a warning, Lightning 1.9's running mean of what training_step returns (for stage 2
    that adds the online classifier's cross-entropy, which the bar shows as `clf_loss`)."""

    def get_metrics(self, trainer, pl_module):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The progress bar already tracks")
            return super().get_metrics(trainer, pl_module)


def build_trainer(cfg: DictConfig, folder: Path, meta: Dict, callbacks: List[Callback] = (),
                  trust: bool = False, wandb_run_id: Optional[str] = None):
    """A Trainer writing `last.ckpt` after every epoch into `folder`, an epoch checkpoint every
    `checkpoint.frequency` epochs with `checkpoint.keep_prev` (`EpochCheckpoints`), the held-out
    robust accuracy every `method_kwargs.val_robust_every` epochs (stage 2) and with
    `checkpoint.save_best` the most robust epoch as best.ckpt (`RobustMonitor`), and the
    learning rates of every epoch into its logs (`lr-<optimizer>`, see `build_loggers`; W&B
    continues run `wandb_run_id` when given, and the run's id goes into every checkpoint's
    metadata); it resumes through the safe loader (any pickle only if `trust`)."""
    accelerator, devices = accelerator_and_devices(cfg)
    n_devices = len(devices) if isinstance(devices, list) else devices
    cuda = accelerator != "cpu" and torch.cuda.is_available()
    precision = trainer_precision(lightning_precision(cfg), cuda)
    history = checkpoint_history(cfg)
    # last.ckpt is written after every epoch, whatever every_n_epochs is; every_n_epochs stays
    # checkpoint.frequency because Lightning keys this callback's saved state by it (runs
    # written before the epoch history existed still resume).
    checkpoint = LastCheckpoint(
        dirpath=str(folder),
        save_last=True,
        save_top_k=0,
        every_n_epochs=history.frequency,
    )
    if history.keep_prev:
        callbacks = [EpochCheckpoints(folder, folder.name, history.frequency), *callbacks]
    robust_every = int(select(cfg, "method_kwargs.val_robust_every", 0) or 0)
    if robust_every:
        callbacks = [*callbacks, RobustMonitor(robust_every, folder / BEST if history.save_best else None)]
    loggers = build_loggers(cfg, folder, wandb_run_id)
    wandb_logger = next((logger for logger in loggers if isinstance(logger, WandbLogger)), None)
    if wandb_logger is not None:
        meta = {**meta, WANDB_RUN_ID: wandb_logger.version}
    multi = isinstance(n_devices, int) and n_devices > 1
    return Trainer(
        max_epochs=int(cfg.max_epochs),
        accelerator=accelerator,
        devices=devices,
        num_nodes=int(select(cfg, "num_nodes", 1)),
        strategy=(cfg.get("strategy") or NO_STRATEGY) if multi else NO_STRATEGY,
        sync_batchnorm=bool(select(cfg, "sync_batchnorm", False)) and multi,
        precision=precision,
        logger=loggers,
        callbacks=[checkpoint, CheckpointMeta(meta), LearningRateMonitor("epoch"), PendingInterrupt(),
                   GroupLearningRates(), EpochSeeds(int(select(cfg, "seed", 5))), LoggedLossBar(),
                   *callbacks],
        plugins=[AtomicCheckpointIO(trust)],
        accumulate_grad_batches=int(select(cfg, "accumulate_grad_batches", 1)),
        log_every_n_steps=int(select(cfg, "log_every_n_steps", 50)),
        num_sanity_val_steps=0,
        limit_train_batches=select(cfg, "limit_train_batches", 1.0),
        limit_val_batches=select(cfg, "limit_val_batches", 1.0),
    )


def save_config(cfg: DictConfig, folder: Path) -> Path:
    """Dumps the resolved config next to the checkpoints (atomic): the run's recorded config
    (see `resume`)."""
    return atomic_write_text(folder / CONFIG, OmegaConf.to_yaml(cfg, resolve=True))


def stopped_message(message: str, last: Path) -> str:
    """A training-stopped (NaN loss) message followed by which checkpoint is actually left."""
    kept = (f"{last} (the last completed checkpoint) is kept" if last.is_file()
            else "no checkpoint was written before it stopped")
    return f"{message}; {kept}"


def interrupted_training(err: Interrupted, last: Path, max_epochs: int, trust: bool) -> Interrupted:
    """`err` with the epoch the training stopped in, from the epochs `last` holds, and how to go
    on: `--resume` from it, or the same command again when no checkpoint was written yet."""
    if not last.is_file():
        return Interrupted(err.signum, f"in epoch 1 of {max_epochs}, before its first checkpoint",
                           "start again with")
    try:
        done = int(read_checkpoint(last, trust=trust)["epoch"]) + 1
    except (KeyError, TypeError, ValueError):  # CheckpointError among them: unreadable
        return err
    where = (f"in epoch {done + 1} of {max_epochs}" if done < max_epochs else
             f"after its last epoch ({max_epochs})")
    return Interrupted(err.signum, f"{where}, {done} done in {last}", "resume with", "--resume")


def fit(cfg: DictConfig, model, train_set, val_set, meta: Dict, run: RunFolder,
        trust: bool = False) -> Path:
    """Trains `model` in `run` (see `open_run`), resuming from its last.ckpt (and its W&B run)
    if set, on this config's lr schedule (`ResumedSchedule`); prints and logs the learning rates;
    writes config.yaml once every check has passed; returns the path of `last.ckpt`.
    Interrupted (SIGINT, SIGTERM; Lightning shuts down gracefully and returns), it raises
    `Interrupted` naming the epoch and the command's `--resume`."""
    from solo_ncp.launch.data import eval_loader, train_loader

    caught = CaughtInterrupt()
    try:
        resumed = check_resumable(run.resume_from, model, trust) if run.resume_from else {}
        rates = learning_rates(cfg)
        print(f"[solo-ncp] {rates.describe()}", flush=True)
        with wandb_run_finished(logger_settings(cfg).wandb is not None):
            resumed_schedule = [ResumedSchedule()] if run.resume_from else []
            trainer = build_trainer(cfg, run.folder, meta, [caught, *resumed_schedule],
                                    trust=trust, wandb_run_id=resumed.get(WANDB_RUN_ID))
            if is_first_process():
                save_config(cfg, run.folder)
            for logger in trainer.loggers:
                logger.log_hyperparams({"learning_rate": {
                    **asdict(rates), "factor": rates.factor, "lr": rates.lr,
                    "classifier_lr": rates.classifier_lr}})
            val_loader = eval_loader(cfg, val_set) if val_set is not None else None
            trainer.fit(model, train_loader(cfg, train_set), val_loader,
                        ckpt_path=str(run.resume_from) if run.resume_from else None)
            if trainer.interrupted:
                raise as_interrupted(caught.caught or KeyboardInterrupt())
    except FloatingPointError as err:
        raise FloatingPointError(stopped_message(str(err), run.folder / LAST)) from None
    except KeyboardInterrupt as err:
        raise interrupted_training(as_interrupted(err), run.folder / LAST, int(cfg.max_epochs),
                                   trust) from None
    return run.folder / LAST
