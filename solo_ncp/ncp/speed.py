"""Speed switches of the stage-2 step that leave its results (up to fp32 rounding) and every
state-dict key unchanged: channels_last memory format and compiled encoder forwards."""
import torch
from torch import nn


def use_channels_last(*modules: nn.Module) -> None:
    """Stores every 4-D parameter and buffer of `modules` as (N, H, W, C) in memory (shapes and
    names unchanged), the layout cuDNN's fast convolution kernels read."""
    for module in modules:
        module.to(memory_format=torch.channels_last)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """x: (B, C, H, W), same values, stored channels_last."""
    return x.contiguous(memory_format=torch.channels_last)


def compile_forward(*modules: nn.Module) -> None:
    """Replaces each module's forward by `torch.compile` of it, on the instance: the module itself
    stays in its parent, so state-dict keys gain no `_orig_mod.` prefix."""
    for module in modules:
        module.forward = torch.compile(module.forward)
