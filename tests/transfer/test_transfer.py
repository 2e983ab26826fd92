"""Transfer learning: init from a checkpoint trained on other classes (head replaced), freezing and gradual
unfreezing change exactly the parameters they name, body / head learning rates, and digits 0-4 -> 5-9."""
from __future__ import annotations

import json

import pytest
import torch

from curridistill import api, cli
from curridistill.config import OptimizerConfig
from curridistill.errors import UserError
from curridistill.io import load_tensors
from curridistill.models import build_model
from curridistill.models.transfer import TransferConfig, TransferPlan, init_model
from curridistill.train.optim import build_optimizer
from tests.helpers import tiny_config

LOW, HIGH = [str(c) for c in range(5)], [str(c) for c in range(5, 10)]
CNN = {"name": "cnn", "kwargs": {"widths": [8, 16]}}


def _params(state: dict, prefix: str) -> dict:
    return {k: v for k, v in state.items() if k.startswith(prefix) and "running" not in k and "num_batches" not in k}


def _same(a: dict, b: dict, prefix: str) -> bool:
    pa, pb = _params(a, prefix), _params(b, prefix)
    assert pa and pa.keys() == pb.keys()
    return all(torch.equal(pa[k], pb[k]) for k in pa)


@pytest.fixture(scope="module")
def low_digits(tmp_path_factory):
    """A CNN trained on digits 0-4 only (no teacher: the course trains the student alone)."""
    tmp = tmp_path_factory.mktemp("low")
    cfg = tiny_config(tmp, epochs=3, student=CNN, baseline={"enabled": False},
                      course=[{"epochs": 3, "optimizer": {"name": "adam", "lr": 0.01}}])
    cfg.pop("teacher")
    cfg["data"]["classes"] = LOW
    report = api.run(cfg, out=tmp / "run")
    assert report["student"]["accuracy"] > 0.9
    return tmp / "run" / "student" / "model.safetensors"


def test_plan_freezes_and_unfreezes_on_schedule():
    model = build_model("cnn", 5, 1, {"widths": [8, 16]})
    cfg = TransferConfig(freeze=["body"], unfreeze=[{"epoch": 1, "modules": ["stage2"]}, {"lesson": 1, "modules": ["body"]}],
                         body_lr=0.1)
    plan = TransferPlan(model, cfg, lesson_epochs=[2, 2])
    assert plan.head == "fc"
    names = {n for n, _ in model.named_parameters()}
    stage1 = {n for n in names if n.startswith("stage1.")}
    stage2 = {n for n in names if n.startswith("stage2.")}
    assert plan.frozen_at(0, 0) == stage1 | stage2  # everything but the head
    assert plan.frozen_at(0, 1) == stage1  # stage2 unfrozen at phase epoch 1
    assert plan.frozen_at(1, 0) == set()  # lesson 1 unfreezes the body
    plan.at(0, 1)
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == stage1
    groups = plan.param_groups(lr=0.5)
    opt = build_optimizer(groups, OptimizerConfig(name="sgd", lr=0.5))
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.05]  # head, body
    assert sum(len(g["params"]) for g in opt.param_groups) == len(names)  # frozen ones kept for later unfreezing


def test_init_replaces_the_head_for_a_new_class_count(low_digits):
    model = build_model("cnn", 10, 1, {"widths": [8, 16]})
    fresh_fc = model.fc.weight.detach().clone()
    replaced = init_model(model, str(low_digits), None, "student", classes=[str(c) for c in range(10)])
    assert replaced == ["fc.weight", "fc.bias"]
    saved = load_tensors(low_digits)
    assert _same(model.state_dict(), saved, "stage")
    assert torch.equal(model.fc.weight, fresh_fc)
    # same class count but other classes (5-9 after 0-4): the head is replaced as well
    five = build_model("cnn", 5, 1, {"widths": [8, 16]})
    assert init_model(five, str(low_digits), None, "student", classes=HIGH) == ["fc.weight", "fc.bias"]
    same = build_model("cnn", 5, 1, {"widths": [8, 16]})
    assert init_model(same, str(low_digits), None, "student", classes=LOW) == []


def test_bad_transfer_inputs(low_digits, tmp_path):
    model = build_model("cnn", 5, 1, {"widths": [8, 16]})
    with pytest.raises(UserError, match="not found"):
        init_model(model, str(tmp_path / "none.safetensors"), None, "student")
    with pytest.raises(UserError, match="no module 'stage22'.*'stage2'"):
        TransferPlan(model, TransferConfig(freeze=["stage22"]), [1])
    wide = build_model("cnn", 5, 1, {"widths": [8, 32]})
    with pytest.raises(UserError, match="only the head"):
        init_model(wide, str(low_digits), None, "student")


