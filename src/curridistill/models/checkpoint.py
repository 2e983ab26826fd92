"""A model checkpoint is ``NAME.safetensors`` (weights) beside ``NAME.json`` (how to rebuild it:
model name and kwargs, class names, input shape, normalization, and ``sha256``: the checksum of the
weights file). Loading executes no code from data: a spec may name only a model of the registry (``list
models``); a ``"module:callable"`` name is imported only when the caller trusts the code (``--trust-code``)
or its own config (which is code) names that same model. A weights file whose checksum differs from its
spec's is refused, naming the file.
"""
from __future__ import annotations

import reprlib
from contextlib import contextmanager
from contextvars import ContextVar
from itertools import chain
from pathlib import Path
from typing import Annotated, Iterator

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import nn

from curridistill.errors import UserError
from curridistill.io import file_sha256, load_tensors, read_json, save_tensors_hashed, write_json
from curridistill.models.registry import MODELS, build_model
from curridistill.models.structure import LayerWidths, apply_structure, structure_diff

_TRUST_CODE: ContextVar[bool] = ContextVar("curridistill_trust_code", default=False)

PositiveInt = Annotated[int, Field(ge=1)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class CheckpointSpec(BaseModel):
    """The fields of ``NAME.json`` that loading, eval, predict and export read. Other keys (``sha256``, ``tokenizer``,
    ...) are checked where they are used. A field may be absent (older checkpoints), but a field that is there must
    be right; ``null`` only where the readers treat it as absent."""

    model_config = ConfigDict(strict=True, extra="allow")  # strict: a string is no number, nothing is coerced

    name: str
    num_classes: PositiveInt
    kwargs: dict = Field(default_factory=dict)
    in_channels: PositiveInt = 3
    # these four may be absent but not null: the readers use their values as they are
    input_shape: list[PositiveInt] = Field(None, min_length=1)
    mean: list[FiniteFloat] = None
    std: list[PositiveFloat] = None
    normalize: bool = True
    classes: list[str] | None = None
    data: dict | None = None
    structure: LayerWidths | None = None  # a pruned model's widths
    object: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "CheckpointSpec":
        if self.classes is not None and len(self.classes) != self.num_classes:
            raise ValueError(f"'classes' names {len(self.classes)} classes but num_classes is {self.num_classes}")
        channels = self.input_shape[0] if self.input_shape else None
        if len(self.input_shape or ()) == 3 and "in_channels" in self.model_fields_set and self.in_channels != channels:
            raise ValueError(f"'in_channels' is {self.in_channels} but input_shape {self.input_shape} has {channels} channels")
        if self.mean is not None and self.std is not None:
            if len(self.mean) != len(self.std):
                raise ValueError(f"'mean' has {len(self.mean)} entries and 'std' {len(self.std)}; both hold one per input channel")
            if channels is not None and len(self.mean) not in (1, channels):  # one value for all channels broadcasts
                raise ValueError(f"'mean' and 'std' hold {len(self.mean)} entries but input_shape {self.input_shape} "
                                 f"has {channels} channels")
        return self


_EXPECTED = {  # what each field of the spec must be, for the message
    "name": "a string", "num_classes": "an integer of at least 1", "kwargs": "a JSON object",
    "in_channels": "an integer of at least 1", "input_shape": "a list of positive integers such as [3, 32, 32]",
    "classes": "a list of class names (strings)", "mean": "a list of finite numbers, one per input channel",
    "std": "a list of positive finite numbers, one per input channel", "normalize": "true or false",
    "data": "a JSON object (the data settings)", "structure": "a JSON object of layer widths (positive integers)",
    "object": "a class name (a string)",
}


def code_trusted() -> bool:
    """True within ``trusting_code()``: files (checkpoint specs, run directories) may name code to import."""
    return _TRUST_CODE.get()


@contextmanager
def trusting_code(trust: bool = True) -> Iterator[None]:
    """Within this block, checkpoint specs may name ``"module:callable"`` models (``--trust-code``)."""
    token = _TRUST_CODE.set(bool(trust))
    try:
        yield
    finally:
        _TRUST_CODE.reset(token)


def save_model(path: str | Path, model: nn.Module, spec: dict) -> Path:
    """Write weights then the spec; ``spec`` holds name, kwargs, num_classes, in_channels, classes, ...
    plus ``sha256`` of the weights file, checked on load."""
    path = Path(path).with_suffix(".safetensors")
    changed = pruned_structure(model, spec)  # a pruned model: the layer widths that differ from a fresh build
    spec = {**spec, "structure": changed} if changed else {k: v for k, v in spec.items() if k != "structure"}
    digest = save_tensors_hashed(path, model.state_dict(), metadata={"format": "curridistill-model"})
    write_json(path.with_suffix(".json"), {**spec, "sha256": digest})
    return path


def pruned_structure(model: nn.Module, spec: dict) -> dict:
    """Layers of ``model`` whose widths differ from a fresh build of ``spec`` (empty when none or unknown)."""
    if "name" not in spec or "num_classes" not in spec:
        return {}
    if spec["name"] not in MODELS or spec["name"] == "hf":  # user code / files on disk: not rebuilt here, keep what is given
        return spec.get("structure") or {}
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):  # no memory, no RNG draw
            reference = build_model(spec["name"], spec["num_classes"], spec.get("in_channels", 3), spec.get("kwargs", {}))
    except Exception:  # a user factory that cannot build on meta: nothing to compare with
        return {}
    return structure_diff(model, reference)


