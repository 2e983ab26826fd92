"""TensorBoard events per epoch record; off with run.tensorboard: false; skipped without the package."""
import pytest

from curridistill import api
from curridistill.config import load_config
from curridistill.train import tensorboard as tb
from tests.experiments.conftest import small


def test_event_file_written(seed_run):
    pytest.importorskip("tensorboard")
    files = list((seed_run["dir"] / "seed-0" / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1 and files[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(files[0].parent))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    for tag in ("student/L0-distill/losses/kd", "student/L0-distill/losses/ce", "student/L0-distill/weights/kd",
                "student/L0-distill/temperature", "student/L0-distill/lr", "student/L0-distill/val_accuracy",
                "baseline/L0-distill/val_accuracy", "teacher/L0-distill/train_loss"):
        assert tag in tags, tag
    assert [e.step for e in ea.Scalars("student/L0-distill/val_accuracy")] == [0, 1]


def test_tensorboard_off(exp_root):
    raw = small(exp_root, epochs=1)
    raw["run"]["tensorboard"] = False
    raw["baseline"] = {"enabled": False}
    api.run(load_config(raw), out=exp_root / "no-tb")
    assert not (exp_root / "no-tb" / "tensorboard").exists()


def test_skipped_without_package(monkeypatch, tmp_path):
    monkeypatch.setattr(tb, "available", lambda: False)
    assert tb.tensorboard_sink(tmp_path / "tb") is None


def test_flatten_scalars():
    record = {"model": "student", "lesson": 0, "epoch": 3, "lr": 0.1, "temperature": None, "ok": True,
              "losses": {"kd": 1.5, "ce": float("nan")}, "weights": {"kd": 0.9}, "data_fraction": 0.5}
    assert tb.flatten_scalars(record) == {"lr": 0.1, "losses/kd": 1.5, "weights/kd": 0.9, "data_fraction": 0.5}
