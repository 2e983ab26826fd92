"""Text models leave as files a server can run: ONNX (fp32 and int8) and TorchScript take int64 token ids of any
batch size and length, keep the tokenizer in their metadata, and give PyTorch's logits; `predict` on the .onnx file
tokenizes new text exactly as the checkpoint does."""
from __future__ import annotations

import json

import pytest
import torch

from curridistill import cli
from curridistill.data.text import encode_texts
from curridistill.errors import UserError
from curridistill.export.onnx import OnnxModel, export_onnx
from curridistill.models.checkpoint import read_spec
from curridistill.models.registry import build_model

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

VOCAB = ["[PAD]", "[UNK]"] + [f"w{i}" for i in range(60)]


def _spec(name: str, kwargs: dict) -> dict:
    return {"name": name, "kwargs": {**kwargs, "vocab_size": len(VOCAB), "pad_id": 0}, "num_classes": 3,
            "input_shape": [16], "classes": ["a", "b", "c"], "mean": [0.0], "std": [1.0],
            "tokenizer": {"kind": "words", "vocab": VOCAB[2:], "max_length": 16},
            "data": {"name": "text-table", "options": {"text_column": "sentence"}}}


def _ragged_ids(rows: int = 6, length: int = 11) -> torch.Tensor:
    """Right-padded ids of different lengths (one row full, one a single token): padding must not change a row."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, len(VOCAB), (rows, length), generator=gen)
    for r, n in enumerate([length, 1, 5, 8, 3, 10][:rows]):
        ids[r, n:] = 0
    return ids


@pytest.mark.parametrize("name, kwargs", [
    ("text-cnn", {"embed_dim": 8, "filters": 4, "kernel_sizes": [2, 3]}),
    ("text-bilstm", {"embed_dim": 8, "hidden": 6}),  # its packed forward is replaced by an exportable one
    ("text-transformer", {"layers": 1, "hidden": 8, "heads": 2, "max_positions": 32}),
])
def test_onnx_matches_pytorch_on_lengths_it_was_not_traced_with(name, kwargs, tmp_path):
    if name == "text-transformer":
        pytest.importorskip("transformers")
    torch.manual_seed(0)
    spec = _spec(name, kwargs)
    model = build_model(name, 3, kwargs=spec["kwargs"]).eval()
    path = export_onnx(model, spec, tmp_path / "m.onnx")
    onnx_model = OnnxModel(path)
    assert onnx_model.spec["tokenizer"] == spec["tokenizer"] and onnx_model.spec["kwargs"]["pad_id"] == 0
    for ids in (_ragged_ids(), _ragged_ids(2, 3), _ragged_ids(1, 16)):  # traced with (2, 8)
        with torch.no_grad():
            torch.testing.assert_close(onnx_model(ids), model(ids), rtol=0, atol=1e-5)


def test_packing_free_bilstm_forward_equals_the_packed_one():
    torch.manual_seed(0)
    model = build_model("text-bilstm", 3, kwargs={"vocab_size": len(VOCAB), "pad_id": 0, "embed_dim": 8, "hidden": 6}).eval()
    ids = _ragged_ids()
    mask = (ids != 0).long()
    with torch.no_grad():
        e = model.embedding(ids)
        packed = torch.nn.utils.rnn.pack_padded_sequence(e, mask.sum(1), batch_first=True, enforce_sorted=False)
        expected, _ = torch.nn.utils.rnn.pad_packed_sequence(model.lstm(packed)[0], batch_first=True,
                                                             total_length=ids.shape[1])
        torch.testing.assert_close(model._unpacked(e, mask.sum(1), mask), expected, rtol=0, atol=1e-6)


def test_two_layer_bilstm_onnx_export_is_refused_in_one_line(tmp_path):
    spec = _spec("text-bilstm", {"embed_dim": 8, "hidden": 6, "num_layers": 2})
    model = build_model("text-bilstm", 3, kwargs=spec["kwargs"]).eval()
    with pytest.raises(UserError, match="num_layers 1 .*torchscript"):
        export_onnx(model, spec, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("fmt", ["onnx", "onnx-int8", "torchscript"])
def test_cli_export_of_a_trained_text_model_passes_its_check_on_real_texts(trained, fmt, tmp_path):
    report = tmp_path / "export.json"
    out = tmp_path / f"student.{fmt}"
    assert cli.main(["export", str(trained["ckpt"]), "--format", fmt, "--out", str(out), "--json", str(report)]) == 0
    check = json.loads(report.read_text())["check"]
    assert check["ok"] and check["inputs"].endswith("test texts of trec") and check["samples"] > 0
    assert check["top1_agreement"] >= (0.98 if fmt == "onnx-int8" else 1.0)
    if fmt != "onnx-int8":
        assert check["max_abs_diff"] < 1e-4


def test_predict_with_the_onnx_file_equals_the_checkpoint(trained, tmp_path):
    onnx_path = tmp_path / "student.onnx"
    assert cli.main(["export", str(trained["ckpt"]), "--format", "onnx", "--out", str(onnx_path)]) == 0
    txt = tmp_path / "q.txt"
    txt.write_text("\n".join(trained["questions"]) + "\n", encoding="utf-8")
    rows = {}
    for model in (trained["ckpt"], onnx_path):
        out = tmp_path / f"{model.suffix}.json"
        assert cli.main(["predict", str(model), str(txt), "--top-k", "2", "--out", str(out)]) == 0
        rows[model.suffix] = json.loads(out.read_text())
    native, exported = rows[".safetensors"], rows[".onnx"]
    assert [r["text"] for r in exported] == trained["questions"]
    assert [r["label"] for r in exported] == [r["label"] for r in native]
    torch.testing.assert_close(torch.tensor([r["probabilities"] for r in exported]),
                               torch.tensor([r["probabilities"] for r in native]), rtol=0, atol=1e-5)
    spec = OnnxModel(onnx_path).spec  # the .onnx alone tokenizes as training did
    assert torch.equal(encode_texts(trained["questions"], spec), encode_texts(trained["questions"], read_spec(trained["ckpt"])))
