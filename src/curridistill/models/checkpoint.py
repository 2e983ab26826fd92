"""A model checkpoint is ``NAME.safetensors`` (weights) beside ``NAME.json`` (how to rebuild it:
model name and kwargs, class names, input shape, normalization, and ``sha256``: the checksum of the
weights file). Loading executes no code from data: a spec may name only a model of the registry (``list
models``); a ``"module:callable"`` name is imported only when the caller trusts the code (``--trust-code``)
or its own config (which is code) names that same model. A weights file whose checksum differs from its
spec's is refused, naming the file.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from curridistill.errors import UserError
from curridistill.io import file_sha256, load_tensors, read_json, save_tensors_hashed, write_json
from curridistill.models.registry import MODELS, build_model
from curridistill.models.structure import apply_structure, structure_diff

_TRUST_CODE: ContextVar[bool] = ContextVar("curridistill_trust_code", default=False)
_REQUIRED = {"name": str, "num_classes": int}


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
    """The checked spec beside a weights file: a JSON object with at least ``name`` and ``num_classes``."""
    path = Path(path)
    spec_path = path.with_suffix(".json")
    if not spec_path.is_file():
        raise UserError(f"{spec_path} is missing: a curridistill checkpoint is NAME.safetensors with NAME.json beside it")
    spec = read_json(spec_path)
    if not isinstance(spec, dict):
        raise UserError(f"{spec_path} is not a checkpoint spec (a JSON object with name, num_classes, ...); "
                        f"restore the file saved with the weights")
    for key, kind in _REQUIRED.items():
        if key not in spec:
            raise UserError(f"{spec_path} has no {key!r}; restore the file saved with the weights")
        if not isinstance(spec[key], kind) or isinstance(spec[key], bool):
            kind_name = {"str": "a string", "int": "an integer"}[kind.__name__]
            raise UserError(f"{spec_path}: {key!r} is {spec[key]!r}, not {kind_name}; restore the file saved with the weights")
    if spec["num_classes"] < 1:
        raise UserError(f"{spec_path}: num_classes is {spec['num_classes']}; restore the file saved with the weights")
    if not isinstance(spec.get("kwargs", {}), dict):
        raise UserError(f"{spec_path}: 'kwargs' must be a JSON object; restore the file saved with the weights")
    return spec


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
    model = build_model(object_model(spec) or spec["name"], spec["num_classes"], spec.get("in_channels", 3),
                        spec.get("kwargs", {}), where=str(path))
    apply_structure(model, spec.get("structure"), where=str(path))  # a pruned model: its own layer widths
    load_weights(model, path, where=str(path))
    return model.to(device).eval(), spec


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
