"""Predict for people: a native checkpoint (NAME.safetensors + NAME.json) or an exported .onnx file,
on .npy/.npz arrays, image files and folders; top-k classes with probabilities, as JSON or CSV.

A checkpoint trained on text takes .txt files (one text per line), .csv/.tsv files with a text column,
or strings, tokenized with the vocabulary / tokenizer its spec carries (``data.text.TextEncoder``).

>>> from curridistill.serve import predict_files, predict_texts, to_json
>>> rows, classes = predict_files("runs/ship/ship/model.onnx", ["digit.png", "more_digits/"], top_k=3)
>>> rows[0]["class"], rows[0]["top_k"][0]["probability"]
>>> rows, classes = predict_texts("runs/trec/seed-0/student/model.safetensors", ["who wrote hamlet ?"])
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from curridistill.data.text import TextEncoder, is_text_spec, trim
from curridistill.errors import UserError
from curridistill.export.onnx import OnnxModel
from curridistill.models.checkpoint import load_model
from curridistill.models.placement import resolve_device
from curridistill.serve.inputs import collect, normalize, read_inputs, read_texts

__all__ = ["collect", "forward_on", "load_predictor", "normalize", "predict_files", "predict_ids", "predict_tensor", "predict_texts",
           "read_inputs", "read_texts", "to_csv", "to_json", "top_k_rows"]


def load_predictor(path: str | Path, device: str = "cpu") -> tuple[Callable[[Tensor], Tensor], dict]:
    """``(forward, spec)`` for a native checkpoint (on ``device``: cpu, cuda, cuda:N, auto) or an ``.onnx`` file
    (ONNX Runtime, CPU); ``forward(x)`` takes host tensors and returns logits."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        if device != "cpu":
            raise UserError(f"--device {device}: an .onnx file is predicted by ONNX Runtime on the CPU; leave --device "
                            f"out, or predict with the checkpoint (NAME.safetensors) on the GPU")
        model = OnnxModel(path)
        return model, model.spec
    if path.suffix.lower() not in (".safetensors", ".json", ""):
        raise UserError(f"cannot predict with {path}: give a checkpoint (NAME.safetensors with NAME.json) or an .onnx file")
    where = resolve_device(device, "--device")
    model, spec = load_model(path.with_suffix(".safetensors"), where)
    return forward_on(model, where), spec


def forward_on(module: Callable[[Tensor], Tensor], device: torch.device) -> Callable[[Tensor], Tensor]:
    """``module``'s forward for host tensors: each batch goes to ``device``, where the module lives."""
    return lambda x: module(x.to(device, non_blocking=True))


def _probabilities(logits) -> Tensor:
    return torch.softmax(torch.as_tensor(logits).float(), 1)


@torch.inference_mode()
def predict_tensor(forward: Callable[[Tensor], Tensor], x: Tensor, batch: int = 512) -> Tensor:
    """(N, C) class probabilities (on the host) of normalized samples ``x``; the batches' results are copied
    back once, not once per batch."""
    return torch.cat([_probabilities(forward(x[i:i + batch])) for i in range(0, len(x), batch)]).cpu()


@torch.inference_mode()
def predict_ids(forward: Callable[[Tensor], Tensor], ids: Tensor, pad_id: int, batch: int = 512) -> Tensor:
    """(N, C) class probabilities (on the host) of (N, L) token ids, each batch trimmed to its longest row as in
    training."""
    return torch.cat([_probabilities(forward(trim(ids[i:i + batch], pad_id))) for i in range(0, len(ids), batch)]).cpu()


def _refuse_nonfinite(probs: Tensor, names: list[str], model_path: str | Path) -> None:
    """NaN probabilities are no prediction (and no valid JSON): the model overflowed or its weights are damaged."""
    bad = ~torch.isfinite(probs).all(1)
    if bool(bad.any()):
        first = names[int(bad.nonzero()[0])]
        raise UserError(f"{model_path} gives NaN or infinite outputs for {first}; its weights are damaged or overflow "
                        f"on this input: retrain or restore the model")


def _text_rows(forward: Callable[[Tensor], Tensor], spec: dict, texts: list[str], names: list[str],
               top_k: int, model_path: str | Path) -> tuple[list[dict], list[str]]:
    encoder = TextEncoder(spec)
    probs = predict_ids(forward, encoder(texts), encoder.pad_id)
    _refuse_nonfinite(probs, names, model_path)
    classes = list(spec.get("classes") or [str(i) for i in range(probs.shape[1])])
    rows = top_k_rows(probs, classes, names, top_k)
    for row, text in zip(rows, texts):
        row["text"] = text
    return rows, classes


def predict_texts(model_path: str | Path, texts: list[str] | str, top_k: int = 5,
                  device: str = "cpu") -> tuple[list[dict], list[str]]:
    """``(rows, class names)`` for texts given as strings (never read as file names) with a checkpoint trained on
    text; rows as ``predict_files``'s, plus ``text``. ``device``: where the checkpoint runs."""
    if top_k < 1:
        raise UserError(f"top_k must be at least 1, got {top_k}")
    items = [texts] if isinstance(texts, str) else list(texts)
    if not items or not all(isinstance(t, str) for t in items):
        raise UserError("predict_texts: give a list of one or more texts (str)")
    forward, spec = load_predictor(model_path, device)
    if not is_text_spec(spec):
        raise UserError(f"{model_path} was not trained on text; give it images or arrays with predict_files")
    return _text_rows(forward, spec, items, [f"texts[{i}]" for i in range(len(items))], top_k, model_path)


def predict_files(model_path: str | Path, inputs: list[str | Path], top_k: int = 5, text_column: str | None = None,
                  literal_texts: bool = True, device: str = "cpu") -> tuple[list[dict], list[str]]:
    """``(rows, class names)``; a row per sample: index, input, label, class, probability, top_k
    [{label, class, probability}] (best first) and probabilities (all classes, by label). ``device``: where a
    checkpoint runs (cpu, cuda, cuda:N, auto); an .onnx file runs on the CPU.

    A model trained on text reads .txt / .csv / .tsv files (``read_texts``; ``text_column`` names the column) and,
    with ``literal_texts``, takes a string that names no file as a text; its rows also hold ``text``."""
    if top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {top_k}")
    forward, spec = load_predictor(model_path, device)
    if is_text_spec(spec):
        options = (spec.get("data") or {}).get("options") or {}
        texts, names = read_texts(inputs, literal_texts, text_column, options.get("text_column"))
        return _text_rows(forward, spec, texts, names, top_k, model_path)
    if text_column is not None:
        raise UserError(f"--text-column is for models trained on text; {model_path} takes images or arrays")
    x, names = read_inputs(inputs, spec)
    probs = predict_tensor(forward, x)
    _refuse_nonfinite(probs, names, model_path)
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
    """index,label,class,p_<class>...,input,top_k (``class:probability`` pairs joined by ``;``)[,text]."""
    buf = io.StringIO()
    w = csv.writer(buf)
    with_text = any("text" in r for r in rows)  # text models: the text itself, last
    w.writerow(["index", "label", "class"] + [f"p_{c}" for c in classes] + ["input", "top_k"] + ["text"] * with_text)
    for r in rows:
        w.writerow([r["index"], r["label"], r["class"]] + [f"{v:.6f}" for v in r["probabilities"]]
                   + [r["input"], ";".join(f"{t['class']}:{t['probability']:.6f}" for t in r["top_k"])]
                   + [r.get("text", "")] * with_text)
    return buf.getvalue()

