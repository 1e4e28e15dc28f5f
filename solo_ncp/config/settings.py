"""What a loaded config sets beyond its keys' values: the dataset, the logger and checkpoint
blocks, the learning rates and the augmentation pipelines, each checked.

`data.dataset: custom` reads torchvision ImageFolders, `data.train_path` and `data.val_path`,
normalised with the `mean`/`std` of every `augmentations` entry (`custom_data_of`, see
solo_ncp.data.custom); the folders and statistics are checked when the config loads.

The blocks `wandb:` (solo-learn main's: `enabled`, `project`, `entity`, `offline`),
`tensorboard:` (`enabled`) and `checkpoint:` (solo-learn main's `Checkpointer` keys: `enabled`,
`dir`, `frequency`, `keep_prev`; solo-ncp's `save_best`) are checked when a config loads
(`logger_settings`, `checkpoint_history`): a flag that is not true/false or a frequency below 1 is
refused, `wandb.enabled: true` needs a `project` and `checkpoint.save_best: true` stage 2's
`method_kwargs.val_robust_every`. Absent blocks or keys mean what they meant before them: CSV logs
only, `last.ckpt` only.

Learning rates follow solo-learn main's rule (`parse_cfg`, applied by its main_pretrain.py), on
both hosts (`learning_rates`): `optimizer.lr` is multiplied by batch_size * devices * num_nodes
/ 256, and so is `optimizer.classifier_lr` when `data.val_path` is set (main's condition).
Solo-learn's BaseMethod (either host) multiplies both again by `accumulate_grad_batches`.
"""
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from solo_ncp.config.schema import RUN_BLOCKS, ConfigError, trains_stage2
from solo_ncp.data.custom import CUSTOM, CustomData, config_custom_data
from solo_ncp.data.registry import DATASETS, DatasetSpec, get_spec


TRAINING_SEED = 5
"""The seed of a training whose config sets none (`seed`): that of solo-learn's own configs."""
LR_REFERENCE_BATCH = 256


def select(cfg: DictConfig, key: str, default=None):
    value = OmegaConf.select(cfg, key)
    return default if value is None else value


def custom_data_of(cfg: DictConfig) -> Optional[CustomData]:
    """The checked folders, image size and statistics of `data.dataset: custom`
    (`solo_ncp.data.custom.config_custom_data`); None for a registered dataset."""
    if cfg.data.dataset != CUSTOM:
        return None
    try:
        augmentations = cfg.get("augmentations")
        augmentations = OmegaConf.to_container(augmentations, resolve=True) if augmentations else []
        return config_custom_data(OmegaConf.to_container(cfg.data, resolve=True), augmentations,
                                  validate=bool(select(cfg, "data.val", True)))
    except OmegaConfBaseException as err:
        raise ConfigError(f"cannot resolve the config: {str(err).splitlines()[0]}") from None


def dataset_spec(cfg: DictConfig) -> DatasetSpec:
    """The DatasetSpec of `data.dataset`: the registry's, or that of the custom folders. A
    registered dataset is normalised with its registry statistics (which checkpoints record): an
    `augmentations` entry's `mean`/`std` (custom data's) is refused there."""
    custom = custom_data_of(cfg)
    if custom is not None:
        return custom.spec
    spec = get_spec(cfg.data.dataset)
    for index, entry in enumerate(cfg.get("augmentations") or []):
        for key in ("mean", "std"):
            if isinstance(entry, DictConfig) and entry.get(key) is not None:
                raise ConfigError(
                    f"augmentations.{index}.{key} is for data.dataset=custom: {spec.name} is normalised with "
                    f"its own statistics ({key} {list(getattr(spec, key))}), which its checkpoints record; "
                    "remove it")
    return spec


def check_stage2_crop_size(cfg: DictConfig) -> None:
    """Refuses an `augmentations.0.crop_size` other than the image size of a registered dataset in
    a stage-2 config: stage 2 pads and crops back to the image size (solo-learn main's launcher:
    resizes to the crop size), while the clustering set, the validation set and every evaluation see
    the images at that size (a larger crop failed mid-fit in torchvision's RandomCrop, a smaller one
    trained on another protocol than the paper's). Custom data takes its image size from the crop
    size; an absent crop size is the image size."""
    spec = DATASETS.get(str(select(cfg, "data.dataset")))
    crop = select(cfg, "augmentations.0.crop_size") if cfg.get("augmentations") else None
    if spec is not None and crop is not None and int(crop) != spec.image_size:
        size, owner = spec.image_size, spec.name + ("'" if spec.name.endswith("s") else "'s")
        raise ConfigError(f"augmentations.0.crop_size={crop} but {owner} images are {size}x{size} pixels: "
                          f"stage 2 pads and crops back to the image size; set augmentations.0.crop_size={size}")


