"""A run's loggers: the CSV log always, TensorBoard's and W&B's when the config's `tensorboard:` /
`wandb:` blocks enable them, and the W&B run finished when the training ends."""
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

from omegaconf import DictConfig, OmegaConf

from solo_ncp.config import WandbSettings, logger_settings
from solo_ncp.launch.compat import CSVLogger, TensorBoardLogger, WandbLogger


WANDB_RUN_ID = "wandb_run_id"
"""The key of the W&B run id in a checkpoint's solo-ncp metadata: `--resume` continues that run."""


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
    (`folder/tensorboard/version_<attempt>`, the same attempt number also when an earlier attempt
    ran without it) and W&B's (see `start_wandb`) when the config's blocks enable them."""
    settings = logger_settings(cfg)
    csv_logger = CSVLogger(save_dir=str(folder), name="logs")
    loggers = [csv_logger]
    if settings.tensorboard:
        loggers.append(TensorBoardLogger(save_dir=str(folder), name="tensorboard", version=csv_logger.version,
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
