"""ImageNet-style ResNets: ``resnet18``, ``resnet34`` (BasicBlock) and ``resnet50`` (Bottleneck).

Paper: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (table 1). Written from
scratch in torchvision's layout (ResNet v1.5: the stride of a bottleneck sits on its 3x3 conv): 7x7/2
stem, 3x3/2 max pool, four stages of 64/128/256/512 planes (bottleneck expansion 4), projection shortcut
1x1 conv + BN where the shape changes, global average pooling, linear classifier. Parameter counts match
torchvision (11.69M / 21.80M / 25.56M at 1000 classes).

Differences from torchvision:

* stages are ``stage1``..``stage4`` (torchvision: ``layer1``..``layer4``); a block's projection is
  ``shortcut`` (torchvision: ``downsample``); the stem keeps ``conv1``/``bn1``;
* ``in_channels`` sets the stem's input channels;
* ``small_input=True`` replaces the stem with a 3x3/1 conv and drops the max pool (the usual CIFAR /
  Tiny-ImageNet adaptation, e.g. kuangliu/pytorch-cifar), keeping 32x32 inputs at 32x32 in ``stage1``;
* no groups / width_per_group / dilation options; ``zero_init_residual`` is kept (default False);
* the forward returns logits only.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from curridistill.models.registry import MODELS

__all__ = ["BasicBlock", "Bottleneck", "ResNet"]


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class Bottleneck(nn.Module):
    """conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1(x4)-BN + shortcut, ReLU."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_planes, out_planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class ResNet(nn.Module):
    """ImageNet ResNet. Stages ``stage1`` (1/4 resolution; full with ``small_input``) .. ``stage4``; ``fc``."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int], num_classes: int = 10,
                 in_channels: int = 3, small_input: bool = False, zero_init_residual: bool = False):
        super().__init__()
        if small_input:
            self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(3, stride=2, padding=1)
        in_planes = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            stride = 1 if i == 1 else 2
            blocks = []
            for j in range(n):
                blocks.append(block(in_planes, planes, stride if j == 0 else 1))
                in_planes = planes * block.expansion
            self.add_module(f"stage{i}", nn.Sequential(*blocks))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:  # each residual branch starts as zero, so each block starts as identity
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.stage4(self.stage3(self.stage2(self.stage1(x))))
        return self.fc(self.pool(x).flatten(1))


@MODELS.register("resnet18")
def resnet18(num_classes: int = 10, in_channels: int = 3, small_input: bool = False,
             zero_init_residual: bool = False) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels, small_input, zero_init_residual)


@MODELS.register("resnet34")
def resnet34(num_classes: int = 10, in_channels: int = 3, small_input: bool = False,
             zero_init_residual: bool = False) -> ResNet:
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, in_channels, small_input, zero_init_residual)


@MODELS.register("resnet50")
def resnet50(num_classes: int = 10, in_channels: int = 3, small_input: bool = False,
             zero_init_residual: bool = False) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, in_channels, small_input, zero_init_residual)
