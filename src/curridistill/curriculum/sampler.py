"""Batch sources the lesson runner iterates over: index batches (LongTensor) per epoch.

Both samplers derive their random numbers from ``(seed, epoch)`` only, so the batches of an epoch
do not depend on what ran before it and a run resumed at an epoch boundary continues exactly.

* ``RandomBatches``: each epoch a seeded permutation of all N samples, chunked into batches.
* ``PacedBatches``: the curriculum. At global step ``i = epoch * steps_per_epoch + k`` only the first
  ``n_i = min(N, max(min_size, batch_size, ceil(g(i) * N)))`` samples of a difficulty ``order`` are
  available (``min_size`` defaults to ``batch_size``, so a batch is always full; Hacohen & Weinshall's code
  fails on a pool smaller than a batch), and a batch is ``batch_size`` of them, uniformly at random (as
  Hacohen & Weinshall do). Within an epoch the batches walk a shuffled pass over the available samples
  (reshuffled when the pass runs out or the prefix grows), so every sample is seen before any is seen
  again: at full competence an epoch sees all N samples, as an unpaced epoch does, where independent draws
  per batch (Hacohen & Weinshall's) would see about 63% of them. Each batch is still a uniform draw from the
  pool. ``steps_per_epoch`` is the caller's, normally ``ceil(N / batch_size)`` as for ``RandomBatches``: a
  paced lesson has the same optimizer-step budget as an unpaced one; pacing changes WHICH samples a
  step sees, not how many steps there are. Early "epochs" therefore revisit the easy prefix many times.

  The pool is a prefix of the ORDER, so samples tied in difficulty are split at its edge by the order's
  seeded tie-breaking (``ordering.order_by_difficulty``). Platanios et al. 2019 define it through the
  difficulty CDF instead, ``{s : CDF(d(s)) <= c(t)}``: ``floor(c(t) * N)`` samples without ties, and whole
  groups of tied samples only, so it can be empty or jump (sentence lengths tie a lot). The prefix always
  contains their pool; the rest of it, up to ``ceil(c(t) * N)`` samples in all, is the next-easiest (part of
  a tie group, chosen by the order's seed), so the pool's size follows the pacing exactly.
"""
from __future__ import annotations

import math
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from curridistill.errors import UserError


def epoch_generator(seed: int, epoch: int, salt: int = 0) -> torch.Generator:
    """A torch generator seeded by a well-mixed hash of ``(seed, epoch, salt)``."""
    words = [int(seed) & 0xFFFF_FFFF_FFFF_FFFF, int(epoch) & 0xFFFF_FFFF_FFFF_FFFF, int(salt) & 0xFFFF_FFFF]
    state = np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)


