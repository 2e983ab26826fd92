"""A trained digits model shared by the export and predict tests (a few seconds, once per session)."""
import pytest

from curridistill import api
from curridistill.config import validate_config
from tests.helpers import tiny_config


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory):
    """(NAME.safetensors of a small CNN trained 4 epochs on digits, its run directory)."""
    tmp = tmp_path_factory.mktemp("digits-run")
    cfg = tiny_config(tmp, epochs=4, student={"name": "cnn", "kwargs": {"widths": [8, 16]}},
                      baseline={"enabled": False})
    cfg["run"]["tensorboard"] = False
    report = api.run(validate_config(cfg), out=tmp / "run")
    assert report["student"]["accuracy"] > 0.8
    return tmp / "run" / "student" / "model.safetensors", tmp / "run"


@pytest.fixture(scope="session")
def digits_images():
    """The first 12 digits images as uint8 (12, 8, 8) with their labels."""
    import numpy as np
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images[:12] * 255 / 16).round().astype(np.uint8), d.target[:12]
