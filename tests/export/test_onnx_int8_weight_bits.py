"""benchmarks/onnx_int8_weight_bits.py: ONNX Runtime test accuracy in fp32 and in int8 with 8- and 7-bit weights."""
import json

import pytest

from tests.helpers import load_benchmark

pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")


def test_measures_each_checkpoint_on_its_own_test_split(tmp_path, digits_checkpoint):
    ckpt, run_dir = digits_checkpoint
    out = tmp_path / "bits.json"
    assert load_benchmark("onnx_int8_weight_bits").main([str(ckpt), "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["command"] and record["git"] and isinstance(record["cpu_vnni"], bool)
    (row,) = record["rows"]
    report = json.loads((run_dir / "report.json").read_text())
    # fp32 under ONNX Runtime is the PyTorch model: the same test accuracy the run reported
    assert row["fp32"] == pytest.approx(report["student"]["accuracy"]) and row["test_samples"] == report["data"]["test"]
    assert abs(row["int8_7bit_weights"] - row["fp32"]) <= 0.03 and abs(row["int8_8bit_weights"] - row["fp32"]) <= 0.05
    assert "| int8, 7-bit weights |" in out.with_suffix(".md").read_text()


def test_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    code = load_benchmark("onnx_int8_weight_bits").main([str(tmp_path / "none.safetensors"), "--json", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and "no checkpoint at" in err and not (tmp_path / "x.json").exists()
