"""data.label_noise: symmetric noise on the training labels, never on the test split, the same for every run."""
from __future__ import annotations

import pytest
import torch

from curridistill.config import DataConfig
from curridistill.data.base import ArrayData
from curridistill.data.labels import with_label_noise
from curridistill.data.pipeline import load_splits


def _data(n: int = 1000, k: int = 10) -> ArrayData:
    return ArrayData(torch.zeros(n, 1, 2, 2, dtype=torch.uint8), torch.arange(n) % k, [str(i) for i in range(k)])


@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.5, 0.8])
def test_exactly_the_fraction_moves_to_another_class(fraction):
    clean = _data()
    noisy = with_label_noise(clean, fraction, seed=3)
    changed = noisy.y != clean.y
    assert int(changed.sum()) == round(fraction * len(clean))  # every chosen label really changes
    assert noisy.y.min() >= 0 and noisy.y.max() < clean.num_classes


def test_new_classes_are_spread_over_the_other_classes():
    clean = _data(20000, 4)
    noisy = with_label_noise(clean, 0.6, seed=0)
    moved = noisy.y != clean.y
    offsets = (noisy.y[moved] - clean.y[moved]) % 4
    counts = torch.bincount(offsets, minlength=4)
    assert counts[0] == 0 and (counts[1:].float() / moved.sum()).sub(1 / 3).abs().max() < 0.02


def test_same_seed_same_labels_other_seed_other_labels():
    clean = _data()
    a, b, c = (with_label_noise(clean, 0.3, seed=s).y for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_digits_splits_corrupt_training_labels_only():
    clean, noisy = (load_splits(DataConfig(name="digits", label_noise=f)) for f in (0.0, 0.4))
    assert torch.equal(noisy.test.y, clean.test.y)
    assert torch.equal(noisy.train.x, clean.train.x)  # the same samples in the same splits
    seen = torch.cat([noisy.train.y, noisy.val.y]) != torch.cat([clean.train.y, clean.val.y])
    assert abs(seen.float().mean().item() - 0.4) < 0.01
    assert noisy.info["label_noise"] == 0.4


def test_in_memory_tensors_get_the_same_noise():
    from curridistill.objects import make_splits

    x, y = torch.rand(500, 4), torch.arange(500) % 5
    test = (torch.rand(50, 4), torch.arange(50) % 5)
    clean = make_splits((x, y), None, test, DataConfig(normalize=False))
    noisy = make_splits((x, y), None, test, DataConfig(normalize=False, label_noise=0.2))
    assert torch.equal(noisy.train.x, clean.train.x) and torch.equal(noisy.test.y, clean.test.y)
    assert int((noisy.train.y != clean.train.y).sum()) == round(0.2 * len(clean.train))
    assert noisy.info["sha256"] != clean.info["sha256"]  # the teacher cache never serves the clean run's outputs
    assert noisy.info["label_noise"] == 0.2 and "label_noise" not in clean.info  # as named data record it
