"""A lesson's data curriculum: score difficulty, order, pace the batches, weight samples.

Built by the lesson runner from ``lesson.curriculum``. Teacher-based scores are computed once per
lesson from the teacher's outputs on the un-augmented training set (served by the teacher cache
when it is on); student-based scores (``student_loss``, ``teacher_student_kl``) are recomputed at
the start of every ``rescore_every``-th epoch. The current order lives in the sampler's state, so
a resumed lesson continues with exactly the order it had.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from curridistill.config import CurriculumConfig
from curridistill.curriculum.ordering import order_by_difficulty
from curridistill.curriculum.pacing import build_pacing
from curridistill.curriculum.sampler import PacedBatches, RandomBatches
from curridistill.curriculum.scorers import SCORERS, ScoreInputs, score
from curridistill.curriculum.selfpaced import SelfPacedWeights
from curridistill.errors import UserError


@torch.inference_mode()
def split_logits(forward, pipeline, split: str = "train") -> Tensor:
    """``forward(x, y, idx)`` over a whole split, un-augmented, in order; (N, C) float32 on CPU."""
    outs, start = [], 0
    for x, y in pipeline.eval_batches(split):
        idx = torch.arange(start, start + len(y))
        outs.append(forward(x, y, idx).float().cpu())
        start += len(y)
    return torch.cat(outs)


class LessonCurriculum:
    def __init__(self, cfg: CurriculumConfig, epochs: int, where: str):
        self.cfg, self.epochs, self.where = cfg, epochs, where
        self.scorer = SCORERS.get(cfg.scorer, where=f"{where}.scorer")
        self.weights = SelfPacedWeights(cfg.self_paced, epochs, where=f"{where}.self_paced") if cfg.self_paced else None
        self.last_scored_epoch: int | None = None

    @property
    def paced(self) -> bool:
        return self.cfg.pacing is not None

    def make_sampler(self, n: int, batch_size: int, steps_per_epoch: int, seed: int, drop_last: bool):
        if not self.paced:
            return RandomBatches(n, batch_size, seed=seed, drop_last=drop_last)
        pacing = build_pacing(self.cfg.pacing, steps_per_epoch * self.epochs, steps_per_epoch, where=f"{self.where}.pacing")
        # the identity order until the first scoring, which happens before any batch is drawn
        return PacedBatches(torch.arange(n), pacing, batch_size, steps_per_epoch, seed=seed)

    def needs_rescore(self, epoch: int) -> bool:
        if self.last_scored_epoch is None:
            return True
        return self.scorer.needs_student and epoch % self.cfg.rescore_every == 0 and epoch != self.last_scored_epoch

    def rescore(self, epoch: int, model: nn.Module, pipeline, teachers, sampler) -> Tensor:
        """Score every training sample and install the new order in the sampler; returns the scores."""
        y = pipeline.splits.train.y
        teacher_logits = student_logits = None
        if self.scorer.needs_teacher:
            if teachers is None or len(teachers) == 0:
                raise UserError(f"{self.where}.scorer {self.cfg.scorer!r} needs a teacher but this lesson has none; "
                                f"use 'student_loss' or 'random', or add a teacher")
            teacher_logits = split_logits(lambda x, yy, idx: teachers(x, yy, indices=idx, epoch=None).logits, pipeline)
        if self.scorer.needs_student:
            was_training = model.training
            model.eval()
            student_logits = split_logits(lambda x, yy, idx: model(x), pipeline)
            model.train(was_training)
        lengths = pipeline.lengths("train") if getattr(pipeline, "tokens", False) else None  # text: tokens per sample
        scores = score(self.cfg.scorer, ScoreInputs(y, teacher_logits, student_logits, seed=self.cfg.seed, lengths=lengths),
                       where=f"{self.where}.scorer")
        if isinstance(sampler, PacedBatches):
            sampler.set_order(order_by_difficulty(scores, y, self.cfg.order, seed=self.cfg.seed))
        self.last_scored_epoch = epoch
        return scores

    def self_paced_level(self, progress: float) -> float | None:
        """The self-paced threshold schedule at ``progress`` (see ``SelfPacedWeights.level``); None without one."""
        return None if self.weights is None else self.weights.level(progress)

    def sample_weights(self, per_sample_loss: Tensor, level: float | Tensor | None) -> Tensor | None:
        """Self-paced weights in [0, 1] for a batch (no gradient) at a ``self_paced_level``, or None without
        self-paced weighting."""
        return None if self.weights is None else self.weights.at_level(per_sample_loss.detach(), level)

    def state_dict(self) -> dict:
        return {"last_scored_epoch": -1 if self.last_scored_epoch is None else self.last_scored_epoch}

    def load_state_dict(self, state: dict) -> None:
        value = int(state["last_scored_epoch"])
        self.last_scored_epoch = None if value < 0 else value
