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


def _tensors(model: nn.Module):
    yield from model.parameters()
    yield from model.buffers()