def read_spec(path: str | Path) -> dict:
    """The checked spec beside a weights file: a JSON object with at least ``name`` and ``num_classes``, whose
    fields have the types and ranges ``CheckpointSpec`` gives (returned as read, unknown keys included)."""
    path = Path(path)
    spec_path = path.with_suffix(".json")
    if not spec_path.is_file():
        raise UserError(f"{spec_path} is missing: a curridistill checkpoint is NAME.safetensors with NAME.json beside it")
    return checked_spec(read_json(spec_path), str(spec_path), "restore the file saved with the weights")


def checked_spec(spec: object, where: str, fix: str) -> dict:
    """``spec`` when it is a JSON object whose fields ``CheckpointSpec`` accepts, else one line naming ``where``, the
    first problem and ``fix``. Also for the spec an exported ONNX file carries."""
    if not isinstance(spec, dict):
        raise UserError(f"{where} is not a checkpoint spec (a JSON object with name, num_classes, ...); {fix}")
    try:
        CheckpointSpec.model_validate(spec)
    except ValidationError as exc:
        raise UserError(f"{where}{_spec_problem(exc, spec)}; {fix}") from None
    return spec


def _spec_problem(exc: ValidationError, spec: dict) -> str:
    """The first problem pydantic found, as the rest of a sentence that starts with the spec's path."""
    err = exc.errors()[0]
    if err["type"] == "missing":
        return f" has no {err['loc'][0]!r}"
    if not err["loc"]:  # a check across fields: its own sentence
        return f": {err['msg'].removeprefix('Value error, ')}"
    field = str(err["loc"][0])
    whole_int = err["type"] == "int_type" and len(err["loc"]) == 1  # 'ten' is not an integer at all, 0 is too small
    return f": {field!r} is {reprlib.repr(spec[field])}, not {'an integer' if whole_int else _EXPECTED[field]}"


def check_name(spec: dict, path: str | Path, allowed: tuple[str, ...] | list[str] = ()) -> None:
    """Refuse a spec naming code to import (``module:callable``) unless trusted or named by the caller's config."""
    name = spec["name"]
    if spec.get("object") and name not in MODELS and name not in allowed and object_model(spec) is None:
        raise UserError(f"{Path(path).with_suffix('.json')} holds weights of a {spec['object']} module passed to "
                        f"curridistill as an object, which is not rebuilt from a file; load them into your module with "
                        f"load_weights(module, path), or register its class: MODELS.add('mynet', {spec['object'].rsplit('.', 1)[-1]})")
    if name in MODELS or name in allowed or _TRUST_CODE.get() or object_model(spec):
        return
    if ":" in name:
        raise UserError(f"{Path(path).with_suffix('.json')} names model {name!r}, which would import and run code from a "
                        f"data file; pass --trust-code if you trust who made this checkpoint")
    MODELS.get(name, where=str(Path(path).with_suffix(".json")))  # unknown registry name: the usual hint


def object_model(spec: dict) -> str | None:
    """The registry name of the class a module passed as an object was (spec ``"object"``: ``pkg.Class``), when
    that class is registered and the spec's own name is not; else None. The spec names it, nothing imports it."""
    if not spec.get("object") or spec["name"] in MODELS:
        return None
    for name, factory in MODELS.items():
        if f"{getattr(factory, '__module__', '')}.{getattr(factory, '__qualname__', '')}" == spec["object"]:
            return name
    return None


