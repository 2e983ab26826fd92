"""CTKD: Curriculum Temperature for Knowledge Distillation (Li et al., AAAI 2023).

The KD temperature is learned *adversarially*: the KD loss flows into the temperature's parameters through a
gradient-reversal layer (GRL), so while the student descends the KD loss the temperature ascends it, making the
task harder as training goes on. The GRL weight lambda follows a cosine ramp from 0 to -1 over the first
``ramp_epochs`` epochs, one value per epoch as in the official code (``CosineDecay(max_value=0, min_value=-1,
num_loops=10).get_value(epoch)`` with 1-based epochs: -0.024 in the first epoch, -1 from the tenth), so the
temperature is free at first and the adversarial pressure grows: the curriculum. Two modes, as in the paper:

``mode: global`` (the default): one learnable temperature tau = t_min + t_range * sigmoid(theta),

    L_i = tau^2 * KL(softmax(t_i / tau) || softmax(s_i / tau)),      d theta  <-  lambda * dL/d theta

``mode: instance``: a small temperature module predicts one temperature per sample from the concatenated
teacher and student logits [t_i, s_i] (B, 2C), the ``Mlp_T`` of the public mdistiller-based CTKD code:
BatchNorm1d(2C) -> Linear(2C, C) -> LeakyReLU(0.2) -> BatchNorm1d(C) -> Linear(C, 1), with output o_i and

    tau_i = t_min + t_range * sigmoid(o_i),
    L_i = tau_i^2 * KL(softmax(t_i / tau_i) || softmax(s_i / tau_i)),   d phi  <-  lambda * dL/d phi

(phi: the module's parameters), so with equal tau_i the loss is exactly the global one; the batch loss is the
mean over samples. The module reads *detached* logits, as the paper's min-max has it (the student minimises the
loss, the temperature module maximises it): no gradient reaches the student or the teacher through the module's
inputs, and the student learns only through the KD loss at the predicted temperatures. The official repository
publishes the global module only; its loop hands the module the student's logits undetached (``mlp_net(logit_t,
logit_s, cos_value)``), which for an instance module would also push the student up the loss, reversed, along
that path. C is known only from the logits, so the module is created in ``build`` (the runner's probe batch,
sized from the student's logits, before the optimizer exists, as FitNet's adapters are): its parameters train from the first step, are checkpointed, resumed, moved
with the term and gradient-averaged under DDP like every term's parameters.

Defaults follow the official code: t_min = 1, t_range = 20, theta initialised to 1 (tau_0 = 1 + 20 sigmoid(1)
~ 15.6; ``init`` is used by the global mode only), ramp over 10 epochs. The ``temperature`` argument of the
runner is ignored: this term owns its temperature and reports it through ``learned_temperature`` (the mean
temperature used since the last call: per step in global mode, per sample in instance mode).

Where this differs from the sources:

* the instance module's output is bounded by the global mode's own parametrisation (t_min + t_range * sigmoid),
  as the official training loop does with its temperature module's output (zhengli97/CTKD, helper/loops.py:
  ``t_start + t_end * sigmoid(mlp_net(logit_t, logit_s))``), so tau_i stays in
  (t_min, t_min + t_range); the mdistiller fork's ``Mlp_T`` ends in a ReLU instead, which can give tau = 0 and
  a division by zero;
* the official ``DistillKL`` multiplies the batch-mean KL by T * T, which for a (B, 1) temperature is not a
  per-sample loss; here each sample's KL is scaled by its own tau_i^2 (the equation above);
* the GRL reverses the gradient at the bounded temperatures rather than at the module's raw output: the same
  parameter gradients, since the GRL only scales what flows back;
* BatchNorm in the instance module: in training mode it normalises with the batch's statistics and updates its
  running ones (not synchronised across DDP ranks, like a FitNet adapter's); in eval mode, and for a training
  batch of one sample (whose statistics BatchNorm cannot take; the runner drops such batches, a direct call or
  an uneven DDP shard may not), it uses the running statistics and leaves them as they are;
* the instance module runs outside bf16 autocast: a bf16 output would round tau_i by ~0.1%.
"""
from __future__ import annotations

