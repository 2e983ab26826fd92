"""Sort the training set by difficulty into the order a paced sampler reveals it.

* ``easy_first``: ascending difficulty (the curriculum)
* ``hard_first``: descending difficulty (the anti-curriculum)
* ``class_balanced``: easiest first within each class, with the classes interleaved so that EVERY prefix
  keeps the class proportions of the whole set: for a prefix of length k, each class count is within 1
  of ``k * n_c / N``. This generalises Hacohen & Weinshall's ``balance_order`` (which assumes equal
  class sizes) to imbalanced data, using Tijdeman's chairman-assignment sequence (bound ``1 - 1/(2C-2)``);
  with equal class sizes it is exactly ``balance_order``: rounds of one sample per class, the j-th round
  holding each class's j-th easiest, sorted by difficulty within the round.

Ties (and NaN scores, which count as hardest) are broken by a permutation seeded with ``seed``, so the
result is deterministic and does not favour low indices.
"""
from __future__ import annotations

import heapq
import math

import torch
from torch import Tensor

from curridistill.errors import UserError
from curridistill.registry import unknown_name_message

ORDER_MODES = ("easy_first", "hard_first", "class_balanced")


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)


def _sorted(scores: Tensor, seed: int, descending: bool = False) -> Tensor:
    """Indices by score, ties in a seeded random order."""
    s = scores.detach().double().cpu().clone()
    s[torch.isnan(s)] = torch.inf  # NaN counts as hardest
    perm = torch.randperm(len(s), generator=_generator(seed))
    return perm[torch.sort(s[perm], descending=descending, stable=True).indices]


def balanced_interleave(classes: Tensor) -> Tensor:
    """A sequence of class labels (one per position, same multiset as ``classes``) whose every prefix has
    class counts within 1 of proportional (Tijdeman 1980, "The chairman assignment problem").

    At position t (1-based) a class c is eligible when ``t * p_c - s_c >= sigma`` (s_c: count so far,
    sigma = 1 / (2C - 2)); among the eligible the one with the earliest deadline ``(s_c + 1 - sigma) / p_c``
    is chosen. Classes due at the same time (every class at the start of a round when the classes have
    equal sizes) go in the order of their next sample in ``classes``: when ``classes`` is in difficulty
    order, the easiest first, as in Hacohen & Weinshall's ``balance_order``, which sorts each round by
    difficulty. (The bound holds whichever way such ties are broken.) A class becomes eligible only once,
    when its deadline draws near, so a heap of pending classes ordered by the time they become eligible
    keeps this O(N log C).
    """
    labels, dense, counts = torch.unique(classes, return_inverse=True, return_counts=True)
    n, c = int(counts.sum()), len(labels)
    if c <= 1:
        return classes.clone()
    # positions in ``classes`` of each class's samples, in order: the tie-break between classes due together
    positions = [part.tolist() for part in torch.argsort(dense, stable=True).split(counts.tolist())]
    sigma = 1.0 / (2 * c - 2)
    p = [int(k) / n for k in counts]
    left = [int(k) for k in counts]
    taken = [0] * c
    eps = 1e-12

    def ready_at(j: int) -> int:  # first t with t * p_j - taken_j >= sigma
        return max(1, math.ceil((taken[j] + sigma) / p[j] - eps))

    def deadline(j: int) -> tuple[float, int, int]:  # then the position of the class's next sample
        return (taken[j] + 1 - sigma) / p[j], positions[j][taken[j]], j

    pending = [(ready_at(j), j) for j in range(c)]  # not yet eligible, by the time they become so
    heapq.heapify(pending)
    eligible: list[tuple[float, int, int]] = []  # by deadline, then by the position of the next sample
    out = torch.empty(n, dtype=torch.long)
    for t in range(1, n + 1):
        while pending and pending[0][0] <= t:
            _, j = heapq.heappop(pending)
            heapq.heappush(eligible, deadline(j))
        if not eligible:  # cannot happen with the bound above; kept as a safe fallback
            _, j = heapq.heappop(pending)
            heapq.heappush(eligible, deadline(j))
        _, _, j = heapq.heappop(eligible)
        out[t - 1] = j
        taken[j] += 1
        left[j] -= 1
        if left[j] > 0:
            heapq.heappush(pending, (ready_at(j), j))
    return labels[out]


def order_by_difficulty(scores: Tensor, targets: Tensor, mode: str = "easy_first", seed: int = 0) -> Tensor:
    """Dataset indices (LongTensor, a permutation of ``range(N)``) in the order the curriculum reveals them."""
    scores = torch.as_tensor(scores)
    targets = torch.as_tensor(targets)
    if scores.dim() != 1:
        raise UserError(f"difficulty scores must be 1-D (one per sample), got shape {tuple(scores.shape)}")
    if mode not in ORDER_MODES:
        raise UserError(unknown_name_message("curriculum order", mode, list(ORDER_MODES), "curriculum.order"))
    if mode == "hard_first":
        return _sorted(scores, seed, descending=True)
    order = _sorted(scores, seed)
    if mode == "easy_first":
        return order
    if targets.shape != scores.shape:
        raise UserError(f"class_balanced order needs one target per score; got {tuple(targets.shape)} targets "
                        f"for {tuple(scores.shape)} scores")
    targets = targets.detach().cpu().long()
    ordered_classes = targets[order]
    slots = balanced_interleave(ordered_classes)
    out = torch.empty_like(order)
    for label in torch.unique(targets):
        out[slots == label] = order[ordered_classes == label]  # each class's easiest first, in its slots
    return out
