"""Checks on the labels a loader returned, before any split or training: every class must be learnable."""
from __future__ import annotations

import torch

from curridistill.data.base import ArrayData
from curridistill.errors import UserError


def check_labels(train: ArrayData, name: str) -> None:
    """Refuse one-class data and class indices with no training sample (labels {0, 5, 10} are not 11 classes)."""
    if len(train) == 0:
        raise UserError(f"data {name!r} has no training samples; check the data files")
    present = torch.unique(train.y)
    if len(present) < 2:
        raise UserError(f"data {name!r} has a single class ({int(present[0]) if len(present) else '-'}) in training; "
                        f"classification needs at least 2 classes")
    k = train.num_classes
    counts = torch.bincount(train.y, minlength=k)
    empty = [i for i in range(k) if counts[i] == 0]
    if empty:
        shown = ", ".join(str(i) for i in empty[:8]) + (" ..." if len(empty) > 8 else "")
        raise UserError(f"data {name!r}: classes {shown} of 0..{k - 1} have no training sample (labels present: "
                        f"{', '.join(str(int(v)) for v in present[:8])}{' ...' if len(present) > 8 else ''}); "
                        f"relabel to consecutive indices 0..{len(present) - 1}")


def with_label_noise(data: ArrayData, fraction: float, seed: int) -> ArrayData:
    """``data`` with round(fraction * N) labels replaced by a uniformly drawn *other* class (symmetric label noise,
    the usual protocol of noisy-label studies, e.g. Han et al. 2018). Which samples, and their new classes, depend
    only on ``seed`` and N, so every run of a comparison sees the same corrupted labels. ``fraction`` 0: unchanged."""
    flips = int(round(fraction * len(data)))
    if flips == 0:
        return data
    g = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(data), generator=g)[:flips]
    k = data.num_classes
    shift = torch.randint(1, k, (flips,), generator=g)  # 1..k-1 classes ahead: never the true class
    y = data.y.clone()
    y[chosen] = (y[chosen] + shift) % k
    return ArrayData(data.x, y, data.classes, data.meta)


def with_noisy_splits(train: ArrayData, val: ArrayData, fraction: float, seed: int) -> tuple[ArrayData, ArrayData]:
    """``data.label_noise`` on a split already made (on the clean labels, so every noise level keeps the same
    samples in train and validation); the test split is never touched."""
    return with_label_noise(train, fraction, seed), with_label_noise(val, fraction, seed + 1)