import contextlib
import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from curridistill.knowledge.base import Clock, KnowledgeInputs, KnowledgeTerm, widen
from curridistill.knowledge.kd import kd_loss
from curridistill.knowledge.registry import KNOWLEDGE


class CTKDParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["global", "instance"] = "global"  # one learned temperature, or one per sample from an MLP
    t_min: float = Field(1.0, gt=0)
    t_range: float = Field(20.0, gt=0)
    init: float = 1.0  # theta at the start (global mode only)
    lambda_max: float = 1.0  # |lambda| after the ramp
    ramp_epochs: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _init_is_the_global_modes(self):
        # against the default, not the fields set: the resolved config hands every option back explicitly
        if self.mode == "instance" and self.init != type(self).model_fields["init"].default:
            raise ValueError("init sets the global mode's one temperature parameter; mode: instance predicts a "
                             "temperature per sample from a module of its own: remove init, or use mode: global")
        return self


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


def instance_kd_loss(student_logits: Tensor, teacher_logits: Tensor, tau: Tensor) -> Tensor:
    """(B, C), (B, C), (B,) -> (B,): tau_i^2 * KL(softmax(t_i / tau_i) || softmax(s_i / tau_i)), in float32 at least.

    ``kd_loss`` at temperature 1 of the logits divided row by row by tau_i (dividing by 1 and scaling by 1 are
    exact), then tau_i^2: with equal tau_i it is ``kd_loss`` at that tau, to the bit. ``kd_loss`` itself takes one
    temperature: a (B, 1) one would scale its (B,) result into a (B, B) matrix."""
    column = tau.unsqueeze(1)  # (B, 1)
    return kd_loss(widen(student_logits) / column, widen(teacher_logits) / column, 1.0) * tau**2


class TemperatureMLP(nn.Sequential):
    """CTKD's instance-wise temperature module (mdistiller-based ``Mlp_T``): (B, 2C) -> (B, 1) raw output."""

    def __init__(self, classes: int):
        super().__init__(nn.BatchNorm1d(2 * classes), nn.Linear(2 * classes, classes), nn.LeakyReLU(0.2),
                         nn.BatchNorm1d(classes), nn.Linear(classes, 1))

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and x.shape[0] == 1):
            return super().forward(x)
        # one sample has no batch statistics (BatchNorm1d refuses it; a DDP shard of an uneven last batch can be
        # one sample): eval mode uses the running ones and leaves them unchanged (only the BatchNorms have a mode)
        self.eval()
        try:
            return super().forward(x)
        finally:
            self.train()


