"""`solo-ncp pretrain`: stage 1, a solo-learn method (SimCLR) through a Lightning 1.9 Trainer."""
import argparse

from solo_ncp.config import ConfigError, augmentation_pipelines, crop_counts, load_config, select, to_solo102_kwargs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config, e.g. zoo_configs/cifar10/simclr.yaml")
    parser.add_argument("--resume", action="store_true", help="continue from <run dir>/last.ckpt")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. max_epochs=2")


def run(args: argparse.Namespace) -> int:
    import pytorch_lightning as pl
    from solo.methods import METHODS
    from torchvision import transforms

    from solo_ncp.data import IndexedDataset, get_spec, normalization_of, simclr_transform
    from solo_ncp.launch.data import config_dataset, eval_loader, train_loader
    from solo_ncp.launch.trainer import build_trainer, resume_checkpoint, run_dir, save_config
    from solo_ncp.models import BackboneSpec

    cfg = load_config(args.config, args.overrides)
    pl.seed_everything(int(cfg.get("seed", 5)), workers=True)
    spec = get_spec(cfg.data.dataset)
    pipelines = augmentation_pipelines(cfg)
    transform = simclr_transform(spec, pipelines)
    normalization = normalization_of(transform)
    train_set = IndexedDataset(config_dataset(cfg, "pretrain", transform))
    val_loader = None
    if select(cfg, "data.val", True):
        val_transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(**normalization)])
        val_loader = eval_loader(cfg, config_dataset(cfg, "test", val_transform))

    if cfg.method not in METHODS:
        raise ConfigError(f"method={cfg.method!r} is not registered: choose one of {', '.join(METHODS)}")
    kwargs = to_solo102_kwargs(cfg, crop_counts(pipelines))
    model = METHODS[cfg.method](**kwargs)
    meta = {
        "format": 1,
        "method": str(cfg.method),
        "dataset": spec.name,
        "backbone": BackboneSpec(
            kwargs["encoder"], kwargs["backbone_args"]["cifar"],
            kwargs["backbone_args"]["zero_init_residual"],
        ).to_dict(),
        "normalization": {k: list(v) for k, v in normalization.items()},
        "dual_bn": False,
    }
    folder = run_dir(cfg)
    ckpt = resume_checkpoint(folder, args.resume, bool(select(cfg, "auto_resume.enabled", False)))
    save_config(cfg, folder)
    trainer = build_trainer(cfg, folder, meta)
    trainer.fit(model, train_loader(cfg, train_set), val_loader, ckpt_path=str(ckpt) if ckpt else None)
    print(f"[solo-ncp] stage-1 checkpoint: {folder / 'last.ckpt'}")
    return 0
