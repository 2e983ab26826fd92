"""Zagoruyko, Komodakis. "Paying More Attention to Attention: Improving the Performance of
Convolutional Neural Networks via Attention Transfer", ICLR 2017.

The spatial attention map of a (C, H, W) activation is the channel mean of |f|^p, flattened and
L2-normalized: Q = vec(mean_c |f_c|^p) / ||vec(mean_c |f_c|^p)||_2 (p = 2). Per sample, over the
paired stages j:

    L_i = sum_j mean over positions of ( Q^s_j,i - Q^t_j,i )^2

as in the authors' code and RepDistiller (``(at(s) - at(t)).pow(2).mean()`` per stage, summed),
with weight beta = 1000 (RepDistiller's CIFAR-100 setting; the paper writes beta / 2 with the
norm-based form). ``loss.mean()`` equals RepDistiller's summed stage losses. The stages are the
dotted module paths ``student_layers`` / ``teacher_layers``, paired in order (default
``stage1..stage3``).

Channels need not match (the map averages over them). When spatial sizes differ the larger map is
adaptive-average-pooled to the smaller one (RepDistiller pools to a square of the smaller height;
this pools to the smaller (H, W)). Features must be 4-D. Uses |f|^p; for p = 2 that is f^2 as in
the code.
"""
from __future__ import annotations

import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from curridistill.errors import UserError

from curridistill.knowledge.adapters import student_feature, teacher_feature
from curridistill.knowledge.base import KnowledgeInputs, KnowledgeTerm, widen
from curridistill.knowledge.registry import KNOWLEDGE


class ATParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    student_layers: list[str] = Field(default_factory=lambda: ["stage1", "stage2", "stage3"])
    teacher_layers: list[str] = Field(default_factory=lambda: ["stage1", "stage2", "stage3"])
    p: float = Field(2.0, gt=0.0)

    @model_validator(mode="after")
    def _paired(self) -> "ATParams":
        if len(self.student_layers) != len(self.teacher_layers):
            raise ValueError(f"student_layers and teacher_layers list {len(self.student_layers)} and {len(self.teacher_layers)} "
                             f"paths; they are paired one to one")
        if not self.student_layers:
            raise ValueError("give at least one student/teacher path pair")
        return self


def attention_map(feat: Tensor, p: float = 2.0) -> Tensor:
    """(B, C, H, W) -> (B, H*W) L2-normalized channel mean of |f|^p."""
    return F.normalize(feat.abs().pow(p).mean(dim=1).flatten(1), dim=1)


def at_loss(student_feat: Tensor, teacher_feat: Tensor, p: float = 2.0) -> Tensor:
    """One stage pair (B, Cs, Hs, Ws), (B, Ct, Ht, Wt) -> (B,) mean squared attention difference, in float32 at
    least: |f|^2 of a float16 feature overflows above 256 and the normalized map would be NaN."""
    if student_feat.dim() != 4 or teacher_feat.dim() != 4:
        raise UserError(f"at: attention transfer needs 4-D (B, C, H, W) features, got {tuple(student_feat.shape)} "
                        f"and {tuple(teacher_feat.shape)}; tap convolutional stages of both models")
    student_feat, teacher_feat = widen(student_feat), widen(teacher_feat)
    hs, ws = student_feat.shape[2:]
    ht, wt = teacher_feat.shape[2:]
    size = (min(hs, ht), min(ws, wt))
    if (hs, ws) != size:
        student_feat = F.adaptive_avg_pool2d(student_feat, size)
    if (ht, wt) != size:
        teacher_feat = F.adaptive_avg_pool2d(teacher_feat, size)
    return (attention_map(student_feat, p) - attention_map(teacher_feat, p)).pow(2).mean(dim=1)


@KNOWLEDGE.register("at")
class AT(KnowledgeTerm):
    Params = ATParams
    paper = "Zagoruyko, Komodakis. Paying More Attention to Attention. ICLR 2017"
    summary = "match L2-normalized spatial attention maps (channel mean of f^2) at several stages"
    default_weight = 1000.0

    def feature_paths(self) -> dict[str, list[str]]:
        return {"student": list(self.params.student_layers), "teacher": list(self.params.teacher_layers)}

    def forward(self, inputs: KnowledgeInputs, temperature: Tensor | float = 1.0) -> Tensor:
        total = None
        for ps, pt in zip(self.params.student_layers, self.params.teacher_layers):
            fs = student_feature(inputs, ps, "at")
            ft = teacher_feature(inputs, self.teacher_index, pt, "at").detach()
            loss = at_loss(fs, ft, self.params.p)
            total = loss if total is None else total + loss
        return total
