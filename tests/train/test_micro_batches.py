"""run.micro_batches: each step's batch goes forward and back in parts, and the optimizer step equals the whole batch's.

Exact for every per-sample term and for self-paced weights (each part enters with its weight sum, the gradients
are divided by the batch's once it is known); BatchNorm statistics and batch-relational terms see the parts, so
the models here have no BatchNorm and the terms are per-sample ones.
"""
from __future__ import annotations

import copy

import pytest
import torch

from curridistill import cli
from curridistill.config import load_config
from curridistill.data.pipeline import Pipeline, load_splits
from curridistill.models import build_model
from curridistill.models.taps import FeatureTaps
from curridistill.train.lesson import LessonContext, LessonRun, micro_batches
from curridistill.train.teachers import TeacherBank
from tests.helpers import tiny_config


@pytest.mark.parametrize("n, count, sizes", [
    (64, 1, [64]), (64, 4, [16, 16, 16, 16]), (50, 3, [17, 16, 17]),
    (5, 4, [2, 3]),  # a small last batch: fewer parts, none of 1 sample (BatchNorm needs 2)
    (3, 4, [3]), (1, 4, [1]),
])
def test_parts_of_a_batch(n, count, sizes):
    parts = micro_batches(n, count)
    assert [p.stop - p.start for p in parts] == sizes and parts[0].start == 0 and parts[-1].stop == n


SELF_PACED = {"scorer": "random", "self_paced": {"weighting": "linear", "threshold": {"kind": "linear", "start": 1.0, "end": 3.0}}}


def _epoch(tmp_path, micro: int, curriculum: dict | None, grad_clip: float | None) -> tuple[dict, dict]:
    raw = tiny_config(tmp_path, epochs=1)
    raw["data"]["batch_size"] = 50
    raw["course"][0]["loss"] = {"ce": 0.3, "kd": {"weight": 0.5, "temperature": 4}, "dkd": 0.1, "mse_logits": 0.1}
    raw["course"][0]["grad_clip"] = grad_clip
    if curriculum is not None:
        raw["course"][0]["curriculum"] = curriculum
    cfg = load_config(raw)
    pipeline = Pipeline(load_splits(cfg.data), cfg.data, torch.device("cpu"))
    torch.manual_seed(0)
    teacher = build_model("mlp", 10, 1, {"hidden": [32], "image_size": 8}).eval()
    student = build_model("mlp", 10, 1, {"hidden": [16], "image_size": 8})
    ctx = LessonContext(phase="student", lesson_index=0, pipeline=pipeline, device=torch.device("cpu"), seed=0,
                        teachers=TeacherBank([teacher], [1.0]), micro_batches=micro)
    run = LessonRun(student, cfg.course[0], ctx)
    with FeatureTaps(student, run.student_paths, who="student") as taps:
        record = run._train_epoch(taps)
    return copy.deepcopy(student.state_dict()), record


@pytest.mark.parametrize("curriculum, grad_clip", [(None, None), (SELF_PACED, None), (None, 0.5)],
                         ids=["plain", "self-paced weights", "gradient clipping"])
def test_an_epoch_in_micro_batches_trains_as_whole_batches(tmp_path, curriculum, grad_clip):
    whole, whole_record = _epoch(tmp_path / "whole", 1, curriculum, grad_clip)
    parts, parts_record = _epoch(tmp_path / "parts", 3, curriculum, grad_clip)
    assert all(torch.allclose(whole[k], parts[k], rtol=1e-5, atol=1e-6) for k in whole)
    assert parts_record["train_loss"] == pytest.approx(whole_record["train_loss"], rel=1e-5)
    assert parts_record["train_accuracy"] == whole_record["train_accuracy"]
    assert parts_record["losses"] == pytest.approx(whole_record["losses"], rel=1e-5)


def test_a_run_in_micro_batches_from_the_cli(tmp_path):
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path, epochs=1)))
    assert cli.main(["run", str(path), "--out", str(tmp_path / "r"), "--quiet", "--set", "run.micro_batches=4"]) == 0
    assert (tmp_path / "r" / "report.json").is_file()


@pytest.mark.parametrize("sets, message", [
    (["run.micro_batches=33"], "splits batches into micro-batches of at least 2 samples, but data.batch_size is 64"),
    (["run.micro_batches=4", "course.0.batch_size=6"], "course.0's batches of 6 into micro-batches of at least 2"),
    (["run.micro_batches=2", "run.compile=step"], "which run.compile=step does not capture"),
    (["run.micro_batches=2", "course.0.optimizer.name=lbfgs"], "course.0: lbfgs re-evaluates the whole batch"),
    (["run.micro_batches=0"], "run.micro_batches"),
])
def test_micro_batches_that_cannot_work_are_one_line(tmp_path, capsys, sets, message):
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path, epochs=1)))
    assert cli.main(["validate", str(path), *[a for v in sets for a in ("--set", v)]]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
