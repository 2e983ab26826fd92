"""ONNX export (``torch.onnx.export(..., dynamo=True)``, needs ``onnxscript``) and an ONNX Runtime model.

The exported file carries what a user needs to feed it, in ``metadata_props``: ``curridistill.spec``
(JSON: model name, class names, input shape, mean/std, whether inputs are normalized) plus the plain
keys ``classes``, ``input_shape``, ``mean``, ``std`` and ``normalize`` (JSON values) for other tools.
Inputs are float32 (N, C, H, W) already normalized, like the PyTorch model's; the batch size is dynamic.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from curridistill.errors import UserError
from curridistill.io import atomic_write

SPEC_KEY = "curridistill.spec"


def _need(module: str, extra: str = "onnx"):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"this needs the {module} package: pip install 'curridistill[{extra}]'") from None


def export_onnx(model: nn.Module, spec: dict, path: str | Path, opset: int = 18) -> Path:
    """Write ``model`` (fp32, CPU) as ONNX with a dynamic batch dimension and the spec in its metadata."""
    _need("onnxscript")
    onnx = _need("onnx")
    path = Path(path)
    model = model.cpu().eval()
    x = torch.zeros((2, *spec["input_shape"]))
    with _quiet():
        try:
            program = torch.onnx.export(model, (x,), dynamo=True, opset_version=opset, input_names=["input"],
                                        output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},),
                                        verbose=False)
        except Exception as exc:  # export errors come in many types; one line for the user
            raise UserError(f"ONNX export failed ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}); "
                            f"try another --opset or --format torchscript") from None
    proto = program.model_proto
    meta = {SPEC_KEY: json.dumps(public_spec(spec)), "classes": json.dumps(spec.get("classes")),
            "input_shape": json.dumps(spec["input_shape"]), "mean": json.dumps(spec.get("mean")),
            "std": json.dumps(spec.get("std")), "normalize": json.dumps(spec.get("normalize", True))}
    for key, value in meta.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    proto.producer_name = "curridistill"
    atomic_write(path, lambda tmp: onnx.save(proto, tmp))
    return path


def quantize_onnx(src: str | Path, dst: str | Path, calibration: list[Tensor]) -> Path:
    """Static int8 (QDQ, per-channel int8 weights, uint8 activations) of an exported fp32 ONNX file with
    ONNX Runtime's quantizer, activation ranges calibrated on ``calibration`` batches; keeps the metadata."""
    onnx = _need("onnx")
    _need("onnxruntime")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration:
        raise UserError("int8 ONNX needs calibration batches of training samples")
    name = _input_name(src)

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{name: b.detach().cpu().float().numpy()} for b in calibration])

        def get_next(self):
            return next(self.it, None)

    src, dst = Path(src), Path(dst)
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            quantize_static(str(pre), str(Path(tmp) / "int8.onnx"), Batches(), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        except Exception as exc:
            raise UserError(f"ONNX Runtime could not quantize {src} ({type(exc).__name__}: "
                            f"{str(exc).strip().splitlines()[0][:160]}); ship the fp32 ONNX file") from None
        proto = onnx.load(str(Path(tmp) / "int8.onnx"))
        meta = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
        del proto.metadata_props[:]
        for key, value in {**meta, "quantization": "int8 static QDQ (onnxruntime.quantization)"}.items():
            prop = proto.metadata_props.add()
            prop.key, prop.value = key, value
        atomic_write(dst, lambda t: onnx.save(proto, t))
    return dst


def _input_name(path: str | Path) -> str:
    onnx = _need("onnx")
    return onnx.load(str(path), load_external_data=False).graph.input[0].name


def opset_of(path: str | Path) -> int:
    """The default-domain opset an ONNX file declares (the exporter may keep a newer one than asked)."""
    onnx = _need("onnx")
    model = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), -1)


@contextlib.contextmanager
def _quiet():
    """The exporter's progress lines, warnings and logged tracebacks (of a failed opset down-conversion) stay
    out of the user's terminal: what matters is reported as one line, or recorded (the opset kept)."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def public_spec(spec: dict) -> dict:
    """What an exported model needs to know of its checkpoint spec (not its weights' checksum or layer table)."""
    keys = ("name", "num_classes", "in_channels", "input_shape", "classes", "mean", "std", "normalize")
    return {k: spec[k] for k in keys if k in spec}


class OnnxModel:
    """An exported model under ONNX Runtime: ``model(x)`` takes a float tensor (N, C, H, W), returns logits."""

    def __init__(self, path: str | Path, threads: int | None = None):
        ort = _need("onnxruntime")
        onnx = _need("onnx")
        path = Path(path)
        if not path.is_file():
            raise UserError(f"ONNX model not found: {path}; check the path or export it with `curridistill export`")
        try:
            meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads or torch.get_num_threads()
            options.log_severity_level = 3
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # protobuf / runtime errors for damaged files
            raise UserError(f"cannot load {path} as an ONNX model ({type(exc).__name__}); export it again") from None
        if SPEC_KEY not in meta:
            raise UserError(f"{path} has no {SPEC_KEY} metadata (class names, input shape, normalization); "
                            f"export it with `curridistill export`")
        try:
            self.spec = json.loads(meta[SPEC_KEY])
        except json.JSONDecodeError:
            raise UserError(f"{path}: its {SPEC_KEY} metadata is not JSON; export the model again") from None
        self.input_name = self.session.get_inputs()[0].name
        self.path = path

    def __call__(self, x: Tensor | np.ndarray) -> Tensor:
        arr = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(arr, dtype=np.float32)})[0]
        return torch.from_numpy(out)
