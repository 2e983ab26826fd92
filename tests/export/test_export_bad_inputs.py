"""`curridistill export` on bad requests, in-process through ``cli.main``: one line, exit code 2, and nothing lost or
half-written. An export that fails its check against PyTorch leaves an existing ``--out`` as it was (the file is
written beside it and moved into place only once it passed); the message says why it failed and what helps.
One test case per input."""
from pathlib import Path

import pytest
import torch

from curridistill.models.checkpoint import save_model
from curridistill.models.registry import build_model
from tests.helpers import one_error as one_line, run_main
from tests.trust.catalogue import checkpoint, spec

pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

OLD = b"the export of yesterday"


def overflowing_checkpoint(tmp: Path) -> Path:
    """Finite weights (1e30 each) whose logits overflow float32 to inf on any non-negative input."""
    model = build_model("mlp", 10, 1, {"hidden": [16], "image_size": 8})
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1e30)
    return save_model(tmp / "big.safetensors", model, spec(mean=[0.0], std=[1.0]))


def add_one(model):  # an "exported" model whose logits are PyTorch's + 1
    return lambda x: model(x) + 1


def nan_out(model):  # an "exported" model giving NaN where PyTorch's logits are finite
    return lambda x: model(x) * float("nan")


@pytest.fixture
def previous(tmp_path):
    """An earlier export at the path the failing export targets."""
    path = tmp_path / "model.out"
    path.write_bytes(OLD)
    return path


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("runner, expect", [
    (add_one, "the exported model differs from PyTorch on"),
    (nan_out, "the exported model gives NaN or infinite logits on"),
], ids=["logits-differ", "exported-nan"])
def test_a_failed_check_keeps_the_previous_file(fmt, runner, expect, tmp_path, previous, capsys, monkeypatch):
    import curridistill.export as export

    ck = checkpoint(tmp_path)
    monkeypatch.setattr(export, "exported_runner", lambda f, path: runner(export.OnnxModel(path) if f == "onnx"
                                                                           else export.load_torchscript(path)[0]))
    line = one_line(*run_main(["export", str(ck), "--format", fmt, "--out", str(previous), "--check-samples", "8"], capsys))
    hint = {"onnx": "try another --opset or --format torchscript", "torchscript": "use --format onnx"}[fmt]
    assert f"{previous} not written: {expect}" in line and line.endswith(hint), line
    assert previous.read_bytes() == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.json", "ck.safetensors", "model.out"]  # no temp file left


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_logits_that_overflow_in_pytorch_blame_the_checkpoint_not_the_opset(fmt, tmp_path, previous, capsys):
    ck = overflowing_checkpoint(tmp_path)
    line = one_line(*run_main(["export", str(ck), "--format", fmt, "--out", str(previous), "--check-samples", "8"], capsys))
    assert f"{previous} not written: the checkpoint's model itself gives NaN or infinite logits on" in line, line
    assert "--opset" not in line
    assert previous.read_bytes() == OLD


def _directory(tmp: Path) -> list[str]:
    (tmp / "exports").mkdir()
    return ["--out", str(tmp / "exports")]


def _under_a_file(tmp: Path) -> list[str]:
    (tmp / "exports").write_bytes(OLD)
    return ["--out", str(tmp / "exports" / "m.onnx")]


@pytest.mark.parametrize("make, expect", [
    (_directory, "--out <tmp>/exports is a directory; give a file path such as <tmp>/exports/model.onnx"),
    (_under_a_file, "--out <tmp>/exports/m.onnx: <tmp>/exports is a file, not a folder"),
    (lambda t: ["--opset", "999"], "--opset 999 is newer than the ONNX package knows; use 17 to"),
], ids=["out-is-a-directory", "out-under-a-file", "opset-too-new"])
def test_a_bad_out_or_opset_is_refused_before_any_export_work(make, expect, tmp_path, capsys, monkeypatch):
    import curridistill.export as export

    ck = checkpoint(tmp_path)
    argv = ["export", str(ck), *make(tmp_path)]
    monkeypatch.setattr(export, "load_model", lambda *a, **k: pytest.fail("the checkpoint was loaded"))
    line = one_line(*run_main(argv, capsys))
    assert expect.replace("<tmp>", str(tmp_path)) in line, line
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("*.onnx"))
