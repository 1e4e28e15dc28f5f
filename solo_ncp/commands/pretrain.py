"""`solo-ncp pretrain`: stage 1, a solo-learn method (SimCLR) through the host's Lightning Trainer."""
import argparse
from typing import Optional, Sequence

from solo_ncp.commands._encoder import path_text
from solo_ncp.config import (
    TRAINING_SEED,
    augmentation_pipelines,
    crop_counts,
    custom_data_of,
    dataset_spec,
    load_config,
    select,
)


def add_run_arguments(parser: argparse.ArgumentParser, example: str) -> None:
    """Arguments shared by the training commands (pretrain, train)."""
    parser.add_argument("--config", required=True, type=path_text,
                        help=f"a YAML file, or a bundled config <dataset>/<name>, e.g. {example}")
    parser.add_argument("--resume", action="store_true", help="continue from <run dir>/last.ckpt")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="load checkpoints that need a full (unsafe) unpickling: --resume's "
                             "last.ckpt, and train's stage-1 teacher (method_kwargs.teacher_ckpt)")
    parser.add_argument("overrides", nargs="*",
                        help="Hydra-style overrides: key=value, +new.key=value, ++key=value, ~key")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser, "cifar10/simclr")


def data_record(cfg) -> dict:
    """The checkpoint metadata's `data` entry of custom data (its folders and image size, for
    select-k, eval, poc and plot to find by default); nothing for a registered dataset."""
    custom = custom_data_of(cfg)
    return {} if custom is None else {"data": custom.record()}


def method_override(overrides: Sequence[str]) -> Optional[str]:
    """The override that sets the run's `method` (the last of them), None where the config does."""
    from solo_ncp.config.overrides import override_key

    return next((override for override in reversed(overrides) if override_key(override) == "method"), None)


def run(args: argparse.Namespace) -> int:
    from torchvision import transforms

    from solo_ncp.data import IndexedDataset, normalization_of
    from solo_ncp.launch.compat import pretrain_transform, seed_everything
    from solo_ncp.launch.data import config_dataset
    from solo_ncp.launch.methods import backbone_meta, build_method, check_views
    from solo_ncp.launch.trainer import fit, open_run
    from solo_ncp.methods import solo_ncp_methods

    def check_stage1_method(cfg) -> None:
        if str(cfg.method) in solo_ncp_methods():
            override = method_override(args.overrides)
            fix = f"drop the override {override}" if override else f"solo-ncp train --config {args.config} ..."
            raise ValueError(f"method={cfg.method} is stage 2, which `solo-ncp train` runs (from a stage-1 "
                             f"checkpoint); pretrain trains stage 1 (simclr, ...): {fix}")

    cfg = load_config(args.config, args.overrides, check_method=check_stage1_method)
    if select(cfg, "knn_eval.enabled", False) and not select(cfg, "data.val", True):
        raise ValueError("knn_eval.enabled=true scores the test split's features, which data.val=false leaves out: "
                         "set data.val=true, or turn the k-NN off (knn_eval.enabled=false)")
    check_views(cfg, crop_counts(augmentation_pipelines(cfg)))
    with open_run(cfg, args.resume) as run_folder:
        seed_everything(int(select(cfg, "seed", TRAINING_SEED)), workers=True)
        spec = dataset_spec(cfg)
        pipelines = augmentation_pipelines(cfg)
        transform = pretrain_transform(cfg)
        normalization = normalization_of(transform)
        train_set = IndexedDataset(config_dataset(cfg, "pretrain", transform))
        val_set = None
        if select(cfg, "data.val", True):
            val_transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(**normalization)])
            val_set = config_dataset(cfg, "test", val_transform)
        model = build_method(cfg, crop_counts(pipelines))
        meta = {
            "format": 1,
            "method": str(cfg.method),
            "dataset": spec.name,
            "backbone": backbone_meta(model),
            "normalization": {k: list(v) for k, v in normalization.items()},
            "dual_bn": False,
            **data_record(cfg),
        }
        last = fit(cfg, model, train_set, val_set, meta, run_folder, trust=args.trust_checkpoint)
    print(f"[solo-ncp] stage-1 checkpoint: {last}")
    return 0
