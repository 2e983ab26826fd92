"""benchmarks/gpu_check.py at toy scale on the CPU: every step runs, and the JSON/Markdown say so."""
from __future__ import annotations

import json
import zipfile

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
    cuda_tests = next(s for s in record["steps"] if s["step"] == "CUDA-marked tests")
    assert cuda_tests["numbers"]["skipped"] >= 10 and "passed" not in cuda_tests["numbers"]  # no GPU here
    assert "| quickstart | 0 |" in (tmp_path / "results" / "gpu_check_cpu-toy.md").read_text()


def test_missing_npz_is_one_line(tmp_path, capsys):
    assert load_benchmark("gpu_check").main(["--data", str(tmp_path), "--toy"]) == 2
    assert "lacks cifar10-train.npz" in capsys.readouterr().err


def test_toy_targets_time_the_protocol_and_the_parallel_runs(tmp_path):
    _npz_pair(tmp_path)
    rc = load_benchmark("gpu_check").main(["--data", str(tmp_path), "--toy", "--device", "cpu", "--part", "targets",
                                           "--work", str(tmp_path / "work"), "--results", str(tmp_path / "results")])
    record = json.loads((tmp_path / "results" / "gpu_targets_cpu-toy.json").read_text())
    failed = {s["step"]: s["tail"] for s in record["steps"] if s["exit_code"] != 0}
    assert rc == 0 and not failed, failed
    by_step = {s["step"]: s["numbers"] for s in record["steps"]}
    protocol = by_step["protocol 240 epochs, timed on 3"]
    assert {"teacher_epoch_s", "baseline_epoch_s", "student_epoch_s"} <= set(protocol)
    # 240 epochs of the three models, scaled from the toy's 240 training images to 45,000
    expected = 240 * sum(protocol[f"{m}_epoch_s"] for m in ("teacher", "baseline", "student")) * 45_000 / 240 / 60
    assert protocol["estimate_240_epochs_full_data_min"] == pytest.approx(expected, rel=0.01)
    assert by_step["one run alone"]["runs"] == 1 and by_step["four runs, --parallel 4"]["runs"] == 4
    assert record["parallel_4_speedup"] > 0
    assert "`--parallel 4`" in (tmp_path / "results" / "gpu_targets_cpu-toy.md").read_text()


def test_prepared_subset_is_the_protocol_training_data(tmp_path, shared_data, monkeypatch):
    """gpu_prepare's 10k file gives the CPU-scale protocol the same train/val split as the full file does, and its
    recompressed test file the official test set."""
    import torch

    from curridistill.config import load_config
    from curridistill.data.pipeline import load_splits

    prepare = load_benchmark("gpu_prepare")
    monkeypatch.setattr(prepare, "ignore_in_git", lambda folder: None)  # leave the checkout's git files alone
    monkeypatch.setattr(prepare, "COMPRESSION", zipfile.ZIP_STORED)  # LZMA takes 40 s here: its own test below
    monkeypatch.setattr(prepare, "REPO", tmp_path)  # .gpu/ lands in tmp_path
    assert prepare.main(["--root", str(shared_data), "--dest", "gpu", "--no-wheels"]) == 0
    assert (tmp_path / "gpu" / "data" / "cifar10-test.npz").is_file() and (tmp_path / "gpu" / "COMMIT").is_file()
    protocol = load_benchmark("gpu_check").REPO / "configs" / "protocol" / "cifar10_cpu_scale.yaml"
    full = load_splits(load_config(protocol, [f"data.root={shared_data}"]).data)
    copied = load_splits(load_config(protocol, [f"data.root={tmp_path / 'gpu' / 'data'}", "data.options.verify=false"]).data)
    for split in ("train", "val", "test"):
        a, b = getattr(full, split), getattr(copied, split)
        assert torch.equal(a.y, b.y) and torch.equal(a.x, b.x), split
    assert full.mean == copied.mean


def test_carried_npz_files_are_lzma_members_that_np_load_reads(tmp_path):
    prepare = load_benchmark("gpu_prepare")
    rng = np.random.default_rng(0)
    arrays = {"x": rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), "y": np.arange(20, dtype=np.uint8) % 10,
              "classes": np.array([f"c{i}" for i in range(10)])}
    np.savez(tmp_path / "official.npz", **arrays)
    prepare.copy_npz(tmp_path / "official.npz", tmp_path / "copy.npz")
    with zipfile.ZipFile(tmp_path / "copy.npz") as archive:
        assert {m.compress_type for m in archive.infolist()} == {zipfile.ZIP_LZMA}
    with np.load(tmp_path / "copy.npz", allow_pickle=False) as copied:
        assert set(copied.files) == set(arrays) and all(np.array_equal(copied[k], v) for k, v in arrays.items())


def test_spent_budget_skips_steps_and_still_writes_the_record(tmp_path):
    _npz_pair(tmp_path)
    rc = load_benchmark("gpu_check").main(["--data", str(tmp_path), "--toy", "--device", "cpu", "--budget", "5",
                                           "--work", str(tmp_path / "work"), "--results", str(tmp_path / "results")])
    record = json.loads((tmp_path / "results" / "gpu_check_cpu-toy.json").read_text())
    assert rc == 1 and record["complete"] and record["passed"] == 0
    assert all(s["exit_code"] is None and s["tail"] == ["skipped: budget spent"] for s in record["steps"])
    assert "| quickstart | skipped |" in (tmp_path / "results" / "gpu_check_cpu-toy.md").read_text()


@pytest.mark.parametrize("line, on_gpu, counts, failed", [
    ("12 passed in 80.1s", True, {"passed": 12}, False),
    ("10 passed, 2 skipped in 70.0s", True, {"passed": 10, "skipped": 2}, True),  # CUDA unusable on a GPU machine
    ("12 skipped, 1150 deselected in 9.0s", False, {"skipped": 12, "deselected": 1150}, False),
    ("1 failed, 11 passed, 1 error in 80.0s", True, {"failed": 1, "passed": 11, "error": 1}, False),
])
def test_cuda_test_counts_are_recorded_and_skips_on_a_gpu_fail(line, on_gpu, counts, failed):
    check = load_benchmark("gpu_check")
    res = check.judge_tests({"step": "CUDA-marked tests", "exit_code": 0, "tail": ["...", line]}, on_gpu)
    assert res["numbers"] == counts and (res["exit_code"] == 1) == failed
