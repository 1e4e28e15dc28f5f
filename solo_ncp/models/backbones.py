"""Backbones built exactly as solo-learn builds them, independent of which solo-learn is installed.

ResNets: solo-learn (1.0.2 and main) takes torchvision's ResNet, replaces `fc` by `Identity` and,
for the CIFAR stem, swaps `conv1` for a 3x3 stride-1 convolution (padding 2) and drops the
max-pool; the parameter names therefore match between hosts and between this module and solo-learn.

WideResNets (`WIDE_RESNETS`): the TRADES / RobustBench Linf architecture of
`solo_ncp.models.wide_resnet`, with RobustBench's parameter names. solo-learn has no such backbone
(main's `wide_resnet28w*` is FixMatch's, with biased convolutions and leaky ReLUs):
`solo_ncp.methods.register_backbones` adds these names to the installed solo-learn.
"""
from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

from solo_ncp.models.wide_resnet import STEM_WIDTH, WideResNet

RESNETS = ("resnet18", "resnet50")
WIDE_RESNETS = {"wide_resnet28_10": (28, 10), "wide_resnet34_10": (34, 10)}
"""name -> (depth, default widen_factor); named as torchvision's `wide_resnet50_2` (depth, width)."""
SUPPORTED = RESNETS + tuple(WIDE_RESNETS)
WIDE_RESNET_KWARGS = ("widen_factor", "cifar", "zero_init_residual")
RESNET_KWARGS = ("cifar", "zero_init_residual")
"""The `backbone.kwargs` a ResNet of solo-ncp's takes: what a checkpoint's spec records and
`build_backbone` rebuilds (torchvision's other ResNet options would build another network)."""
"""What a WideResNet reads of solo-learn's backbone kwargs: its width, and the two keys solo-learn
passes to every ResNet-named backbone (`cifar` ignored, `zero_init_residual` must be false)."""


@dataclass(frozen=True)
class BackboneSpec:
    """What `build_backbone` builds; a checkpoint's `solo_ncp.backbone` entry (`to_dict`).

    name: one of `SUPPORTED`.
    cifar: ResNets: the CIFAR stem (3x3 stride-1 conv1, no max-pool) instead of ImageNet's. A
        WideResNet has only that stem: True for them, whatever is given.
    zero_init_residual: torchvision's ResNet option (each block's last BN starts at zero); a
        pre-activation WideResNet has no such BN, so it must be False for them.
    widen_factor: a WideResNet's k (group widths 16k, 32k, 64k; default: the name's, 10); None
        for ResNets.
    """

    name: str = "resnet18"
    cifar: bool = True
    zero_init_residual: bool = False
    widen_factor: Optional[int] = None

    def __post_init__(self):
        if self.name not in WIDE_RESNETS:
            if self.widen_factor is not None:
                raise ValueError(
                    f"backbone.kwargs.widen_factor is a WideResNet option and {self.name} has "
                    f"none: remove it, or set backbone.name to {' or '.join(WIDE_RESNETS)}"
                )
            return
        if self.zero_init_residual:
            raise ValueError(
                f"backbone.kwargs.zero_init_residual is a torchvision ResNet option; {self.name} "
                "(pre-activation blocks) has none: remove it"
            )
        widen = WIDE_RESNETS[self.name][1] if self.widen_factor is None else self.widen_factor
        if isinstance(widen, bool) or not isinstance(widen, int) or widen < 1:
            raise ValueError(f"backbone.kwargs.widen_factor={widen!r} must be an integer >= 1 "
                             f"(10 for {self.name} as published)")
        object.__setattr__(self, "cifar", True)
        object.__setattr__(self, "widen_factor", widen)

    @classmethod
    def from_kwargs(cls, name: str, kwargs: Mapping[str, Any]) -> "BackboneSpec":
        """The spec of solo-learn's backbone name and kwargs (main: `backbone.name`,
        `backbone.kwargs`; 1.0.2: `encoder`, `backbone_args`). ResNets read `cifar` (default
        False, as solo-learn's) and `zero_init_residual`; WideResNets read `widen_factor` and
        refuse keys outside `WIDE_RESNET_KWARGS`, ResNets outside `RESNET_KWARGS`."""
        known = WIDE_RESNET_KWARGS if name in WIDE_RESNETS else RESNET_KWARGS
        unknown = sorted(set(kwargs) - set(WIDE_RESNET_KWARGS))  # the other family's: __post_init__ says so
        if unknown:
            raise ValueError(f"backbone.kwargs.{unknown[0]} is not an option of {name}: "
                             f"remove it (its options: {', '.join(known)})")
        return cls(name, bool(kwargs.get("cifar", False)),
                   bool(kwargs.get("zero_init_residual", False)), kwargs.get("widen_factor"))

    def to_dict(self) -> Dict:
        """Plain types; ResNets keep the three keys of earlier checkpoints (no widen_factor)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def describe(self) -> str:
        """"resnet18 (cifar stem: True)", "wide_resnet28_10 (widen_factor: 10)"."""
        if self.name in WIDE_RESNETS:
            return f"{self.name} (widen_factor: {self.widen_factor})"
        return f"{self.name} (cifar stem: {self.cifar})"


def build_backbone(spec: BackboneSpec) -> nn.Module:
    """Returns the encoder: (B, 3, H, W) normalised images -> (B, D) features (`features_dim`:
    512 or 2048 for ResNet-18/50, 64 * widen_factor for WideResNets)."""
    if spec.name not in SUPPORTED:
        raise ValueError(f"unsupported backbone {spec.name!r}: choose one of {', '.join(SUPPORTED)}")
    if spec.name in WIDE_RESNETS:
        return WideResNet(WIDE_RESNETS[spec.name][0], spec.widen_factor)
    return resnet_encoder(spec.name, spec.cifar, spec.zero_init_residual)


def resnet_encoder(name: str, cifar: bool, zero_init_residual: bool = False) -> nn.Module:
    """torchvision's ResNet `name` as solo-learn builds it: `fc` = Identity and, with `cifar`,
    the CIFAR stem (3x3 stride-1 conv1 with padding 2, no max-pool). Pasted into an export's
    model.py (`solo_ncp.models.export.standalone_source`), so it needs only torch and torchvision."""
    from torchvision import models

    net = getattr(models, name)(zero_init_residual=zero_init_residual)
    net.fc = nn.Identity()
    if cifar:
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
        net.maxpool = nn.Identity()
    return net


def build_named(name: str, **kwargs) -> nn.Module:
    """`build_backbone` from solo-learn's name and kwargs (`BackboneSpec.from_kwargs`): the
    builder registered into solo-learn's BaseMethod."""
    return build_backbone(BackboneSpec.from_kwargs(name, kwargs))


