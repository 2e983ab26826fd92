"""Shared fixtures."""
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import SHARED_DATA


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (CI provides ../shared beside the repo)")
    return SHARED_DATA


@pytest.fixture
def cifar_shaped(tmp_path) -> Path:
    """A CIFAR-shaped .npz (240 images of 32x32x3, 20 training and 4 test per class) whose red channel
    depends on the class, so a few steps learn something; read by the ``tensors`` loader."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 24)
    x = rng.integers(0, 256, size=(240, 32, 32, 3)).astype(np.uint8)
    x[..., 0] = (x[..., 0] // 4 + y[:, None, None] * 20).astype(np.uint8)
    path = tmp_path / "cifar_shaped.npz"
    train = np.arange(240) % 24 < 20
    np.savez(path, x_train=x[train], y_train=y[train], x_test=x[~train], y_test=y[~train])
    return path
