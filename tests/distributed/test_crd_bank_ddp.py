"""CRD's memory bank under torch.distributed: two gloo processes, each with its half of a global batch, end a step
with the same memory, the memory one process gets from the whole batch, and one normaliser Z."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from curridistill.knowledge import KnowledgeInputs, load_all
from curridistill.knowledge.crd import CRD, CRDParams

N, DIM, B = 60, 6, 7  # 7 rows: shards of 4 and 3, as torchrun's split of an odd global batch
LABELS = torch.arange(N) % 3


def _term() -> CRD:
    load_all()
    torch.manual_seed(0)  # the embed heads start alike in every process, as DDP's first broadcast makes them
    term = CRD(CRDParams(student_layer="s", teacher_layer="t", feat_dim=8, num_negatives=10))
    term.attach_training_labels(LABELS)
    term.build(_inputs(torch.arange(2)))
    return term


def _inputs(idx: torch.Tensor) -> KnowledgeInputs:
    g = torch.Generator().manual_seed(1)
    fs, ft = torch.randn(N, DIM, generator=g), torch.randn(N, DIM, generator=g)
    return KnowledgeInputs(student_logits=torch.zeros(len(idx), 3), targets=LABELS[idx],
                           student_features={"s": fs[idx]}, teacher_features=[{"t": ft[idx]}], indices=idx)


GLOBAL_BATCH = torch.tensor([5, 17, 42, 8, 33, 51, 2])


def _rank(rank: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    term = _term()
    shard = GLOBAL_BATCH[rank::2]
    term(_inputs(shard)).mean().backward()
    torch.save({"memory_s": term.memory_s, "memory_t": term.memory_t, "z": term.z}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_two_processes_keep_one_memory_equal_to_the_whole_batch_update(tmp_path):
    mp.spawn(_rank, args=(f"file://{tmp_path / 'store'}", str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    single = _term()
    single(_inputs(GLOBAL_BATCH))
    for key in ("memory_s", "memory_t"):
        assert torch.equal(ranks[0][key], ranks[1][key]), key
        torch.testing.assert_close(ranks[0][key], getattr(single, key))
        moved = (ranks[0][key] != _term().state_dict()[key]).any(dim=1).nonzero().flatten()
        assert sorted(moved.tolist()) == sorted(GLOBAL_BATCH.tolist())  # both shards' rows, and only those
    assert torch.equal(ranks[0]["z"], ranks[1]["z"]) and (ranks[0]["z"] > 0).all()
