"""Whole epochs of training steps on PyTorch's ``meta`` device: every tensor the step creates follows the model.

A tensor made on the CPU inside a step (a mask, a weight, an index, a buffer) fails there as it fails on CUDA, so
the whole step (the student's forward, every knowledge term with its adapters, the teachers and their aggregation,
the backward and the optimizer update) is checked for device placement without a GPU. The epoch's own host reads
(its metrics) come after ``on_batches_end``, where this test stops it.
"""
from __future__ import annotations

import pytest
import torch

from curridistill.config import load_config
from curridistill.data.pipeline import Pipeline, load_splits
from curridistill.models import build_model
from curridistill.models.registry import with_defaults
from curridistill.models.taps import FeatureTaps
from curridistill.train.callbacks import Callbacks
from curridistill.train.lesson import LessonContext, LessonRun
from curridistill.train.teachers import TeacherBank
from tests.engine.test_host_sync import every_term
from tests.helpers import tiny_config

META = torch.device("meta")


class AllStepsRan(Exception):
    pass


class CountSteps:
    """Counts the epoch's steps and stops the epoch where its per-epoch reads would begin."""

    def __init__(self):
        self.steps = 0

    def on_batch(self):
        self.steps += 1

    def on_batches_end(self):
        raise AllStepsRan


# a "random" scorer reads no model, so the curriculum's per-epoch scoring (a host read) leaves the steps to the test
SELF_PACED = {"scorer": "random", "pacing": {"kind": "linear", "start": 0.5},
              "self_paced": {"weighting": "linear", "quantile": True, "threshold": {"kind": "linear", "start": 0.3, "end": 1.0}}}
HARD = {"scorer": "random", "self_paced": {"weighting": "hard", "threshold": {"kind": "linear", "start": 0.5, "end": 5.0}}}


@pytest.mark.parametrize("teachers, aggregation, curriculum, micro", [
    (["resnet14"], "mean", None, 1),
    (["resnet14", "resnet8"], "weighted", None, 1),
    (["resnet14", "resnet8"], "best", None, 1),
    (["resnet14"], "mean", SELF_PACED, 1),  # self-paced sample weights (quantile threshold) over a paced prefix
    (["resnet14"], "mean", HARD, 1),
    (["resnet14", "resnet8"], "weighted", HARD, 3),  # run.micro_batches: forward + backward per part
], ids=["one teacher", "two weighted", "two per-sample best", "self-paced quantile + pacing", "self-paced hard",
        "micro-batches"])
def test_an_epoch_of_every_term_runs_on_the_meta_device(tmp_path, cifar_shaped, teachers, aggregation, curriculum,
                                                        micro):
    raw = tiny_config(tmp_path, epochs=1)
    raw["data"] = {"name": "tensors", "options": {"path": str(cifar_shaped)}, "val_size": 0.1, "batch_size": 36,
                   "augment": {"crop_padding": 4, "flip": True, "cutout": 8}}
    raw["student"] = {"name": "resnet8"}
    raw["course"][0]["loss"] = every_term()
    if curriculum is not None:
        raw["course"][0]["curriculum"] = curriculum
    lesson = load_config(raw).course[0]
    pipeline = Pipeline(load_splits(load_config(raw).data), load_config(raw).data, META)
    models = [build_model(name, 10, 3, {}).to(META).eval() for name in teachers]
    taps = [["stage2", "stage3"]] * len(models)
    bank = TeacherBank(models, [1.0, 2.0][:len(models)], aggregation=aggregation, feature_paths=taps)
    counter = CountSteps()
    ctx = LessonContext(phase="student", lesson_index=0, pipeline=pipeline, device=META, seed=0, teachers=bank,
                        callbacks=Callbacks([counter]), micro_batches=micro)
    student = build_model("resnet8", 10, 3, {}).to(META)
    run = LessonRun(student, lesson, ctx)
    run._check_every_step = False  # the single-GPU policy: no per-step read of the loss
    with FeatureTaps(student, run.student_paths, who="student") as student_taps, pytest.raises(AllStepsRan):
        run._train_epoch(student_taps)
    assert counter.steps == run.steps_per_epoch == 5  # 180 training images, batches of 36 (a paced prefix too)


@pytest.mark.parametrize("augment", [{}, {"token_mask": 0.1, "token_replace": 0.1, "token_span": 0.25}],
                         ids=["plain", "token augmentation"])
def test_an_epoch_on_text_runs_on_the_meta_device(tmp_path, shared_data, augment):
    """Token ids, each batch cut to its longest row by a host lookup, also when augmentation shortens rows (the
    lengths follow from the epoch's draws): nothing in the step reads the batch back."""
    raw = tiny_config(tmp_path, epochs=1)
    raw["data"] = {"name": "trec", "root": str(shared_data), "options": {"max_length": 24}, "subset": 160,
                   "val_size": 0.2, "batch_size": 32, "augment": augment}
    cnn = {"name": "text-cnn", "kwargs": {"embed_dim": 8, "filters": 4, "kernel_sizes": [2]}}
    raw["teacher"], raw["student"] = cnn, cnn
    raw["course"][0]["loss"] = {"ce": 0.2, "kd": 0.4, "dkd": 0.2, "ctkd": 0.1, "mse_logits": 0.1}
    cfg = load_config(raw)
    pipeline = Pipeline(load_splits(cfg.data), cfg.data, META)
    kwargs = with_defaults("text-cnn", cnn["kwargs"], pipeline.splits.train.meta.get("model_defaults"))  # vocab, pad id
    teacher = build_model("text-cnn", pipeline.splits.num_classes, 1, kwargs).to(META)
    counter = CountSteps()
    ctx = LessonContext(phase="student", lesson_index=0, pipeline=pipeline, device=META, seed=0,
                        teachers=TeacherBank([teacher.eval()], [1.0]), callbacks=Callbacks([counter]))
    student = build_model("text-cnn", pipeline.splits.num_classes, 1, kwargs)
    run = LessonRun(student.to(META), cfg.course[0], ctx)
    run._check_every_step = False
    with FeatureTaps(student, run.student_paths, who="student") as student_taps, pytest.raises(AllStepsRan):
        run._train_epoch(student_taps)
    assert counter.steps == run.steps_per_epoch > 1
