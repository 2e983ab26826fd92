"""Batch sources: coverage, determinism per (seed, epoch), prefixes, resume."""
import math

import pytest
import torch

from curridistill.curriculum.pacing import build_pacing
from curridistill.curriculum.sampler import PacedBatches, RandomBatches
from curridistill.errors import UserError


def _epoch(sampler, epoch):
    return [b.clone() for b in sampler.epoch_batches(epoch)]


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("n, bs, drop_last", [(103, 10, False), (100, 10, False), (101, 10, True), (5, 8, False)])
def test_random_covers_every_index_once(n, bs, drop_last):
    s = RandomBatches(n, bs, seed=0, drop_last=drop_last)
    batches = _epoch(s, 0)
    assert len(batches) == s.steps_per_epoch() == (n // bs if drop_last else math.ceil(n / bs))
    flat = torch.cat(batches)
    assert flat.dtype == torch.long
    if drop_last:
        assert len(flat) == len(set(flat.tolist())) == (n // bs) * bs
        assert all(len(b) == bs for b in batches)
    else:
        assert sorted(flat.tolist()) == list(range(n))


def test_random_deterministic_per_seed_and_epoch():
    a = RandomBatches(50, 8, seed=1)
    assert _same(_epoch(a, 3), _epoch(RandomBatches(50, 8, seed=1), 3))
    assert _same(_epoch(a, 3), _epoch(a, 3))  # independent of what ran before
    assert not _same(_epoch(a, 3), _epoch(a, 4))
    assert not _same(_epoch(a, 3), _epoch(RandomBatches(50, 8, seed=2), 3))


def test_random_state_round_trip():
    a = RandomBatches(40, 6, seed=9)
    b = RandomBatches(40, 6, seed=0)
    b.load_state_dict(a.state_dict())
    assert _same(_epoch(a, 2), _epoch(b, 2))
    with pytest.raises(UserError, match="training samples"):
        RandomBatches(41, 6, seed=0).load_state_dict(a.state_dict())


def _paced(n=200, bs=10, seed=0, pacing=None, order=None, **kw):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(42)) if order is None else order
    steps = math.ceil(n / bs)
    pacing = pacing or build_pacing({"kind": "fixed_exponential", "step_length": 10}, steps * 5)
    return PacedBatches(order, pacing, bs, steps, seed, **kw), order


def test_paced_batches_stay_in_the_prefix():
    s, order = _paced()
    steps = s.steps_per_epoch()
    assert steps == 20
    rank = torch.empty(200, dtype=torch.long)
    rank[order] = torch.arange(200)
    sizes = []
    for epoch in range(5):
        batches = _epoch(s, epoch)
        assert len(batches) == steps
        for k, b in enumerate(batches):
            i = epoch * steps + k
            size = s.prefix_size(i)
            assert len(b) == 10 and len(set(b.tolist())) == 10  # without replacement
            assert int(rank[b].max()) < size
            sizes.append(size)
    # H&W: ceil(0.04 * 200) = 8 -> at least one batch; then ceil(0.076 * 200) = 16, ...
    assert sizes[0] == 10 and sizes[10] == 16 and sizes[20] == 29 and sizes[-1] == 200
    assert all(b >= a for a, b in zip(sizes, sizes[1:]))
    assert s.fraction(0) == pytest.approx(0.05) and s.fraction(10**6) == 1.0


def test_paced_min_size_and_full():
    s, order = _paced(pacing=lambda i: 0.01, min_size=50)
    assert s.prefix_size(0) == 50
    full, _ = _paced(pacing=lambda i: 1.0)
    flat = torch.cat(_epoch(full, 0))
    assert sorted(flat.tolist()) == list(range(200))  # at full competence an epoch sees every sample once


@pytest.mark.parametrize("fraction, n, bs", [(0.25, 200, 10), (0.5, 101, 8), (1.0, 103, 10)])
def test_paced_walks_the_prefix_before_repeating_a_sample(fraction, n, bs):
    s = PacedBatches(torch.randperm(n, generator=torch.Generator().manual_seed(1)), lambda i: fraction, bs, 40, seed=0)
    size = s.prefix_size(0)
    seen = torch.cat(_epoch(s, 0)).tolist()
    passes = size // bs * bs  # a pass ends when too few samples are left for a whole batch
    for start in range(0, len(seen) - passes + 1, passes):
        chunk = seen[start:start + passes]
        assert len(set(chunk)) == len(chunk)  # no sample twice within a pass


def test_paced_exact_prefix_rounding():
    s = PacedBatches(torch.arange(2500), lambda i: 0.04, 100, 25, seed=0)
    assert s.prefix_size(0) == 100  # not 101 from float noise


def test_paced_deterministic_and_round_trip():
    a, order = _paced(seed=3)
    b, _ = _paced(seed=3)
    assert _same(_epoch(a, 2), _epoch(b, 2))
    assert not _same(_epoch(a, 2), _epoch(a, 3))
    c, _ = _paced(seed=4)
    assert not _same(_epoch(a, 2), _epoch(c, 2))
    # re-scored order, then resume into a fresh sampler built with the original order
    new_order = torch.flip(order, [0])
    a.set_order(new_order)
    state = a.state_dict()
    assert torch.equal(state["order"], new_order)
    fresh, _ = _paced(seed=0)
    fresh.load_state_dict(state)
    assert _same(_epoch(a, 4), _epoch(fresh, 4))
    assert not _same(_epoch(a, 4), _epoch(b, 4))


def test_paced_state_saves_with_weights_only(tmp_path):
    a, _ = _paced(seed=5)
    path = tmp_path / "s.pt"
    torch.save({"sampler": a.state_dict()}, path)
    loaded = torch.load(path, weights_only=True)["sampler"]
    b, _ = _paced(seed=0)
    b.load_state_dict(loaded)
    assert _same(_epoch(a, 1), _epoch(b, 1))


def test_order_validation_and_kind_mismatch():
    s, _ = _paced()
    with pytest.raises(UserError, match="permutation"):
        s.set_order(torch.zeros(200, dtype=torch.long))
    with pytest.raises(UserError, match="cover"):
        s.set_order(torch.arange(199))
    with pytest.raises(UserError, match="sampler"):
        s.load_state_dict(RandomBatches(200, 10, 0).state_dict())
    with pytest.raises(UserError, match="sampler"):
        RandomBatches(200, 10, 0).load_state_dict(s.state_dict())
