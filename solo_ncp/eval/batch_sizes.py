"""Batch sizes of the attacks at test time (PGD-20 and AutoAttack), chosen for the device.

Each attack step keeps one forward's activations for its backward pass. For a CIFAR ResNet-18 at
32 px in fp32 that is about 10 MB per image (stem and layer1 hold ~15 maps of 64 x 32 x 32 floats,
layers 2-4 together about half as much again, ~2.5 M floats; plus cuDNN workspace), so 2,048
images take ~20 GB and leave room on a 40-80 GB GPU. AutoAttack holds several copies of its batch
(best points, momentum, FAB's per-class gradients), hence half as many. On the CPU the batch
stays that of the head (--batch-size), as before these options existed. A WideResNet-34-10 needs
roughly 10x the memory per image: pass smaller values there.
"""
import argparse
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:  # imported where used: the console script's options are built without torch
    import torch

AUTO = "auto"
CUDA_PGD_BATCH = 2048
CUDA_AA_BATCH = 1024

BatchOption = Union[str, int]
"""AUTO or a batch size (an int, checked >= 1 by the caller)."""


def parse_batch_option(text: str) -> BatchOption:
    """argparse type: 'auto' -> AUTO; an integer string -> int (sign checked by the caller)."""
    if text == AUTO:
        return AUTO
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {AUTO} or an integer batch size, got {text!r}") from None


def attack_batch_size(option: BatchOption, device: "torch.device", cuda_default: int, cpu_default: int) -> int:
    """The batch size for `option`: itself if an int, else `cuda_default` on CUDA, `cpu_default` elsewhere."""
    if option != AUTO:
        return option
    import torch

    return cuda_default if torch.device(device).type == "cuda" else cpu_default
