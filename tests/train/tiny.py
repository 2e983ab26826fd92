"""Tiny real objects for the train/ unit tests: a 4-class blob data set in memory, small MLPs, a lesson.

Everything is built directly from the public constructors (``Splits``, ``Pipeline``, ``LessonConfig``,
``LessonContext``, ``TeacherBank``, ``LessonRun``); nothing is mocked and nothing touches the disk.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from curridistill.config import DataConfig, LessonConfig
from curridistill.data.base import ArrayData, Splits, channel_stats
from curridistill.data.pipeline import Pipeline
from curridistill.knowledge import Clock
from curridistill.train.lesson import LessonContext, LessonRun
from curridistill.train.teachers import TeacherBank

CLASSES, FEATURES = 4, 8
CPU = torch.device("cpu")


def blobs(n_train: int = 64, n_val: int = 16, batch_size: int = 16) -> Pipeline:
    """Four well separated Gaussian blobs in 8 dimensions (float features, no augmentation)."""
    centers = torch.randn(CLASSES, FEATURES, generator=torch.Generator().manual_seed(0)) * 3

    def split(n: int, seed: int) -> ArrayData:
        y = torch.arange(n) % CLASSES  # (N,)
        x = centers[y] + torch.randn(n, FEATURES, generator=torch.Generator().manual_seed(seed))  # (N, 8)
        return ArrayData(x, y, [str(c) for c in range(CLASSES)])

    train, val, test = split(n_train, 1), split(n_val, 2), split(n_val, 3)
    mean, std = channel_stats(train.x)
    return Pipeline(Splits(train, val, test, mean, std, name="blobs"), DataConfig(batch_size=batch_size), CPU)


def mlp(seed: int = 0, hidden: int = 16) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, CLASSES))


def bank(seed: int = 1) -> TeacherBank:
    """One online teacher (no cache): a wider MLP."""
    return TeacherBank([mlp(seed, hidden=32)], [1.0])


def lesson_run(lesson: dict, *, student: nn.Module | None = None, teacher: bool = True,
               pipeline: Pipeline | None = None, log=None) -> LessonRun:
    """A LessonRun of ``lesson`` (LessonConfig fields as a dict) for a fresh student on the blobs."""
    ctx = LessonContext(phase="student", lesson_index=0, pipeline=pipeline or blobs(), device=CPU, seed=0,
                        teachers=bank() if teacher else None)
    if log is not None:
        ctx.log = log
    return LessonRun(student if student is not None else mlp(), LessonConfig(**lesson), ctx)


def first_batch(run: LessonRun, size: int = 16) -> tuple[Tensor, Tensor, Tensor]:
    """(x, y, idx) of the first ``size`` training samples, served as the runner serves them."""
    idx = torch.arange(size)
    x, y = run.ctx.pipeline.batch("train", idx, epoch=0)
    return x, y, idx


def clock(progress: float = 0.0, step: int = 0, epochs: int = 1) -> Clock:
    return Clock(progress=progress, epoch=0, epochs=epochs, step=step)
