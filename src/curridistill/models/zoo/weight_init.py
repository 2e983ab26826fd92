"""The weight initialization RepDistiller's VGG and MobileNetV2 share (torchvision's VGG init, conv by fan-out)."""
from __future__ import annotations

import math

from torch import nn


def init_fan_out(model: nn.Module) -> None:
    """Conv weights ~ N(0, 2 / (k*k*out)) and biases 0; BN weight 1, bias 0; Linear weights ~ N(0, 0.01), bias 0.

    Modules are visited in ``model.modules()`` order, so the random draws (and the weights) follow the seed.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
