"""Prediction metrics against scikit-learn, with the ties and absent classes real models produce."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, top_k_accuracy_score

from curridistill.evaluate.metrics import class_rank, classification_metrics


def _logits_for(pred: list[int], classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(pred), classes).float()


@pytest.mark.parametrize("targets, pred, classes", [
    ([0, 0, 1, 1], [0, 2, 1, 1], 3),  # class 2 predicted, never true: it counts, with F1 0
    ([0, 1, 2, 3], [0, 1, 2, 3], 6),  # classes 4 and 5 in neither: left out
    ([2, 2, 2, 2], [0, 1, 2, 2], 4),
    ([0, 1, 0, 1, 2], [1, 0, 1, 0, 2], 3),
])
def test_macro_and_weighted_f1_match_scikit_learn(targets, pred, classes):
    metrics = classification_metrics(_logits_for(pred, classes), torch.tensor(targets))
    assert metrics["f1_macro"] == pytest.approx(f1_score(targets, pred, average="macro", zero_division=0))
    assert metrics["f1_weighted"] == pytest.approx(f1_score(targets, pred, average="weighted", zero_division=0))


def test_top5_is_never_below_top1_when_logits_tie():
    logits = torch.zeros(4, 10)  # a dead model: every class ties, argmax says class 0
    metrics = classification_metrics(logits, torch.tensor([0, 3, 4, 9]))
    assert metrics["accuracy"] == 0.25
    assert metrics["top5"] == 0.75  # classes 0-4 are the first five of a tie, as argmax orders it


def test_top5_matches_scikit_learn_without_ties():
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(200, 12, generator=g), torch.randint(0, 12, (200,), generator=g)
    expected = top_k_accuracy_score(targets.numpy(), logits.numpy(), k=5, labels=np.arange(12))
    assert classification_metrics(logits, targets)["top5"] == pytest.approx(expected)


def test_class_rank_breaks_ties_like_argmax():
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    assert class_rank(logits, torch.tensor([2, 3])).tolist() == [1, 3]
    assert class_rank(logits, torch.tensor([1, 0])).tolist() == [0, 0]  # argmax's own choices rank first
