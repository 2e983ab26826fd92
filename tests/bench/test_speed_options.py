"""Speed options of run: channels_last, compile, teacher_cache off; config validation of the flags."""
import pytest
import torch
from safetensors.torch import load_file

from curridistill import api
from curridistill.config import load_config
from curridistill.data.pipeline import Pipeline
from curridistill.train.course import CourseRunner
from tests.helpers import tiny_config


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
