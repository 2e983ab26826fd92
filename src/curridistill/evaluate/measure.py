"""Costs of any predictor (a PyTorch module, a quantized module, an ONNX Runtime session), measured the
same way so the stages of a compression report compare: batch-1 latency and serialized size."""
from __future__ import annotations

import io
import statistics
import time
from typing import Callable

import torch
from torch import Tensor, nn


@torch.inference_mode()
def latency_ms(forward: Callable[[Tensor], object], x: Tensor, runs: int = 50, warmup: int = 5,
               sync: Callable[[], None] = lambda: None) -> float:
    """Median wall time of ``forward(x)`` in milliseconds (``x``: one sample, batch 1). ``sync`` waits for
    queued device work (``torch.cuda.synchronize``) so an asynchronous GPU call is timed whole."""
    for _ in range(warmup):
        forward(x)
    times = []
    for _ in range(runs):
        sync()
        t0 = time.perf_counter()
        forward(x)
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


ROUNDS = 5  # rounds of interleaved_latency_ms: each predictor is timed this many times, in turn


def interleaved_latency_ms(forwards: dict[str, Callable[[Tensor], object]], x: Tensor, runs: int = 50,
                           rounds: int = ROUNDS) -> dict[str, float]:
    """``latency_ms`` of several predictors, timed in turn over ``rounds`` rounds; per predictor, the median
    of its rounds. A machine that slows down for a while (another job, a frequency change) then slows
    every predictor in that round alike, so their ratios hold where back-to-back timings would not."""
    per_round: dict[str, list[float]] = {name: [] for name in forwards}
    for _ in range(rounds):
        for name, forward in forwards.items():
            per_round[name].append(latency_ms(forward, x, runs=runs))
    return {name: statistics.median(times) for name, times in per_round.items()}


def state_bytes(model: nn.Module) -> int:
    """Bytes of the model's state_dict serialized: int8 weights count 1 byte, fp32 weights 4."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


@torch.inference_mode()
def logits_of(forward: Callable[[Tensor], Tensor], x: Tensor, batch: int = 256) -> Tensor:
    """(N, C) float32 logits of ``forward`` over ``x`` on the CPU, in batches."""
    return torch.cat([torch.as_tensor(forward(x[i:i + batch])).float().cpu() for i in range(0, len(x), batch)])


def accuracy(logits: Tensor, y: Tensor) -> float:
    return float((logits.argmax(1) == y.cpu()).double().mean())
