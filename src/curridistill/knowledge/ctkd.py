"""CTKD: Curriculum Temperature for Knowledge Distillation (Li et al., AAAI 2023).

A learnable global temperature tau = t_min + t_range * sigmoid(theta) is trained *adversarially*:
the KD loss flows into theta through a gradient-reversal layer (GRL), so while the student
descends the KD loss the temperature ascends it, making the task harder as training goes on.
The GRL weight lambda follows a cosine ramp from 0 to -1 over the first ``ramp_epochs`` epochs, one
value per epoch as in the official code (``CosineDecay(max_value=0, min_value=-1, num_loops=10)
.get_value(epoch)`` with 1-based epochs: -0.024 in the first epoch, -1 from the tenth), so the
temperature is free at first and the adversarial pressure grows: the curriculum.

    L = tau^2 * KL(softmax(t / tau) || softmax(s / tau)),   d theta  <-  lambda * dL/d theta

Defaults follow the official code: t_min = 1, t_range = 20, theta initialised to 1
(tau_0 = 1 + 20 sigmoid(1) ~ 15.6), ramp over 10 epochs. The instance-wise variant (an MLP on
the logits) is not implemented. The ``temperature`` argument of the runner is ignored: this term
owns its temperature and reports it through ``learned_temperature``.
"""
from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from curridistill.knowledge.base import Clock, KnowledgeInputs, KnowledgeTerm
from curridistill.knowledge.kd import kd_loss
from curridistill.knowledge.registry import KNOWLEDGE


class CTKDParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    t_min: float = Field(1.0, gt=0)
    t_range: float = Field(20.0, gt=0)
    init: float = 1.0  # theta at the start
    lambda_max: float = 1.0  # |lambda| after the ramp
    ramp_epochs: float = Field(10.0, gt=0)


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, lambda_: float) -> Tensor:
        ctx.lambda_ = lambda_
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return ctx.lambda_ * grad, None


def grl_lambda(epoch: float, ramp_epochs: float, lambda_max: float = 1.0) -> float:
    """Cosine ramp 0 -> -lambda_max over ``ramp_epochs`` epochs, then constant; ``epoch`` counts from 1 (the
    official schedule is read at the 1-based epoch number, so the first epoch already has a small pressure)."""
    r = min(max(epoch / ramp_epochs, 0.0), 1.0)
    return -lambda_max * 0.5 * (1.0 - math.cos(math.pi * r))


def finite_floor(logits: Tensor, gap: float) -> Tensor:
    """-inf logits (classes a teacher rules out) -> ``gap`` below the row's largest finite logit.

    Their probability stays exactly 0 at every temperature up to gap / 1000, and the temperature's gradient
    stays finite (d(z / tau) / d tau = -z / tau^2 is NaN-making at z = -inf even where the loss ignores z)."""
    ruled_out = torch.isneginf(logits)
    top = logits.masked_fill(ruled_out, float("-inf")).amax(dim=1, keepdim=True)
    return torch.where(ruled_out, top - gap, logits)


@KNOWLEDGE.register("ctkd")
class CTKD(KnowledgeTerm):
    Params = CTKDParams
    paper = "Li et al. Curriculum Temperature for Knowledge Distillation. AAAI 2023"
    summary = "KD with a learnable temperature trained adversarially through gradient reversal"
    default_weight = 0.9

    def __init__(self, params: BaseModel | None = None, teacher_index: int = 0):
        super().__init__(params, teacher_index)
        self.theta = nn.Parameter(torch.full((1,), float(self.params.init)))
        # device buffers changed in place, never replaced: this step's GRL lambda (set by before_step), and the
        # temperatures used since the last epoch log, summed and counted on the device (reading ``tau`` every
        # step would make the host wait for the GPU); not part of the checkpoint
        self.register_buffer("step_lambda", torch.zeros(()), persistent=False)
        self.register_buffer("used_sum", torch.zeros(()), persistent=False)
        self.register_buffer("used_steps", torch.zeros(()), persistent=False)
        self._lambda_set = False

    def before_step(self, clock: Clock) -> None:
        self.step_lambda.fill_(grl_lambda(clock.epoch + 1, self.params.ramp_epochs, self.params.lambda_max))
        self._lambda_set = True

    def temperature(self) -> Tensor:
        return self.params.t_min + self.params.t_range * torch.sigmoid(self.theta)

    def forward(self, inputs: KnowledgeInputs, temperature: Tensor | float = 1.0) -> Tensor:
        if self._lambda_set:
            lam: Tensor | float = self.step_lambda
        else:  # called directly: the ramp from the inputs' clock
            lam = grl_lambda(inputs.clock.epoch + 1, self.params.ramp_epochs, self.params.lambda_max)
        tau = _GradientReversal.apply(self.temperature(), lam)[0]
        if self.training:
            self.used_sum.add_(tau.detach())
            self.used_steps.add_(1.0)
        teacher = finite_floor(self.teacher_logits(inputs), 1000.0 * (self.params.t_min + self.params.t_range))
        return kd_loss(inputs.student_logits, teacher, tau)

    def learned_temperature(self) -> float | None:
        """Mean temperature used since the last call (the runner logs it once per epoch)."""
        steps = float(self.used_steps)
        mean = float(self.used_sum) / steps if steps else float(self.temperature().detach())
        self.used_sum.zero_()
        self.used_steps.zero_()
        return mean
