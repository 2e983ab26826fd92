"""CIFAR ResNets (BasicBlock, depth 6n+2) as used for distillation benchmarks.

Paper: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (section 4.2, the CIFAR-10
networks). Layout follows RepDistiller's ``models/resnet.py`` (Tian et al., "Contrastive Representation
Distillation", ICLR 2020): a 3x3 stem, three stages of BasicBlocks with a 1x1-conv+BN projection
shortcut wherever the shape changes, global average pooling and a linear classifier. ``resnet8x4`` and
``resnet32x4`` use a 32-wide stem and stages of 64/128/256 channels.

Differences from the reference:

* stages are named ``stage1``..``stage3`` (reference: ``layer1``..``layer3``); the stem keeps the
  reference names ``conv1``/``bn1``, so a RepDistiller state dict maps over by renaming
  ``layerN.`` -> ``stageN.`` and ``downsample`` -> ``shortcut``;
* ``in_channels`` sets the stem's input channels (reference: always 3);
* global pooling is adaptive (reference: ``AvgPool2d(8)``, identical at 32x32 inputs), so other input
  sizes work;
* the forward returns logits only (no ``is_feat``/``preact`` outputs); tap ``stageN`` instead.
* only the BasicBlock variant is provided (the reference's bottleneck option is registered nowhere).
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from curridistill.errors import UserError
from curridistill.models.registry import MODELS

__all__ = ["BasicBlock", "CifarResNet"]


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus identity or 1x1-conv+BN shortcut, then ReLU."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + (x if self.shortcut is None else self.shortcut(x))
        return self.relu(out)


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs. ``widths`` = (stem, stage1, stage2, stage3); depth = 6n + 2.

    Stages: ``stage1`` (full resolution), ``stage2`` (1/2), ``stage3`` (1/4); classifier ``fc``.
    """

    def __init__(self, depth: int = 20, widths: Sequence[int] = (16, 16, 32, 64), num_classes: int = 10,
                 in_channels: int = 3):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise UserError(f"CIFAR ResNet kwarg depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...), "
                            f"got {depth}")
        if len(widths) != 4:
            raise UserError(f"CIFAR ResNet kwarg widths must be 4 ints (stem, stage1, stage2, stage3), "
                            f"got {tuple(widths)}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        planes = widths[0]
        for i, (width, stride) in enumerate(zip(widths[1:], (1, 2, 2)), start=1):
            blocks = [BasicBlock(planes if j == 0 else width, width, stride if j == 0 else 1) for j in range(n)]
            self.add_module(f"stage{i}", nn.Sequential(*blocks))
            planes = width
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.fc(self.pool(x).flatten(1))


_NARROW = (16, 16, 32, 64)
_X4 = (32, 64, 128, 256)


@MODELS.register("resnet_cifar")
def resnet_cifar(num_classes: int = 10, in_channels: int = 3, depth: int = 20,
                 widths: Sequence[int] = _NARROW) -> CifarResNet:
    """Any CIFAR ResNet: ``depth`` = 6n+2, ``widths`` = (stem, stage1, stage2, stage3)."""
    return CifarResNet(depth, tuple(widths), num_classes, in_channels)


@MODELS.register("resnet8")
def resnet8(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(8, _NARROW, num_classes, in_channels)


@MODELS.register("resnet14")
def resnet14(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(14, _NARROW, num_classes, in_channels)


@MODELS.register("resnet20")
def resnet20(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(20, _NARROW, num_classes, in_channels)


@MODELS.register("resnet32")
def resnet32(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(32, _NARROW, num_classes, in_channels)


@MODELS.register("resnet44")
def resnet44(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(44, _NARROW, num_classes, in_channels)


@MODELS.register("resnet56")
def resnet56(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(56, _NARROW, num_classes, in_channels)


@MODELS.register("resnet110")
def resnet110(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(110, _NARROW, num_classes, in_channels)


@MODELS.register("resnet8x4")
def resnet8x4(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(8, _X4, num_classes, in_channels)


@MODELS.register("resnet32x4")
def resnet32x4(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(32, _X4, num_classes, in_channels)
