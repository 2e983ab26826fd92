"""benchmarks/gpu_check.py at toy scale on the CPU: every step runs, and the JSON/Markdown say so."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import load_benchmark


def _npz_pair(folder, train: int = 300, test: int = 60):
    """Two CIFAR-shaped npz files, as a GPU machine gets them: only these files beside the project."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("test", test)):
        np.savez(folder / f"cifar10-{split}.npz", x=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                 y=(np.arange(n) % 10).astype(np.uint8), classes=np.array([f"c{i}" for i in range(10)]))


def test_toy_check_runs_every_step(tmp_path):
    _npz_pair(tmp_path)
    rc = load_benchmark("gpu_check").main(["--data", str(tmp_path), "--toy", "--device", "cpu",
                                           "--work", str(tmp_path / "work"), "--results", str(tmp_path / "results")])
    record = json.loads((tmp_path / "results" / "gpu_check_cpu-toy.json").read_text())
    failed = {s["step"]: s["tail"] for s in record["steps"] if s["exit_code"] != 0}
    assert rc == 0 and not failed, failed
    assert [s["step"] for s in record["steps"]][:2] == ["quickstart", "protocol kd (committed teacher)"]
    assert record["device_name"] == "cpu" and record["git"]["commit"]
    bench = next(s for s in record["steps"] if s["step"] == "bench resnet56 -> resnet8")
    assert bench["numbers"]["cached_kd_images_per_s"] > 0
    assert "| quickstart | 0 |" in (tmp_path / "results" / "gpu_check_cpu-toy.md").read_text()


def test_missing_npz_is_one_line(tmp_path, capsys):
    assert load_benchmark("gpu_check").main(["--data", str(tmp_path), "--toy"]) == 2
    assert "lacks cifar10-train.npz" in capsys.readouterr().err