STRONG_AUGMENTATIONS = ("color_jitter", "grayscale", "gaussian_blur", "solarization", "equalization")
"""solo-learn's augmentations a stage-2 config may list (solo-learn main's main_pretrain.py reads the
file) only switched off: `solo-ncp train` applies the paper's weak augmentation alone."""


def check_stage2_augmentation(cfg: DictConfig) -> None:
    """Refuses what `solo-ncp train` would not apply: a strong augmentation switched on
    (STRONG_AUGMENTATIONS with prob > 0, `rrc.enabled`) or a second pipeline. Stage 2 trains on one
    view, padded, cropped back (`crop_size`) and flipped (`pad_crop`, `horizontal_flip`)."""
    pipelines = cfg.get("augmentations") or []
    weak = ("stage 2 trains on the paper's weak augmentation only (pad_crop, a crop of crop_size, "
            "horizontal_flip), one view")
    if len(pipelines) > 1:
        raise ConfigError(f"augmentations has {len(pipelines)} pipelines, and solo-ncp train reads only the first: "
                          f"{weak}: remove the others")
    first = pipelines[0] if pipelines else {}
    switched_on = [f"{name}.prob={select(first, f'{name}.prob')}" for name in STRONG_AUGMENTATIONS
                   if float(select(first, f"{name}.prob", 0) or 0) > 0]
    switched_on += ["rrc.enabled=true"] if select(first, "rrc.enabled", False) else []
    if switched_on:
        raise ConfigError(f"augmentations.0.{switched_on[0]}: {weak}, so solo-ncp train would not apply it: switch "
                          "it off (its prob 0, rrc.enabled false)")


def run_block(cfg: DictConfig, name: str) -> Dict:
    """The block `name` of `RUN_BLOCKS` as a plain dict without its null keys ({} when absent).
    Keys the block does not take were refused with the config's other unread keys
    (`check_config_keys`)."""
    block = cfg.get(name)
    if block is None:
        return {}
    if not isinstance(block, DictConfig):
        raise ConfigError(f"`{name}: {block}` must be a block of keys ({', '.join(RUN_BLOCKS[name])})")
    return {k: v for k, v in OmegaConf.to_container(block, resolve=True).items() if v is not None}


def _flag(block: Dict, name: str, key: str) -> bool:
    """`block[key]` (false when absent), refused unless true or false."""
    value = block.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"`{name}.{key}: {value}` must be true or false")
    return value


@dataclass(frozen=True)
class WandbSettings:
    """An enabled `wandb:` block (solo-learn main's keys): the W&B `project` and `entity` (null:
    the account's default entity) the run logs to, and `offline` (write the run under the run
    folder only, for a later `wandb sync`)."""

    project: str
    entity: Optional[str]
    offline: bool


@dataclass(frozen=True)
class LoggerSettings:
    """Which loggers a run writes besides the CSV log (always written): `wandb` (None: W&B off)
    and `tensorboard`."""

    wandb: Optional[WandbSettings]
    tensorboard: bool


def logger_settings(cfg: DictConfig) -> LoggerSettings:
    """The checked `wandb:` and `tensorboard:` blocks. solo-learn's own wandb/private.yaml writes
    `entity: None`, which YAML reads as the text "None": it means the default entity here."""
    wandb = run_block(cfg, "wandb")
    enabled, offline = _flag(wandb, "wandb", "enabled"), _flag(wandb, "wandb", "offline")
    settings = None
    if enabled:
        project = str(wandb.get("project", "")).strip()
        if not project:
            raise ConfigError(
                "wandb.enabled is true but `wandb.project` is not set: add `project: <your W&B "
                "project>` under `wandb:` in the config or pass wandb.project=<name>, or set "
                "wandb.enabled=false"
            )
        entity = str(wandb.get("entity", "None"))
        settings = WandbSettings(project=project, entity=None if entity == "None" else entity,
                                 offline=offline)
    return LoggerSettings(wandb=settings,
                          tensorboard=_flag(run_block(cfg, "tensorboard"), "tensorboard", "enabled"))


