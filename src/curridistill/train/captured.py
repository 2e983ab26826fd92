"""``run.compile=step``: a training step as compiled graphs (CUDA graphs on a GPU)."""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor


def uses_cuda_graphs(terms: Iterable) -> bool:
    """Whether a step over these knowledge terms may replay as CUDA graphs: not when a term carries tensors
    from one step to the next (``carries_state``), since a replay overwrites the previous replay's outputs.
    Such a step is still compiled (fused kernels), only launched kernel by kernel."""
    return not any(term.carries_state for term in terms)


class CapturedStep:
    """A loss function (forward + loss terms; its backward follows) and an optimizer update as compiled graphs;
    on CUDA the loss graph and its backward are replayed as CUDA graphs (``mode="reduce-overhead"``), so a step
    launches a few graphs instead of hundreds of kernels. Used by lessons (``run.compile=step``) and by
    ``bench throughput --captured``. One process only: preflight refuses it under torchrun.

    What varies from step to step must neither recompile nor be baked into a recorded CUDA graph: such values
    go in as 0-dim device tensors filled in place (``held``), and the learning rates become such tensors,
    which the LR schedule fills in place."""

    def __init__(self, loss: Callable, optimizer: torch.optim.Optimizer, device: torch.device,
                 cuda_graphs: bool = True):
        """``cuda_graphs``: False when the loss keeps tensors past the step (see ``uses_cuda_graphs``)."""
        self.optimizer, self.device = optimizer, device
        self.cuda_graphs = cuda_graphs and device.type == "cuda"
        self._held: dict[tuple[str, str], Tensor] = {}  # (kind, name) -> its device tensor
        self.tensor_lrs()
        self._loss = torch.compile(loss, mode="reduce-overhead" if self.cuda_graphs else None)
        self._update = torch.compile(self.optimizer.step)

    def loss(self, *args):
        if self.cuda_graphs:  # the previous step's outputs (read by the metrics) may be overwritten now
            torch.compiler.cudagraph_mark_step_begin()
        return self._loss(*args)

    def held(self, kind: str, values: dict[str, float | None]) -> dict[str, Tensor | None]:
        """``values`` (None stays None) as device tensors that keep their storage from step to step."""
        out: dict[str, Tensor | None] = {}
        for name, value in values.items():
            tensor = self._held.get((kind, name))
            if value is None:
                out[name] = None
            elif tensor is None:
                out[name] = self._held[(kind, name)] = torch.tensor(float(value), device=self.device)
            else:
                out[name] = tensor.fill_(float(value))  # a kernel on the device, no host sync
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
