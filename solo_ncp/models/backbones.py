"""Backbones built exactly as solo-learn builds them, independent of which solo-learn is installed.

solo-learn (1.0.2 and main) takes torchvision's ResNet, replaces `fc` by `Identity` and, for the
CIFAR stem, swaps `conv1` for a 3x3 stride-1 convolution (padding 2) and drops the max-pool; the
parameter names therefore match between hosts and between this module and solo-learn.
"""
from dataclasses import asdict, dataclass
from typing import Dict, Mapping

import torch
from torch import nn

SUPPORTED = ("resnet18", "resnet50")


@dataclass(frozen=True)
class BackboneSpec:
    name: str = "resnet18"
    cifar: bool = True
    zero_init_residual: bool = False

    def to_dict(self) -> Dict:
        return asdict(self)


def build_backbone(spec: BackboneSpec) -> nn.Module:
    """Returns the encoder: (B, 3, H, W) normalised images -> (B, D) features (D = 512 or 2048)."""
    from torchvision import models

    if spec.name not in SUPPORTED:
        raise ValueError(f"unsupported backbone {spec.name!r}: choose one of {', '.join(SUPPORTED)}")
    net = getattr(models, spec.name)(zero_init_residual=spec.zero_init_residual)
    net.fc = nn.Identity()
    if spec.cifar:
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
        net.maxpool = nn.Identity()
    return net


def features_dim(backbone: nn.Module) -> int:
    """Output width of a backbone built by `build_backbone`."""
    return backbone.inplanes


def infer_backbone_spec(state_dict: Mapping[str, torch.Tensor]) -> BackboneSpec:
    """Guesses the spec of an encoder state dict (keys without prefix) from its weight shapes."""
    if "conv1.weight" not in state_dict:
        raise ValueError("state dict has no 'conv1.weight': not a ResNet encoder")
    name = "resnet50" if "layer1.0.conv3.weight" in state_dict else "resnet18"
    return BackboneSpec(name=name, cifar=state_dict["conv1.weight"].shape[-1] == 3)
