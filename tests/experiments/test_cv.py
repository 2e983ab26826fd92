"""Cross-validation: stratified folds of the pooled training data, one run dir per fold, aggregated."""
import json

import torch

from curridistill import api
from curridistill.config import CVConfig, load_config
from curridistill.data.base import ArrayData, Splits
from curridistill.data.folds import fold_assignment, fold_splits
from tests.experiments.conftest import small


def test_fold_assignment_is_stratified_and_balanced():
    y = torch.tensor([0] * 10 + [1] * 7 + [2] * 3)
    fold = fold_assignment(y, 3, seed=0)
    sizes = torch.bincount(fold, minlength=3)
    assert int(sizes.max() - sizes.min()) <= 1
    for c in range(3):
        per_class = torch.bincount(fold[y == c], minlength=3)
        assert int(per_class.max() - per_class.min()) <= 1
    assert torch.equal(fold, fold_assignment(y, 3, seed=0)) and not torch.equal(fold, fold_assignment(y, 3, seed=1))


def test_fold_splits_partition_the_pool_and_keep_test():
    x = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1)
    y = torch.arange(40) % 2
    train, val, test = (ArrayData(x[:30], y[:30], ["a", "b"]), ArrayData(x[30:36], y[30:36], ["a", "b"]),
                        ArrayData(x[36:], y[36:], ["a", "b"]))
    splits = Splits(train, val, test, (0.0,), (1.0,), name="toy", info={})
    vals = [fold_splits(splits, CVConfig(folds=3, fold=i)) for i in range(3)]
    seen = torch.cat([s.val.x.flatten() for s in vals]).sort().values
    assert torch.equal(seen, x[:36].flatten())  # every pooled sample validates exactly once
    for s in vals:
        assert len(s.train) + len(s.val) == 36 and s.test is test
        assert not set(s.train.x.flatten().tolist()) & set(s.val.x.flatten().tolist())
        assert s.info["cv_folds"] == 3


def test_two_fold_run(exp_root):
    raw = small(exp_root, epochs=1)
    raw["data"]["cv"] = {"folds": 2, "seed": 0}
    out = exp_root / "cv"
    agg = api.run(load_config(raw), out=out)
    assert agg["kind"] == "folds" and agg["folds"] == [0, 1] and agg["n_runs"] == 2
    reports = [json.loads((out / f"fold-{i}" / "report.json").read_text()) for i in (0, 1)]
    assert [r["data"]["cv_fold"] for r in reports] == [0, 1]
    assert reports[0]["data"]["test"] == reports[1]["data"]["test"]  # the test set is the loader's test set
    pooled = reports[0]["data"]["train"] + reports[0]["data"]["val"]
    assert abs(reports[0]["data"]["val"] - pooled / 2) <= 1
    assert load_config(out / "fold-1" / "config.yaml").data.cv.fold == 1
    assert agg["student"]["accuracy"]["n"] == 2 and agg["student"]["accuracy"]["std"] is not None
    assert (out / "aggregate.md").read_text().count("fold-") >= 2
