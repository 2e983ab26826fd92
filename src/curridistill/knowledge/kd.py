"""Hinton et al., "Distilling the Knowledge in a Neural Network", 2015.

L_kd = T^2 * KL( softmax(t / T) || softmax(s / T) ), per sample; its batch mean is the usual
``batchmean`` KL. The T^2 factor keeps gradient magnitudes comparable across temperatures.
With ``ls: true`` both logits are standardized first (Sun et al., "Logit Standardization in
Knowledge Distillation", CVPR 2024); the paper then uses T=2 and a KD weight of 9 (CE 0.1).
"""
from __future__ import annotations

import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from curridistill.knowledge.base import KnowledgeInputs, KnowledgeTerm, kl_per_sample, standardize, widen
from curridistill.knowledge.registry import KNOWLEDGE


class KDParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ls: bool = False  # logit standardization before the softmax


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: Tensor | float) -> Tensor:
    """(B, C), (B, C) -> (B,) per-sample T^2-scaled KL(teacher || student), computed in float32 at least.

    Half-precision logits are widened first: bf16's 8-bit mantissa in the log-softmax difference costs ~1e-3 of
    the loss (DKD's beta * NCKD far more), and the feature terms already compute in float32."""
    student_logits, teacher_logits = widen(student_logits), widen(teacher_logits)
    log_ps = F.log_softmax(student_logits / temperature, dim=1)
    log_pt = F.log_softmax(teacher_logits / temperature, dim=1)
    return kl_per_sample(log_ps, log_pt) * temperature**2


@KNOWLEDGE.register("kd")
class KD(KnowledgeTerm):
    Params = KDParams
    paper = "Hinton, Vinyals, Dean. Distilling the Knowledge in a Neural Network. 2015"
    summary = "soft targets: T^2 KL(softmax(t/T) || softmax(s/T))"
    uses_temperature = True
    default_temperature = 4.0
    default_weight = 0.9

    def forward(self, inputs: KnowledgeInputs, temperature: Tensor | float | None = None) -> Tensor:
        temperature = self.resolve_temperature(temperature)
        s, t = inputs.student_logits, self.teacher_logits(inputs)
        if self.params.ls:
            s, t = standardize(s), standardize(t)
        return kd_loss(s, t, temperature)
