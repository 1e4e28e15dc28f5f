"""What differs between the two hosts (see `solo_ncp._host`) for solo-ncp's launchers: the
Lightning under one set of names (`pytorch_lightning` 1.9 beside solo-learn 1.0.2,
`lightning.pytorch` 2 beside solo-learn main), the Trainer values the two spell differently
(`precision`, "no strategy"), and solo-learn's stage-1 transform.
"""
import importlib

from omegaconf import DictConfig, OmegaConf

from solo_ncp._host import current_host

HOST = current_host()
pl = importlib.import_module(HOST.lightning)
Callback = pl.Callback
Trainer = pl.Trainer
seed_everything = pl.seed_everything
_callbacks = importlib.import_module(f"{HOST.lightning}.callbacks")
ModelCheckpoint = _callbacks.ModelCheckpoint
LearningRateMonitor = _callbacks.LearningRateMonitor
TQDMProgressBar = _callbacks.TQDMProgressBar
_loggers = importlib.import_module(f"{HOST.lightning}.loggers")
CSVLogger = _loggers.CSVLogger
TensorBoardLogger = _loggers.TensorBoardLogger
WandbLogger = _loggers.WandbLogger
TorchCheckpointIO = importlib.import_module(f"{HOST.lightning}.plugins").TorchCheckpointIO

LIGHTNING_2_PRECISION = {16: "16-mixed", 32: "32-true", "bf16": "bf16-mixed"}
NO_STRATEGY = "auto" if HOST.is_main else None


def trainer_precision(precision_19, cuda: bool):
    """The host Trainer's spelling of a precision given in Lightning 1.9's form (16, 32, "bf16",
    see `solo_ncp.config.lightning_precision`); 16-bit falls back to 32 bits without CUDA."""
    precision = 32 if precision_19 == 16 and not cuda else precision_19
    return LIGHTNING_2_PRECISION[precision] if HOST.is_main else precision


def pretrain_transform(cfg: DictConfig):
    """Stage 1's multi-crop transform, built by the installed solo-learn from `cfg.augmentations`:
    PIL image -> list of normalised crops. Datasets solo-learn main has no statistics for get
    solo-ncp's (`augmentations[i].mean/std` when given)."""
    from solo_ncp.config import dataset_spec
    from solo_ncp.config.settings import pipeline_entry

    spec = dataset_spec(cfg)
    if not HOST.is_main:
        from solo_ncp.config import augmentation_pipelines
        from solo_ncp.config.settings import check_pipelines_102
        from solo_ncp.data import simclr_transform

        check_pipelines_102(cfg)
        return simclr_transform(spec, augmentation_pipelines(cfg))
    from solo.data.pretrain_dataloader import (
        FullTransformPipeline,
        NCropAugmentation,
        build_transform_pipeline,
    )

    stats = {"mean": list(spec.mean), "std": list(spec.std)}
    return FullTransformPipeline([
        NCropAugmentation(plain_statistics(build_transform_pipeline(spec.name, OmegaConf.merge(stats, aug))),
                          int(aug.num_crops))
        for aug in map(pipeline_entry, cfg.augmentations)
    ])


def plain_statistics(pipeline):
    """`pipeline` (a torchvision Compose) with each Normalize's mean and std as tuples of floats.
    For a dataset it has no statistics for (fashionmnist, digits), solo-learn main normalises with
    the config's omegaconf ListConfigs, which torch reads item by item through Python on every
    image: 0.80 ms per 8x8 digit (2 crops) instead of 0.40 ms, and a window where a Ctrl-C's raise
    became a ValueError (see `solo_ncp.interrupt.interruption`)."""
    from torchvision.transforms import Normalize

    for transform in pipeline.transforms:
        if isinstance(transform, Normalize):
            transform.mean = tuple(float(value) for value in transform.mean)
            transform.std = tuple(float(value) for value in transform.std)
    return pipeline
