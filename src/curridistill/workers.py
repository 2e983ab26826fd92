"""Process pools for runs side by side (``--parallel``, ``tune --parallel``, ``auto --trials-parallel``).

Each worker is a spawned process (a forked one would inherit CUDA state it cannot use). The CPU cores are
split between the workers, and on a machine with several GPUs the workers are spread over them: worker ``k``
sees only GPU ``k mod G`` (``CUDA_VISIBLE_DEVICES``, set before the worker's first CUDA call), so a run
configured for ``cuda``/``auto`` trains there without any change to its config, and resuming it later on
another machine works as usual. With one GPU they all share it, which is the point on a launch-bound GPU.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import torch

SPREAD_DEVICES = ("auto", "cuda")  # a config naming cuda:N chose its GPU: it is left there


def gpu_slots(device: str, workers: int) -> list[str] | None:
    """The ``CUDA_VISIBLE_DEVICES`` value of each of ``workers`` processes: the visible GPUs in turn, when the
    runs use ``device`` ``auto`` or ``cuda`` and more than one GPU is visible; None (nothing to spread) otherwise."""
    if device not in SPREAD_DEVICES or not torch.cuda.is_available():
        return None
    count = torch.cuda.device_count()
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    # entries of an already restricted list are kept as written (indices or GPU-UUIDs), in their order
    visible = [v.strip() for v in given.split(",") if v.strip()][:count] if given is not None else \
        [str(i) for i in range(count)]
    if len(visible) < 2:
        return None
    return [visible[k % len(visible)] for k in range(workers)]


def side_by_side(workers: int, device: str, threads: int | None = None) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes, each with ``threads`` torch threads (default: the cores split
    evenly; a config's ``run.threads`` still wins inside a run) and, with several GPUs, its own GPU."""
    context = multiprocessing.get_context("spawn")
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    slots = context.Queue()
    for slot in gpu_slots(device, workers) or [None] * workers:
        slots.put(slot)
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(slots, threads))


def _start_worker(slots, threads: int) -> None:
    """Runs first in each worker process: take a GPU slot (before anything initializes CUDA) and the threads."""
    slot = slots.get()
    if slot is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = slot
    torch.set_num_threads(threads)
