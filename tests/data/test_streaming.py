"""The streaming path: an image folder read from disk by DataLoader workers trains exactly like the
same folder decoded into memory (same batches, same pixels, same augmentation)."""
import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from curridistill import api
from curridistill.config import load_config
from curridistill.data.image_folder import LazyImages
from tests.helpers import run_cli, tiny_config, write_image_folder


@pytest.fixture
def folder(tmp_path):
    return write_image_folder(tmp_path / "images", {"train": 40, "test": 10})


def _config(tmp_path, folder, stream: bool) -> dict:
    raw = tiny_config(tmp_path, epochs=2)
    raw["data"] = {"name": "image-folder", "options": {"path": str(folder), "image_size": 8, "stream": stream},
                   "val_size": 0.2, "batch_size": 16, "workers": 2, "augment": {"crop_padding": 2, "flip": True}}
    raw["teacher"]["kwargs"] = {"widths": [8, 16], "in_channels": 3}
    raw["student"] = {"name": "mlp", "kwargs": {"hidden": [16], "image_size": 8, "in_channels": 3}}
    return raw


def test_streamed_folder_trains_exactly_like_the_in_memory_one(tmp_path, folder):
    memory = api.run(load_config(_config(tmp_path, folder, stream=False)), out=tmp_path / "memory")
    cfg_path = tmp_path / "stream.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(tmp_path, folder, stream=True)))
    proc = run_cli("run", str(cfg_path), "--out", str(tmp_path / "stream"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    streamed = json.loads((tmp_path / "stream" / "report.json").read_text())
    for model in ("teacher", "baseline", "student"):
        assert streamed[model]["accuracy"] == memory[model]["accuracy"]
    a = load_file(str(tmp_path / "memory" / "student" / "model.safetensors"))
    b = load_file(str(tmp_path / "stream" / "student" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_lazy_images_decode_on_demand(folder):
    paths = sorted((folder / "train" / "class0").glob("*.png"))
    lazy = LazyImages(paths, (8, 8))
    assert lazy.shape == (40, 3, 8, 8) and len(lazy.select(torch.tensor([3, 5]))) == 2
    batch = lazy.load(torch.tensor([0, 2]))
    assert batch.dtype == torch.uint8 and batch.shape == (2, 3, 8, 8)
    assert torch.equal(lazy.select(torch.tensor([2])).load([0])[0], batch[1])
