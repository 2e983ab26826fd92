"""Where a model lives: the device and floating dtype that inputs built for it must use.

Every tensor the code creates for a model (probes, latency inputs, FLOP counting) is built with these,
so a model moved to CUDA (or cast to bf16/float64) never meets a CPU float32 tensor.
"""
from __future__ import annotations

import torch
from torch import nn


def model_device(model: nn.Module) -> torch.device:
    """Device of the first parameter or buffer; CPU for a model with neither."""
    for t in _tensors(model):
        return t.device
    return torch.device("cpu")


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


def _tensors(model: nn.Module):
    yield from model.parameters()
    yield from model.buffers()
