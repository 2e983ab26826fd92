"""The engine end to end on digits through the Python API: outputs, resume equality, reuse, errors."""
import json

import pytest
import torch
from safetensors.torch import load_file

from curridistill import api
from curridistill.config import load_config
from curridistill.errors import NonFiniteLoss, UserError
from curridistill.train.callbacks import StopAfterEpochs, StopRequested
from tests.helpers import tiny_config

REPORT_KEYS = {"accuracy", "top5", "precision", "recall", "f1", "f1_macro", "f1_weighted", "confusion", "loss", "params",
               "flops", "weights_bytes", "latency_ms", "throughput", "train_seconds"}


def test_run_writes_run_directory(tmp_path):
    report = api.run(load_config(tiny_config(tmp_path, epochs=2)), out=tmp_path / "r")
    run_dir = tmp_path / "r"
    for name in ("config.yaml", "metrics.jsonl", "report.json", "student/model.safetensors", "student/model.json",
                 "baseline/model.safetensors", "teacher/model.safetensors", "student/best.safetensors"):
        assert (run_dir / name).is_file(), name
    on_disk = json.loads((run_dir / "report.json").read_text())
    for model in ("teacher", "baseline", "student"):
        assert REPORT_KEYS <= set(on_disk[model]), model
    assert {"agreement", "kl_teacher_student", "entropy", "teacher_entropy", "mutual_information"} <= set(on_disk["student"])
    assert {"student_minus_baseline_accuracy", "teacher_student_param_ratio", "student_speedup_over_teacher"} <= set(on_disk["comparison"])
    assert on_disk["comparison"]["student_minus_baseline_accuracy"] == pytest.approx(
        report["student"]["accuracy"] - report["baseline"]["accuracy"])
    records = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["model"], r["epoch"]) for r in records] == [("teacher", 0), ("teacher", 1), ("baseline", 0), ("baseline", 1),
                                                           ("student", 0), ("student", 1)]
    student = [r for r in records if r["model"] == "student"]
    for key in ("model", "lesson", "epoch", "lr", "temperature", "weights", "train_loss", "val_accuracy", "seconds"):
        assert key in student[0]
    assert student[0]["weights"] == {"ce": pytest.approx(0.1), "kd": pytest.approx(0.9)}
    assert student[0]["temperature"] == 4
    assert student[1]["lr"] < student[0]["lr"]  # cosine


def test_resume_reproduces_uninterrupted_run(tmp_path):
    cfg = load_config(tiny_config(tmp_path, epochs=3))
    full = api.run(cfg, out=tmp_path / "full")
    with pytest.raises(StopRequested):
        api.run(cfg, out=tmp_path / "cut", callbacks=[StopAfterEpochs(5)])  # teacher reused from cache -> stops inside student
    resumed = api.resume(tmp_path / "cut")
    for model in ("baseline", "student"):
        assert resumed[model]["accuracy"] == full[model]["accuracy"]
        assert resumed[model]["loss"] == full[model]["loss"]
        a = load_file(str(tmp_path / "full" / model / "model.safetensors"))
        b = load_file(str(tmp_path / "cut" / model / "model.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), model
    lines = lambda d: [(r["model"], r["lesson"], r["epoch"], r["train_loss"], r["val_accuracy"]) for r in
                       map(json.loads, (tmp_path / d / "metrics.jsonl").read_text().splitlines()) if r["model"] != "teacher"]
    assert lines("cut") == lines("full")
    assert len(lines("cut")) == 6  # each epoch once: the epochs redone after the kill replaced their lines


def test_trained_teacher_is_reused(tmp_path):
    cfg = load_config(tiny_config(tmp_path, epochs=1))
    first = api.run(cfg, out=tmp_path / "a")
    second = api.run(cfg, out=tmp_path / "b")
    assert first["teacher"]["reused_from"] is None
    assert second["teacher"]["reused_from"] is not None
    assert second["teacher"]["accuracy"] == first["teacher"]["accuracy"]
    records = (tmp_path / "b" / "metrics.jsonl").read_text()
    assert '"teacher"' not in records


def test_teacher_from_checkpoint_and_class_mismatch(tmp_path):
    api.run(load_config(tiny_config(tmp_path, epochs=1)), out=tmp_path / "a")
    ckpt = str(tmp_path / "a" / "teacher" / "model.safetensors")
    raw = tiny_config(tmp_path, epochs=1)
    raw["teacher"]["checkpoint"] = ckpt
    report = api.run(load_config(raw), out=tmp_path / "b")
    assert report["teacher"]["reused_from"] == ckpt
    spec_path = tmp_path / "a" / "teacher" / "model.json"
    spec = json.loads(spec_path.read_text())
    spec["num_classes"] = 7
    if spec.get("classes"):  # a consistent spec of a 7-class model (a spec at odds with itself is refused earlier)
        spec["classes"] = spec["classes"][:7]
    spec_path.write_text(json.dumps(spec))
    with pytest.raises(UserError, match="predicts 7 classes but data 'digits' has 10"):
        api.run(load_config(raw), out=tmp_path / "c")


def test_non_finite_loss_stops_with_message(tmp_path):
    raw = tiny_config(tmp_path, epochs=2)
    raw["course"][0]["optimizer"]["lr"] = 1e30
    raw["teacher"]["course"] = [{"epochs": 1, "optimizer": {"lr": 0.05}}]
    with pytest.raises(NonFiniteLoss, match="non-finite loss in baseline, lesson 0, epoch 0"):
        api.run(load_config(raw), out=tmp_path / "nan")


@pytest.mark.parametrize("opt", ["sgd", "adam", "adamw", "adagrad", "lbfgs"])
def test_every_optimizer_trains(tmp_path, opt):
    raw = tiny_config(tmp_path, epochs=1)
    raw["teacher"] = None
    raw["baseline"] = {"enabled": False}
    raw["course"][0]["loss"] = {"ce": 1}
    raw["course"][0]["optimizer"] = {"name": opt, "lr": 0.05 if opt != "lbfgs" else 0.5}
    report = api.run(load_config(raw), out=tmp_path / opt)
    assert report["student"]["accuracy"] > 0.3


def test_plateau_lr_and_early_stopping(tmp_path):
    raw = tiny_config(tmp_path, epochs=30)
    raw["teacher"] = None
    raw["baseline"] = {"enabled": False}
    raw["course"][0].update(loss={"ce": 1}, lr_schedule={"kind": "plateau", "patience": 0, "factor": 0.5},
                            early_stop={"patience": 2}, optimizer={"name": "sgd", "lr": 0.05})
    api.run(load_config(raw), out=tmp_path / "p")
    records = [json.loads(l) for l in (tmp_path / "p" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) < 30  # stopped early
    lrs = [r["lr"] for r in records]
    assert min(lrs) < lrs[0]  # plateau lowered the LR
