"""solo-learn main's side of solo-ncp's configs: which ResNet stem a config builds, and the
training images of a run launched by solo-learn's own main_pretrain.py (for the clustering pass).

solo-learn main gives a ResNet the CIFAR stem (3x3 stride-1 conv1, no max-pool) only for
`data.dataset` cifar10/cifar100 and hands `backbone.kwargs` to torchvision's constructor, which
knows no `cifar`. solo-ncp reads `backbone.kwargs.cifar` (default: the dataset's, so Fashion-MNIST
and digits take the CIFAR stem too) and builds that stem on both hosts, so a config builds the
same network, with the same parameter names, under solo-learn 1.0.2 and main.
"""
import copy
from contextlib import contextmanager
from typing import Iterator

from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import Dataset
from torchvision import transforms

from solo_ncp.data.registry import DATASETS
from solo_ncp.models.backbones import BackboneSpec, build_backbone

MAIN_CIFAR_STEM = ("cifar10", "cifar100")
"""Datasets for which solo-learn main itself builds the CIFAR stem."""


def cifar_stem(cfg: DictConfig) -> bool:
    """`backbone.kwargs.cifar` if set; else solo-ncp's default for the datasets it knows; else
    solo-learn main's own rule."""
    explicit = OmegaConf.select(cfg, "backbone.kwargs.cifar")
    if explicit is not None:
        return bool(explicit)
    dataset = cfg.data.dataset
    return DATASETS[dataset].cifar_stem if dataset in DATASETS else dataset in MAIN_CIFAR_STEM


@contextmanager
def stem_key_hidden(cfg: DictConfig) -> Iterator[DictConfig]:
    """Runs the block (building a solo-learn main method from `cfg`) without
    `backbone.kwargs.cifar`, which solo-learn main would pass on to torchvision's ResNet
    constructor; puts it back afterwards. Everything else the block fills into `cfg` stays, as
    main_pretrain.py relies on it."""
    kwargs = OmegaConf.select(cfg, "backbone.kwargs")
    hidden = kwargs.pop("cifar") if kwargs is not None and "cifar" in kwargs else None
    try:
        yield cfg
    finally:
        if hidden is not None:
            kwargs.cifar = hidden


def match_stem(model: nn.Module, cifar: bool) -> None:
    """Gives a solo-learn main method's ResNet backbone (and momentum backbone) the stem `cifar`
    where solo-learn main built the other one; other backbones are left alone."""
    name = model.backbone_name
    if not name.startswith("resnet") or cifar == (model.cfg.data.dataset in MAIN_CIFAR_STEM):
        return
    reference = build_backbone(BackboneSpec(name, cifar))
    for attr in ("backbone", "momentum_backbone"):
        net = getattr(model, attr, None)
        if net is not None:
            net.conv1, net.maxpool = copy.deepcopy(reference.conv1), copy.deepcopy(reference.maxpool)
    if hasattr(model, "momentum_backbone"):
        from solo.utils.momentum import initialize_momentum_params

        initialize_momentum_params(model.backbone, model.momentum_backbone)


class _WithoutIndex(Dataset):
    """(index, x, y) samples of solo-learn main's datasets as (x, y)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset[index][1:]


def main_pretrain_images(cfg: DictConfig) -> Dataset:
    """The training set that solo-learn main's main_pretrain.py builds from `cfg.data` (same
    images, order and `data.fraction` split), as (x, y) with x (3, S, S) in [0, 1], S =
    `augmentations[0].crop_size` (resized and centre-cropped, no augmentation)."""
    from solo.data.pretrain_dataloader import prepare_datasets

    size = int(cfg.augmentations[0].crop_size)
    transform = transforms.Compose([
        transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
    ])
    dataset = prepare_datasets(
        cfg.data.dataset,
        transform,
        train_data_path=OmegaConf.select(cfg, "data.train_path"),
        data_format=OmegaConf.select(cfg, "data.format", default="image_folder"),
        no_labels=OmegaConf.select(cfg, "data.no_labels", default=False),
        download=False,
        data_fraction=OmegaConf.select(cfg, "data.fraction", default=-1.0),
    )
    return _WithoutIndex(dataset)
