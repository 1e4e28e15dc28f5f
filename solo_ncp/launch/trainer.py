"""The Lightning Trainer (1.9 or 2, the host's, see `compat`) every solo-ncp launcher uses: a
checked and locked run folder, CSV logs (plus W&B and TensorBoard when the config's `wandb:` /
`tensorboard:` blocks enable them), atomic checkpoints carrying solo-ncp's metadata (`last.ckpt`,
and a history every `checkpoint.frequency` epochs with `checkpoint.keep_prev`), resume from
`last.ckpt` through the safe loader with the config checked and the lr schedule rebuilt (see
`resume`), per-group learning rates from the first epoch, and epochs whose randomness depends on
(seed, epoch) alone. Its callbacks are in `callbacks`, its loggers in `loggers`."""
import os
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from omegaconf import DictConfig, OmegaConf

from solo_ncp.config import (
    TRAINING_SEED,
    ConfigError,
    checkpoint_history,
    device_count,
    learning_rates,
    lightning_precision,
    logger_settings,
    select,
)
from solo_ncp.interrupt import Interrupted, as_interrupted, interruption
from solo_ncp.io import DiskFullError, atomic_write_text, check_writable, disk_full_in, folder_lock
from solo_ncp.launch.callbacks import (
    AtomicCheckpointIO,
    CaughtInterrupt,
    CheckpointMeta,
    EpochCheckpoints,
    EpochSeeds,
    FiniteLoss,
    GroupLearningRates,
    LastCheckpoint,
    LoggedLossBar,
    PendingInterrupt,
    RobustMonitor,
)
from solo_ncp.launch.compat import (
    NO_STRATEGY,
    Callback,
    LearningRateMonitor,
    Trainer,
    WandbLogger,
    trainer_precision,
)
from solo_ncp.launch.loggers import WANDB_RUN_ID, build_loggers, wandb_run_finished
from solo_ncp.launch.resume import CONFIG, ResumedSchedule, check_resume_config, describe_changes
from solo_ncp.models.checkpoint import META_KEY, CheckpointError, read_checkpoint, state_mismatch
from solo_ncp.run_files import BEST, LAST


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
    folder = check_writable(run_dir(cfg), "checkpoint.dir (or name)")
    with folder_lock(folder) if is_first_process() else nullcontext(folder):
        resume_from = resume_checkpoint(folder, resume,
                                        bool(select(cfg, "auto_resume.enabled", False)))
        changes = check_resume_config(folder, cfg) if resume_from else []
        accelerator_and_devices(cfg)
        if changes and is_first_process():
            print(f"[solo-ncp] --resume with a changed config: {describe_changes(changes)}",
                  flush=True)
        yield RunFolder(folder, resume_from)


def check_resumable(path: Path, model, trust: bool = False) -> Tuple[Dict, int]:
    """Refuses, with one message, a checkpoint Lightning could not resume `model` from:
    unreadable or unsafe for the safe loader, not a training checkpoint, trained from another
    teacher file or K (a stage-2 method's `check_resumed`), or weights of other names or shapes
    than `model`'s. Returns its solo-ncp metadata and the epochs it holds."""
    ckpt = read_checkpoint(path, trust=trust)
    state = ckpt.get("state_dict")
    if not isinstance(state, dict) or not isinstance(ckpt.get("epoch"), int):
        raise CheckpointError(
            f"{path} is not a training checkpoint (no state_dict and epoch): cannot resume from "
            "it; start a new run with another name=... / checkpoint.dir=..."
        )
    written_on = other_host(model.state_dict(), state)
    if written_on:
        raise CheckpointError(
            f"{path} was written on {written_on[0]}, which names the encoder's weights `{written_on[1]}.`; "
            f"this host ({written_on[2]}) cannot resume it: resume with the {written_on[0]} environment, or "
            "start a new run with another name=... (checkpoints cross hosts for eval, select-k, poc and as a "
            "teacher, not for --resume)"
        )
    meta = dict(ckpt.get(META_KEY) or {})
    if hasattr(model, "check_resumed"):  # a stage-2 method: its teacher file and K
        model.check_resumed(meta)
    detail = state_mismatch(model.state_dict(), state)
    if detail:
        raise CheckpointError(
            f"{path} was written by a run of another configuration ({detail}): resume with the "
            "config it was trained with, or start a new run with another name=..."
        )
    return meta, ckpt["epoch"] + 1  # "epoch" counts from 0


HOST_PREFIXES = {"encoder": "solo-learn 1.0.2", "backbone": "solo-learn main"}
"""The attribute each host's BaseMethod keeps the encoder under: the first part of its weights' names."""


