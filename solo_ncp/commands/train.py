"""`solo-ncp train`: stage 2 (`ncp`, or the `deacl` baseline) from a stage-1 checkpoint."""
import argparse

from omegaconf import OmegaConf

from solo_ncp.commands.pretrain import add_run_arguments, data_record, method_override
from solo_ncp.config import (
    TRAINING_SEED,
    check_stage2_augmentation,
    check_stage2_crop_size,
    dataset_spec,
    load_config,
    select,
)
from solo_ncp.threat_model import check_l2_reach


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser, "cifar10/ncp")


def _first_augmentation(cfg):
    """`augmentations[0]`; an empty block when the config has none."""
    return (cfg.get("augmentations") or [OmegaConf.create({})])[0]


def weak_augmentation_of(cfg):
    """Stage 2's pad-and-crop + flip, from `augmentations[0]` (crop_size, default: the dataset's
    image size; pad_crop.padding; horizontal_flip.prob)."""
    from solo_ncp.data import weak_augmentation

    aug = _first_augmentation(cfg)
    crop = select(aug, "crop_size")
    return weak_augmentation(
        int(crop) if crop is not None else dataset_spec(cfg).image_size,
        padding=int(select(aug, "pad_crop.padding", 4)),
        flip_prob=float(select(aug, "horizontal_flip.prob", 0.5)),
    )


def stage2_data(cfg, model):
    """(training set: `IndexedDataset` of the weakly augmented training images, clustering set: the
    same images without augmentation, (x in [0, 1], y)). With the robust monitor on
    (`method_kwargs.val_robust_every`), `val_robust_n` images drawn with `val_robust_seed`
    (`held_out_split`) are left out of both and given to `model.set_val_robust_data`."""
    from torch.utils.data import Subset

    from solo_ncp.data import IndexedDataset
    from solo_ncp.launch.data import config_dataset, held_out_split

    train_set = config_dataset(cfg, "pretrain", weak_augmentation_of(cfg))
    cluster_set = config_dataset(cfg, "pretrain", None)
    if model.val_robust_every:
        trained, held_out = held_out_split(len(cluster_set), model.val_robust_n, model.val_robust_seed)
        model.set_val_robust_data(Subset(cluster_set, held_out), int(cfg.optimizer.batch_size))
        train_set, cluster_set = Subset(train_set, trained), Subset(cluster_set, trained)
    return IndexedDataset(train_set), cluster_set


def run(args: argparse.Namespace) -> int:
    from solo_ncp.launch.compat import seed_everything
    from solo_ncp.launch.data import config_dataset
    from solo_ncp.launch.methods import build_method
    from solo_ncp.launch.trainer import fit, open_run
    from solo_ncp.methods import solo_ncp_methods
    from solo_ncp.methods.stage2_options import take_options

    def check_stage2_method(cfg) -> None:
        stage2 = solo_ncp_methods()
        if str(cfg.method) not in stage2:
            override = method_override(args.overrides)
            fix = (f"drop the override {override}" if override else
                   f"run it with `solo-ncp pretrain --config {args.config}`, or pass an ncp / deacl config to train")
            raise ValueError(f"method={cfg.method} is no stage-2 method ({', '.join(stage2)}): {fix}")

    cfg = load_config(args.config, args.overrides, check_method=check_stage2_method)
    check_stage2_crop_size(cfg)
    check_stage2_augmentation(cfg)
    if select(cfg, "method_kwargs.teacher_ckpt") is None:
        raise ValueError("stage 2 needs method_kwargs.teacher_ckpt=<stage-1 last.ckpt>")
    options = take_options(OmegaConf.to_container(cfg.method_kwargs, resolve=True))
    if options["kmeans_backend"] == "kmcuda":
        import torch

        from solo_ncp.cluster.kmcuda_backend import check_kmcuda_runs
        from solo_ncp.launch.trainer import accelerator_and_devices

        on_cpu = accelerator_and_devices(cfg)[0] == "cpu" or not torch.cuda.is_available()
        on_cpu_fix = "and this run trains on the CPU: set accelerator=gpu on a machine with CUDA"
        check_kmcuda_runs("method_kwargs.kmeans_backend=kmcuda", on_cpu_fix if on_cpu else None,
                          "method_kwargs.kmeans_backend=torch")
    size = dataset_spec(cfg).image_size
    check_l2_reach(options["norm"], options["eps"], (3, size, size), "method_kwargs.eps")
    if args.trust_checkpoint:  # the teacher too (recorded in config.yaml)
        OmegaConf.update(cfg, "method_kwargs.trust_teacher", True, force_add=True)
    with open_run(cfg, args.resume) as run_folder:
        seed_everything(int(select(cfg, "seed", TRAINING_SEED)), workers=True)
        spec = dataset_spec(cfg)
        val_set = config_dataset(cfg, "test", None) if select(cfg, "data.val", True) else None
        extra = {}
        if not select(cfg, "method_kwargs.normalization"):
            extra["normalization"] = {"mean": spec.mean, "std": spec.std}
        model = build_method(cfg, (1, 0), **extra)
        train_set, cluster_set = stage2_data(cfg, model)
        model.set_cluster_data(cluster_set, int(cfg.optimizer.batch_size),
                               int(select(cfg, "data.num_workers", 4)))
        meta = {**model.checkpoint_meta(), "dataset": spec.name, **data_record(cfg)}
        last = fit(cfg, model, train_set, val_set, meta, run_folder, trust=args.trust_checkpoint)
    print(f"[solo-ncp] stage-2 checkpoint: {last}")
    return 0
