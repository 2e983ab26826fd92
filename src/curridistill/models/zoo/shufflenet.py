"""ShuffleNet V1 and V2, CIFAR variants used in distillation benchmarks (``shufflenetv1``, ``shufflenetv2``).

Papers: Zhang et al., "ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile
Devices", CVPR 2018; Ma et al., "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture
Design", ECCV 2018. Layouts follow RepDistiller's ``models/ShuffleNetv1.py`` (``ShuffleV1``) and
``models/ShuffleNetv2.py`` (``ShuffleV2``), themselves from kuangliu/pytorch-cifar:

* V1: 1x1 conv stem to 24 channels (stride 1, no max pool), three stages of 4/8/4 group-conv bottlenecks
  with 240/480/960 output channels and 3 groups, the first block of each stage at stride 2 concatenating
  an avg-pooled shortcut (its first 1x1 conv is ungrouped in stage 1, as in the paper), global average
  pooling and a linear classifier.
* V2 (``net_size`` 0.5/1/1.5/2, default 1): same 1x1 stem, three stages of one down-sampling block
  followed by 3/7/3 basic (channel split) blocks, a 1x1 conv to 1024 (2048 at size 2), global average
  pooling and a linear classifier. As in the reference, a basic block's depthwise conv output has no
  ReLU, the 1x1 after it does.

Differences from the reference:

* stages are ``stage1``..``stage3`` (reference: ``layer1``..``layer3``), the classifier is ``fc``
  (reference: ``linear``); a tap on ``stageN`` yields the post-activation output (the reference's ``fN``);
* global pooling is adaptive (reference: ``avg_pool2d(out, 4)``, identical at 32x32);
* ``in_channels`` sets the stem's input channels; the forward returns logits only;
* weights keep PyTorch's default initialisation, as the reference does (it applies no custom init).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from curridistill.errors import UserError
from curridistill.models.registry import MODELS

__all__ = ["ShuffleNetV1", "ShuffleNetV2", "channel_shuffle"]


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """[N, g*C', H, W] -> interleave the g groups' channels."""
    if groups == 1:
        return x
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleV1Block(nn.Module):
    """Grouped 1x1-BN-ReLU, shuffle, depthwise 3x3-BN-ReLU, grouped 1x1-BN; add (stride 1) or concat an
    avg-pooled input (stride 2); ReLU."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int, first_group_conv: bool = True):
        super().__init__()
        self.stride = stride
        mid = out_planes // 4
        self.g1 = groups if first_group_conv else 1
        self.conv1 = nn.Conv2d(in_planes, mid, 1, groups=self.g1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_planes, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = channel_shuffle(F.relu(self.bn1(self.conv1(x))), self.g1)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.shortcut(x)
        return F.relu(torch.cat([out, res], 1) if self.stride == 2 else out + res)


class ShuffleNetV1(nn.Module):
    """CIFAR ShuffleNet V1 (g = 3). Stages ``stage1``..``stage3``; classifier ``fc``."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, out_planes: tuple[int, int, int] = (240, 480, 960),
                 num_blocks: tuple[int, int, int] = (4, 8, 4), groups: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        planes = 24
        for i, (width, n) in enumerate(zip(out_planes, num_blocks), start=1):
            blocks = []
            for j in range(n):
                # the stride-2 first block concatenates its input, so it only produces width - planes channels
                blocks.append(ShuffleV1Block(planes, width - planes if j == 0 else width, 2 if j == 0 else 1, groups,
                                             first_group_conv=not (i == 1 and j == 0)))
                planes = width
            self.add_module(f"stage{i}", nn.Sequential(*blocks))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.fc(self.pool(x).flatten(1))


class ShuffleV2Block(nn.Module):
    """Split channels in half; right half: 1x1-BN-ReLU, depthwise 3x3-BN, 1x1-BN-ReLU; concat; shuffle."""

    def __init__(self, channels: int, split_ratio: float = 0.5):
        super().__init__()
        self.split = int(channels * split_ratio)
        c = self.split
        self.conv1 = nn.Conv2d(c, c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, stride=1, padding=1, groups=c, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = x[:, :self.split], x[:, self.split:]
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return channel_shuffle(torch.cat([x1, out], 1), 2)


class ShuffleV2DownBlock(nn.Module):
    """Stride-2 block: left depthwise 3x3/2-BN, 1x1-BN-ReLU; right 1x1-BN-ReLU, depthwise 3x3/2-BN,
    1x1-BN-ReLU; concat; shuffle."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = out_channels // 2
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, stride=2, padding=1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: Tensor) -> Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], 1), 2)


SHUFFLEV2_CONFIGS: dict[float, dict[str, tuple[int, ...]]] = {
    0.5: {"out_channels": (48, 96, 192, 1024), "num_blocks": (3, 7, 3)},
    1.0: {"out_channels": (116, 232, 464, 1024), "num_blocks": (3, 7, 3)},
    1.5: {"out_channels": (176, 352, 704, 1024), "num_blocks": (3, 7, 3)},
    2.0: {"out_channels": (224, 488, 976, 2048), "num_blocks": (3, 7, 3)},
}


class ShuffleNetV2(nn.Module):
    """CIFAR ShuffleNet V2. Stages ``stage1``..``stage3``; head ``conv2``/``bn2``; classifier ``fc``."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, net_size: float = 1.0):
        super().__init__()
        if float(net_size) not in SHUFFLEV2_CONFIGS:
            raise UserError(f"shufflenetv2 kwarg net_size must be one of {sorted(SHUFFLEV2_CONFIGS)}, got {net_size}")
        cfg = SHUFFLEV2_CONFIGS[float(net_size)]
        out_channels, num_blocks = cfg["out_channels"], cfg["num_blocks"]
        self.conv1 = nn.Conv2d(in_channels, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        channels = 24
        for i, (width, n) in enumerate(zip(out_channels[:3], num_blocks), start=1):
            blocks = [ShuffleV2DownBlock(channels, width)] + [ShuffleV2Block(width) for _ in range(n)]
            self.add_module(f"stage{i}", nn.Sequential(*blocks))
            channels = width
        self.conv2 = nn.Conv2d(channels, out_channels[3], 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(out_channels[3], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.stage3(self.stage2(self.stage1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(self.pool(x).flatten(1))


@MODELS.register("shufflenetv1")
def shufflenetv1(num_classes: int = 10, in_channels: int = 3) -> ShuffleNetV1:
    """RepDistiller's ``ShuffleV1``: g = 3, stages of 240/480/960 channels, 4/8/4 blocks."""
    return ShuffleNetV1(num_classes, in_channels)


@MODELS.register("shufflenetv2")
def shufflenetv2(num_classes: int = 10, in_channels: int = 3, net_size: float = 1.0) -> ShuffleNetV2:
    """RepDistiller's ``ShuffleV2`` (``net_size=1``); ``net_size`` in {0.5, 1, 1.5, 2}."""
    return ShuffleNetV2(num_classes, in_channels, net_size)