def _without_autocast(device: torch.device):
    """Autocast off where it is on (the module's bf16 output would round tau); nothing to do where it does not
    exist (the ``meta`` device)."""
    if torch.amp.is_autocast_available(device.type) and torch.is_autocast_enabled(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


@KNOWLEDGE.register("ctkd")
class CTKD(KnowledgeTerm):
    Params = CTKDParams
    paper = "Li et al. Curriculum Temperature for Knowledge Distillation. AAAI 2023"
    summary = "KD with a temperature (global or per sample) learned adversarially through gradient reversal"
    default_weight = 0.9

    def __init__(self, params: BaseModel | None = None, teacher_index: int = 0):
        super().__init__(params, teacher_index)
        self.per_sample = self.params.mode == "instance"
        if not self.per_sample:
            self.theta = nn.Parameter(torch.full((1,), float(self.params.init)))
        self.temperature_net: TemperatureMLP | None = None  # mode: instance, made by ``build``
        # device buffers changed in place, never replaced: this step's GRL lambda (set by before_step), and the
        # temperatures used since the last epoch log, summed and counted on the device (reading ``tau`` every
        # step would make the host wait for the GPU); not part of the checkpoint
        self.register_buffer("step_lambda", torch.zeros(()), persistent=False)
        self.register_buffer("used_sum", torch.zeros(()), persistent=False)
        self.register_buffer("used_count", torch.zeros(()), persistent=False)  # steps (global), samples (instance)
        self._lambda_set = False

    def needs_build(self) -> bool:
        return self.per_sample  # the global mode needs no probe batch (nor its teacher-cache entry)

    build_reads_teacher = False  # the module's size is the number of classes: the student's logits tell it

    def build(self, inputs: KnowledgeInputs) -> None:
        if self.per_sample:
            classes = inputs.student_logits.shape[1]
            self.temperature_net = TemperatureMLP(classes).to(inputs.student_logits.device)

    def before_step(self, clock: Clock) -> None:
        self.step_lambda.fill_(grl_lambda(clock.epoch + 1, self.params.ramp_epochs, self.params.lambda_max))
        self._lambda_set = True

    def grl_weight(self, inputs: KnowledgeInputs) -> Tensor | float:
        """This step's lambda: the buffer ``before_step`` wrote, or (called directly) the ramp at the inputs' clock."""
        if self._lambda_set:
            return self.step_lambda
        return grl_lambda(inputs.clock.epoch + 1, self.params.ramp_epochs, self.params.lambda_max)

    def floored_teacher_logits(self, inputs: KnowledgeInputs) -> Tensor:
        """Finite teacher logits: -inf would make the temperature's gradient (and the module's BatchNorm) NaN."""
        return finite_floor(self.teacher_logits(inputs), 1000.0 * (self.params.t_min + self.params.t_range))

    def temperature(self) -> Tensor:
        """The global mode's one temperature."""
        if self.per_sample:
            raise TypeError("ctkd (mode: instance) has one temperature per sample: temperatures(student_logits, "
                            "teacher_logits) gives them")
        return self.params.t_min + self.params.t_range * torch.sigmoid(self.theta)

    def temperatures(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        """Mode instance: (B, C), (B, C) -> (B,) temperatures in (t_min, t_min + t_range), in the module's dtype
        (float32 in a run, whatever the logits' dtype); no gradient reaches the logits through them."""
        if self.temperature_net is None:
            raise RuntimeError("ctkd (mode: instance): build(inputs) must run before the first forward "
                               "(it creates the temperature module, whose size is the number of classes)")
        net = self.temperature_net
        x = torch.cat([teacher_logits, student_logits], dim=1).detach()  # (B, 2C), as Mlp_T(t, s)
        with _without_autocast(x.device):
            out = net(x.to(net[1].weight.dtype)).squeeze(1)  # (B,), in the module's dtype (float32 in a run)
        return self.params.t_min + self.params.t_range * torch.sigmoid(out)

    def forward(self, inputs: KnowledgeInputs, temperature: Tensor | float = 1.0) -> Tensor:
        teacher = self.floored_teacher_logits(inputs)
        if self.per_sample:
            tau = _GradientReversal.apply(self.temperatures(inputs.student_logits, teacher), self.grl_weight(inputs))
            loss = instance_kd_loss(inputs.student_logits, teacher, tau)
        else:
            tau = _GradientReversal.apply(self.temperature(), self.grl_weight(inputs))[0]
            loss = kd_loss(inputs.student_logits, teacher, tau)
        if self.training:
            self.used_sum.add_(tau.detach().sum())
            self.used_count.add_(float(tau.numel()))
        return loss

    def epoch_sums(self) -> list[Tensor]:
        return [self.used_sum, self.used_count]  # per sample, each rank sees only its shard

    def learned_temperature(self) -> float | None:
        """Mean temperature used since the last call (the runner logs it once per epoch): per step in global mode
        (the current one when no step ran), per sample in instance mode (None when no sample was seen)."""
        count = float(self.used_count)
        if count:
            mean = float(self.used_sum) / count
        else:
            mean = None if self.per_sample else float(self.temperature().detach())
        self.used_sum.zero_()
        self.used_count.zero_()
        return mean