def verify_checksum(path: str | Path, spec: dict | None = None) -> None:
    """Refuse a weights file whose sha256 differs from the one its spec recorded (older specs have none)."""
    path = Path(path)
    if spec is None:
        spec_path = path.with_suffix(".json")
        if not spec_path.is_file():
            return
        spec = read_json(spec_path)
    expected = spec.get("sha256") if isinstance(spec, dict) else None
    if not expected or not path.is_file():
        return
    if file_sha256(path) != expected:
        raise UserError(f"{path} does not match the sha256 in {path.with_suffix('.json')}: the weights were modified or "
                        f"damaged; restore the file or retrain it")


def load_weights(model: nn.Module, path: str | Path, where: str = "checkpoint") -> nn.Module:
    verify_checksum(path)
    state = load_tensors(path)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise UserError(f"{where}: weights in {path} do not fit the model ({detail}); "
                        f"check the model name/kwargs match the checkpoint") from None
    return model


def load_model(path: str | Path, device: torch.device | str = "cpu",
               allowed: tuple[str, ...] | list[str] = ()) -> tuple[nn.Module, dict]:
    """Rebuild a model from its checkpoint pair; returns (model in eval mode, spec).

    ``allowed``: ``module:callable`` names the caller's own config names (configs are code)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}; check the path or train it first")
    spec = read_spec(path)
    check_name(spec, path, allowed)
    verify_checksum(path, spec)
    model = _build(spec, path)
    load_weights(model, path, where=str(path))
    check_finite(model, path)
    return model.to(device).eval(), spec


def _build(spec: dict, path: Path) -> nn.Module:
    """The spec's model with fresh weights; a factory that fails on the spec's kwargs is the spec's fault."""
    name = object_model(spec) or spec["name"]
    try:
        model = build_model(name, spec["num_classes"], spec.get("in_channels", 3), spec.get("kwargs", {}), where=str(path))
        return apply_structure(model, spec.get("structure"), where=str(path))  # a pruned model: its own layer widths
    except UserError:
        raise
    except Exception as exc:  # e.g. a negative width: torch raises RuntimeError or ValueError
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise UserError(f"{path}: cannot build model {name!r} from the kwargs in {path.with_suffix('.json')} "
                        f"({type(exc).__name__}: {first}); restore the file saved with the weights") from None


def check_finite(model: nn.Module, path: str | Path) -> None:
    """Refuse a model whose parameters or floating buffers hold NaN or inf: its outputs would be NaN."""
    for name, tensor in chain(model.named_parameters(), model.named_buffers()):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UserError(f"{path}: tensor {name!r} holds NaN or infinite values (training diverged, or the file "
                            f"was damaged); retrain the model or restore the file")


def match_input_normalization(model: nn.Module, spec: dict, mean: torch.Tensor, std: torch.Tensor) -> bool:
    """Make a loaded model see inputs normalized as it was trained, whatever the current data's statistics.

    The pipeline normalizes with the current training split's per-channel ``mean``/``std``; a checkpoint
    trained on other data (another subset, the full set) learned with the statistics in its spec. When
    they differ, a forward pre-hook maps ``x`` back to pixels and re-normalizes it with the spec's (module
    paths stay as they were, so feature taps still work). Returns True when a hook was added.
    """
    if "mean" not in spec or "std" not in spec:
        return False  # a spec without statistics (older checkpoint): nothing to match
    own_mean = torch.tensor(spec["mean"] if spec.get("normalize", True) else [0.0] * len(spec["mean"]), dtype=torch.float32)
    own_std = torch.tensor(spec["std"] if spec.get("normalize", True) else [1.0] * len(spec["std"]), dtype=torch.float32)
    cur_mean, cur_std = mean.detach().float().cpu().reshape(-1), std.detach().float().cpu().reshape(-1)
    if own_mean.shape != cur_mean.shape:
        return False  # channel mismatch is reported by the shape check, not here
    if torch.allclose(own_mean, cur_mean, rtol=0, atol=1e-7) and torch.allclose(own_std, cur_std, rtol=0, atol=1e-7):
        return False
    scale = cur_std / own_std  # x_own = (x * cur_std + cur_mean - own_mean) / own_std = x * scale + shift
    shift = (cur_mean - own_mean) / own_std
    shape = tuple(mean.shape)

    def renormalize(module: nn.Module, args: tuple):
        x = args[0]
        return (x * scale.to(x.device, x.dtype).view(shape) + shift.to(x.device, x.dtype).view(shape), *args[1:])

    model.register_forward_pre_hook(renormalize)
    return True
