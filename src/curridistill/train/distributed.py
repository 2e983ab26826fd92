"""DistributedDataParallel plumbing for ``torchrun --nproc_per_node=N -m curridistill run CONFIG``.

Conventions (documented in the README):
* ``data.batch_size`` is the *global* batch. Every rank draws the same seeded batch of indices (so a
  curriculum's prefix is the same everywhere) and keeps its own slice ``idx[rank::world]``. Optimizer
  steps per epoch therefore equal the single-process run and the learning rate needs no scaling.
  (If you instead grow ``batch_size`` with the world size, scale the LR linearly: Goyal et al. 2017.)
* Gradients of the student are averaged by DDP; those of trainable knowledge state (adapters, a
  learned temperature) are all-reduced by hand after backward.
* Epoch metrics are all-reduced; validation runs on every rank with identical weights; only rank 0
  writes files (metrics, checkpoints, caches, reports).
* gloo on CPU, nccl on CUDA (one GPU per rank: ``cuda:LOCAL_RANK``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from curridistill.errors import UserError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_INFO = DistInfo()


def info() -> DistInfo:
    return _INFO


LAUNCH_HINT = "torchrun sets RANK, WORLD_SIZE and LOCAL_RANK for each process it starts: unset {names}, or launch with torchrun"


def env_ranks() -> DistInfo:
    """RANK, WORLD_SIZE and LOCAL_RANK as torchrun sets them (absent or empty: one process), checked: whole numbers,
    WORLD_SIZE >= 1, ranks >= 0 and below WORLD_SIZE (a RANK above 0 without WORLD_SIZE, which would make a lone
    process silent, is refused). A bad value is one line naming the variable, before any work."""
    values = {}
    for name, default, least in (("RANK", 0, 0), ("WORLD_SIZE", 1, 1), ("LOCAL_RANK", 0, 0)):
        text = os.environ.get(name, "").strip()
        if not text:
            values[name] = default
            continue
        try:
            values[name] = int(text)
        except ValueError:
            raise UserError(f"environment variable {name}={text!r} is not a whole number; "
                            f"{LAUNCH_HINT.format(names=name)}") from None
        if values[name] < least:
            raise UserError(f"environment variable {name}={text} must be >= {least}; {LAUNCH_HINT.format(names=name)}")
    world = values["WORLD_SIZE"]
    world_set = bool(os.environ.get("WORLD_SIZE", "").strip())
    # without WORLD_SIZE: a lone process, which a LOCAL_RANK left by a launcher does not change (it only picks a
    # GPU within a group), but a RANK above 0 would make it silent (only rank 0 prints)
    for name in ("RANK", "LOCAL_RANK") if world_set else ("RANK",):
        if values[name] >= world:
            if not world_set:
                raise UserError(f"environment variable {name}={values[name]} is set without WORLD_SIZE, so this "
                                f"process would run alone as rank {values[name]}, printing nothing (only rank 0 prints); "
                                f"{LAUNCH_HINT.format(names=name)}")
            raise UserError(f"environment variables {name}={values[name]} and WORLD_SIZE={world} disagree (ranks "
                            f"count from 0 to WORLD_SIZE - 1); {LAUNCH_HINT.format(names=f'{name} and WORLD_SIZE')}")
    return DistInfo(values["RANK"], world, values["LOCAL_RANK"])


def init_from_env(device_name: str) -> DistInfo:
    """Join the process group torchrun describes (WORLD_SIZE > 1); a no-op for a single process."""
    global _INFO
    env = env_ranks()
    if env.world <= 1:
        _INFO = DistInfo()
        return _INFO
    local_rank = env.local_rank
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda") or device_name.startswith("cuda")
        if use_cuda:
            bind_gpu(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    _INFO = DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)
    return _INFO


def bind_gpu(local_rank: int) -> None:
    """Make ``cuda:LOCAL_RANK`` this process's current device before its first collective.

    NCCL collectives on Python objects (``broadcast_object_list``: the run directory, cache decisions) and
    ``barrier`` use the *current* CUDA device; unbound, every rank would use GPU 0 and NCCL refuses ranks
    sharing one GPU (or hangs)."""
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise UserError(f"torchrun started local rank {local_rank} but this machine has {count} CUDA device(s); "
                        f"use --nproc_per_node={count} or fewer (or run.device=cpu)")
    torch.cuda.set_device(local_rank)


def shard(indices: Tensor) -> Tensor:
    """This rank's slice of a global batch."""
    return indices[_INFO.rank::_INFO.world] if _INFO.active else indices


def all_reduce_sum(t: Tensor) -> Tensor:
    if _INFO.active:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_finite(value: Tensor) -> bool:
    """True when the loss is finite on every rank (all ranks must agree before backward)."""
    flag = torch.isfinite(value.detach()).float().reshape(1)
    if _INFO.active:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() > 0)


def average_gradients(params) -> None:
    if not _INFO.active:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= _INFO.world


def broadcast(obj: Any) -> Any:
    """Rank 0's value of a picklable object, on every rank."""
    if not _INFO.active:
        return obj
    box = [obj if _INFO.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if _INFO.active:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group at the end of a torchrun command."""
    global _INFO
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _INFO = DistInfo()


def sync_buffers(module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank.

    DDP broadcasts buffers at the *start* of each forward, so after the last step of an epoch every rank
    holds statistics updated with its own slice; validation, best-checkpoint choice and a teacher later
    used for distillation must all see the same model.
    """
    if not _INFO.active:
        return
    for buf in module.buffers():
        dist.broadcast(buf, src=0)
