"""The values a run config's numbers may take: a key of `SCHEMA` whose value is of its kind but
out of its range is refused naming key, value and range, before any work. Without it torch,
torchvision or Lightning refused them later without naming the key (`optimizer.batch_size=0`:
"batch_size should be a positive integer value"; `rrc.crop_min_scale=-1`: "math domain error";
`optimizer.lr=-1`: "Invalid learning rate: -0.5", the scaled lr), or took them in silence
(`color_jitter.prob=1.5`, `scheduler.warmup_epochs=-2`)."""
from dataclasses import dataclass
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from solo_ncp.config.schema import NUMBER, SCHEMA, WHOLE, ConfigError, _is_kind, _matches, walk_plain


@dataclass(frozen=True)
class Bound:
    """A range of numbers: from `low` to `high` (None: unbounded), `low` itself excluded where
    `low_open`."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False

    def holds(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        return above and (self.high is None or value <= self.high)

    def __str__(self) -> str:
        low, high = (None if end is None else f"{end:.15g}" for end in (self.low, self.high))
        if self.low is not None and self.high is not None:
            return f"from {low} to {high}"
        return f"{'>' if self.low_open else '>='} {low}" if self.high is None else f"<= {high}"


AT_LEAST_0, AT_LEAST_1 = Bound(0), Bound(1)
POSITIVE = Bound(0, low_open=True)
PROBABILITY = Bound(0, 1)
SEED = Bound(0, 2 ** 32 - 1)  # numpy's seeds
RANGES = {
    "seed": SEED, "data.subset_seed": SEED, "data.subset": AT_LEAST_1, "data.num_workers": AT_LEAST_0,
    "optimizer.batch_size": AT_LEAST_1, "optimizer.lr": AT_LEAST_0, "optimizer.classifier_lr": AT_LEAST_0,
    "optimizer.weight_decay": AT_LEAST_0, "scheduler.warmup_epochs": AT_LEAST_0,
    "scheduler.warmup_start_lr": AT_LEAST_0, "scheduler.min_lr": AT_LEAST_0, "knn_eval.k": AT_LEAST_1,
    "limit_train_batches": POSITIVE, "limit_val_batches": AT_LEAST_0,
    "log_every_n_steps": AT_LEAST_1, "accumulate_grad_batches": AT_LEAST_1, "num_nodes": AT_LEAST_1,
    "augmentations.*.crop_size": AT_LEAST_1, "augmentations.*.num_crops": AT_LEAST_1,
    "augmentations.*.pad_crop.padding": AT_LEAST_0,
    "augmentations.*.rrc.crop_min_scale": POSITIVE,
    "augmentations.*.rrc.crop_max_scale": POSITIVE,
    **{f"augmentations.*.color_jitter.{key}": AT_LEAST_0 for key in ("brightness", "contrast", "saturation")},
    "augmentations.*.color_jitter.hue": Bound(0, 0.5),
    **{f"augmentations.*.{name}.prob": PROBABILITY
       for name in ("color_jitter", "grayscale", "gaussian_blur", "solarization", "equalization", "horizontal_flip")},
}
"""The range of each ranged key (`*`: a list index); its kind is `SCHEMA`'s, checked first."""
PASSED_ON = {
    **{f"method_kwargs.{width}": (WHOLE, AT_LEAST_1)
       for width in ("proj_hidden_dim", "proj_output_dim", "pred_hidden_dim")},
    "method_kwargs.temperature": (NUMBER, POSITIVE),
}
"""Options of solo-learn's methods, passed on as given, whose name means one thing in every method
that has it (a layer's width, a softmax temperature): (kind, range). SimCLR trained in silence with
`proj_output_dim=0`, and `proj_hidden_dim=64.5` (a number, as the file's 2048 is) failed inside
nn.Linear without naming the key."""
BATCH_LIMITS = ("limit_train_batches", "limit_val_batches")
"""Lightning's: a fraction of the batches (at most 1.0) or a whole number of them."""


def check_ranges(cfg: DictConfig) -> None:
    """ConfigError for the first number of `cfg` out of its key's range (`RANGES`, and `PASSED_ON`,
    whose kind it checks too; a batch limit, `BATCH_LIMITS`, above 1 must be whole), and for an
    `augmentations` entry whose `rrc.crop_min_scale` exceeds its `rrc.crop_max_scale`."""
    patterns = [(tuple(key.split(".")), key) for key in RANGES]
    for path, value in walk_plain(OmegaConf.to_container(cfg, resolve=True)):
        dotted = ".".join(path)
        if dotted in PASSED_ON:
            kind, bound = PASSED_ON[dotted]
            if value is not None and not (_is_kind(value, kind, converted=False) and bound.holds(value)):
                raise ConfigError(f"{dotted}={value!r} must be {kind} {bound}")
        key = next((key for pattern, key in patterns if len(pattern) == len(path) and _matches(pattern, path)), None)
        if key is not None and isinstance(value, (int, float)) and not RANGES[key].holds(value):
            raise ConfigError(f"{'.'.join(path)}={value!r} must be {SCHEMA[key]} {RANGES[key]}")
        if key in BATCH_LIMITS and value > 1 and not float(value).is_integer():
            raise ConfigError(f"{key}={value!r} must be a fraction of the batches (at most 1.0) or a whole "
                              "number of them")
    for i, aug in enumerate(cfg.get("augmentations") or []):
        low, high = (OmegaConf.select(aug, f"rrc.crop_{end}_scale") for end in ("min", "max"))
        if None not in (low, high) and low > high:
            raise ConfigError(f"augmentations.{i}.rrc.crop_min_scale={low!r} exceeds its crop_max_scale={high!r}: "
                              "the crop's area is drawn from min to max (a fraction of the image)")
