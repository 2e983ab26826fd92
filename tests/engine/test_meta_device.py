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


@pytest.mark.parametrize("teachers, aggregation", [(["resnet14"], "mean"), (["resnet14", "resnet8"], "weighted"),
                                                   (["resnet14", "resnet8"], "best")])
def test_an_epoch_of_every_term_runs_on_the_meta_device(tmp_path, cifar_shaped, teachers, aggregation):
    raw = tiny_config(tmp_path, epochs=1)
    raw["data"] = {"name": "tensors", "options": {"path": str(cifar_shaped)}, "val_size": 0.1, "batch_size": 36,
                   "augment": {"crop_padding": 4, "flip": True, "cutout": 8}}
    raw["student"] = {"name": "resnet8"}
    raw["course"][0]["loss"] = every_term()
    lesson = load_config(raw).course[0]
    pipeline = Pipeline(load_splits(load_config(raw).data), load_config(raw).data, META)
    models = [build_model(name, 10, 3, {}).to(META).eval() for name in teachers]
    taps = [["stage2", "stage3"]] * len(models)
    bank = TeacherBank(models, [1.0, 2.0][:len(models)], aggregation=aggregation, feature_paths=taps)
    counter = CountSteps()
    ctx = LessonContext(phase="student", lesson_index=0, pipeline=pipeline, device=META, seed=0, teachers=bank,
                        callbacks=Callbacks([counter]))
    student = build_model("resnet8", 10, 3, {}).to(META)
    run = LessonRun(student, lesson, ctx)
    run._check_every_step = False  # the single-GPU policy: no per-step read of the loss
    with FeatureTaps(student, run.student_paths, who="student") as student_taps, pytest.raises(AllStepsRan):
        run._train_epoch(student_taps)
    assert counter.steps == run.steps_per_epoch == 5  # 180 training images, batches of 36
