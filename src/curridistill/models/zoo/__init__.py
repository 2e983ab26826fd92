"""Plain-torch model zoo. Importing this package registers every family in ``curridistill.models.MODELS``.

Families (one module each): CIFAR ResNets (``resnet8`` .. ``resnet110``, ``resnet8x4``, ``resnet32x4``,
``resnet_cifar``), wide ResNets (``wrn_D_W``, ``wrn``), CIFAR VGG with BN (``vgg8`` .. ``vgg19``),
CIFAR MobileNetV2 (``mobilenetv2``), ShuffleNet V1/V2 (``shufflenetv1``, ``shufflenetv2``) and ImageNet
ResNets (``resnet18``, ``resnet34``, ``resnet50``). Every factory takes ``num_classes`` and
``in_channels`` first, exposes top-level ``stage1``.. attributes for feature taps and a ``fc`` classifier,
and returns logits from ``forward``.
"""
from curridistill.models.zoo import (  # noqa: F401  (imported to register)
    mobilenetv2,
    resnet_cifar,
    resnet_imagenet,
    shufflenet,
    vgg,
    wrn,
)

ZOO_MODELS: tuple[str, ...] = (
    "resnet_cifar", "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet8x4", "resnet32x4",
    "wrn", "wrn_16_1", "wrn_16_2", "wrn_16_4", "wrn_28_2", "wrn_28_10", "wrn_40_1", "wrn_40_2", "wrn_40_4",
    "vgg8", "vgg11", "vgg13", "vgg16", "vgg19",
    "mobilenetv2",
    "shufflenetv1", "shufflenetv2",
    "resnet18", "resnet34", "resnet50",
)

__all__ = ["ZOO_MODELS"]
