"""In-memory data: one uint8 tensor (N, C, H, W) and int64 labels per split."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from curridistill.errors import UserError


@dataclass
class ArrayData:
    """A split held in memory. ``x`` is uint8 (N, C, H, W) for images (float for tabular data)."""

    x: Tensor
    y: Tensor  # (N,) int64
    classes: list[str]
    # what ``x`` holds when it is not pixels: text gives {"kind": "tokens", "pad_id", "vocab_size", ...}
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} samples but y has {len(self.y)}")
        self.y = self.y.long()

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices: Tensor) -> "ArrayData":
        x = self.x[indices] if isinstance(self.x, torch.Tensor) else self.x.select(indices)  # streamed: stays lazy
        return ArrayData(x, self.y[indices], self.classes, self.meta)


@dataclass
class Splits:
    """train / val / test plus the per-channel mean and std (in [0, 1] units) of the training data."""

    train: ArrayData
    val: ArrayData
    test: ArrayData
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str = ""
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


def check_split_seed(split_seed: object, where: str) -> None:
    if isinstance(split_seed, bool) or not isinstance(split_seed, int) or not -(2**62) <= split_seed < 2**62:
        raise UserError(f"{where}: data.options.split_seed is {split_seed!r}; give an integer like 0")


def check_test_source(train_file: Path, test_file: Path | None, test_fraction: object, split_seed: object,
                      where: str) -> None:
    """A loader's own test split comes from one place, is not the training data, and its seed is an integer."""
    check_split_seed(split_seed, where)
    if test_file is None:
        return
    if test_fraction is not None:
        raise UserError(f"{where}: data.options.test_path and test_fraction both say where the test split comes "
                        f"from; keep one")
    if test_file.resolve() == train_file.resolve():
        raise UserError(f"{where}: data.options.test_path is the training file {train_file}; test on held-out "
                        f"data: give another file, or test_fraction (like 0.2) to hold part of it out")


def stratified_split(y: Tensor, holdout: int, seed: int) -> tuple[Tensor, Tensor]:
    """Split indices into (keep, holdout) with class proportions kept in the holdout, seeded."""
    g = torch.Generator().manual_seed(seed)
    n = len(y)
    if not 0 < holdout < n:
        raise ValueError(f"holdout size must be between 1 and {n - 1}, got {holdout}")
    classes = torch.unique(y)
    picked = []
    counts = torch.stack([(y == c).sum() for c in classes]).double()
    quota = torch.floor(counts / n * holdout).long()
    # hand the rounding remainder to the classes with the largest fractional parts
    remainder = holdout - int(quota.sum())
    frac = counts / n * holdout - quota.double()
    quota[torch.argsort(frac, descending=True)[:remainder]] += 1
    for c, q in zip(classes, quota.tolist()):
        idx = torch.nonzero(y == c).flatten()
        picked.append(idx[torch.randperm(len(idx), generator=g)[:q]])
    hold = torch.sort(torch.cat(picked)).values
    mask = torch.ones(n, dtype=torch.bool)
    mask[hold] = False
    return torch.nonzero(mask).flatten(), hold


def split_validation(data: ArrayData, val_size: float, seed: int, hint: str = "") -> tuple[ArrayData, ArrayData]:
    """(train, val): a stratified, seeded hold-out of ``val_size`` (a fraction below 1, or a count) of ``data``.

    ``hint`` is appended to the one-line error for a size that leaves either part empty (another way out)."""
    holdout = int(round(val_size * len(data))) if val_size < 1 else int(val_size)
    if not 0 < holdout < len(data):
        raise UserError(f"data.val_size={val_size} leaves no training or no validation data ({len(data)} "
                        f"training samples); use a fraction like 0.1{hint}")
    keep, hold = stratified_split(data.y, holdout, seed=seed)
    return data.subset(keep), data.subset(hold)


def channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of uint8 (N, C, H, W) data in [0, 1] units.

    Streamed images (``load``) are measured on at most 2,048 evenly spaced samples.
    """
    if isinstance(x, Tensor) and x.dtype in (torch.int64, torch.int32):  # token ids: nothing to normalize
        return (0.0,), (1.0,)
    if hasattr(x, "load"):
        x = x.load(torch.linspace(0, len(x) - 1, min(len(x), 2048)).long().unique())
    xf = x.double() / 255.0 if x.dtype == torch.uint8 else x.double()
    dims = [d for d in range(xf.dim()) if d != 1] if xf.dim() > 2 else [0]
    mean = xf.mean(dim=dims)
    std = xf.std(dim=dims, unbiased=False).clamp_min(1e-8)
    return tuple(mean.flatten().tolist()), tuple(std.flatten().tolist())
