"""Run configs in solo-learn main's Hydra schema, read with OmegaConf, mapped onto solo-learn 1.0.2.

A config file is a YAML dict with solo-learn main's top-level keys (`name`, `method`, `backbone`,
`method_kwargs`, `data`, `augmentations`, `optimizer`, `scheduler`, `checkpoint`, `auto_resume`,
`max_epochs`, `devices`, `accelerator`, `strategy`, `precision`, `seed`).

The package, from the bottom up:
- `schema`: the keys a config may hold (`SCHEMA`, `LAUNCHER_KEYS`), `ConfigError`, and the check
  that every key is read by solo-ncp or by the host's method class (`check_config_keys`);
- `overrides`: command-line overrides in Hydra's grammar (`with_overrides`);
- `settings`: what a config sets, checked: dataset, logger and checkpoint blocks, learning rates,
  augmentation pipelines;
- `hosts`: the config as solo-learn 1.0.2's keyword arguments or solo-learn main's `cfg`;
- `loading`: `load_config`, the file and its overrides through every check.
"""
from solo_ncp.config.hosts import lightning_precision, to_solo102_kwargs, to_solo_main_cfg
from solo_ncp.config.loading import load_config, read_config_file
from solo_ncp.config.schema import (
    LAUNCHER_KEYS,
    ConfigError,
    method_class,
    method_keys,
    unread_key_error,
)
from solo_ncp.config.settings import (
    TRAINING_SEED,
    LearningRates,
    WandbSettings,
    augmentation_pipelines,
    check_stage2_augmentation,
    check_stage2_crop_size,
    checkpoint_history,
    crop_counts,
    custom_data_of,
    dataset_spec,
    device_count,
    learning_rates,
    logger_settings,
    select,
)

__all__ = [
    "LAUNCHER_KEYS", "TRAINING_SEED", "ConfigError", "LearningRates", "WandbSettings", "augmentation_pipelines",
    "check_stage2_augmentation", "check_stage2_crop_size", "checkpoint_history", "crop_counts", "custom_data_of", "dataset_spec",
    "device_count", "learning_rates", "lightning_precision", "load_config", "logger_settings",
    "method_class", "method_keys", "read_config_file", "select", "to_solo102_kwargs",
    "to_solo_main_cfg", "unread_key_error",
]
