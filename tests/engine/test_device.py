"""Device and dtype placement: every tensor built for a model lives where the model lives.

A CPU machine cannot see a CUDA/CPU mismatch, but the same class of bug shows as a dtype mismatch:
a float64 model fed a float32 probe fails exactly like a CUDA model fed a CPU probe. CUDA-marked
tests run the real thing where a GPU is present."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from curridistill import api
from curridistill.config import load_config
from curridistill.errors import UserError
from curridistill.evaluate.efficiency import flops_per_sample, latency_ms, throughput
from curridistill.models import build_model
from curridistill.models.placement import model_device, model_dtype, probe_input, resolve_device
from curridistill.train.course import CourseRunner
from tests.helpers import needs_cuda, tiny_config


def _cnn(dtype: torch.dtype = torch.float32) -> nn.Module:
    return build_model("cnn", 10, 1, {"widths": [4, 8]}).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_probe_input_follows_the_model(dtype):
    model = _cnn(dtype)
    x = probe_input(model, (1, 8, 8), batch=3, fill="randn")
    assert x.shape == (3, 1, 8, 8) and x.dtype == dtype and x.device == model_device(model)
    assert model(x).shape == (3, 10)


def test_parameterless_model_defaults_to_cpu_float32():
    model = nn.Flatten()
    assert model_device(model) == torch.device("cpu") and model_dtype(model) == torch.float32


def test_course_probe_uses_the_model_dtype(tmp_path):
    """Regression (issue 13): the output check probed with a CPU float32 tensor whatever the model's placement."""
    cfg = load_config(tiny_config(tmp_path))
    pipeline, device = api.prepare(cfg)
    runner = CourseRunner(cfg, tmp_path / "run", pipeline, device)
    runner._check_output(_cnn(torch.float64), "teacher.checkpoint")  # raised "expected Double" before the fix


@pytest.mark.parametrize("measure", [latency_ms, throughput, flops_per_sample])
def test_efficiency_measures_on_the_model_placement(measure):
    model = _cnn(torch.float64)
    kwargs = {"runs": 2} if measure is not flops_per_sample else {}
    if measure is throughput:
        kwargs["batch"] = 4
    assert measure(model, (1, 8, 8), **kwargs) > 0


@needs_cuda
def test_cuda_run_with_teacher_checkpoint(tmp_path):
    """The first command a GPU user types: a run that loads a teacher checkpoint."""
    first = api.run(load_config(tiny_config(tmp_path, epochs=1, run={**tiny_config(tmp_path)["run"], "device": "cuda"})),
                    out=tmp_path / "a")
    teacher = f"{first['run_dir']}/teacher/model.safetensors"
    cfg = tiny_config(tmp_path, epochs=1)
    cfg["teacher"]["checkpoint"] = teacher
    cfg["run"]["device"] = "cuda"
    cfg["run"]["cache_dir"] = str(tmp_path / "cache2")
    report = api.run(load_config(cfg), out=tmp_path / "b")
    assert report["student"]["accuracy"] > 0.3


@needs_cuda
@pytest.mark.parametrize("amp", [False, True])
def test_cuda_epoch_without_per_step_sync_matches_shapes(tmp_path, amp):
    cfg = tiny_config(tmp_path, epochs=1)
    cfg["run"].update(device="cuda", amp=amp)
    report = api.run(load_config(cfg), out=tmp_path / f"r{amp}")
    assert 0.0 <= report["student"]["accuracy"] <= 1.0


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device")])])
def test_eval_on_a_device(tmp_path, device, capsys):
    from curridistill import cli

    report = api.run(load_config(tiny_config(tmp_path, epochs=1)), out=tmp_path / "run")
    student = f"{report['run_dir']}/student/model.safetensors"
    assert cli.main(["eval", student, "--device", device, "--json", str(tmp_path / "m.json")]) == 0
    import json

    assert abs(json.loads((tmp_path / "m.json").read_text())["accuracy"] - report["student"]["accuracy"]) < 1e-6


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device")])])
@pytest.mark.parametrize("backward", [True, False])
def test_auto_cost_model_times_steps_on_the_training_device(device, backward):
    """auto's budget plan times a training step where the trials will train, without moving the caller's model."""
    from curridistill.experiments.auto_space import step_seconds

    model = build_model("cnn", 10, 1)
    seconds = step_seconds(model, (1, 8, 8), 16, 10, steps=2, backward=backward, device=device)
    assert 0.0 < seconds < 60.0
    assert model_device(model).type == "cpu"