class RandomBatches:
    """Each epoch a seeded permutation of ``range(n)`` chunked into batches of ``batch_size``."""

    kind = "random"

    def __init__(self, n: int, batch_size: int, seed: int, drop_last: bool = False):
        if n < 1:
            raise UserError("the training set is empty")
        if batch_size < 1:
            raise UserError(f"batch size must be >= 1, got {batch_size}")
        self.n, self.batch_size, self.seed, self.drop_last = int(n), int(batch_size), int(seed), bool(drop_last)

    def steps_per_epoch(self) -> int:
        if self.drop_last:
            return max(1, self.n // self.batch_size)
        return math.ceil(self.n / self.batch_size)

    def epoch_batches(self, epoch: int) -> Iterator[Tensor]:
        perm = torch.randperm(self.n, generator=epoch_generator(self.seed, epoch))
        steps = self.steps_per_epoch()
        for k in range(steps):
            yield perm[k * self.batch_size:(k + 1) * self.batch_size]

    def state_dict(self) -> dict:
        return {"kind": self.kind, "n": self.n, "batch_size": self.batch_size, "seed": self.seed,
                "drop_last": self.drop_last}

    def load_state_dict(self, d: dict) -> None:
        _check_kind(d, self.kind)
        if int(d["n"]) != self.n:
            raise UserError(f"cannot resume: the checkpoint's sampler saw {d['n']} training samples, now there are "
                            f"{self.n}; the data changed, start a fresh run")
        self.batch_size, self.seed, self.drop_last = int(d["batch_size"]), int(d["seed"]), bool(d["drop_last"])


class PacedBatches:
    """Batches drawn uniformly from the easiest ``ceil(pacing(i) * N)`` samples of ``order`` (at least
    ``max(min_size, batch_size)``, at most N)."""

    kind = "paced"

    def __init__(self, order: Tensor, pacing: Callable[[int], float], batch_size: int, steps_per_epoch: int,
                 seed: int, min_size: int | None = None):
        self.pacing = pacing
        self.batch_size, self.seed = int(batch_size), int(seed)
        self._steps = int(steps_per_epoch)
        if self.batch_size < 1:
            raise UserError(f"batch size must be >= 1, got {batch_size}")
        if self._steps < 1:
            raise UserError(f"steps per epoch must be >= 1, got {steps_per_epoch}")
        self.order = self._checked(order, None)
        self.min_size = self.batch_size if min_size is None else int(min_size)

    @staticmethod
    def _checked(order: Tensor, n: int | None) -> Tensor:
        order = torch.as_tensor(order).detach().cpu().long().flatten()
        if len(order) == 0:
            raise UserError("the training set is empty")
        if n is not None and len(order) != n:
            raise UserError(f"a curriculum order must cover the {n} training samples, got {len(order)} indices")
        if not torch.equal(torch.sort(order).values, torch.arange(len(order))):
            raise UserError("a curriculum order must be a permutation of the training indices (each exactly once)")
        return order.clone()

    @property
    def n(self) -> int:
        return len(self.order)

    def steps_per_epoch(self) -> int:
        return self._steps

    def prefix_size(self, step: int) -> int:
        """How many of the easiest samples are available at global step ``step``."""
        g = float(self.pacing(step))
        size = math.ceil(g * self.n - 1e-9)  # no spurious +1 from rounding noise, e.g. 0.04 * 2500
        return min(self.n, max(self.min_size, self.batch_size, size, 1))

    def fraction(self, step: int) -> float:
        """The fraction of the training set available at global step ``step`` (for logging data_fraction)."""
        return self.prefix_size(step) / self.n

    def epoch_batches(self, epoch: int) -> Iterator[Tensor]:
        gen = epoch_generator(self.seed, epoch)
        order = self.order  # a re-scoring mid-epoch does not change this epoch's batches
        take = min(self.batch_size, self.n)
        size, walk, at = 0, torch.empty(0, dtype=torch.long), 0
        for k in range(self._steps):
            available = self.prefix_size(epoch * self._steps + k)
            if available != size or at + take > len(walk):  # a new pass: the prefix grew, or this one ran out
                size, walk, at = available, torch.randperm(available, generator=gen), 0
            yield order[walk[at:at + take]]
            at += take

    def set_order(self, order: Tensor) -> None:
        """Replace the difficulty order (self-paced re-scoring); takes effect from the next epoch."""
        self.order = self._checked(order, self.n)

    def state_dict(self) -> dict:
        return {"kind": self.kind, "order": self.order.clone(), "batch_size": self.batch_size, "seed": self.seed,
                "steps_per_epoch": self._steps, "min_size": self.min_size}

    def load_state_dict(self, d: dict) -> None:
        _check_kind(d, self.kind)
        self.order = self._checked(d["order"], self.n)
        self.batch_size, self.seed = int(d["batch_size"]), int(d["seed"])
        self._steps, self.min_size = int(d["steps_per_epoch"]), int(d["min_size"])


def _check_kind(d: dict, kind: str) -> None:
    saved = d.get("kind", "random")
    if saved != kind:
        raise UserError(f"cannot resume: the checkpoint was written with a {saved!r} sampler but this lesson uses a "
                        f"{kind!r} one; the curriculum settings changed, start a fresh run")
