"""Where a model lives: the device and floating dtype that inputs built for it must use.

Every tensor the code creates for a model (probes, latency inputs, FLOP counting) is built with these,
so a model moved to CUDA (or cast to bf16/float64) never meets a CPU float32 tensor.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from curridistill.errors import UserError


def resolve_device(name: str, option: str = "run.device") -> torch.device:
    """``auto`` -> CUDA when available, else the CPU; ``option`` is how the user wrote the setting (errors)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"{option} {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):  # mps, xpu, meta, ...: paths this project has not been checked on
        raise UserError(f"{option} {name!r}: training and prediction run on the CPU or on CUDA GPUs; use auto, cpu, "
                        f"cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{option} {name!r} but CUDA is not available here; use {option} auto or cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"{option} {name!r} but this machine has {torch.cuda.device_count()} CUDA device(s) "
                        f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}); use one of them or cuda")
    return device


def model_device(model: nn.Module) -> torch.device:
    """Device of the first parameter or buffer; CPU for a model with neither."""
    for t in _tensors(model):
        return t.device
    return torch.device("cpu")


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are one: ``cuda`` (no index) means the current CUDA device."""
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return a.index == b.index or a.index is None or b.index is None
    current = torch.cuda.current_device() if a.index is None or b.index is None else None
    return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)


def model_dtype(model: nn.Module) -> torch.dtype:
    """Floating dtype of the first floating parameter or buffer; float32 when there is none."""
    for t in _tensors(model):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def probe_input(model: nn.Module, shape: tuple[int, ...], batch: int = 1, fill: str = "zeros") -> torch.Tensor:
    """A (batch, *shape) input on the model's device and in its dtype: zeros, or standard normal."""
    make = torch.randn if fill == "randn" else torch.zeros
    return make((batch, *shape), device=model_device(model), dtype=model_dtype(model))


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so a wall-clock reading covers the work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cuda_speed(device: torch.device, tf32: bool, autotune: bool) -> dict:
    """Process-wide CUDA math settings for training on ``device``; what was set (empty off CUDA, nothing changed).

    ``tf32``: float32 matmuls on TensorFloat-32 tensor cores (``set_float32_matmul_precision("high")``, 10-bit
    mantissa; convolutions already use TF32 by PyTorch's default); false gives full float32 everywhere.
    ``autotune``: cuDNN times its convolution algorithms once per input shape and keeps the fastest
    (``cudnn.benchmark``): a win when every batch has one shape, a re-tune per new shape otherwise."""
    if device.type != "cuda":
        return {}
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    if not tf32:
        torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = autotune
    return {"tf32": tf32, "cudnn_benchmark": autotune}


# where run.amp turns bfloat16 autocast on: CUDA (on the CPU, bf16 autocast is slower than float32 for these
# models). The tests add "cpu" to run the mixed-precision paths a GPU takes.
AMP_DEVICE_TYPES: tuple[str, ...] = ("cuda",)


def uses_amp(device: torch.device, requested: bool) -> bool:
    """Whether ``run.amp`` (``requested``) means bfloat16 autocast on ``device``."""
    return requested and device.type in AMP_DEVICE_TYPES


def bf16_autocast(device: torch.device, enabled: bool):
    """bfloat16 autocast where ``uses_amp``; elsewhere a context that changes nothing (also on devices without
    autocast, such as ``meta``)."""
    if uses_amp(device, enabled):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _tensors(model: nn.Module):
    yield from model.parameters()
    yield from model.buffers()