def _transfer_cfg(tmp, init, transfer, epochs=2):
    cfg = tiny_config(tmp, epochs=epochs, student={**CNN, "init": str(init), "transfer": transfer},
                      baseline={"enabled": False},
                      course=[{"epochs": epochs, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}}])
    cfg.pop("teacher")
    cfg["data"]["classes"] = HIGH
    cfg["run"]["selection"] = "last"
    return cfg


def test_gradual_unfreezing_changes_exactly_the_named_parameters(low_digits, tmp_path):
    cfg = _transfer_cfg(tmp_path, low_digits, {"freeze": ["body"], "unfreeze": [{"epoch": 1, "modules": ["stage2"]}]})
    init = load_tensors(low_digits)
    seen = {}

    def keep_first_epoch(record):  # at the second epoch's record the first epoch's checkpoint is on disk
        if record["model"] == "student" and record["epoch"] == 1:
            seen["after_one"] = load_tensors(tmp_path / "run" / "student" / "last-0-1.safetensors")

    api.run(cfg, out=tmp_path / "run", callbacks=[keep_first_epoch])
    after_one = seen["after_one"]
    assert _same(after_one, init, "stage1") and _same(after_one, init, "stage2")  # epoch 0: the head only
    assert not torch.equal(after_one["fc.weight"][:, :], torch.zeros_like(after_one["fc.weight"]))
    final = load_tensors(tmp_path / "run" / "student" / "model.safetensors")
    assert _same(final, init, "stage1")  # still frozen
    assert not _same(final, after_one, "stage2")  # unfrozen at epoch 1: trained
    assert not torch.equal(final["fc.weight"], after_one["fc.weight"])


def test_digits_0_to_4_transfer_to_5_to_9(low_digits, tmp_path, capsys):
    """With one epoch of budget, a CNN that starts from weights learned on digits 0-4 (new head) learns
    5-9 far better than the same CNN from scratch. (Head-only training does worse here: the global-pooled
    16 channels of this tiny CNN are too specialized; the example config unfreezes gradually.)"""
    scores = {}
    for name, init in (("transfer", low_digits), ("scratch", None)):
        cfg = _transfer_cfg(tmp_path / name, low_digits, None, epochs=1)
        cfg["student"].pop("transfer")
        if init is None:
            cfg["student"].pop("init")
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(cfg))
        assert cli.main(["run", str(path), "--out", str(tmp_path / name / "run")]) == 0
        scores[name] = json.loads((tmp_path / name / "run" / "report.json").read_text())["student"]["accuracy"]
    assert scores["transfer"] > 0.85, scores
    assert scores["transfer"] > scores["scratch"] + 0.1, scores


def test_cifar10_checkpoint_transfers_to_a_new_image_folder_task(tmp_path):
    """The committed CIFAR-10 resnet20 (10 classes) starts a 3-class image-folder task: the head is replaced
    (3 outputs), the frozen body keeps exactly the checkpoint's weights, and the new head learns the task."""
    from tests.helpers import REPO, write_image_folder

    source = REPO / "teachers" / "resnet20_cifar10_cpu_full.safetensors"
    folder = write_image_folder(tmp_path / "images", {"train": 40, "test": 10}, classes=3, size=32)
    cfg = tiny_config(tmp_path, epochs=3, baseline={"enabled": False},
                      data={"name": "image-folder", "options": {"path": str(folder)}, "val_size": 0.2, "batch_size": 16},
                      student={"name": "resnet20", "init": str(source), "transfer": {"freeze": ["body"]}},
                      course=[{"epochs": 6, "optimizer": {"name": "adam", "lr": 0.01}}])
    cfg.pop("teacher")
    path = tmp_path / "transfer.json"
    path.write_text(json.dumps(cfg))
    assert cli.main(["run", str(path), "--out", str(tmp_path / "run")]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["student"]["accuracy"] > 0.8, report["student"]  # chance: 0.33
    trained, original = load_tensors(tmp_path / "run" / "student" / "model.safetensors"), load_tensors(source)
    assert trained["fc.weight"].shape == (3, 64) and original["fc.weight"].shape == (10, 64)
    assert _same(trained, original, "stage3") and _same(trained, original, "conv1")  # the body did not move
