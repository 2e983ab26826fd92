"""`curridistill predict MODEL INPUT...` on files people have: PNG/JPEG images and folders written here,
.npy/.npz arrays, with a native checkpoint or an exported ONNX model; top-k classes, JSON or CSV; every
bad input is one line with exit code 2."""
import csv
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from curridistill import cli
from tests.helpers import cuda_marks

pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def models(digits_checkpoint, tmp_path_factory):
    ckpt, _ = digits_checkpoint
    onnx_path = tmp_path_factory.mktemp("onnx") / "digits.onnx"
    assert cli.main(["export", str(ckpt), "--out", str(onnx_path), "--check-samples", "32"]) == 0
    return {"native": ckpt, "onnx": onnx_path}


def _write_images(folder, images, labels, fmt="png"):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (img, label) in enumerate(zip(images, labels)):
        path = folder / f"{i:02d}_{label}.{fmt}"
        Image.fromarray(img).save(path, quality=95) if fmt == "jpg" else Image.fromarray(img).save(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("kind", ["native", "onnx"])
def test_predict_png_files_json(tmp_path, capsys, models, digits_images, kind):
    images, labels = digits_images
    paths = _write_images(tmp_path / "imgs", images, labels)
    assert cli.main(["predict", str(models[kind]), *map(str, paths), "--top-k", "3"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["input"] for r in rows] == [str(p) for p in paths]
    assert sum(r["label"] == t for r, t in zip(rows, labels)) >= 9  # a small CNN trained 4 epochs (0.97 on test)
    for r in rows:
        assert len(r["top_k"]) == 3 and r["top_k"][0]["class"] == r["class"] == str(r["label"])
        assert r["top_k"][0]["probability"] >= r["top_k"][1]["probability"] >= r["top_k"][2]["probability"]
        assert abs(sum(r["probabilities"]) - 1) < 1e-4


def test_native_and_onnx_agree_on_a_folder_and_csv(tmp_path, models, digits_images):
    images, labels = digits_images
    _write_images(tmp_path / "imgs" / "sub", images[:5], labels[:5])  # folders are searched recursively
    _write_images(tmp_path / "imgs", images[5:], labels[5:], fmt="jpg")
    outs = {}
    for kind in ("native", "onnx"):
        out = tmp_path / f"{kind}.csv"
        assert cli.main(["predict", str(models[kind]), str(tmp_path / "imgs"), "--format", "csv", "--out", str(out)]) == 0
        outs[kind] = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(outs["native"]) == 12
    assert [r["label"] for r in outs["native"]] == [r["label"] for r in outs["onnx"]]
    assert list(outs["native"][0])[:4] == ["index", "label", "class", "p_0"] and "top_k" in outs["native"][0]
    by_input = {r["input"]: int(r["label"]) for r in outs["onnx"]}
    right = sum(by_input[str(p)] == int(p.stem.split("_")[1]) for p in (tmp_path / "imgs").rglob("*.*"))
    assert right >= 9


@pytest.mark.parametrize("layout", ["nhw", "nhwc", "nchw", "float01", "npz"])
def test_predict_arrays(tmp_path, capsys, models, digits_images, layout):
    images, labels = digits_images
    x = {"nhw": images, "nhwc": images[..., None], "nchw": images[:, None], "float01": images / 255.0,
         "npz": images}[layout]
    path = tmp_path / ("x.npz" if layout == "npz" else "x.npy")
    np.savez(path, x=x) if layout == "npz" else np.save(path, x)
    assert cli.main(["predict", str(models["onnx"]), str(path)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 12 and rows[3]["input"] == f"{path}[3]"
    assert sum(r["label"] == t for r, t in zip(rows, labels)) >= 9


def _bad_inputs(tmp):
    np.save(tmp / "nan.npy", np.full((2, 8, 8), np.nan, dtype=np.float32))
    np.save(tmp / "empty.npy", np.zeros((0, 8, 8), dtype=np.uint8))
    np.save(tmp / "shape.npy", np.zeros((2, 5, 5), dtype=np.uint8))
    np.save(tmp / "range.npy", np.full((2, 8, 8), 3.5, dtype=np.float32))
    np.save(tmp / "ints.npy", np.full((2, 8, 8), 300, dtype=np.int32))
    np.savez(tmp / "keys.npz", a=np.zeros((1, 8, 8)), b=np.zeros((1, 8, 8)))
    (tmp / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp / "notes.txt").write_text("hello")
    (tmp / "emptydir").mkdir()
    (tmp / "fake.onnx").write_bytes(b"garbage")


@pytest.mark.parametrize("model,inputs,match", [
    ("onnx", ["nan.npy"], "NaN"),
    ("native", ["empty.npy"], "holds no samples"),
    ("onnx", ["shape.npy"], "do not fit the model's input"),
    ("native", ["range.npy"], "must be pixels in [0, 1]"),
    ("onnx", ["ints.npy"], "pixels are 0..255"),
    ("native", ["keys.npz"], "has no array 'x'"),
    ("onnx", ["broken.png"], "cannot decode image"),
    ("native", ["notes.txt"], "expected an .npy/.npz array or an image"),
    ("native", ["missing.png"], "input not found"),
    ("onnx", ["emptydir"], "holds no images"),
    ("fake.onnx", ["shape.npy"], "cannot load"),
    ("notes.txt", ["shape.npy"], "give a checkpoint"),
    ("native", ["--top-k", "0", "shape.npy"], "--top-k must be at least 1"),
    ("native", ["--device", "tpu", "shape.npy"], "--device 'tpu' is not a device"),
    ("onnx", ["--device", "cuda", "shape.npy"], "an .onnx file is predicted by ONNX Runtime on the CPU"),
    pytest.param("native", ["--device", "cuda", "shape.npy"], "CUDA is not available here",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")),
])
def test_bad_inputs_are_one_line_exit_2(tmp_path, capsys, models, model, inputs, match):
    _bad_inputs(tmp_path)
    model_path = str(models[model]) if model in models else str(tmp_path / model)
    words = {"tpu", "cuda"}  # option values, not files
    argv = ["predict", model_path, *[a if a.startswith("-") or a.isdigit() or a in words else str(tmp_path / a)
                                     for a in inputs]]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1, err


@pytest.mark.parametrize("device", [
    "cpu", "auto",  # auto is the GPU where there is one: the same predictions, up to float rounding
    pytest.param("cuda", marks=cuda_marks()),
])
def test_predict_on_a_device_gives_the_cpu_predictions(tmp_path, capsys, models, digits_images, device):
    images, labels = digits_images
    paths = _write_images(tmp_path / "imgs", images, labels)
    assert cli.main(["predict", str(models["native"]), *map(str, paths)]) == 0
    on_cpu = json.loads(capsys.readouterr().out)
    assert cli.main(["predict", str(models["native"]), *map(str, paths), "--device", device]) == 0
    there = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in there] == [r["label"] for r in on_cpu]
    assert np.allclose([r["probabilities"] for r in there], [r["probabilities"] for r in on_cpu], atol=1e-4)
