"""Small models for digits / MNIST-sized inputs: an MLP and a CNN, with named stages."""
from __future__ import annotations

from torch import Tensor, nn

from curridistill.models.registry import MODELS


def _check_widths(widths: object, option: str) -> None:
    """Layer widths are positive ints: a width of 0 builds a network that can only predict a constant."""
    if not isinstance(widths, (list, tuple)) or not all(
            isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths):
        # TypeError: build_model turns it into one line naming model.kwargs
        raise TypeError(f"{option} must be a list of positive layer widths like [64, 32], got {widths!r}")


@MODELS.register("mlp")
class MLP(nn.Module):
    """Flatten -> [Linear-ReLU] x len(hidden) -> Linear. Stages: ``stage1`` .. ``stageK``, ``fc``.

    The input width is ``in_features`` when given (tabular data: feature vectors (N, D) take ``in_features: D``),
    else ``in_channels * image_size**2`` (``image_size`` an int, or ``[height, width]``)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int | list[int] = 8,
                 hidden: tuple[int, ...] | list[int] = (64,), dropout: float = 0.0, in_features: int | None = None):
        super().__init__()
        if in_features is not None:  # TypeError: build_model turns it into one line naming model.kwargs
            if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
                raise TypeError(f"in_features must be a positive int (the length of one feature vector), "
                                f"got {in_features!r}")
            width = in_features
        else:
            size = [image_size, image_size] if isinstance(image_size, int) else list(image_size)
            if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
                raise TypeError(f"image_size must be a positive int or [height, width], got {image_size!r}")
            width = in_channels * size[0] * size[1]
        _check_widths(hidden, "hidden")
        self.flatten = nn.Flatten()
        for i, h in enumerate(hidden, start=1):
            self.add_module(f"stage{i}", nn.Sequential(nn.Linear(width, h), nn.ReLU(inplace=True), nn.Dropout(dropout)))
            width = h
        self.num_stages = len(hidden)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.flatten(x)
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"stage{i}")(x)
        return self.fc(x)


@MODELS.register("cnn")
class CNN(nn.Module):
    """[Conv3x3-BN-ReLU x2, MaxPool] per stage, then global pool + linear. Stages ``stage1`` ..."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, widths: tuple[int, ...] | list[int] = (32, 64),
                 dropout: float = 0.0):
        super().__init__()
        _check_widths(widths, "widths")
        c = in_channels
        for i, w in enumerate(widths, start=1):
            self.add_module(f"stage{i}", nn.Sequential(
                nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                nn.MaxPool2d(2, ceil_mode=True)))
            c = w
        self.num_stages = len(widths)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"stage{i}")(x)
        return self.fc(self.dropout(self.pool(x).flatten(1)))
