"""What a model costs: parameters, FLOPs per sample (torch.utils.flop_counter), weight bytes,
batch-1 latency (median) and batch throughput on CPU."""
from __future__ import annotations

import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from curridistill.errors import UserError
from curridistill.evaluate import measure
from curridistill.models.placement import model_device, probe_input, synchronize


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def weights_bytes(model: nn.Module) -> int:
    """Bytes of parameters and buffers as stored (what a safetensors file of the model holds)."""
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


@torch.no_grad()
def flops_per_sample(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    model.eval()
    x = probe_input(model, input_shape)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    return int(counter.get_total_flops())


def check_timing(latency_runs: int = 1, throughput_batch: int = 1, throughput_runs: int = 1) -> None:
    """Refuse timing settings (``run.eval``) that measure nothing: the median of no runs, a batch of no samples."""
    for key, value in (("latency_runs", latency_runs), ("throughput_batch", throughput_batch),
                       ("throughput_runs", throughput_runs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"run.eval.{key} is {value!r} but a timing needs at least 1; set run.eval.{key} to 1 "
                            f"or more")


@torch.inference_mode()
def latency_ms(model: nn.Module, input_shape: tuple[int, ...], runs: int = 50, warmup: int = 5) -> float:
    """Median wall time of one batch-1 forward on the model's device, in milliseconds."""
    check_timing(latency_runs=runs)
    model = model.eval()
    device = model_device(model)
    return measure.latency_ms(model, probe_input(model, input_shape, fill="randn"), runs, warmup,
                              sync=lambda: synchronize(device))


@torch.inference_mode()
def throughput(model: nn.Module, input_shape: tuple[int, ...], batch: int = 256, runs: int = 5) -> float:
    """Samples per second of batched forwards on the model's device (best of ``runs``, after one warm-up)."""
    check_timing(throughput_batch=batch, throughput_runs=runs)
    model = model.eval()
    x = probe_input(model, input_shape, batch=batch, fill="randn")
    device = model_device(model)
    model(x)
    best = float("inf")
    for _ in range(runs):
        synchronize(device)
        t0 = time.perf_counter()
        model(x)
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return batch / best


def efficiency(model: nn.Module, input_shape: tuple[int, ...], latency_runs: int = 50, throughput_batch: int = 256,
               throughput_runs: int = 5) -> dict:
    """All cost metrics, measured on a CPU copy so results are comparable across devices. Settings that would time
    nothing are refused before anything is measured."""
    check_timing(latency_runs, throughput_batch, throughput_runs)
    cpu_model = _cpu_copy(model)
    return {
        "params": count_params(cpu_model),
        "flops": flops_per_sample(cpu_model, input_shape),
        "weights_bytes": weights_bytes(cpu_model),
        "latency_ms": latency_ms(cpu_model, input_shape, runs=latency_runs),
        "throughput": throughput(cpu_model, input_shape, batch=throughput_batch, runs=throughput_runs),
    }


def _cpu_copy(model: nn.Module) -> nn.Module:
    import copy

    return model if model_device(model).type == "cpu" else copy.deepcopy(model).cpu()
