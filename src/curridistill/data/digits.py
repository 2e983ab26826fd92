"""scikit-learn's bundled digits (1,797 8x8 grey images, 10 classes): the embedded default data.

There is no official split, so a fixed stratified 80/20 train/test split (seed 0) is the test set.
Pixel values 0..16 are scaled to uint8 0..255 so every image dataset shares one representation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from curridistill.data.base import ArrayData, stratified_split
from curridistill.data.registry import DATASETS

TEST_FRACTION = 0.2


@DATASETS.register("digits")
def load_digits(root: Path | str | None = None) -> tuple[ArrayData, ArrayData]:
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    x = torch.from_numpy(images).unsqueeze(1)  # (N, 1, 8, 8)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    classes = [str(c) for c in bunch.target_names]
    train_idx, test_idx = stratified_split(y, round(TEST_FRACTION * len(y)), seed=0)
    full = ArrayData(x, y, classes)
    return full.subset(train_idx), full.subset(test_idx)