def other_host(expected: Dict, found: Dict) -> Optional[Tuple[str, str, str]]:
    """(the host that wrote `found`, its prefix, this host) when the two state dicts name the
    encoder by the other host's prefix; None otherwise."""
    def prefixes(state: Dict) -> set:
        return {key.split(".", 1)[0] for key in state} & set(HOST_PREFIXES)

    mine, theirs = prefixes(expected), prefixes(found)
    if len(mine) == 1 and len(theirs) == 1 and mine != theirs:
        (prefix,), (own,) = theirs, mine
        return HOST_PREFIXES[prefix], prefix, HOST_PREFIXES[own]
    return None


def accelerator_and_devices(cfg: DictConfig):
    accelerator = str(cfg.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"accelerator={accelerator} but no CUDA device is visible: override with "
            "accelerator=cpu devices=1 to run on the CPU"
        )
    devices = cfg.get("devices", 1)
    devices = list(devices) if OmegaConf.is_list(devices) else devices
    on_cpu = {"cpu": "accelerator=cpu", "auto": None if torch.cuda.is_available() else
              "accelerator=auto without a visible CUDA device"}.get(accelerator)
    if on_cpu and isinstance(devices, list):
        raise ConfigError(f"devices={devices} lists GPU indices, which {on_cpu} has none of: override with "
                          "devices=1 (the number of CPU processes)")
    return accelerator, devices


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
    cuda = accelerator != "cpu" and torch.cuda.is_available()
    precision = trainer_precision(lightning_precision(cfg), cuda)
    if lightning_precision(cfg) == 16 and not cuda:
        print(f"[solo-ncp] note: precision={cfg.get('precision')} is CUDA's mixed precision: without a CUDA device "
              "this run trains in 32-bit (precision=bf16-mixed is the CPU's 16-bit)", flush=True)
    history = checkpoint_history(cfg)
    # last.ckpt is written after every epoch, whatever every_n_epochs is; every_n_epochs stays
    # checkpoint.frequency because Lightning keys this callback's saved state by it (runs
    # written before the epoch history existed restore it; LastCheckpoint needs none of it).
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
    multi = device_count(devices) * int(select(cfg, "num_nodes", 1)) > 1
    unused = [f"{key}={cfg.get(key)}" for key in ("strategy", "sync_batchnorm") if cfg.get(key) and not multi]
    if unused:
        print(f"[solo-ncp] note: {' and '.join(unused)} {'is' if len(unused) == 1 else 'are'} for several processes; "
              "this run trains in one (devices x num_nodes = 1), without it")
    return Trainer(
        max_epochs=int(cfg.max_epochs),
        accelerator=accelerator,
        devices=devices,
        num_nodes=int(select(cfg, "num_nodes", 1)),
        strategy=(cfg.get("strategy") or NO_STRATEGY) if multi else NO_STRATEGY,
        sync_batchnorm=bool(select(cfg, "sync_batchnorm", False)) and multi,
        precision=precision,
        logger=loggers,
        callbacks=[checkpoint, CheckpointMeta(meta), LearningRateMonitor("epoch"), PendingInterrupt(), FiniteLoss(),
                   GroupLearningRates(), EpochSeeds(int(select(cfg, "seed", TRAINING_SEED))), LoggedLossBar(),
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
    writes config.yaml once every check has passed; returns the path of `last.ckpt`. A resumed
    checkpoint that already holds `max_epochs` epochs is returned as it is, no file written.
    Interrupted (SIGINT, SIGTERM; Lightning shuts down gracefully and returns), it raises
    `Interrupted` naming the epoch and the command's `--resume`, also when C code turned the
    signal's raise into an error of its own (`interruption`)."""
    from solo_ncp.launch.data import eval_loader, train_loader

    caught = CaughtInterrupt()
    try:
        resumed, done = check_resumable(run.resume_from, model, trust) if run.resume_from else ({}, 0)
        if done >= int(cfg.max_epochs):
            print(f"[solo-ncp] {run.resume_from} holds {done} epoch{'s' * (done != 1)}, max_epochs={cfg.max_epochs}: "
                  "nothing to train, no file changed (raise max_epochs to train on)", flush=True)
            return run.resume_from
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
    except BaseException as err:
        interrupted = interruption(err)
        if interrupted is not None:
            raise interrupted_training(interrupted, run.folder / LAST, int(cfg.max_epochs), trust) from None
        if isinstance(err, FloatingPointError):
            raise FloatingPointError(stopped_message(str(err), run.folder / LAST)) from None
        full = disk_full_in(err)
        if full is not None:
            last = run.folder / LAST
            then = "--resume continues from it" if last.is_file() else "start it again"
            raise DiskFullError(f"{stopped_message(str(full), last)}: with room again, {then}") from None
        raise
    return run.folder / LAST
