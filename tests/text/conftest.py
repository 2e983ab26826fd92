"""A TextCNN trained on real TREC questions, shared by the predict and export tests of text models."""
from __future__ import annotations

import pytest
import yaml

from curridistill import cli
from curridistill.data import text
from tests.helpers import SHARED_DATA

N = 24  # TREC test questions predicted


@pytest.fixture(scope="package")
def trained(tmp_path_factory):
    """A TextCNN trained 1 epoch on 400 real TREC questions (built-in `words` vocabulary)."""
    if not (SHARED_DATA / "text" / "trec" / "train_5500.label").is_file():
        pytest.skip("the shared TREC files are not here")
    tmp = tmp_path_factory.mktemp("text-predict")
    mp = pytest.MonkeyPatch()
    mp.setenv(text.CACHE_ENV, str(tmp / "cache"))
    raw = {"data": {"name": "trec", "root": str(SHARED_DATA), "options": {"max_length": 32}, "subset": 400,
                    "val_size": 0.1, "batch_size": 32},
           "student": {"name": "text-cnn", "kwargs": {"embed_dim": 16, "filters": 8, "kernel_sizes": [2, 3]}},
           "baseline": {"enabled": False},
           "course": [{"name": "ce", "epochs": 1, "loss": {"ce": 1.0}, "optimizer": {"name": "adamw", "lr": 0.01}}],
           "run": {"seed": 0, "device": "cpu", "threads": 1, "cache_dir": str(tmp / "cache"), "out": str(tmp / "runs"),
                   "eval": {"latency_runs": 2, "throughput_runs": 1, "throughput_batch": 8}}}
    cfg = tmp / "trec.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert cli.main(["run", str(cfg), "--out", str(tmp / "run"), "--quiet"]) == 0
    questions = text.read_trec(SHARED_DATA / "text" / "trec" / "TREC_10.label")[0][:N]
    yield {"ckpt": tmp / "run" / "student" / "model.safetensors", "dir": tmp, "questions": questions}
    mp.undo()
