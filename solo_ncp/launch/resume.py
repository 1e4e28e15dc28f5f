"""`--resume` with a config: which keys may differ from the run's recorded config, and the
learning-rate schedule the resumed run trains on.

The recorded config is `<run>/config.yaml`, the resolved config of the latest attempt that
trained in the folder (an attempt writes it only once every check has passed, so a refused
`--resume` leaves it as it was). It is authoritative because it holds every key a run was
trained with; a checkpoint's solo-ncp metadata holds only what its weights need (backbone,
method, K, teacher), and those the weights themselves are checked against (`check_resumable`).
A run folder without it (a bare `last.ckpt`) resumes with its keys unchecked.

Each key that differs gets its rule from `RESUME_RULES` (a key or a group: `scheduler` covers
`scheduler.min_lr`); any other key is refused, so a run never silently continues as another
experiment:
- `SCHEDULE`: applied, and the lr schedule is rebuilt from the new config (`ResumedSchedule`);
- `APPLIED`: applied as given (where the run, its data and its teacher are, logging, loaders,
  devices; a teacher file at another path must hold the bytes the run was trained from, which
  `Stage2Hooks.check_resumed` compares by sha256);
- `REFUSED`: one error naming every refused key with both values.
`devices` is compared by its count: other device ids are no change, another count is refused (the
lr rule and the global batch follow it).

Solo-learn's LinearWarmupCosineAnnealingLR (pl_bolts' on 1.0.2, its own copy on main) is chained:
each step scales the optimizer's current lr, and Lightning restores its `max_epochs`, base lrs and
step count from the checkpoint. So a run resumed with another `max_epochs` or `optimizer.lr`
would continue from the checkpoint's lr on the checkpoint's cosine (at lr 0 after a finished
run); `ResumedSchedule` rebuilds it instead.
"""
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

from omegaconf import DictConfig, OmegaConf

from solo_ncp.config import ConfigError, device_count, read_config_file
from solo_ncp.launch.compat import Callback

CONFIG = "config.yaml"
"""The resolved config of a run, in its folder."""
SCHEDULE, APPLIED, REFUSED = "applied, schedule rebuilt", "applied", "refused"
RESUME_RULES = (
    (("max_epochs", "optimizer.lr", "optimizer.classifier_lr", "scheduler"), SCHEDULE),
    (("name", "checkpoint", "auto_resume"), APPLIED),  # where the run is kept, what it keeps
    (("wandb", "tensorboard", "log_every_n_steps"), APPLIED),  # logging
    (("data.train_path", "data.num_workers", "data.val", "limit_train_batches",
      "limit_val_batches"), APPLIED),  # where the data is, how it is loaded, how much of it
    (("accelerator", "strategy"), APPLIED),  # (devices: see `compared`)
    (("method_kwargs.trust_teacher",), APPLIED),  # how the teacher file is read
    (("method_kwargs.teacher_ckpt",), APPLIED),  # where the teacher file is: its sha256 must match
)
"""(keys or key groups, rule) for the keys `--resume` lets differ from the recorded config."""
ABSENT = "(absent)"


def rule_of(key: str) -> str:
    """The `RESUME_RULES` rule of a dotted key (a group's covers its keys); REFUSED if none."""
    for keys, rule in RESUME_RULES:
        if any(key == k or key.startswith(f"{k}.") for k in keys):
            return rule
    return REFUSED


