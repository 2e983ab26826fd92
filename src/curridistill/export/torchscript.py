"""TorchScript export (``torch.jit.trace``): a single ``.pt`` file that runs without the model's Python
code. The checkpoint spec travels inside it as ``extra_files['spec.json']``. TorchScript is in
maintenance mode in PyTorch; prefer ONNX for new deployments."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from curridistill.errors import UserError
from curridistill.export.onnx import example_input, public_spec
from curridistill.io import atomic_write


def export_torchscript(model: nn.Module, spec: dict, path: str | Path) -> Path:
    model = model.cpu().eval()
    x = example_input(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            traced = torch.jit.trace(model, (x,), check_trace=False)
        except Exception as exc:
            raise UserError(f"TorchScript tracing failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                            f"use --format onnx") from None
        extra = {"spec.json": json.dumps(public_spec(spec))}
        return atomic_write(Path(path), lambda tmp: torch.jit.save(traced, tmp, _extra_files=extra))


def load_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, dict]:
    extra = {"spec.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except Exception as exc:
            raise UserError(f"cannot load {path} as TorchScript ({type(exc).__name__}); export it again") from None
    if not extra["spec.json"]:
        raise UserError(f"{path} carries no spec.json (class names, input shape); export it with `curridistill export`")
    return module.eval(), json.loads(extra["spec.json"])
