"""Wide residual networks ``wrn_D_W`` (depth D = 6n+4, widen factor W) for 32x32 inputs.

Paper: Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016. Layout follows RepDistiller's
``models/wrn.py`` (itself after the authors' code): a 3x3 stem to 16 channels, three stages of
pre-activation blocks (BN-ReLU-conv3x3-BN-ReLU-[dropout]-conv3x3) with 16W/32W/64W channels, a final
BN-ReLU, global average pooling and a linear classifier. Where a block changes shape, the shortcut is a
1x1 conv applied to the *activated* input (as in the reference); otherwise it is the identity on the raw
input.

Differences from the reference:

* stages are named ``stage1``..``stage3`` and hold the blocks directly (reference: ``blockN.layer``);
  the final BN is ``bn`` (reference: ``bn1``); a block's shortcut conv is ``shortcut``
  (reference: ``convShortcut``);
* ``in_channels`` sets the stem's input channels (reference: always 3);
* global pooling is adaptive (reference: ``avg_pool2d(out, 8)``, identical at 32x32);
* the forward returns logits only; tap ``stageN`` for features (these are pre-activation outputs, as
  the reference's ``f1``..``f3``).
* the dropout option is ``drop_rate`` (reference: ``dropRate``).
"""
from __future__ import annotations

import math

from torch import Tensor, nn
from torch.nn import functional as F

from curridistill.errors import UserError
from curridistill.models.registry import MODELS

__all__ = ["WideBasicBlock", "WideResNet", "wrn"]


class WideBasicBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-dropout-conv3x3, plus shortcut."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes and stride == 1
        self.shortcut = None if self.equal_in_out else nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        act = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        return out + (x if self.shortcut is None else self.shortcut(act))


class WideResNet(nn.Module):
    """WRN-depth-widen_factor. Stages ``stage1`` (32x32), ``stage2`` (16x16), ``stage3`` (8x8); ``fc``."""

    def __init__(self, depth: int = 16, widen_factor: int = 1, num_classes: int = 10, in_channels: int = 3,
                 drop_rate: float = 0.0):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise UserError(f"WRN kwarg depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth}")
        if widen_factor < 1 or int(widen_factor) != widen_factor:
            raise UserError(f"WRN kwarg widen_factor must be an int >= 1, got {widen_factor}")
        widen_factor = int(widen_factor)
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        for i, stride in enumerate((1, 2, 2), start=1):
            blocks = [WideBasicBlock(widths[i - 1] if j == 0 else widths[i], widths[i], stride if j == 0 else 1,
                                     drop_rate) for j in range(n)]
            self.add_module(f"stage{i}", nn.Sequential(*blocks))
        self.bn = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.stage3(self.stage2(self.stage1(x)))
        x = self.relu(self.bn(x))
        return self.fc(self.pool(x).flatten(1))


@MODELS.register("wrn")
def wrn(num_classes: int = 10, in_channels: int = 3, depth: int = 16, widen_factor: int = 1,
        drop_rate: float = 0.0) -> WideResNet:
    """Any WRN: ``depth`` = 6n+4, ``widen_factor`` >= 1, optional ``drop_rate`` inside blocks."""
    return WideResNet(depth, widen_factor, num_classes, in_channels, drop_rate)


def _fixed(depth: int, widen_factor: int):
    def factory(num_classes: int = 10, in_channels: int = 3, drop_rate: float = 0.0) -> WideResNet:
        return WideResNet(depth, widen_factor, num_classes, in_channels, drop_rate)

    name = f"wrn_{depth}_{widen_factor}"
    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"WRN-{depth}-{widen_factor}; optional ``drop_rate`` inside blocks."
    MODELS.add(name, factory)
    return factory


wrn_16_1 = _fixed(16, 1)
wrn_16_2 = _fixed(16, 2)
wrn_16_4 = _fixed(16, 4)
wrn_28_2 = _fixed(28, 2)
wrn_28_10 = _fixed(28, 10)
wrn_40_1 = _fixed(40, 1)
wrn_40_2 = _fixed(40, 2)
wrn_40_4 = _fixed(40, 4)
