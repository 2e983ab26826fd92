"""ONNX export (``torch.onnx.export(..., dynamo=True)``, needs ``onnxscript``) and an ONNX Runtime model.

The exported file carries what a user needs to feed it, in ``metadata_props``: ``curridistill.spec``
(JSON: model name, class names, input shape, mean/std, whether inputs are normalized) plus the plain
keys ``classes``, ``input_shape``, ``mean``, ``std`` and ``normalize`` (JSON values) for other tools.
Inputs are float32 (N, C, H, W) already normalized, like the PyTorch model's; the batch size is dynamic.
A model trained on text takes int64 token ids (N, L) named ``input_ids``, right-padded with the spec's
``pad_id``; batch and length are dynamic, and the spec carries the tokenizer (the ``words`` vocabulary
itself, or the tokenizer directory with its digest) so a server tokenizes exactly as in training.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from curridistill.data.text import is_text_spec
from curridistill.errors import UserError
from curridistill.io import atomic_write
from curridistill.models.checkpoint import checked_spec

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
    text = is_text_spec(spec)
    x = example_input(spec)
    # token ids: batch and length vary (batches are trimmed to their longest text); images: the batch only
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim.AUTO} if text else {0: torch.export.Dim("batch")}
    with _quiet():
        try:
            program = torch.onnx.export(model, (x,), dynamo=True, opset_version=opset,
                                        input_names=["input_ids" if text else "input"], output_names=["logits"],
                                        dynamic_shapes=(dims,), verbose=False)
        except UserError:
            raise
        except Exception as exc:  # export errors come in many types; one line for the user, the root cause's
            cause = exc.__cause__ or exc
            if isinstance(cause, UserError):
                raise cause from None
            first = re.sub(r"\x1b\[[0-9;]*m", "", str(cause)).strip().splitlines()[0][:200] if str(cause).strip() else ""
            raise UserError(f"ONNX export failed ({type(cause).__name__}: {first}); "
                            f"try another --opset or --format torchscript") from None
    proto = program.model_proto
    meta = {SPEC_KEY: json.dumps(public_spec(spec)), "classes": json.dumps(spec.get("classes")),
            "input_shape": json.dumps(spec["input_shape"]), "mean": json.dumps(spec.get("mean")),
            "std": json.dumps(spec.get("std")), "normalize": json.dumps(spec.get("normalize", True)),
            "input_kind": json.dumps("token_ids" if text else "pixels")}
    for key, value in meta.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    proto.producer_name = "curridistill"
    atomic_write(path, lambda tmp: onnx.save(proto, tmp))
    return path


def quantize_onnx(src: str | Path, dst: str | Path, calibration: list[Tensor], seven_bit_weights: bool = True) -> Path:
    """int8 of an exported fp32 ONNX file with ONNX Runtime's quantizer; keeps the metadata. Pixel models: static
    (QDQ, per-channel int8 weights in 7 bits, uint8 activations), activation ranges calibrated on ``calibration``
    batches.
    Text models (int64 token ids in): dynamic (int8 weights, activations quantized per batch at run time), which
    ONNX Runtime recommends for transformer and RNN models; the calibration batches are not needed.
    ``seven_bit_weights=False`` uses all 8 bits for pixel models' weights (benchmarks/onnx_int8_weight_bits.py
    measures what that costs on a CPU without VNNI)."""
    onnx = _need("onnx")
    _need("onnxruntime")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name, kind = _input_of(src)
    text = kind == "tensor(int64)"
    if not calibration and not text:
        raise UserError("int8 ONNX needs calibration batches of training samples")

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{name: b.detach().cpu().float().numpy()} for b in calibration])

        def get_next(self):
            return next(self.it, None)

    src, dst = Path(src), Path(dst)
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        pre, int8 = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            if text:
                # LSTM left out: ORT 1.23's int8 LSTM gave a BiLSTM 24% top-1 agreement (per-tensor) or failed
                # (per-channel); Conv / MatMul / Gemm carry nearly all weights of the text students and BERTs
                quantize_dynamic(str(pre), str(int8), per_channel=True, weight_type=QuantType.QInt8,
                                 op_types_to_quantize=["Conv", "MatMul", "Gemm"])
            else:
                # reduce_range: 7-bit weights. On x86 CPUs without VNNI (AVX2 only, like the 2-core machine
                # here) ONNX Runtime multiplies uint8 activations by int8 weights with vpmaddubsw, whose int16
                # pair sums saturate with 8-bit weights: six CIFAR resnet20s lost 0.6-2.0 points of test
                # accuracy that way, at most 0.24 with 7-bit weights (benchmarks/results/onnx_int8_weight_bits.json). The file is
                # shipped to CPUs we do not know, so it is made safe for both kinds.
                quantize_static(str(pre), str(int8), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                                reduce_range=seven_bit_weights, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        except Exception as exc:
            raise UserError(f"ONNX Runtime could not quantize {src} ({type(exc).__name__}: "
                            f"{str(exc).strip().splitlines()[0][:160]}); ship the fp32 ONNX file") from None
        proto = onnx.load(str(int8))
        meta = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
        how = "int8 dynamic (onnxruntime.quantization)" if text else "int8 static QDQ (onnxruntime.quantization)"
        del proto.metadata_props[:]
        for key, value in {**meta, "quantization": how}.items():
            prop = proto.metadata_props.add()
            prop.key, prop.value = key, value
        atomic_write(dst, lambda t: onnx.save(proto, t))
    return dst


def _input_of(path: str | Path) -> tuple[str, str]:
    """The name and type (``tensor(float)``, ``tensor(int64)``, as ONNX Runtime writes it) of a file's first input."""
    onnx = _need("onnx")
    first = onnx.load(str(path), load_external_data=False).graph.input[0]
    elem = onnx.helper.tensor_dtype_to_np_dtype(first.type.tensor_type.elem_type)
    return first.name, "tensor(int64)" if elem == np.int64 else f"tensor({np.dtype(elem).name})"


