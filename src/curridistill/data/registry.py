"""Dataset registry: config name -> loader(root: Path | None, **options) -> (train, test) ArrayData.

A loader returns the full official training split and the official test split; the validation split
is carved out of training by ``data.pipeline.load_splits`` (stratified, seeded). ``TEST_SPLITS`` and
``INPUT_OPTIONS`` are optional per data set: what evaluating a trained model needs.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from curridistill.data.base import ArrayData
from curridistill.registry import Registry

Loader = Callable[..., tuple[ArrayData, ArrayData]]
DATASETS: Registry[Loader] = Registry("dataset")
# Optional, per dataset name, for evaluating a trained model (see ``data.pipeline.load_test_split``):
# reader(root, classes=model's class names, **options) -> the test split alone, so the training files need not exist;
TEST_SPLITS: Registry[Callable[..., ArrayData]] = Registry("test-split reader")
# fit(input_shape (C, H, W) of the model) -> data.options that make the data fit it (an image folder's image_size).
INPUT_OPTIONS: Registry[Callable[[list[int]], dict]] = Registry("input options")
DATA_ENV = "CURRIDISTILL_DATA"


def resolve_root(root: str | Path | None, subdir: str = "") -> Path | None:
    """``data.root`` if given, else ``$CURRIDISTILL_DATA``; ``subdir`` is appended when it exists."""
    base = root if root not in (None, "") else os.environ.get(DATA_ENV)
    if base in (None, ""):
        return None
    path = Path(base).expanduser()
    return path / subdir if subdir and (path / subdir).is_dir() else path