def leaves(node: Any, prefix: str = "") -> Dict[str, Any]:
    """{dotted key: value} of a plain config: dicts and lists of dicts (`augmentations.0.crop_size`)
    are walked, any other value (a list of numbers, say) is one leaf."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    out = {}
    for key, child in items:
        if isinstance(child, dict) or (isinstance(child, list) and child
                                       and all(isinstance(c, dict) for c in child)):
            out.update(leaves(child, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = child
    return out


def compared(plain: Dict) -> Dict[str, Any]:
    """The leaves of a plain config as resume compares them: `devices` by its count."""
    values = leaves(plain)
    if "devices" in values:
        try:
            values["devices"] = device_count(values["devices"])
        except ConfigError:
            pass
    return values


@dataclass(frozen=True)
class Change:
    """A key whose value differs between the recorded config and the one given (ABSENT where a
    side lacks it), with its `rule_of`."""

    key: str
    recorded: Any
    given: Any
    rule: str

    def describe(self) -> str:
        return f"{self.key} {self.recorded} -> {self.given}"


def config_changes(recorded: Dict, given: Dict) -> List[Change]:
    """Every key of two plain configs whose values differ, sorted by key."""
    old, new = compared(recorded), compared(given)
    keys = sorted(key for key in old.keys() | new.keys()
                  if old.get(key, ABSENT) != new.get(key, ABSENT))
    return [Change(key, old.get(key, ABSENT), new.get(key, ABSENT), rule_of(key)) for key in keys]


def plain_config(cfg: DictConfig) -> Dict:
    """`cfg` resolved, as `config.yaml` holds it once read back (the same YAML round trip)."""
    return OmegaConf.to_container(OmegaConf.create(OmegaConf.to_yaml(cfg, resolve=True)))


def recorded_config(path: Path) -> Dict:
    """The plain config in a run's config.yaml (`read_config_file`); ConfigError if it cannot be
    read as one."""
    try:
        return read_config_file(path)
    except ValueError as err:
        raise ConfigError(f"--resume: cannot read the run's recorded config {path} ({err}): "
                          "restore it, or remove it to resume with the keys unchecked") from None


def check_resume_config(folder: Path, cfg: DictConfig) -> List[Change]:
    """The keys `cfg` changes against `folder/config.yaml` (none without that file); raises one
    ConfigError naming every refused key with its recorded and given values."""
    path = folder / CONFIG
    if not path.is_file():
        return []
    changes = config_changes(recorded_config(path), plain_config(cfg))
    refused = [c for c in changes if c.rule == REFUSED]
    if refused:
        listed = "; ".join(f"{c.key}: {c.recorded} recorded, {c.given} given" for c in refused)
        raise ConfigError(
            f"--resume: {listed} ({path}): {'this key' if len(refused) == 1 else 'these keys'} "
            "cannot change within a run (README, \"Resume semantics\"); resume with the recorded "
            "value, or start a new run with another name=..."
        )
    return changes


def describe_changes(changes: List[Change]) -> str:
    """One line: each applied change and its rule."""
    return "; ".join(f"{c.describe()} ({c.rule})" for c in changes)


def start_groups_at_own_lrs(scheduler) -> None:
    """Puts each parameter group of a fresh LinearWarmupCosineAnnealingLR without warmup at its
    own base lr: the scheduler starts every group at one `warmup_start_lr`, and its chained cosine
    would keep the online classifier on `optimizer.lr` instead of `classifier_lr` for the whole
    run. No-op for other schedulers, with warmup (groups rise to their own lr), or once stepped."""
    if getattr(scheduler, "warmup_epochs", None) == 0 and scheduler.last_epoch == 0:
        for group, lr in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = lr


def fresh_schedule(model) -> Tuple[List, List]:
    """(optimizers, schedulers) the model's `configure_optimizers` builds from its config now,
    over its parameters: solo-learn returns an optimizer alone (scheduler `none`) or
    ([optimizer], [scheduler or {"scheduler": ...}])."""
    built = model.configure_optimizers()
    if not isinstance(built, (list, tuple)):
        return [built], []
    optimizers, schedulers = built
    return list(optimizers), [s["scheduler"] if isinstance(s, dict) else s for s in schedulers]


def steps_taken(trainer, interval: str) -> int:
    """How often an uninterrupted run has stepped a scheduler of `interval` when the resumed
    epoch starts: once an epoch, or once an optimizer step."""
    return trainer.current_epoch if interval == "epoch" else trainer.global_step


def group_lrs(optimizer) -> str:
    """`<group name> <lr>, ...` of an optimizer's parameter groups (unnamed: `pg<i+1>`, as Lightning's LearningRateMonitor names them)."""
    return ", ".join(f"{group.get('name') or f'pg{i + 1}'} {group['lr']:g}"
                     for i, group in enumerate(optimizer.param_groups))


class ResumedSchedule(Callback):
    """On a resumed run, once Lightning has restored the checkpoint's optimizer and schedulers:
    every parameter group's lr and every scheduler's state become those of this config's
    schedule at the resumed epoch, built fresh (`configure_optimizers`) and stepped as an
    uninterrupted run of this config would have been. The optimizer keeps its restored state
    (momentum); with an unchanged config the lrs are the checkpoint's. Prints the lrs the
    resumed epoch trains at."""

    def on_train_start(self, trainer, pl_module) -> None:
        optimizers, schedulers = fresh_schedule(pl_module)
        with warnings.catch_warnings():  # stepping a scheduler whose optimizer never stepped
            warnings.simplefilter("ignore")
            for config, fresh in zip(trainer.lr_scheduler_configs, schedulers, strict=True):
                start_groups_at_own_lrs(fresh)
                for _ in range(steps_taken(trainer, config.interval)):
                    fresh.step()
                config.scheduler.__dict__.update(
                    {k: v for k, v in fresh.state_dict().items() if not callable(v)})
        for restored, fresh in zip(trainer.optimizers, optimizers, strict=True):
            for group, fresh_group in zip(restored.param_groups, fresh.param_groups, strict=True):
                group.update({k: fresh_group[k] for k in ("lr", "initial_lr") if k in fresh_group})
        if trainer.is_global_zero:
            lrs = "; ".join(group_lrs(optimizer) for optimizer in trainer.optimizers)
            print(f"[solo-ncp] resuming at epoch {trainer.current_epoch} (from 0) of max_epochs "
                  f"{trainer.max_epochs}: the optimizer trains at lr {lrs} (this config's "
                  "schedule at that epoch)", flush=True)
