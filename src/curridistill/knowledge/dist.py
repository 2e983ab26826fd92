"""Huang, You, Wang, Qian, Xu. "Knowledge Distillation from A Stronger Teacher" (DIST), NeurIPS 2022.

DIST replaces KD's exact match of probabilities by a match of *relations*, measured with the Pearson
correlation rho. With Y^s = softmax(z^s / tau), Y^t = softmax(z^t / tau) (B x C matrices):

    inter = tau^2 * (1 - mean_i rho(Y^s_i,:, Y^t_i,:))     rows: each sample's class ranking
    intra = tau^2 * (1 - mean_c rho(Y^s_:,c, Y^t_:,c))     columns: each class across the batch
    DIST  = beta * inter + gamma * intra                  (beta = gamma = 1, tau = 4; weight 2)

The paper's CIFAR-100 setting beta = gamma = 2 is written here as beta = gamma = 1 with the term
weight ``default_weight = 2`` (the official code's ``loss_weight``), which is the same loss. The
tau^2 factor follows the authors' classification code.

Per-sample decomposition: the inter relation is per sample; the intra relation is one number per
batch (a column correlation needs the whole batch). Each sample gets

    loss_i = beta * tau^2 * (1 - rho_i) + gamma * intra

so ``loss.mean()`` equals the batch loss exactly and its gradient is the paper's. A per-sample
re-weighting (a curriculum) re-weights the inter part only in proportion; the intra part keeps
the total of the weights as its factor.

Where this differs from the code: the Pearson denominator is ``max(|x| |y|, eps)`` instead of
``|x| |y| + eps``, so identical predictions give rho = 1 up to float rounding (the official form
leaves 1 - |x|^2 / (|x|^2 + eps): 2e-4 for a fresh network's softened rows at tau 4). A zero-variance row or
column (e.g. a batch of one for the intra relation) has rho = 0.
"""
from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from curridistill.knowledge.base import KnowledgeInputs, KnowledgeTerm, widen
from curridistill.knowledge.registry import KNOWLEDGE


class DISTParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    beta: float = Field(1.0, ge=0.0)  # inter-class relation weight
    gamma: float = Field(1.0, ge=0.0)  # intra-class relation weight


def pearson(x: Tensor, y: Tensor, eps: float = 1e-8) -> Tensor:
    """Row-wise Pearson correlation of (N, D) x (N, D) -> (N,)."""
    x = x - x.mean(dim=1, keepdim=True)
    y = y - y.mean(dim=1, keepdim=True)
    return (x * y).sum(dim=1) / (x.norm(dim=1) * y.norm(dim=1)).clamp_min(eps)


def dist_parts(student_logits: Tensor, teacher_logits: Tensor, temperature: Tensor | float) -> tuple[Tensor, Tensor]:
    """(inter per sample (B,), intra for the batch ()), both tau^2-scaled, in float32 at least (as kd_loss)."""
    student_logits, teacher_logits = widen(student_logits), widen(teacher_logits)
    ys = (student_logits / temperature).softmax(dim=1)
    yt = (teacher_logits / temperature).softmax(dim=1)
    scale = temperature**2
    inter = scale * (1.0 - pearson(ys, yt))
    intra = scale * (1.0 - pearson(ys.t(), yt.t()).mean())
    return inter, intra


def dist_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: Tensor | float,
              beta: float = 1.0, gamma: float = 1.0) -> Tensor:
    """(B, C), (B, C) -> (B,) per-sample DIST whose mean is the batch DIST loss."""
    inter, intra = dist_parts(student_logits, teacher_logits, temperature)
    return beta * inter + gamma * intra.expand_as(inter)


@KNOWLEDGE.register("dist")
class DIST(KnowledgeTerm):
    Params = DISTParams
    paper = "Huang, You, Wang, Qian, Xu. Knowledge Distillation from A Stronger Teacher. NeurIPS 2022"
    summary = "Pearson-correlation match of softened predictions: per sample (inter) and per class (intra)"
    uses_temperature = True
    default_temperature = 4.0
    default_weight = 2.0

    def forward(self, inputs: KnowledgeInputs, temperature: Tensor | float | None = None) -> Tensor:
        temperature = self.resolve_temperature(temperature)
        return dist_loss(inputs.student_logits, self.teacher_logits(inputs), temperature,
                         self.params.beta, self.params.gamma)