@dataclass(frozen=True)
class CheckpointHistory:
    """`checkpoint.frequency` (epochs, >= 1, default 1) and `checkpoint.keep_prev` (default false):
    with keep_prev, a checkpoint is kept after every frequency-th epoch besides `last.ckpt`;
    without, only `last.ckpt` (solo-learn main's Checkpointer without keep_prev keeps only its
    newest checkpoint, which here is `last.ckpt`). `checkpoint.save_best` (default false): also
    keep `best.ckpt`, the epoch of the best held-out PGD-20 accuracy, which stage 2 measures every
    `method_kwargs.val_robust_every` epochs (needed >= 1)."""

    frequency: int
    keep_prev: bool
    save_best: bool = False


def checkpoint_history(cfg: DictConfig) -> CheckpointHistory:
    """The checked `checkpoint:` block's history settings (see `CheckpointHistory`)."""
    block = run_block(cfg, "checkpoint")
    frequency = block.get("frequency", 1)
    if isinstance(frequency, bool) or not isinstance(frequency, int) or frequency < 1:
        raise ConfigError(f"`checkpoint.frequency: {frequency}` must be a whole number of epochs, "
                          "1 or more")
    if not _flag({"enabled": True, **block}, "checkpoint", "enabled"):
        raise ConfigError("checkpoint.enabled=false: solo-ncp always writes last.ckpt after every epoch (--resume, "
                          "stage 2 and every later command read it); remove it, or set it to true")
    save_best = _flag(block, "checkpoint", "save_best")
    if save_best and not select(cfg, "method_kwargs.val_robust_every", 0):
        fix = ("set method_kwargs.val_robust_every=1 (or more), or drop checkpoint.save_best" if trains_stage2(cfg) else
               f"{cfg.method} trains stage 1, which keeps last.ckpt only: drop checkpoint.save_best")
        raise ConfigError(
            "checkpoint.save_best=true keeps best.ckpt by the held-out robust accuracy that only stage 2 "
            f"(solo-ncp train) measures, every method_kwargs.val_robust_every epochs: {fix}"
        )
    return CheckpointHistory(frequency=frequency, keep_prev=_flag(block, "checkpoint", "keep_prev"),
                             save_best=save_best)


def device_count(devices) -> int:
    """How many devices a Trainer given `devices` trains on: a list's length, or a count
    (int or digit string)."""
    if isinstance(devices, (list, tuple, ListConfig)):
        return len(devices)
    if str(devices).isdigit() and int(devices) > 0:
        return int(devices)
    raise ConfigError(
        f"devices={devices!r}: the learning rate is scaled by the number of devices (solo-learn "
        "main's rule), so give devices as a count (devices=1) or a list (devices=[0,1])"
    )


@dataclass(frozen=True)
class LearningRates:
    """solo-learn main's learning-rate rule (its `parse_cfg`, run by main_pretrain.py): `lr` is
    `base_lr * factor`, factor = batch_size * devices * nodes / 256 (batch_size per device);
    `classifier_lr` is `base_classifier_lr * factor` when `scale_classifier` (main scales it
    only when `data.val_path` is set), else `base_classifier_lr`. Solo-learn's BaseMethod
    multiplies both by `accumulate` (accumulate_grad_batches) again."""

    base_lr: float
    base_classifier_lr: float
    batch_size: int
    devices: int
    nodes: int
    scale_classifier: bool
    accumulate: int = 1

    @property
    def factor(self) -> float:
        return self.batch_size * self.devices * self.nodes / LR_REFERENCE_BATCH

    @property
    def lr(self) -> float:
        return self.base_lr * self.factor

    @property
    def classifier_lr(self) -> float:
        return self.base_classifier_lr * (self.factor if self.scale_classifier else 1.0)

    def describe(self) -> str:
        """One line: the rule with this run's numbers and the lrs the optimizer starts from."""
        accumulate = f" x accumulate_grad_batches {self.accumulate}" if self.accumulate > 1 else ""
        return (
            f"learning rate (solo-learn main's rule): optimizer.lr {self.base_lr:g} x batch "
            f"{self.batch_size} x {self.devices} device(s) x {self.nodes} node(s) / "
            f"{LR_REFERENCE_BATCH}{accumulate} = {self.lr * self.accumulate:g}; classifier_lr "
            f"{self.base_classifier_lr:g} -> {self.classifier_lr * self.accumulate:g}"
            + ("" if self.scale_classifier else " (scaled only with data.val_path, as main)")
        )


