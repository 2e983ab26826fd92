"""Orders: easy/hard first, seeded tie-breaking, class-balanced prefixes."""
import pytest
import torch
import torch.nn.functional as F

from curridistill.curriculum.ordering import balanced_interleave, order_by_difficulty
from curridistill.errors import UserError


def _prefix_deviation(order_classes: torch.Tensor, num_classes: int) -> float:
    """max over prefixes k and classes c of |count_c(prefix k) - k * n_c / N|."""
    n = len(order_classes)
    counts = F.one_hot(order_classes, num_classes).double().cumsum(0)
    totals = counts[-1]
    k = torch.arange(1, n + 1, dtype=torch.float64).unsqueeze(1)
    return float((counts - k * totals / n).abs().max())


def test_easy_and_hard_first():
    scores = torch.tensor([0.5, 0.1, 0.9, 0.3])
    targets = torch.zeros(4, dtype=torch.long)
    assert order_by_difficulty(scores, targets, "easy_first").tolist() == [1, 3, 0, 2]
    assert order_by_difficulty(scores, targets, "hard_first").tolist() == [2, 0, 3, 1]
    assert order_by_difficulty(scores, targets).dtype == torch.long


def test_ties_are_seeded_and_not_by_index():
    scores = torch.zeros(200)
    targets = torch.zeros(200, dtype=torch.long)
    a = order_by_difficulty(scores, targets, "easy_first", seed=1)
    assert torch.equal(a, order_by_difficulty(scores, targets, "easy_first", seed=1))
    assert not torch.equal(a, order_by_difficulty(scores, targets, "easy_first", seed=2))
    assert not torch.equal(a, torch.arange(200))
    assert sorted(a.tolist()) == list(range(200))
    # a tie only reorders within its group
    mixed = torch.tensor([1.0, 0.0, 1.0, 0.0, 2.0])
    o = order_by_difficulty(mixed, torch.zeros(5, dtype=torch.long), "easy_first", seed=3).tolist()
    assert set(o[:2]) == {1, 3} and set(o[2:4]) == {0, 2} and o[4] == 4


def test_nan_counts_as_hardest():
    scores = torch.tensor([0.2, float("nan"), 0.1])
    assert order_by_difficulty(scores, torch.zeros(3, dtype=torch.long)).tolist() == [2, 0, 1]
    assert order_by_difficulty(scores, torch.zeros(3, dtype=torch.long), "hard_first").tolist() == [1, 0, 2]


def test_class_balanced_imbalanced_three_classes():
    # 60 / 25 / 15 samples; class 2 is the easiest overall, class 0 the hardest
    targets = torch.cat([torch.zeros(60), torch.ones(25), torch.full((15,), 2.0)]).long()
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(100, generator=gen) + (2 - targets) * 1.0
    order = order_by_difficulty(scores, targets, "class_balanced", seed=0)
    assert sorted(order.tolist()) == list(range(100))
    assert _prefix_deviation(targets[order], 3) <= 1.0
    # within each class the easiest come first
    for c in range(3):
        cls_scores = scores[order[targets[order] == c]]
        assert torch.all(cls_scores[1:] >= cls_scores[:-1])
    # plain easy_first would put the whole of class 2 first: far from balanced
    assert _prefix_deviation(targets[order_by_difficulty(scores, targets, "easy_first")], 3) > 5


def test_class_balanced_equal_classes_matches_rounds():
    # balanced classes: the order is made of rounds holding one sample of each class (Hacohen & Weinshall)
    targets = torch.arange(4).repeat(10)
    scores = torch.rand(40, generator=torch.Generator().manual_seed(1))
    order = order_by_difficulty(scores, targets, "class_balanced", seed=0)
    for r in range(10):
        assert sorted(targets[order[4 * r:4 * r + 4]].tolist()) == [0, 1, 2, 3]
        round_scores = scores[order[4 * r:4 * r + 4]]
        assert torch.all(round_scores[1:] >= round_scores[:-1])  # easiest first within a round, as balance_order


@pytest.mark.parametrize("seed", range(20))
def test_balanced_interleave_prefix_bound_random(seed):
    gen = torch.Generator().manual_seed(seed)
    c = int(torch.randint(2, 9, (1,), generator=gen))
    counts = torch.randint(1, 40, (c,), generator=gen)
    counts[0] *= 1 + seed % 5
    classes = torch.repeat_interleave(torch.arange(c) * 3 + 1, counts)  # non-contiguous labels
    seq = balanced_interleave(classes[torch.randperm(len(classes), generator=gen)])
    assert sorted(seq.tolist()) == sorted(classes.tolist())
    _, dense = torch.unique(seq, return_inverse=True)
    assert _prefix_deviation(dense, c) <= 1.0 - 1.0 / (2 * c - 2) + 1e-9


def test_errors():
    with pytest.raises(UserError, match="did you mean 'easy_first'"):
        order_by_difficulty(torch.zeros(3), torch.zeros(3), "easy_frist")
    with pytest.raises(UserError, match="1-D"):
        order_by_difficulty(torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(UserError, match="one target per score"):
        order_by_difficulty(torch.zeros(3), torch.zeros(4), "class_balanced")