def features_dim(backbone: nn.Module) -> int:
    """Output width of a backbone built by `build_backbone`."""
    return backbone.num_features if isinstance(backbone, WideResNet) else backbone.inplanes


def _infer_wide_resnet(state_dict: Mapping[str, torch.Tensor]) -> BackboneSpec:
    if "conv1.bias" in state_dict:
        raise ValueError(
            "state dict holds a WideResNet with biased convolutions (solo-learn main's FixMatch "
            "wide_resnet28w*), not the TRADES / RobustBench one that solo-ncp builds "
            f"({', '.join(WIDE_RESNETS)})"
        )
    blocks = 1 + max(int(k.split(".")[2]) for k in state_dict if k.startswith("block1.layer."))
    depth = 6 * blocks + 4
    name = next((n for n, (d, _) in WIDE_RESNETS.items() if d == depth), None)
    if name is None:
        raise ValueError(f"state dict holds a WideResNet-{depth}: solo-ncp builds depths "
                         f"{' and '.join(str(d) for d, _ in WIDE_RESNETS.values())} only")
    widen = state_dict["block1.layer.0.conv1.weight"].shape[0] // STEM_WIDTH
    return BackboneSpec(name, widen_factor=widen)


def infer_backbone_spec(state_dict: Mapping[str, torch.Tensor]) -> BackboneSpec:
    """Guesses the spec of an encoder state dict (keys without prefix) from its weight shapes."""
    if "block1.layer.0.conv1.weight" in state_dict:
        return _infer_wide_resnet(state_dict)
    if "conv1.weight" not in state_dict:
        raise ValueError("state dict has no 'conv1.weight': not a ResNet or WideResNet encoder")
    name = "resnet50" if "layer1.0.conv3.weight" in state_dict else "resnet18"
    return BackboneSpec(name=name, cifar=state_dict["conv1.weight"].shape[-1] == 3)
