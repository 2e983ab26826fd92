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
