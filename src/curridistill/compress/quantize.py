"""Post-training int8 quantization with ``torch.ao.quantization`` (eager dynamic, FX graph mode static).

Why this path and not ``torchao``: measured here (torch 2.13 CPU, 2 cores), torchao 0.18's
``Int8DynamicActivationInt8WeightConfig`` ran a small MLP 10x *slower* than fp32 in eager mode (its CPU
int8 kernels want ``torch.compile``/inductor), while ``torch.ao.quantization`` runs fbgemm/x86 int8
kernels directly. ``torch.ao.quantization`` is deprecated in favour of torchao and may go in a later
torch; the functions below are the one place to change when it does. For shipping, the ONNX export of
the fp32 model is the portable artifact (``curridistill export``); the int8 numbers here say what int8
costs in accuracy and buys in size on this CPU.

- ``dynamic``: int8 weights of ``nn.Linear`` layers, activations quantized on the fly. Any model; only
  linear layers shrink (a CNN's convolutions stay fp32).
- ``static``: int8 weights *and* activations of conv and linear layers, activation ranges calibrated on
  training batches. Needs a model that FX can trace (the zoo's plain CNNs and ResNets can).
"""
from __future__ import annotations

import copy
import warnings
from typing import Iterable

import torch
from torch import Tensor, nn

from curridistill.errors import UserError

MODES = ("dynamic", "static")


def _engine() -> str:
    engines = torch.backends.quantized.supported_engines
    for name in ("x86", "fbgemm", "qnnpack"):
        if name in engines:
            torch.backends.quantized.engine = name
            return name
    raise UserError(f"this torch build has no int8 CPU engine (supported: {engines}); skip ship.quantize")


def quantize_dynamic(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (CPU) with int8 ``nn.Linear`` weights and dynamically quantized activations."""
    from torch.ao.quantization import quantize_dynamic as ao_dynamic

    _engine()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notice of torch.ao.quantization (see module docstring)
        return ao_dynamic(copy.deepcopy(model).cpu().eval(), {nn.Linear}, dtype=torch.qint8)


def quantize_static(model: nn.Module, calibration: Iterable[Tensor]) -> nn.Module:
    """A copy of ``model`` with int8 conv/linear weights and activations, calibrated on ``calibration`` batches."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    engine = _engine()
    batches = [x.detach().cpu().float() for x in calibration]
    if not batches:
        raise UserError("static quantization needs calibration batches; raise ship.calibration_batches")
    float_model = copy.deepcopy(model).cpu().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            prepared = prepare_fx(float_model, get_default_qconfig_mapping(engine), example_inputs=(batches[0][:1],))
        except Exception as exc:  # FX tracing fails on data-dependent control flow
            raise UserError(f"static int8 needs a model that torch.fx can trace ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:160]}); use ship.quantize: [dynamic]") from None
        with torch.inference_mode():
            for x in batches:
                prepared(x)
        return convert_fx(prepared)


def quantize(model: nn.Module, mode: str, calibration: Iterable[Tensor] = ()) -> nn.Module:
    if mode == "dynamic":
        return quantize_dynamic(model)
    if mode == "static":
        return quantize_static(model, calibration)
    raise UserError(f"quantization mode {mode!r} is not one of {', '.join(MODES)}")


def fake_quantize_weight(w: Tensor, bits: int = 8) -> Tensor:
    """Symmetric per-output-channel fake quantization (round to ``bits``-bit integers and back); the
    gradient passes straight through to ``w`` inside the clamping range (straight-through estimator)."""
    qmax = 2 ** (bits - 1) - 1
    flat = w.detach().abs().reshape(w.shape[0], -1).amax(dim=1)
    scale = (flat / qmax).clamp_min(1e-8).float()
    zero = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
    return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -qmax - 1, qmax)


def fake_quantize_weights(model: nn.Module, bits: int = 8) -> list:
    """Forward hooks making every conv/linear layer compute with fake-quantized weights (in place; returns
    the handles: remove them to go back to float). The state_dict keeps its keys and float weights, so
    checkpoints and resume work as in any lesson. Each hooked layer computes its output twice (the float
    one is discarded): quantization-aware lessons cost about twice the forward time of the model."""
    handles = []
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            handles.append(m.register_forward_hook(
                lambda mod, args, out: mod._conv_forward(args[0], fake_quantize_weight(mod.weight, bits), mod.bias)))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(
                lambda mod, args, out: nn.functional.linear(args[0], fake_quantize_weight(mod.weight, bits), mod.bias)))
    return handles
