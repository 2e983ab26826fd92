"""Logit regression: mean squared error between student and (scaled) teacher logits.

    L_i = (1 / C) * sum_c (s_ic - k * t_ic)^2            k = ``teacher_scale`` (default 1)

Ba & Caruana, "Do Deep Nets Really Need to be Deep?", NeurIPS 2014 regress the teacher's logits
with an L2 loss. Annealing-KD (Jafari, Rezagholizadeh, Sharma, Ghodsi, EACL 2021) uses the same MSE
in its first phase with the teacher's logits multiplied by an annealing factor that grows to 1
over training; here the factor is ``teacher_scale``: a number or a schedule of lesson progress,
e.g. ``{kind: staircase, start: 0.1, end: 1.0, steps: 10}`` (the paper's T_max = 10). Per sample the squared error is averaged over classes, so ``loss.mean()`` equals
``F.mse_loss(s, k * t)``. No temperature.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from curridistill.schedules import build_schedule

from curridistill.knowledge.base import Clock, KnowledgeInputs, KnowledgeTerm
from curridistill.knowledge.registry import KNOWLEDGE


class MSELogitsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    teacher_scale: Any = 1.0  # Annealing-KD's factor on the teacher logits: a number or a schedule


def mse_logits_loss(student_logits: Tensor, teacher_logits: Tensor, teacher_scale: Tensor | float = 1.0) -> Tensor:
    """(B, C), (B, C) -> (B,) mean over classes of (s - k t)^2."""
    return (student_logits - teacher_scale * teacher_logits).pow(2).mean(dim=1)


@KNOWLEDGE.register("mse_logits")
class MSELogits(KnowledgeTerm):
    Params = MSELogitsParams
    paper = ("Ba, Caruana. Do Deep Nets Really Need to be Deep? NeurIPS 2014; "
             "Jafari et al. Annealing Knowledge Distillation. EACL 2021")
    summary = "mean squared error between student logits and (scaled) teacher logits"
    default_weight = 1.0

    def __init__(self, params: BaseModel | None = None, teacher_index: int = 0):
        super().__init__(params, teacher_index)
        # a scheduled factor: this step's value, set in place by before_step (not part of the checkpoint)
        self.register_buffer("step_scale", torch.ones(()), persistent=False)
        self._scale_set = False
        self._schedule: tuple[int, Callable[[float], float]] | None = None  # (lesson epochs, schedule)

    def scale_at(self, clock: Clock) -> float:
        """The factor k at ``clock``: the number, or the schedule at the lesson's progress."""
        scale = self.params.teacher_scale
        if isinstance(scale, (int, float)):
            return float(scale)
        if self._schedule is None or self._schedule[0] != clock.epochs:
            self._schedule = (clock.epochs, build_schedule(scale, clock.epochs, where="mse_logits.teacher_scale"))
        return float(self._schedule[1](clock.progress))

    def before_step(self, clock: Clock) -> None:
        if not isinstance(self.params.teacher_scale, (int, float)):
            self.step_scale.fill_(self.scale_at(clock))
            self._scale_set = True

    def forward(self, inputs: KnowledgeInputs, temperature: Tensor | float = 1.0) -> Tensor:
        scale = self.step_scale if self._scale_set else self.scale_at(inputs.clock)
        return mse_logits_loss(inputs.student_logits, self.teacher_logits(inputs), scale)
