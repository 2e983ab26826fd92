"""``run.compile=step``: a lesson's training step as compiled graphs (CUDA graphs on a GPU)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from curridistill.errors import UserError
from curridistill.train import distributed


class CapturedStep:
    """``run.compile=step``: a lesson's loss (student forward, every term, sample weights) and its optimizer
    update as compiled graphs; on CUDA the loss graph and its backward are replayed as CUDA graphs
    (``mode="reduce-overhead"``), so a step launches a few graphs instead of hundreds of kernels.

    What varies from step to step must neither recompile nor be baked into a recorded CUDA graph: the loss
    weights, the temperatures and the learning rates live in 0-dim tensors on the model's device, filled in
    place each step (the LR schedule fills the rates); which terms are active (weight != 0) is decided
    outside the graph. The teacher's outputs are looked up (or computed) eagerly before the graph: the
    cache is Python state."""

    def __init__(self, loss: Callable, optimizer: torch.optim.Optimizer, device: torch.device):
        if distributed.info().active:
            raise UserError("run.compile=step runs in one process; under torchrun use run.compile=true "
                            "(the model compiled, DDP's hooks around it)")
        self.optimizer, self.device = optimizer, device
        self.scalars: dict[tuple[str, str], Tensor] = {}  # (weight | temperature, term) -> its device tensor
        self.tensor_lrs()
        self._loss = torch.compile(loss, mode="reduce-overhead" if device.type == "cuda" else None)
        self._update = torch.compile(self.optimizer.step)

    def loss(self, x, y, idx, clock, taps, weights: dict[str, float], temps: dict[str, float | None], teacher_out,
             active: frozenset[str]):
        if self.device.type == "cuda":  # the previous step's outputs (read by the metrics) may be overwritten now
            torch.compiler.cudagraph_mark_step_begin()
        return self._loss(x, y, idx, clock, taps, self._fill("weight", weights), self._fill("temperature", temps),
                          teacher_out, active)

    def _fill(self, kind: str, values: dict[str, float | None]) -> dict[str, Tensor | None]:
        out = {}
        for name, value in values.items():
            if value is None:
                out[name] = None
                continue
            held = self.scalars.get((kind, name))
            if held is None:
                held = self.scalars[(kind, name)] = torch.tensor(float(value), device=self.device)
            else:
                held.fill_(float(value))  # a kernel on the device, no host sync
            out[name] = held
        return out

    def update(self) -> None:
        self._update()
        # the LR scheduler warns of "scheduler.step() before optimizer.step()" unless its wrapper around
        # optimizer.step saw a call; the compiled step calls the unwrapped method
        self.optimizer._opt_called = True

    def tensor_lrs(self) -> None:
        for group in self.optimizer.param_groups:
            if not isinstance(group["lr"], Tensor):
                group["lr"] = torch.tensor(float(group["lr"]), device=self.device)
