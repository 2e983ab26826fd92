"""Speed options of run: channels_last, compile, teacher_cache off; config validation of the flags."""
import pytest
import torch
from safetensors.torch import load_file

from curridistill import api
from curridistill.config import load_config
from curridistill.data.pipeline import Pipeline
from curridistill.train.course import CourseRunner
from tests.helpers import needs_cuda, tiny_config


def test_speed_flags_have_defaults_and_validate(tmp_path):
    run = load_config(tiny_config(tmp_path)).run
    assert (run.teacher_cache, run.cache_features, run.channels_last, run.compile) == (True, False, False, False)
    with pytest.raises(Exception, match="channels_lst"):
        load_config(tiny_config(tmp_path, run={"channels_lst": True}))


def test_channels_last_models_and_batches(tmp_path):
    raw = tiny_config(tmp_path, epochs=1, baseline={"enabled": False})
    raw["student"] = {"name": "cnn", "kwargs": {"widths": [4, 8]}}
    raw["data"]["augment"] = {"crop_padding": 1, "flip": True}
    raw["run"]["channels_last"] = True
    cfg = load_config(raw)
    pipeline, device = api.prepare(cfg)
    runner = CourseRunner(cfg, tmp_path / "probe", pipeline, device)
    model = runner.build(cfg.student, 0, where="student")
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x, _ = pipeline.batch("train", torch.arange(8), epoch=0)
    assert x.is_contiguous(memory_format=torch.channels_last)
    report = api.run(cfg, out=tmp_path / "r")
    assert 0 <= report["student"]["accuracy"] <= 1


def test_compile_flag_runs_one_epoch(tmp_path):
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile is not available in this torch build")
    raw = tiny_config(tmp_path, epochs=1, baseline={"enabled": False})
    raw["run"]["compile"] = True
    try:
        report = api.run(load_config(raw), out=tmp_path / "r")
    except Exception as exc:  # no C compiler for inductor, unsupported platform, ...
        if "inductor" in repr(exc).lower() or "compiler" in repr(exc).lower():
            pytest.skip(f"torch.compile does not work here: {type(exc).__name__}")
        raise
    assert 0 <= report["student"]["accuracy"] <= 1
    keys = load_file(str(tmp_path / "r" / "student" / "model.safetensors"))
    assert not any(k.startswith("_orig_mod") for k in keys)  # compiled in place: checkpoints keep plain names


def _train(tmp_path, name: str, compile_mode) -> dict:
    """Everything that changes every step: a temperature schedule, CTKD's ramp, a scheduled teacher scale
    (Annealing-KD) and self-paced quantile thresholds, beside the LR schedule."""
    raw = tiny_config(tmp_path / name, epochs=2, baseline={"enabled": False})
    loss = raw["course"][0]["loss"]
    loss["kd"]["temperature"] = {"kind": "linear", "start": 4, "end": 2}
    loss.update(ctkd=0.2, mse_logits={"weight": 0.1, "teacher_scale": {"kind": "linear", "start": 0.1, "end": 1.0}})
    raw["course"][0]["curriculum"] = {"self_paced": {"weighting": "mixture", "quantile": True,
                                                     "threshold": {"kind": "linear", "start": 0.5, "end": 1.0}}}
    raw["run"]["compile"] = compile_mode
    return api.run(load_config(raw), out=tmp_path / name / "r")


def test_compile_step_captures_the_step_and_trains_like_eager(tmp_path):
    import warnings
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    eager = _train(tmp_path, "eager", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step = _train(tmp_path, "step", "step")
    assert counters["stats"]["unique_graphs"] >= 2  # the loss (+ its backward) and the optimizer update were compiled
    # values that change every step must not recompile per step: a handful of graphs (teacher and student
    # lessons, the smaller last batch, the optimizer's first step), far from dynamo's limit of 8 per function
    assert counters["stats"]["unique_graphs"] <= 10
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]
    # the same seed, data and schedule: the compiled step computes the same training (up to kernel rounding)
    assert abs(step["student"]["accuracy"] - eager["student"]["accuracy"]) <= 0.03
    keys = load_file(str(tmp_path / "step" / "r" / "student" / "model.safetensors"))
    assert not any(k.startswith("_orig_mod") for k in keys)


