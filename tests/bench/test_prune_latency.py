"""benchmarks/prune_latency.py: cost rows of a model and its pruned copies in PyTorch, int8 and ONNX Runtime,
each with its speed-up against the unpruned model in PyTorch and in its own runtime."""
import json

import pytest

from tests.helpers import load_benchmark

pytest.importorskip("torch_pruning")
pytest.importorskip("onnxruntime")


def test_rows_per_amount_and_runtime(tmp_path):
    out = tmp_path / "pl.json"
    argv = ["--model", "cnn", "--input-size", "1,8,8", "--amounts", "0.5", "--runs", "2", "--rounds", "1", "--onnx",
            "--json", str(out)]
    assert load_benchmark("prune_latency").main(argv) == 0
    record = json.loads(out.read_text())
    assert record["git"] and record["command"]
    rows = {r["model"]: r for r in record["rows"]}
    assert set(rows) == {"unpruned", "unpruned int8 static", "unpruned onnx",
                         "50% channels", "50% channels int8 static", "50% channels onnx"}
    for name in ("unpruned", "unpruned int8 static", "unpruned onnx"):
        assert rows[name]["speedup_in_runtime"] == 1.0  # each runtime's own unpruned model is its reference
    pruned, onnx = rows["50% channels"], rows["50% channels onnx"]
    assert pruned["params"] < 0.5 * rows["unpruned"]["params"] and onnx["params"] == pruned["params"]
    assert onnx["runtime"] == "onnxruntime" and onnx["bytes"] < rows["unpruned onnx"]["bytes"]
    assert onnx["speedup_in_runtime"] == pytest.approx(rows["unpruned onnx"]["latency_ms"] / onnx["latency_ms"])
    assert rows["50% channels int8 static"]["bytes"] < pruned["bytes"]  # int8 weights: a quarter of the bytes
    assert out.with_suffix(".md").read_text().count("\n| cnn ") == 6
