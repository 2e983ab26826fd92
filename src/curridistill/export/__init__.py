"""Export a trained model for serving: ONNX (checked against PyTorch with ONNX Runtime), TorchScript,
or a plain safetensors checkpoint pair. ``export_model`` is what ``curridistill export`` calls.

>>> from curridistill.export import export_model
>>> result = export_model("runs/ship/student/model.safetensors", "onnx", "student.onnx")
>>> result["check"]["max_abs_diff"], result["check"]["top1_agreement"]
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from curridistill.evaluate.measure import latency_ms, logits_of
from curridistill.config import DataConfig
from curridistill.data.pipeline import Pipeline, load_splits
from curridistill.data.text import is_text_spec, trim
from curridistill.errors import UserError
from curridistill.io import atomic_write
from curridistill.export.onnx import OnnxModel, export_onnx, newest_opset, opset_of, public_spec, quantize_onnx
from curridistill.export.torchscript import export_torchscript, load_torchscript
from curridistill.models.checkpoint import load_model, save_model
from curridistill.outputs import check_writable, refuse_overwriting, same_file

FORMATS = ("onnx", "onnx-int8", "torchscript", "safetensors")
SUFFIX = {"onnx": ".onnx", "onnx-int8": ".int8.onnx", "torchscript": ".pt", "safetensors": ".safetensors"}
MAX_ABS_DIFF = 1e-4  # fp32 logits of the exported model vs PyTorch's, on held-out samples
MIN_INT8_AGREEMENT = 0.98  # int8 ONNX: top-1 agreement with the fp32 model (its logits differ by design)
FIXES = {"onnx": "try another --opset or --format torchscript", "onnx-int8": "ship the fp32 ONNX file",
         "torchscript": "use --format onnx"}  # what to try when an export fails its check

__all__ = ["FORMATS", "MAX_ABS_DIFF", "OnnxModel", "check_output", "check_parity", "default_out", "parity_ok", "export",
           "export_model", "held_out_samples", "public_spec", "spec_pipeline"]


def spec_pipeline(spec: dict, root: str | None = None) -> Pipeline:
    """The CPU data pipeline of the data a checkpoint was trained on (its spec's ``data``; digits when it has
    none), read from ``root`` when given."""
    raw = dict(spec.get("data") or {"name": "digits"})
    if root:
        raw["root"] = root
    cfg = DataConfig(**raw)
    return Pipeline(load_splits(cfg), cfg, torch.device("cpu"))


def held_out_samples(spec: dict, n: int, root: str | None = None, split: str = "test") -> tuple[Tensor, str]:
    """Up to ``n`` normalized samples of ``split`` of the data the model was trained on, and where they came
    from. Falls back to standard-normal inputs (said so in the second value) when that data is not available."""
    try:
        pipeline = spec_pipeline(spec, root)
        cfg = pipeline.cfg
        idx = torch.arange(min(n, len(pipeline.split(split))))
        x = pipeline.batch(split, idx)[0]
        if is_text_spec(spec):  # token ids, trimmed to the longest text as a training batch is
            return trim(x.long().cpu(), int(spec["kwargs"]["pad_id"])), f"{len(idx)} {split} texts of {cfg.name}"
        return x.float(), f"{len(idx)} {split} samples of {cfg.name}"
    except Exception as exc:  # missing data directory, other machine: still check, on random inputs
        gen = torch.Generator().manual_seed(0)
        why = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        if is_text_spec(spec):  # random non-pad token ids of a length the export was not traced with
            kwargs = spec.get("kwargs") or {}
            ids = torch.randint(1, max(2, int(kwargs.get("vocab_size", 2))), (n, 13), generator=gen)
            return ids.masked_fill(ids == int(kwargs.get("pad_id", 0)), 1), f"{n} random texts (data not available: {why})"
        return torch.randn((n, *spec["input_shape"]), generator=gen), f"{n} random inputs (data not available: {why})"


def check_parity(model: nn.Module, exported, x: Tensor, runs: int = 50) -> dict:
    """Logit difference, top-1 agreement and batch-1 latency of ``exported`` (a callable) vs ``model``."""
    model = model.cpu().eval()
    ref = logits_of(model, x)
    out = logits_of(exported, x)
    one = x[:1]
    return {"samples": len(x), "max_abs_diff": float((ref - out).abs().max()),
            "top1_agreement": float((ref.argmax(1) == out.argmax(1)).double().mean()),
            "pytorch_latency_ms": latency_ms(model, one, runs=runs),
            "exported_latency_ms": latency_ms(exported, one, runs=runs)}


def export(model: nn.Module, spec: dict, fmt: str, out: str | Path, opset: int = 18,
           calibration: list[Tensor] | None = None) -> Path:
    """Write ``model`` in ``fmt`` to ``out``; returns the path (for safetensors: NAME.safetensors + NAME.json).
    ``onnx-int8`` needs ``calibration``: a few batches of normalized training samples."""
    if fmt not in FORMATS:
        raise UserError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}")
    out = Path(out)
    if fmt == "onnx":
        return export_onnx(model, spec, out, opset)
    if fmt == "onnx-int8":
        fp32 = export_onnx(model, spec, out.with_name(out.name + ".fp32.tmp"), opset)
        try:
            return quantize_onnx(fp32, out, calibration or [])
        finally:
            fp32.unlink(missing_ok=True)
    if fmt == "torchscript":
        return export_torchscript(model, spec, out)
    return save_model(out, model, {k: v for k, v in spec.items() if k not in ("sha256", "structure")})


def exported_runner(fmt: str, path: Path):
    """A callable running the exported file (``None`` for safetensors: the same PyTorch model)."""
    if fmt in ("onnx", "onnx-int8"):
        return OnnxModel(path)
    if fmt == "torchscript":
        return load_torchscript(path)[0]
    return None


def export_model(checkpoint: str | Path, fmt: str = "onnx", out: str | Path | None = None, opset: int = 18,
                 check_samples: int = 256, root: str | None = None) -> dict:
    """Export a native checkpoint and check the result on held-out samples. Raises UserError when the
    exported model's logits differ from PyTorch's by more than ``MAX_ABS_DIFF`` or any top-1 differs; the
    file is then not written (an existing ``out`` is left as it was)."""
    if fmt not in FORMATS:
        raise UserError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}")
    if opset < 7:
        raise UserError(f"--opset {opset} is too old; use 17 or later (default 18)")
    if fmt.startswith("onnx") and opset > newest_opset():
        raise UserError(f"--opset {opset} is newer than the ONNX package knows; use 17 to {newest_opset()} (default 18)")
    if check_samples < 1:
        raise UserError(f"--check-samples must be at least 1, got {check_samples}")
    src = Path(checkpoint)
    if src.suffix.lower() in (".onnx", ".pt"):
        raise UserError(f"{src} is already exported; export takes a native checkpoint (NAME.safetensors with NAME.json)")
    out = Path(out) if out else default_out(src, fmt)
    check_output(src, out, fmt)
    model, spec = load_model(checkpoint)
    calibration = None
    if fmt == "onnx-int8":  # activation ranges from training samples, never from the held-out ones
        train, _ = held_out_samples(spec, 256, root, split="train")
        calibration = [train[i:i + 32] for i in range(0, len(train), 32)]
    result = {"checkpoint": str(checkpoint), "format": fmt, "path": str(out)}
    if fmt == "safetensors":  # the same PyTorch weights: nothing to check
        path = export(model, spec, fmt, out, opset, calibration)
        return {**result, "path": str(path), "bytes": path.stat().st_size}
    # written beside ``out`` and moved onto it only once the check passed: a failed export loses no earlier file
    atomic_write(out, lambda tmp: result.update(
        export_checked(model, spec, fmt, Path(tmp), out, opset, calibration, check_samples, root)))
    return result


def default_out(checkpoint: str | Path, fmt: str) -> Path:
    """Where ``export`` writes without ``--out``: beside the checkpoint, NAME.onnx / NAME.pt / NAME-export.safetensors."""
    src = Path(checkpoint)
    return src.with_name(src.stem + ("-export" if fmt == "safetensors" else "") + SUFFIX[fmt])


def written_files(out: Path, fmt: str | None) -> list[Path]:
    """The files an export to ``out`` writes: a safetensors export is a pair, ``NAME.safetensors`` + ``NAME.json``;
    ``fmt`` None: ``out`` alone (the ``--json`` result)."""
    if fmt == "safetensors":
        return [out.with_suffix(".safetensors"), out.with_suffix(".json")]
    return [out]


def check_output(checkpoint: str | Path, out: str | Path, fmt: str | None, flag: str = "--out") -> None:
    """Refuse, before any export work, an output that cannot be written or whose writing would destroy a checkpoint:
    the one exported (its weights or its spec) or any other. A safetensors export never replaces files: it writes a
    new checkpoint pair. ``fmt`` None: the ``--json`` result file."""
    src, out = Path(checkpoint), Path(out)
    pair = [src.with_suffix(".safetensors"), src.with_suffix(".json")]
    files = written_files(out, fmt)
    for path in files:
        for p in pair:
            if same_file(path, p):
                part = "the checkpoint itself" if p.suffix == ".safetensors" else "the spec of the checkpoint being exported"
                raise UserError(f"{flag} {out} would overwrite {part}; choose another path")
        refuse_overwriting(path, flag)
    if fmt == "safetensors":
        for path in files:
            if os.path.lexists(path):
                raise UserError(f"{flag} {out}: {path} exists; a safetensors export writes a new checkpoint pair "
                                f"({files[0].name} + {files[1].name}) and never replaces files: delete it or choose "
                                f"another path")
    check_writable(out, flag, example=("model" + SUFFIX[fmt]) if fmt else "export.json")
    for path in files:
        if path != out:
            check_writable(path, flag)


def export_checked(model: nn.Module, spec: dict, fmt: str, tmp: Path, out: Path, opset: int,
                   calibration: list[Tensor] | None, check_samples: int, root: str | None) -> dict:
    """Export ``model`` to ``tmp`` and check it against PyTorch; returns bytes, opset and the check for
    ``export_model``'s result. ``out``: where the file goes once it passed, as messages name it."""
    export(model, spec, fmt, tmp, opset, calibration)
    result: dict = {"bytes": tmp.stat().st_size}
    if fmt in ("onnx", "onnx-int8"):
        result["opset"] = opset_of(tmp)  # the exporter keeps 18 when a lower opset cannot be converted to
        if result["opset"] != opset:
            result["opset_note"] = f"opset {opset} was asked; the exporter could not convert down and kept {result['opset']}"
    x, source = held_out_samples(spec, check_samples, root)
    check = check_parity(model, exported_runner(fmt, tmp), x)
    check["inputs"] = source
    check["ok"] = parity_ok(fmt, check)
    if not check["ok"]:
        raise UserError(f"{out} not written: {parity_failure(model, x, fmt, check, source)}")
    result["check"] = check
    return result


