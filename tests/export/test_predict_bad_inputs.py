"""`curridistill predict` on damaged inputs and on a model whose outputs are not numbers, in-process through
``cli.main``: one line naming the file and the cause, exit code 2, nothing printed as a prediction. One test case
per input."""
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from curridistill.models.checkpoint import save_model
from curridistill.models.registry import build_model
from tests.helpers import run_main
from tests.trust.catalogue import checkpoint, spec

VOCAB = ["[PAD]", "[UNK]", "good", "bad", "film"]


def npz_bytes(compressed: bool = False) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, x=np.arange(5 * 64, dtype=np.uint8).reshape(5, 8, 8))
    return buf.getvalue()


def truncated_npz(tmp: Path) -> Path:
    data = npz_bytes()
    (tmp / "x.npz").write_bytes(data[:len(data) // 2])
    return tmp / "x.npz"


def flipped_npz(tmp: Path, compressed: bool = False) -> Path:
    data = bytearray(npz_bytes(compressed))
    for i in (150, 160):  # inside the member's data: its CRC (or its deflate stream) no longer checks
        data[i] ^= 0xFF
    (tmp / "x.npz").write_bytes(bytes(data))
    return tmp / "x.npz"


def huge_header_npy(tmp: Path) -> Path:
    """An .npy whose header claims 10^15 bytes (more than any address space) followed by 64 bytes."""
    with open(tmp / "x.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (10 ** 15,)})
        f.write(bytes(64))
    return tmp / "x.npy"


def large_png(tmp: Path) -> Path:
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp / "x.png")
    return tmp / "x.png"


@pytest.mark.parametrize("make, expect", [
    (truncated_npz, "cannot read <tmp>/x.npz as .npy/.npz (File is not a zip file)"),
    (flipped_npz, "cannot read <tmp>/x.npz: the .npz file is damaged (Bad CRC-32"),
    (lambda t: flipped_npz(t, compressed=True), "cannot read <tmp>/x.npz"),
    (huge_header_npy, "cannot read <tmp>/x.npy: its header claims an array larger than this machine's memory"),
    (large_png, "cannot decode image <tmp>/x.png (Image size (64 pixels) exceeds limit"),
], ids=["npz-truncated", "npz-bad-crc", "npz-compressed-flipped", "npy-huge-header", "png-decompression-bomb"])
def test_a_damaged_input_file_is_one_line_naming_it(make, expect, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # an 8x8 image is then a "decompression bomb" (> 2x the limit)
    ck = checkpoint(tmp_path)
    code, out, err = run_main(["predict", str(ck), str(make(tmp_path))], capsys)
    assert code == 2 and out == "" and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expect.replace("<tmp>", str(tmp_path)) in lines[0], err


def test_outputs_that_are_not_numbers_are_refused_not_printed(tmp_path, capsys):
    model = build_model("mlp", 10, 1, {"hidden": [16], "image_size": 8})
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1e30)  # finite weights whose logits overflow to inf: softmax gives NaN
    ck = save_model(tmp_path / "big.safetensors", model, spec(mean=[0.0], std=[1.0]))
    np.save(tmp_path / "x.npy", np.full((2, 8, 8), 255, np.uint8))
    code, out, err = run_main(["predict", str(ck), str(tmp_path / "x.npy")], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert f"{ck} gives NaN or infinite outputs for {tmp_path / 'x.npy'}[0]" in err


def text_checkpoint(tmp: Path) -> Path:
    kwargs = {"embed_dim": 8, "filters": 4, "kernel_sizes": [2], "vocab_size": len(VOCAB), "pad_id": 0}
    torch.manual_seed(0)
    model = build_model("text-cnn", 2, kwargs=kwargs)
    return save_model(tmp / "text.safetensors", model, {
        "name": "text-cnn", "kwargs": kwargs, "num_classes": 2, "input_shape": [16], "classes": ["neg", "pos"],
        "mean": [0.0], "std": [1.0], "tokenizer": {"kind": "words", "vocab": VOCAB[2:], "max_length": 16},
        "data": {"name": "text-table", "options": {"text_column": "text"}}})


@pytest.mark.parametrize("table, expect", [
    ('text,label\ngood film,pos\n"bad film,neg\n' + "good,pos\n" * 50, "<tmp>/t.csv:3: not valid CSV (unexpected end of "
                                                                       "data); close the quote opened there"),
    ('text,label\ngood film,pos\n"bad" film,neg\n', "<tmp>/t.csv:3: not valid CSV"),
], ids=["unterminated-quote", "text-after-closing-quote"])
def test_a_broken_csv_quote_is_one_line_not_one_long_text(table, expect, tmp_path, capsys):
    ck = text_checkpoint(tmp_path)
    (tmp_path / "t.csv").write_text(table)
    code, out, err = run_main(["predict", str(ck), str(tmp_path / "t.csv")], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert expect.replace("<tmp>", str(tmp_path)) in err, err


def test_a_quoted_text_over_several_lines_still_reads(tmp_path, capsys):
    ck = text_checkpoint(tmp_path)
    (tmp_path / "t.csv").write_text('text,label\n"good\nfilm",pos\n"a ""bad"" film",neg\n')
    assert run_main(["predict", str(ck), str(tmp_path / "t.csv")], capsys)[0] == 0


def onnx_with_spec(tmp: Path, edit, capsys) -> Path:
    """An exported ONNX model whose ``curridistill.spec`` metadata went through ``edit`` (a dict -> a JSON value)."""
    import json

    import onnx  # the [onnx] extra, installed for the tests
    code, _, err = run_main(["export", str(checkpoint(tmp)), "--out", str(tmp / "m.onnx"), "--check-samples", "2"], capsys)
    assert code == 0, err
    model = onnx.load(str(tmp / "m.onnx"))
    for prop in model.metadata_props:
        if prop.key == "curridistill.spec":
            prop.value = json.dumps(edit(json.loads(prop.value)))
    onnx.save(model, str(tmp / "m.onnx"))
    return tmp / "m.onnx"


@pytest.mark.parametrize("edit, expect", [
    (lambda s: [1, 2], "its curridistill.spec metadata is not a checkpoint spec"),
    (lambda s: {**s, "classes": ["a"]}, "its curridistill.spec metadata: 'classes' names 1 classes but num_classes is 10"),
    (lambda s: {**s, "input_shape": "abc"}, "its curridistill.spec metadata: 'input_shape' is 'abc', not a list"),
    (lambda s: {**s, "num_classes": 3, "classes": ["a", "b", "c"]},
     "its curridistill.spec metadata says 3 classes but the model gives 10 scores"),
], ids=["a-list", "classes-short", "input-shape-text", "classes-not-the-outputs"])
def test_an_onnx_model_with_tampered_metadata_is_one_line(edit, expect, tmp_path, capsys):
    path = onnx_with_spec(tmp_path, edit, capsys)
    np.save(tmp_path / "x.npy", np.zeros((2, 8, 8), np.uint8))
    code, out, err = run_main(["predict", str(path), str(tmp_path / "x.npy")], capsys)
    assert code == 2 and out == "" and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"{path}: " in lines[0] and expect in lines[0], err