@needs_cuda
def test_cuda_resume_after_a_stop_matches_the_whole_run(tmp_path):
    """--stop-after-epochs then --resume on the GPU: the CUDA RNG state and the device-resident state come back
    (up to the GPU's non-deterministic kernels, so accuracies within 2 points, not bit for bit)."""
    import json

    from curridistill.train.callbacks import StopAfterEpochs, StopRequested

    raw = tiny_config(tmp_path, epochs=3)
    raw["run"]["device"] = "cuda"
    cfg = load_config(raw)
    full = api.run(cfg, out=tmp_path / "full")
    with pytest.raises(StopRequested):
        api.run(cfg, out=tmp_path / "cut", callbacks=[StopAfterEpochs(5)])
    resumed = api.resume(tmp_path / "cut")
    for model in ("baseline", "student"):
        assert resumed[model]["accuracy"] == pytest.approx(full[model]["accuracy"], abs=0.02)
    epochs = [(r["model"], r["epoch"]) for r in map(json.loads, (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines())
              if r["model"] != "teacher"]
    assert epochs == [("baseline", 0), ("baseline", 1), ("baseline", 2), ("student", 0), ("student", 1), ("student", 2)]


@needs_cuda
def test_cuda_training_step_never_waits_for_the_gpu(tmp_path, monkeypatch):
    """CUDA's own sync check (``set_sync_debug_mode("error")``) around every step but each lesson's first (which
    builds the teacher cache once): KD, DKD, CTKD and self-paced quantile weights without a host sync."""
    from curridistill.train.lesson import LessonRun

    step, started = LessonRun.step, set()

    def checked(self, *args, **kwargs):
        if id(self) not in started:
            started.add(id(self))
            return step(self, *args, **kwargs)
        torch.cuda.set_sync_debug_mode("error")
        try:
            return step(self, *args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(LessonRun, "step", checked)
    raw = tiny_config(tmp_path, epochs=2)
    raw["run"]["device"] = "cuda"
    raw["course"][0]["loss"] = {"ce": 0.1, "kd": 0.5, "dkd": 0.2, "ctkd": 0.2}
    raw["course"][0]["curriculum"] = {"self_paced": {"weighting": "linear", "quantile": True,
                                                     "threshold": {"kind": "linear", "start": 0.5, "end": 1.0}}}
    report = api.run(load_config(raw), out=tmp_path / "r")
    assert 0.0 <= report["student"]["accuracy"] <= 1.0


# ------------------------------------------------------------------------------------- CUDA math settings
@pytest.fixture
def restored_math():
    """cuda_speed sets process-wide torch state: put it back for the other tests of this worker."""
    saved = (torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32)
    yield
    torch.set_float32_matmul_precision(saved[0])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = saved[1], saved[2]


def test_cuda_math_settings_leave_a_cpu_run_alone(restored_math):
    from curridistill.models.placement import cuda_speed

    before = (torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark)
    assert cuda_speed(torch.device("cpu"), tf32=True, autotune=True) == {}
    assert (torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark) == before


@pytest.mark.parametrize("tf32, autotune, precision", [(True, True, "high"), (False, False, "highest")])
def test_cuda_math_settings_are_set_for_a_cuda_device(restored_math, tf32, autotune, precision):
    from curridistill.models.placement import cuda_speed

    assert cuda_speed(torch.device("cuda", 0), tf32=tf32, autotune=autotune) == {"tf32": tf32, "cudnn_benchmark": autotune}
    assert torch.get_float32_matmul_precision() == precision and torch.backends.cudnn.benchmark is autotune
    if not tf32:
        assert torch.backends.cudnn.allow_tf32 is False  # full float32 means convolutions too


@pytest.mark.parametrize("data, run, expected", [
    ("digits", {}, (True, True)),  # images: one input shape, cuDNN tunes once
    ("trec", {}, (True, False)),  # token ids: the batch width varies, a tune per width would cost more than it saves
    ("digits", {"cudnn_benchmark": False, "tf32": False}, (False, False)),
    ("trec", {"cudnn_benchmark": True}, (True, True)),
])
def test_prepare_picks_the_cuda_math_for_the_data(tmp_path, monkeypatch, shared_data, data, run, expected):
    seen = []
    monkeypatch.setattr(api, "cuda_speed", lambda device, tf32, autotune: seen.append((tf32, autotune)) or {})
    raw = tiny_config(tmp_path)
    if data == "trec":
        raw["data"] = {"name": "trec", "root": str(shared_data), "options": {"max_length": 16}, "subset": 60,
                       "val_size": 0.2, "batch_size": 16}
        raw["teacher"] = {"name": "text-cnn", "kwargs": {"embed_dim": 8, "filters": 4, "kernel_sizes": [2]}}
        raw["student"] = {"name": "text-cnn", "kwargs": {"embed_dim": 8, "filters": 4, "kernel_sizes": [2]}}
    raw["run"].update(run)
    api.prepare(load_config(raw))
    assert seen == [expected]


@needs_cuda
def test_cuda_report_records_the_math_it_trained_with(tmp_path, restored_math):
    raw = tiny_config(tmp_path, epochs=1)
    raw["run"].update(device="cuda", tf32=False)
    report = api.run(load_config(raw), out=tmp_path / "r")
    assert report["cuda_math"] == {"tf32": False, "cudnn_benchmark": True}


@pytest.mark.parametrize("name, message", [
    ("cuda:2", "this machine has 2 CUDA device(s) (cuda:0 to cuda:1)"),
    ("cuda:9", "this machine has 2 CUDA device(s) (cuda:0 to cuda:1)"),
])
def test_a_cuda_index_past_the_machines_gpus_is_refused(monkeypatch, name, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(UserError, match=re.escape(message)):
        resolve_device(name)


def test_a_cuda_index_on_the_machine_is_accepted(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
