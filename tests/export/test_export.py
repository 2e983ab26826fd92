"""`curridistill export`: ONNX matches PyTorch under ONNX Runtime and carries class names and preprocessing;
TorchScript and safetensors exports work; bad requests are one line with exit code 2."""
import json

import pytest
import torch

from curridistill import cli

pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from curridistill.export import OnnxModel, check_parity, held_out_samples  # noqa: E402
from curridistill.models.checkpoint import load_model  # noqa: E402


def test_onnx_round_trip_parity_and_metadata(tmp_path, digits_checkpoint):
    ckpt, _ = digits_checkpoint
    out = tmp_path / "m.onnx"
    assert cli.main(["export", str(ckpt), "--format", "onnx", "--out", str(out), "--json", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    check = result["check"]
    assert check["ok"] and check["max_abs_diff"] < 1e-4 and check["top1_agreement"] == 1.0
    assert check["samples"] == 256 and "test samples of digits" in check["inputs"]
    assert check["exported_latency_ms"] > 0 and check["pytorch_latency_ms"] > 0
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    model, spec = load_model(ckpt)
    assert json.loads(meta["classes"]) == spec["classes"]
    assert json.loads(meta["input_shape"]) == spec["input_shape"] == [1, 8, 8]
    assert json.loads(meta["mean"]) == pytest.approx(spec["mean"]) and json.loads(meta["std"]) == pytest.approx(spec["std"])
    # dynamic batch: any number of samples, the same logits as PyTorch
    runner = OnnxModel(out)
    x, _ = held_out_samples(spec, 37)
    got = check_parity(model, runner, x, runs=2)
    assert got["max_abs_diff"] < 1e-4 and got["top1_agreement"] == 1.0


def test_onnx_int8_is_calibrated_on_training_data_and_agrees(tmp_path, digits_checkpoint):
    ckpt, _ = digits_checkpoint
    out = tmp_path / "m.int8.onnx"
    assert cli.main(["export", str(ckpt), "--format", "onnx-int8", "--out", str(out), "--json", str(tmp_path / "r.json")]) == 0
    check = json.loads((tmp_path / "r.json").read_text())["check"]
    assert check["ok"] and check["top1_agreement"] >= 0.98 and check["max_abs_diff"] > 0  # int8: close, not equal
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert "int8" in meta["quantization"] and json.loads(meta["input_shape"]) == [1, 8, 8]
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(out)).graph.node)


def test_onnx_int8_weights_use_seven_bits_so_cpus_without_vnni_do_not_saturate(tmp_path, digits_checkpoint):
    from onnx import numpy_helper

    ckpt, _ = digits_checkpoint
    out = tmp_path / "m.int8.onnx"
    assert cli.main(["export", str(ckpt), "--format", "onnx-int8", "--out", str(out)]) == 0
    weights = [numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer
               if t.data_type == onnx.TensorProto.INT8 and t.dims]
    assert weights, "no int8 weight tensors in the quantized file"
    assert max(int(abs(w.astype("int16")).max()) for w in weights) <= 64  # [-64, 64]: 7 bits, not [-127, 127]


@pytest.mark.parametrize("fmt,suffix", [("torchscript", ".pt"), ("safetensors", ".safetensors")])
def test_other_formats(tmp_path, digits_checkpoint, fmt, suffix):
    ckpt, _ = digits_checkpoint
    out = tmp_path / f"m{suffix}"
    assert cli.main(["export", str(ckpt), "--format", fmt, "--out", str(out)]) == 0
    assert out.is_file()
    if fmt == "safetensors":  # a native checkpoint pair again: loads and predicts like the source
        a, _ = load_model(ckpt)
        b, _ = load_model(out)
        x = torch.randn(4, 1, 8, 8)
        torch.testing.assert_close(a(x), b(x))


def test_default_out_is_beside_the_checkpoint(tmp_path, digits_checkpoint):
    import shutil

    ckpt, _ = digits_checkpoint
    for name in ("model.safetensors", "model.json"):
        shutil.copy(ckpt.with_name(name), tmp_path / name)
    assert cli.main(["export", str(tmp_path / "model.safetensors")]) == 0
    assert (tmp_path / "model.onnx").is_file()


@pytest.mark.parametrize("args,match", [
    (["export", "{tmp}/none.safetensors"], "not found"),
    (["export", "{ckpt}", "--format", "tflite"], "invalid choice"),
    (["export", "{ckpt}", "--opset", "5"], "--opset 5 is too old"),
    (["export", "{ckpt}", "--check-samples", "0"], "--check-samples must be at least 1"),
    (["export", "{ckpt}", "--format", "safetensors", "--out", "{ckpt}"], "would overwrite the checkpoint"),
    (["export", "{tmp}/m.onnx"], "already exported"),
])
def test_bad_export_is_one_line_exit_2(tmp_path, capsys, digits_checkpoint, args, match):
    ckpt, _ = digits_checkpoint
    (tmp_path / "m.onnx").write_bytes(b"not onnx")
    argv = [a.format(tmp=tmp_path, ckpt=ckpt) for a in args]
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse errors exit from the parser
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1, err
