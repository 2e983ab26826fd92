"""Knowledge terms through real runs: two teachers + fitnet on digits, and every registered term at
once on CIFAR-sized zoo models (the ``cifar_shaped`` .npz of conftest through the `tensors` loader)."""
import json

import numpy as np

from curridistill import api
from curridistill.config import load_config
from curridistill.knowledge import load_all
from tests.helpers import tiny_config


def test_two_teachers_and_a_fitnet_term_end_to_end(tmp_path):
    raw = tiny_config(tmp_path, epochs=2)
    raw.pop("teacher")
    raw["teachers"] = [{"name": "cnn", "kwargs": {"widths": [8, 16]}},
                       {"name": "cnn", "kwargs": {"widths": [16, 24]}, "weight": 2.0}]
    raw["student"] = {"name": "cnn", "kwargs": {"widths": [4, 8]}}
    raw["run"]["teacher_aggregation"] = "confidence"
    raw["course"][0]["loss"] = {"ce": 0.5, "kd": 0.5,
                                "fitnet": {"weight": 1.0, "teacher": 1, "student_layer": "stage2", "teacher_layer": "stage2"}}
    report = api.run(load_config(raw), out=tmp_path / "r")
    assert len(report["teachers"]) == 2 and report["student"]["accuracy"] > 0.2
    records = [json.loads(l) for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    student = [r for r in records if r["model"] == "student"]
    assert set(student[0]["losses"]) == {"ce", "kd", "fitnet"}
    assert all(np.isfinite(v) for r in student for v in r["losses"].values())


def test_every_registered_term_at_once_on_cifar_sized_zoo_models(tmp_path, cifar_shaped):
    terms = sorted(load_all())
    feature = {"student_layer": "stage3", "teacher_layer": "stage3"}
    loss = {name: {"weight": 0.1} for name in terms}
    for name in ("fitnet", "rkd", "pkt", "sp"):
        loss[name].update(feature)
    loss["crd"].update(feature, num_negatives=64)
    loss["at"].update(weight=10, student_layers=["stage2", "stage3"], teacher_layers=["stage2", "stage3"])
    raw = tiny_config(tmp_path, epochs=1)
    raw["data"] = {"name": "tensors", "options": {"path": str(cifar_shaped)}, "val_size": 0.1, "batch_size": 32,
                   "augment": {"crop_padding": 4, "flip": True}}
    raw["teacher"] = {"name": "resnet14", "course": [{"epochs": 1, "optimizer": {"lr": 0.05}}]}
    raw["student"] = {"name": "resnet8"}
    raw["baseline"] = {"enabled": False}
    raw["course"][0]["loss"] = loss
    api.run(load_config(raw), out=tmp_path / "r")
    records = [json.loads(l) for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    student = [r for r in records if r["model"] == "student"][0]
    assert set(student["losses"]) == set(terms)
    assert all(np.isfinite(v) for v in student["losses"].values())
