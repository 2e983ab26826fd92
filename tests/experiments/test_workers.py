"""Side-by-side worker processes: the CPU cores split between them, several GPUs spread over them."""
from __future__ import annotations

import os

import pytest
import torch

from curridistill import workers


@pytest.fixture
def gpus(monkeypatch):
    """Pretend this process sees ``n`` CUDA devices (the slots are computed here; the workers only read them)."""
    def have(n: int, visible: str | None = None):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        if visible is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    return have


@pytest.mark.parametrize("device, count, visible, runs, slots", [
    ("auto", 2, None, 4, ["0", "1", "0", "1"]),  # four runs on two GPUs: two each
    ("cuda", 3, None, 2, ["0", "1"]),  # fewer runs than GPUs: one GPU each, the third idle
    ("auto", 2, "5,3", 3, ["5", "3", "5"]),  # an already restricted list is kept as the user wrote it, in order
    ("auto", 1, None, 4, None),  # one GPU: all share it (the launch-bound case --parallel is for)
    ("cuda:1", 4, None, 4, None),  # the config chose its GPU
    ("cpu", 4, None, 4, None),
    ("auto", 0, None, 4, None),  # no GPU at all
])
def test_gpu_slots(gpus, device, count, visible, runs, slots):
    gpus(count, visible)
    assert workers.gpu_slots(device, runs) == slots


def _seen_by_worker(both_started) -> tuple[str | None, int]:
    both_started.wait(timeout=60)  # the two jobs run at once, so in the two workers
    return os.environ.get("CUDA_VISIBLE_DEVICES"), torch.get_num_threads()


def _seen_by_two_workers(threads: int | None) -> list[tuple[str | None, int]]:
    import multiprocessing

    with multiprocessing.get_context("spawn").Manager() as manager:
        both_started = manager.Barrier(2)
        with workers.side_by_side(2, "auto", threads=threads) as pool:
            return sorted(pool.map(_seen_by_worker, [both_started] * 2), key=str)


def test_each_worker_process_gets_its_own_gpu_and_a_share_of_the_threads(gpus):
    gpus(2)
    assert _seen_by_two_workers(threads=1) == [("0", 1), ("1", 1)]


def test_on_the_cpu_workers_only_split_the_threads(gpus):
    gpus(0)
    share = max(1, (os.cpu_count() or 1) // 2)
    assert _seen_by_two_workers(threads=None) == [(None, share), (None, share)]
