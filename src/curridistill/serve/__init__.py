"""Predict for people: a native checkpoint (NAME.safetensors + NAME.json) or an exported .onnx file,
on .npy/.npz arrays, image files and folders; top-k classes with probabilities, as JSON or CSV.

>>> from curridistill.serve import predict_files, to_json
>>> rows = predict_files("runs/ship/ship/model.onnx", ["digit.png", "more_digits/"], top_k=3)
>>> rows[0]["class"], rows[0]["top_k"][0]["probability"]
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from curridistill.errors import UserError
from curridistill.export.onnx import OnnxModel
from curridistill.models.checkpoint import load_model
from curridistill.serve.inputs import collect, normalize, read_inputs

__all__ = ["collect", "load_predictor", "normalize", "predict_files", "predict_tensor", "read_inputs", "to_csv", "to_json",
           "top_k_rows"]


def load_predictor(path: str | Path) -> tuple[Callable[[Tensor], Tensor], dict]:
    """``(forward, spec)`` for a native checkpoint or an ``.onnx`` file; ``forward(x)`` returns logits."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        model = OnnxModel(path)
        return model, model.spec
    if path.suffix.lower() not in (".safetensors", ".json", ""):
        raise UserError(f"cannot predict with {path}: give a checkpoint (NAME.safetensors with NAME.json) or an .onnx file")
    model, spec = load_model(path.with_suffix(".safetensors"))
    return model, spec


@torch.inference_mode()
def predict_tensor(forward: Callable[[Tensor], Tensor], x: Tensor, batch: int = 512) -> Tensor:
    """(N, C) class probabilities of normalized samples ``x``."""
    return torch.cat([torch.softmax(torch.as_tensor(forward(x[i:i + batch])).float(), 1) for i in range(0, len(x), batch)])


def predict_files(model_path: str | Path, inputs: list[str | Path], top_k: int = 5) -> tuple[list[dict], list[str]]:
    """``(rows, class names)``; a row per sample: index, input, label, class, probability, top_k
    [{label, class, probability}] (best first) and probabilities (all classes, by label)."""
    if top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {top_k}")
    forward, spec = load_predictor(model_path)
    x, names = read_inputs(inputs, spec)
    probs = predict_tensor(forward, x)
    classes = spec.get("classes") or [str(i) for i in range(probs.shape[1])]
    return top_k_rows(probs, list(classes), names, top_k), list(classes)


def top_k_rows(probs: Tensor, classes: list[str], names: list[str], top_k: int) -> list[dict]:
    """A row per sample of ``probs`` (N, C): index, input, label, class, probability, top_k and probabilities."""
    k = min(top_k, probs.shape[1])
    values, labels = probs.topk(k, dim=1)
    rows = []
    for i, (name, p, v, l) in enumerate(zip(names, probs.tolist(), values.tolist(), labels.tolist())):
        rows.append({"index": i, "input": name, "label": l[0], "class": classes[l[0]], "probability": round(v[0], 6),
                     "top_k": [{"label": a, "class": classes[a], "probability": round(b, 6)} for a, b in zip(l, v)],
                     "probabilities": [round(q, 6) for q in p]})
    return rows


def to_json(rows: list[dict]) -> str:
    return json.dumps(rows, indent=1) + "\n"


def to_csv(rows: list[dict], classes: list[str]) -> str:
    """index,label,class,p_<class>...,input,top_k (``class:probability`` pairs joined by ``;``)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["index", "label", "class"] + [f"p_{c}" for c in classes] + ["input", "top_k"])
    for r in rows:
        w.writerow([r["index"], r["label"], r["class"]] + [f"{v:.6f}" for v in r["probabilities"]]
                   + [r["input"], ";".join(f"{t['class']}:{t['probability']:.6f}" for t in r["top_k"])])
    return buf.getvalue()

