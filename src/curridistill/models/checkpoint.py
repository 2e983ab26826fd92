"""A model checkpoint is ``NAME.safetensors`` (weights) beside ``NAME.json`` (how to rebuild it:
model name and kwargs, class names, input shape, normalization). Loading executes no code from data."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from curridistill.errors import UserError
from curridistill.io import load_tensors, read_json, save_tensors, write_json
from curridistill.models.registry import build_model


def save_model(path: str | Path, model: nn.Module, spec: dict) -> Path:
    """Write weights then the spec; ``spec`` holds name, kwargs, num_classes, in_channels, classes, ..."""
    path = Path(path).with_suffix(".safetensors")
    save_tensors(path, model.state_dict(), metadata={"format": "curridistill-model"})
    write_json(path.with_suffix(".json"), spec)
    return path


def read_spec(path: str | Path) -> dict:
    path = Path(path)
    spec_path = path.with_suffix(".json")
    if not spec_path.is_file():
        raise UserError(f"{spec_path} is missing: a curridistill checkpoint is NAME.safetensors with NAME.json beside it")
    return read_json(spec_path)


def load_weights(model: nn.Module, path: str | Path, where: str = "checkpoint") -> nn.Module:
    state = load_tensors(path)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise UserError(f"{where}: weights in {path} do not fit the model ({detail}); "
                        f"check the model name/kwargs match the checkpoint") from None
    return model


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a model from its checkpoint pair; returns (model in eval mode, spec)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    spec = read_spec(path)
    model = build_model(spec["name"], spec["num_classes"], spec.get("in_channels", 3), spec.get("kwargs", {}),
                        where=str(path))
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
