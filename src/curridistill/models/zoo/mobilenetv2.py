"""MobileNetV2, CIFAR variant used in distillation benchmarks (registered as ``mobilenetv2``).

Paper: Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018. Layout
follows RepDistiller's ``models/mobilenetv2.py`` (from Jin et al., "Knowledge Distillation via Route
Constrained Optimization", ICCV 2019): a stride-2 3x3 stem, the paper's seven inverted-residual groups
(t, c, n, s) = (1,16,1,1) (T,24,2,1) (T,32,3,2) (T,64,4,2) (T,96,3,1) (T,160,3,2) (T,320,1,1) with channels
``int(c * width_mult)`` (no rounding to multiples of 8), a 1x1 conv to 1280 channels
(``int(1280 * width_mult)`` when ``width_mult > 1``), global average pooling and a linear classifier.
Every block has the 1x1 expansion conv, even with t = 1 (unlike torchvision). The default
``expand_ratio=6, width_mult=0.5`` is RepDistiller's ``mobile_half`` (0.81M parameters at 100 classes).

Differences from the reference:

* the seven groups are packed into four stages at the reference's feature points: ``stage1`` = groups
  0-1 (16x16 for 32x32 inputs), ``stage2`` = group 2 (8x8), ``stage3`` = groups 3-4 (4x4), ``stage4`` =
  groups 5-6 (2x2); the stem is ``conv1``, the head conv ``conv2``, the classifier ``fc`` (reference:
  ``classifier``, a one-layer Sequential);
* global pooling is adaptive (reference: ``AvgPool2d(input_size // 16, ceil_mode=True)``, identical for
  32x32) and no ``input_size`` argument is needed;
* ``in_channels`` sets the stem's input channels; the forward returns logits only.
"""
from __future__ import annotations

from torch import Tensor, nn

from curridistill.errors import UserError
from curridistill.models.registry import MODELS
from curridistill.models.zoo.weight_init import init_fan_out

__all__ = ["InvertedResidual", "MobileNetV2"]

# (expansion (None = the model's T), channels, repeats, first stride), grouped into the four stages
_STAGES: tuple[tuple[tuple[int | None, int, int, int], ...], ...] = (
    ((1, 16, 1, 1), (None, 24, 2, 1)),
    ((None, 32, 3, 2),),
    ((None, 64, 4, 2), (None, 96, 3, 1)),
    ((None, 160, 3, 2), (None, 320, 1, 1)),
)


def _conv_bn_relu(inp: int, oup: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(oup),
                         nn.ReLU(inplace=True))


class InvertedResidual(nn.Module):
    """1x1 expand-BN-ReLU, 3x3 depthwise-BN-ReLU, 1x1 project-BN (linear); residual when shapes match."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """CIFAR MobileNetV2. Stages ``stage1``..``stage4``; classifier ``fc``."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, expand_ratio: int = 6,
                 width_mult: float = 0.5):
        super().__init__()
        if width_mult <= 0:
            raise UserError(f"mobilenetv2 kwarg width_mult must be > 0, got {width_mult}")
        channels = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(in_channels, channels, 3, 2)
        for i, groups in enumerate(_STAGES, start=1):
            blocks = []
            for t, c, n, s in groups:
                out = int(c * width_mult)
                for j in range(n):
                    blocks.append(InvertedResidual(channels, out, s if j == 0 else 1, expand_ratio if t is None else t))
                    channels = out
            self.add_module(f"stage{i}", nn.Sequential(*blocks))
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(channels, self.last_channel, 1, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.last_channel, num_classes)
        init_fan_out(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.stage4(self.stage3(self.stage2(self.stage1(x))))
        x = self.conv2(x)
        return self.fc(self.pool(x).flatten(1))


@MODELS.register("mobilenetv2")
def mobilenetv2(num_classes: int = 10, in_channels: int = 3, expand_ratio: int = 6,
                width_mult: float = 0.5) -> MobileNetV2:
    """RepDistiller's ``mobilenetv2_T_w(T=expand_ratio, W=width_mult)``; the default is ``mobile_half``."""
    return MobileNetV2(num_classes, in_channels, expand_ratio, width_mult)