def learning_rates(cfg: DictConfig) -> LearningRates:
    """The learning rates a config trains with (see `LearningRates`)."""
    return LearningRates(
        base_lr=float(cfg.optimizer.lr),
        base_classifier_lr=float(select(cfg, "optimizer.classifier_lr", 0.1)),
        batch_size=int(cfg.optimizer.batch_size),
        devices=device_count(select(cfg, "devices", 1)),
        nodes=int(select(cfg, "num_nodes", 1)),
        scale_classifier=select(cfg, "data.val_path") is not None,
        accumulate=int(select(cfg, "accumulate_grad_batches", 1)),
    )


def check_pipelines_102(cfg: DictConfig) -> None:
    """ConfigError for an `augmentations` entry asking what solo-learn 1.0.2's transform cannot do
    (solo-learn main's can): equalization, and no random resized crop (`rrc.enabled: false`, which
    1.0.2 ignored: it always crops at random)."""
    for i, aug in enumerate(cfg.get("augmentations") or []):
        if select(aug, "equalization.prob", 0.0) > 0:
            raise ConfigError(f"augmentations.{i}.equalization is not available in solo-learn 1.0.2: set its prob "
                              "to 0.0, or train on solo-learn main")
        if select(aug, "rrc.enabled", True) is False:
            raise ConfigError(f"augmentations.{i}.rrc.enabled=false is not available in solo-learn 1.0.2, whose "
                              "pipeline always crops at random (rrc.crop_min_scale/crop_max_scale set its scale): "
                              "set it to true, or train on solo-learn main")


PIPELINE_DEFAULTS = {
    "rrc": {"enabled": True, "crop_min_scale": 0.08, "crop_max_scale": 1.0},
    "color_jitter": {"prob": 0.0, "brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0},
    "grayscale": {"prob": 0.0}, "gaussian_blur": {"prob": 0.0}, "solarization": {"prob": 0.0},
    "equalization": {"prob": 0.0}, "horizontal_flip": {"prob": 0.5},
}
"""What an `augmentations` entry's step or key left out means, on either host: a random resized
crop of scale 0.08-1.0, a horizontal flip half the time, no other step (solo-learn main's own
`build_transform_pipeline` fails on any step left out)."""


def _without_nulls(value):
    """A plain config value with every null entry of its blocks left out, at any depth."""
    if not isinstance(value, dict):
        return value
    return {key: _without_nulls(item) for key, item in value.items() if item is not None}


def pipeline_entry(aug: DictConfig) -> DictConfig:
    """An `augmentations` entry with `PIPELINE_DEFAULTS` under what it gives (null: left out)."""
    return OmegaConf.merge(PIPELINE_DEFAULTS, _without_nulls(OmegaConf.to_container(aug, resolve=True)))


def augmentation_pipelines(cfg: DictConfig) -> Tuple[Dict, ...]:
    """solo-learn 1.0.2 transform kwargs (+ `num_crops`) for each entry of `augmentations`."""
    pipelines = []
    for aug in map(pipeline_entry, cfg.get("augmentations") or []):
        pipelines.append(
            dict(
                brightness=aug.color_jitter.brightness,
                contrast=aug.color_jitter.contrast,
                saturation=aug.color_jitter.saturation,
                hue=aug.color_jitter.hue,
                color_jitter_prob=aug.color_jitter.prob,
                gray_scale_prob=aug.grayscale.prob,
                horizontal_flip_prob=aug.horizontal_flip.prob,
                gaussian_prob=aug.gaussian_blur.prob,
                solarization_prob=aug.solarization.prob,
                min_scale=aug.rrc.crop_min_scale,
                max_scale=aug.rrc.crop_max_scale,
                crop_size=int(aug.crop_size),
                num_crops=int(aug.num_crops),
            )
        )
    if not pipelines:
        raise ConfigError("config has no `augmentations` list (one entry per pipeline)")
    return tuple(pipelines)


def crop_counts(pipelines: Sequence[Dict]) -> Tuple[int, int]:
    """(num_large_crops, num_small_crops): crops of the largest size count as large."""
    largest = max(p["crop_size"] for p in pipelines)
    large = sum(p["num_crops"] for p in pipelines if p["crop_size"] == largest)
    return large, sum(p["num_crops"] for p in pipelines) - large