def parity_failure(model: nn.Module, x: Tensor, fmt: str, check: dict, source: str) -> str:
    """Why the exported model failed its check, and what to do: another opset does not cure NaN logits."""
    if not math.isfinite(check["max_abs_diff"]):  # NaN or inf logits on one side or both
        if not bool(torch.isfinite(logits_of(model.cpu().eval(), x)).all()):
            return (f"the checkpoint's model itself gives NaN or infinite logits on {source}; its weights overflow "
                    f"on such inputs: retrain it (e.g. with a lower learning rate) before exporting")
        return (f"the exported model gives NaN or infinite logits on {source} where PyTorch's are finite; "
                f"{FIXES[fmt]}")
    return (f"the exported model differs from PyTorch on {source} (max |logit diff| {check['max_abs_diff']:.2e}, "
            f"top-1 agreement {check['top1_agreement']:.4f}); {FIXES[fmt]}")


def parity_ok(fmt: str, check: dict) -> bool:
    """fp32 exports: logits within ``MAX_ABS_DIFF`` and every top-1 the same; int8: top-1 agreement only."""
    if fmt == "onnx-int8":
        return check["top1_agreement"] >= MIN_INT8_AGREEMENT
    return check["max_abs_diff"] < MAX_ABS_DIFF and check["top1_agreement"] == 1.0