def newest_opset() -> int:
    """The newest default-domain opset the installed ``onnx`` package knows: the exporter keeps 18 for any newer."""
    return int(_need("onnx").defs.onnx_opset_version())


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


def example_input(spec: dict, batch: int = 2) -> Tensor:
    """What a model is traced with: (batch, 8) int64 token ids (no padding) for text, zeros of the input shape
    otherwise."""
    if not is_text_spec(spec):
        return torch.zeros((batch, *spec["input_shape"]))
    kwargs = spec.get("kwargs") or {}
    pad, vocab = int(kwargs.get("pad_id", 0)), int(kwargs.get("vocab_size", 2))
    tokens = [t % vocab for t in range(1, 18) if t % vocab != pad][:8] or [pad]
    return torch.tensor(tokens, dtype=torch.long).repeat(batch, 1)


def public_spec(spec: dict) -> dict:
    """What an exported model needs to know of its checkpoint spec (not its weights' checksum or layer table).
    Text models also keep their tokenizer, ``pad_id`` / ``vocab_size`` and the data set's name and options."""
    keys = ("name", "num_classes", "in_channels", "input_shape", "classes", "mean", "std", "normalize")
    public = {k: spec[k] for k in keys if k in spec}
    if is_text_spec(spec):
        kwargs, data = spec.get("kwargs") or {}, spec.get("data") if isinstance(spec.get("data"), dict) else {}
        public["tokenizer"] = spec.get("tokenizer")
        public["kwargs"] = {k: kwargs[k] for k in ("pad_id", "vocab_size") if k in kwargs}
        public["data"] = {"name": data.get("name"), "options": data.get("options") or {}}
    return public


class OnnxModel:
    """An exported model under ONNX Runtime: ``model(x)`` takes a float tensor (N, C, H, W), or int64 token ids
    (N, L) for a text model, and returns logits."""

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
            spec = json.loads(meta[SPEC_KEY])
        except json.JSONDecodeError:
            raise UserError(f"{path}: its {SPEC_KEY} metadata is not JSON; export the model again") from None
        self.spec = checked_spec(spec, f"{path}: its {SPEC_KEY} metadata", "export the model again")
        outputs = self.session.get_outputs()[0].shape
        if isinstance(outputs[-1], int) and outputs[-1] != self.spec["num_classes"]:  # a fixed class dimension
            raise UserError(f"{path}: its {SPEC_KEY} metadata says {self.spec['num_classes']} classes but the model gives "
                            f"{outputs[-1]} scores; export the model again")
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.dtype = np.int64 if first.type == "tensor(int64)" else np.float32  # token ids or pixels
        self.path = path

    def __call__(self, x: Tensor | np.ndarray) -> Tensor:
        arr = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
        try:
            out = self.session.run(None, {self.input_name: np.ascontiguousarray(arr, dtype=self.dtype)})[0]
        except Exception as exc:  # a shape the graph does not take, a kernel failing on this CPU
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise UserError(f"ONNX Runtime could not run {self.path} on inputs of shape {tuple(arr.shape)} "
                            f"({type(exc).__name__}: {first}); export the model again") from None
        return torch.from_numpy(out)
