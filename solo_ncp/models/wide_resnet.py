"""The WideResNet of TRADES and RobustBench's Linf leaderboard (Zagoruyko & Komodakis 2016, as
Zhang et al. 2019 and Croce et al. 2021 use it), as an encoder: no classifier, no dropout.

depth d = 6n + 4 and widen factor k: a 3x3 stride-1 convolution to 16 channels, three groups of n
pre-activation BasicBlocks with 16k, 32k and 64k channels (strides 1, 2, 2), then BN, ReLU and a
global average pool. A block is BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus its input; the first block of
a group that changes the width shares the first BN-ReLU with a 1x1 shortcut convolution.

Parameter names are RobustBench's (`robustbench.model_zoo.architectures.wide_resnet.WideResNet`,
from TRADES): `conv1`, `block{1,2,3}.layer.{i}.{bn1,conv1,bn2,conv2,convShortcut}`, `bn1`, so an
encoder state dict plus a `fc` Linear loads into RobustBench's model with `strict=True`.
"""
from torch import Tensor, nn

GROUP_WIDTHS = (16, 32, 64)
GROUP_STRIDES = (1, 2, 2)
STEM_WIDTH = 16


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3 plus a shortcut: the input itself, or a 1x1
    convolution of the pre-activated input when the width changes."""

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.convShortcut = (  # RobustBench's parameter name
            nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)
            if in_planes != out_planes else None
        )

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu1(self.bn1(x))
        shortcut = x if self.convShortcut is None else self.convShortcut(pre)
        return shortcut + self.conv2(self.relu2(self.bn2(self.conv1(pre))))


class BlockGroup(nn.Module):
    """`blocks` PreActBlocks, the first going from `in_planes` to `out_planes` at `stride`."""

    def __init__(self, blocks: int, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.layer = nn.Sequential(*(
            PreActBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1)
            for i in range(blocks)
        ))

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """(B, 3, H, W) normalised images -> (B, 64 * widen_factor) features.

    depth: 6n + 4 (28: n = 4, 34: n = 5); widen_factor: k. `num_features` is the output width
    (the attribute solo-learn reads of non-ResNet backbones)."""

    def __init__(self, depth: int = 28, widen_factor: int = 10):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WideResNet depth {depth} is not 6n + 4 with n >= 1: use 28 or 34")
        if widen_factor < 1:
            raise ValueError(f"WideResNet widen_factor {widen_factor} must be >= 1 (10 in TRADES)")
        self.depth, self.widen_factor = depth, widen_factor
        blocks = (depth - 4) // 6
        widths = [STEM_WIDTH] + [w * widen_factor for w in GROUP_WIDTHS]
        self.conv1 = nn.Conv2d(3, STEM_WIDTH, 3, stride=1, padding=1, bias=False)
        self.block1, self.block2, self.block3 = (
            BlockGroup(blocks, widths[i], widths[i + 1], GROUP_STRIDES[i]) for i in range(3)
        )
        self.bn1 = nn.BatchNorm2d(widths[-1])
        self.relu = nn.ReLU(inplace=True)
        self.num_features = widths[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # He et al.'s normal init over fan-out, as TRADES
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.relu(self.bn1(out)).mean(dim=(2, 3))