@pytest.mark.parametrize("value, error", [
    ("steps", "compile"),
    ("lbfgs", "lbfgs re-evaluates the loss"),
])
def test_compile_step_is_validated(tmp_path, value, error):
    raw = tiny_config(tmp_path)
    if value == "lbfgs":
        raw["course"][0]["optimizer"] = {"name": "lbfgs", "lr": 0.5}
        raw["run"]["compile"] = "step"
    else:
        raw["run"]["compile"] = value
    with pytest.raises(Exception, match=error):
        load_config(raw)


@needs_cuda
def test_compile_step_on_cuda_replays_graphs_and_reports_the_eager_metrics(tmp_path):
    """CUDA graphs overwrite their outputs on the next replay: the epoch's loss sums must still be right."""
    import json

    def run(name, mode):
        raw = tiny_config(tmp_path / name, epochs=2, baseline={"enabled": False})
        raw["run"].update(device="cuda", compile=mode)
        report = api.run(load_config(raw), out=tmp_path / name / "r")
        rows = [json.loads(line) for line in (tmp_path / name / "r" / "metrics.jsonl").read_text().splitlines()]
        return report, [r["train_loss"] for r in rows if r.get("model") == "student" and "train_loss" in r]

    eager, eager_losses = run("eager", False)
    step, step_losses = run("step", "step")
    assert len(step_losses) == len(eager_losses) == 2
    for a, b in zip(step_losses, eager_losses):
        assert a == pytest.approx(b, rel=0.05)
    assert abs(step["student"]["accuracy"] - eager["student"]["accuracy"]) <= 0.03


@pytest.mark.parametrize("terms, graphs", [(["ce", "kd"], True), (["kd", "dkd", "fitnet"], True),
                                           (["kd", "crd"], False), (["ctkd", "mse_logits"], True)])
def test_cuda_graphs_only_for_steps_that_carry_no_tensors(terms, graphs):
    """CRD's queue is replaced every step and lives past it; a CUDA graph replay would overwrite it. CTKD's
    running sum and ramp are buffers changed in place, which a graph reads and writes where they are."""
    from curridistill.knowledge import load_all
    from curridistill.train.captured import uses_cuda_graphs

    assert uses_cuda_graphs([load_all().get(name)() for name in terms]) is graphs


@needs_cuda
@pytest.mark.parametrize("loss", [
    {"ce": 0.5, "crd": {"weight": 0.5, "student_layer": "stage2", "teacher_layer": "stage2", "num_negatives": 64}},
    {"ce": 0.5, "ctkd": 0.5, "mse_logits": {"weight": 0.1, "teacher_scale": {"kind": "linear", "start": 0.1, "end": 1}}},
], ids=["crd: compiled without CUDA graphs", "ctkd + annealing: CUDA graphs"])
def test_compile_step_on_cuda_with_terms_that_keep_state(tmp_path, loss):
    """CRD's queue (replaced each step, so no CUDA graphs) and CTKD's in-place ramp and temperature sum (replayed
    as CUDA graphs) train like eager across steps and epochs."""
    import json

    def run(name, mode):
        raw = tiny_config(tmp_path / name, epochs=2, baseline={"enabled": False})
        raw["teacher"]["name"] = raw["student"]["name"] = "cnn"
        raw["student"]["kwargs"] = {"widths": [4, 8]}
        raw["course"][0]["loss"] = loss
        raw["run"].update(device="cuda", compile=mode)
        api.run(load_config(raw), out=tmp_path / name / "r")
        rows = [json.loads(line) for line in (tmp_path / name / "r" / "metrics.jsonl").read_text().splitlines()]
        return [(*(r["losses"][n] for n in sorted(loss)), r["temperature"] or 0.0)
                for r in rows if r.get("model") == "student" and "losses" in r]

    eager, step = run("eager", False), run("step", "step")
    assert len(step) == len(eager) == 2
    for a, b in zip(step, eager):
        assert a == pytest.approx(b, rel=0.05)
