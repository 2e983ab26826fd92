"""VGG with batch norm, CIFAR variant (no FC stack): ``vgg8``, ``vgg11``, ``vgg13``, ``vgg16``, ``vgg19``.

Paper: Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
ICLR 2015. Layout follows RepDistiller's ``models/vgg.py`` (``vggN_bn``, which RepDistiller registers
as ``vggN``): five conv blocks of conv3x3(bias)-BN-ReLU with 64/128/256/512/512 channels, 2x2 max pooling
between blocks 0-1, 1-2 and 2-3 (and 3-4 only for 64x64 inputs), global average pooling and a single
linear layer. ``vgg8`` is RepDistiller's configuration "S" (one conv per block).

Differences from the reference:

* block0 is ``stem``; blocks 1-4 are ``stage1``..``stage4``, each ending with its ReLU, so a tap on
  ``stageN`` yields the reference's post-ReLU feature ``fN``; the classifier is ``fc`` (reference:
  ``classifier``); pooling is done in ``forward`` (parameter-free);
* the extra pool before block 4 is applied for any input of side >= 64 (reference: exactly 64);
* ``in_channels`` sets the stem's input channels (reference: always 3); ``batch_norm=False`` gives the
  plain variant;
* the forward returns logits only.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn
from torch.nn import functional as F

from curridistill.errors import UserError
from curridistill.models.registry import MODELS
from curridistill.models.zoo.weight_init import init_fan_out

__all__ = ["VGG", "CONFIGS"]

CONFIGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}


def _block(widths: Sequence[int], in_channels: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers.append(nn.Conv2d(in_channels, w, 3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(w))
        layers.append(nn.ReLU(inplace=True))
        in_channels = w
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """CIFAR VGG. ``cfg`` = channel lists of the five blocks. Stages ``stage1``..``stage4``; ``fc``."""

    def __init__(self, cfg: Sequence[Sequence[int]], num_classes: int = 10, in_channels: int = 3,
                 batch_norm: bool = True):
        super().__init__()
        if len(cfg) != 5:
            raise UserError(f"VGG cfg needs 5 blocks of channel widths, got {len(cfg)}")
        self.stem = _block(cfg[0], in_channels, batch_norm)
        for i in range(1, 5):
            self.add_module(f"stage{i}", _block(cfg[i], cfg[i - 1][-1], batch_norm))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cfg[4][-1], num_classes)
        init_fan_out(self)

    def forward(self, x: Tensor) -> Tensor:
        side = x.shape[-1]
        x = self.stem(x)
        x = self.stage1(F.max_pool2d(x, 2))
        x = self.stage2(F.max_pool2d(x, 2))
        x = self.stage3(F.max_pool2d(x, 2))
        if side >= 64:
            x = F.max_pool2d(x, 2)
        x = self.stage4(x)
        return self.fc(self.pool(x).flatten(1))


@MODELS.register("vgg8")
def vgg8(num_classes: int = 10, in_channels: int = 3, batch_norm: bool = True) -> VGG:
    return VGG(CONFIGS["vgg8"], num_classes, in_channels, batch_norm)


@MODELS.register("vgg11")
def vgg11(num_classes: int = 10, in_channels: int = 3, batch_norm: bool = True) -> VGG:
    return VGG(CONFIGS["vgg11"], num_classes, in_channels, batch_norm)


@MODELS.register("vgg13")
def vgg13(num_classes: int = 10, in_channels: int = 3, batch_norm: bool = True) -> VGG:
    return VGG(CONFIGS["vgg13"], num_classes, in_channels, batch_norm)


@MODELS.register("vgg16")
def vgg16(num_classes: int = 10, in_channels: int = 3, batch_norm: bool = True) -> VGG:
    return VGG(CONFIGS["vgg16"], num_classes, in_channels, batch_norm)


@MODELS.register("vgg19")
def vgg19(num_classes: int = 10, in_channels: int = 3, batch_norm: bool = True) -> VGG:
    return VGG(CONFIGS["vgg19"], num_classes, in_channels, batch_norm)
