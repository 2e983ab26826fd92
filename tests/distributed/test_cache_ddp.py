"""Under torchrun the teacher-output cache is built once: rank 0 runs the teacher, the others read its file."""
import json
import os
import socket
import time

import pytest

import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, cache_dir: str, out: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    from curridistill.train import distributed
    from curridistill.train.teacher_cache import TeacherCache
    from tests.cache.test_teacher_cache import make_pipeline, make_teacher, online

    distributed.init_from_env("cpu")
    try:
        pipe, teacher = make_pipeline(), make_teacher()
        cache = TeacherCache(teacher, pipe, cache_dir)
        idx = torch.tensor([3, 1, 4, 1, 5])
        got = [cache.lookup(idx, epoch=e)[0] for e in (0, 1, 0)]
        exact = all(torch.allclose(g, online(teacher, pipe, idx, e), atol=1e-2, rtol=1e-3) for g, e in zip(got, (0, 1, 0)))
        with open(f"{out}/rank{rank}.json", "w") as f:
            json.dump({"stats": {k: v for k, v in cache.stats.items() if k != "build_seconds"}, "exact": exact}, f)
        distributed.barrier()  # a rank must not leave while the other still receives the last broadcast
    finally:
        distributed.shutdown()


def test_rank0_builds_each_epoch_once_and_the_other_rank_reads_it(tmp_path):
    ctx = mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "cache"), str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 120  # a collective mismatch deadlocks: fail instead of hanging the suite
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.kill()
            pytest.fail("the ranks deadlocked: they disagreed on which cache lookups need a collective")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["stats"] == {"hits": 1, "loads": 0, "builds": 2, "rebuilt": 0}
    assert ranks[1]["stats"] == {"hits": 1, "loads": 2, "builds": 0, "rebuilt": 0}
    assert all(r["exact"] for r in ranks)


class _FakeGroup:
    """What init_from_env asks of torch.distributed, recorded in call order (NCCL needs GPUs this suite lacks)."""

    def __init__(self, monkeypatch, gpus: int):
        import torch.distributed as dist

        self.calls: list[tuple] = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
        monkeypatch.setattr(torch.cuda, "set_device", lambda d: self.calls.append(("set_device", d)))
        monkeypatch.setattr(dist, "is_initialized", lambda: False)
        monkeypatch.setattr(dist, "init_process_group", lambda backend: self.calls.append(("init", backend)))
        monkeypatch.setattr(dist, "get_rank", lambda: 3)
        monkeypatch.setattr(dist, "get_world_size", lambda: 4)


def test_each_nccl_rank_binds_its_own_gpu_before_the_first_collective(monkeypatch):
    """broadcast_object_list and barrier under NCCL use the current CUDA device: unbound, all ranks would be on GPU 0."""
    from curridistill.train import distributed

    group = _FakeGroup(monkeypatch, gpus=4)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    try:
        info = distributed.init_from_env("auto")
        assert group.calls == [("set_device", 3), ("init", "nccl")]
        assert (info.rank, info.world, info.local_rank) == (3, 4, 3)
    finally:
        distributed._INFO = distributed.DistInfo()


def test_more_ranks_than_gpus_is_one_clear_line(monkeypatch):
    from curridistill.errors import UserError
    from curridistill.train import distributed

    group = _FakeGroup(monkeypatch, gpus=2)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    with pytest.raises(UserError, match=r"local rank 3 but this machine has 2 CUDA device\(s\); use --nproc_per_node=2"):
        distributed.init_from_env("cuda")
    assert group.calls == []  # refused before joining a group the others would wait on
