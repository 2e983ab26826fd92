"""k-fold cross-validation as a data-level transform (the fold children are made in multirun).

``data: {cv: {folds: k}}`` makes ``curridistill run`` train k times into ``RUN_DIR/fold-<i>/``. Each child config
is the parent with ``data.cv.fold = i``; ``api.prepare`` sees that field and replaces the loader's splits with
``fold_splits(splits, cv)``: the training and validation splits are pooled (the test set is left out and stays
the test set), cut into k stratified folds with ``cv.seed``, and fold i becomes the validation split while the
other k-1 folds train. Normalization statistics are recomputed on the fold's training part, and the fold is
recorded in ``splits.info`` (so a cached teacher is never reused across folds: each fold's teacher is trained on
that fold's training data). A fold directory is an ordinary run: ``--resume`` and ``curridistill report`` work.
"""
from __future__ import annotations

import torch

from curridistill.config import CVConfig
from curridistill.data.base import ArrayData, Splits, channel_stats
from curridistill.errors import UserError


def fold_assignment(y: torch.Tensor, folds: int, seed: int) -> torch.Tensor:
    """Fold index (0..folds-1) of every sample: per class a seeded permutation dealt round-robin, so every fold
    gets each class in proportion and fold sizes differ by at most one."""
    if folds < 2:
        raise UserError(f"data.cv.folds={folds}: cross-validation needs at least 2 folds")
    if len(y) < folds:
        raise UserError(f"data.cv.folds={folds} but only {len(y)} training samples; use fewer folds")
    g = torch.Generator().manual_seed(seed)
    fold = torch.empty(len(y), dtype=torch.long)
    offset = 0
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        fold[idx] = (torch.arange(len(idx)) + offset) % folds
        offset += len(idx)  # the next class starts where this one stopped: sizes stay balanced
    return fold


def fold_splits(splits: Splits, cv: CVConfig) -> Splits:
    """The Splits of fold ``cv.fold``: validation = that fold of (train + val), training = the other folds."""
    if cv.fold is None:
        raise UserError("fold_splits needs data.cv.fold; `curridistill run` sets it in each fold's config")
    if hasattr(splits.train.x, "load"):
        raise UserError("data.cv needs the images in memory; drop data.options.stream for cross-validation")
    pooled_x = torch.cat([splits.train.x, splits.val.x])
    pooled_y = torch.cat([splits.train.y, splits.val.y])
    fold = fold_assignment(pooled_y, cv.folds, cv.seed)
    val_mask = fold == cv.fold
    classes = splits.train.classes
    train = ArrayData(pooled_x[~val_mask], pooled_y[~val_mask], classes, splits.train.meta)
    val = ArrayData(pooled_x[val_mask], pooled_y[val_mask], classes, splits.train.meta)
    mean, std = channel_stats(train.x)
    info = {**splits.info, "train": len(train), "val": len(val), "test": len(splits.test),
            "cv_fold": cv.fold, "cv_folds": cv.folds, "cv_seed": cv.seed}
    return Splits(train, val, splits.test, mean, std, name=splits.name, info=info)


def select_fold(splits: Splits, cv: CVConfig | None) -> Splits:
    """The splits a run trains on: ``splits`` as loaded, or fold ``cv.fold`` of them (one fold's child run)."""
    if cv is None or cv.fold is None:
        return splits
    return fold_splits(splits, cv)
