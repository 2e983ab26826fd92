"""Passalis, Tefas. "Learning Deep Representations with Probabilistic Knowledge Transfer", ECCV 2018.

PKT matches the conditional distributions of pairwise similarities in the batch. With a cosine
kernel on the embeddings (4-D features globally average-pooled, others flattened):

    K_ij = (cos(e_i, e_j) + 1) / 2,   p_j|i = K_ij / sum_j K_ij        (student: p, teacher: q)
    L = (1 / B^2) * sum_i sum_j q_j|i log( q_j|i / p_j|i )

which is the authors' / RepDistiller's ``torch.mean`` over the B x B matrix, weight 30000
(RepDistiller's CIFAR-100 setting, also mdistiller's ``PKT.LOSS.FEAT_WEIGHT``).

Per sample: L_i = KL(q_.|i || p_.|i) / B, the row-wise KL divided by the batch size, so that
``loss.mean()`` equals the reference batch loss and the weight 30000 keeps its meaning. (The row
KL alone would be B times larger.) The eps = 1e-7 inside the log follows the reference code.

Layers: ``student_layer`` / ``teacher_layer`` (dotted module paths, default ``stage3``), 4-D maps
globally average-pooled (RepDistiller uses the penultimate pooled embedding).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from curridistill.knowledge.adapters import full_precision, pool_flatten, student_feature, teacher_feature
from curridistill.knowledge.base import KnowledgeInputs, KnowledgeTerm
from curridistill.knowledge.registry import KNOWLEDGE


class PKTParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    student_layer: str = "stage3"
    teacher_layer: str = "stage3"


def cosine_conditional(e: Tensor, eps: float = 1e-7) -> Tensor:
    """(B, D) -> (B, B) row-stochastic p_j|i from the [0, 1]-scaled cosine kernel."""
    e = e / (e.norm(dim=1, keepdim=True) + eps)
    k = (e @ e.t() + 1.0) / 2.0
    return k / k.sum(dim=1, keepdim=True)


def pkt_loss(student_emb: Tensor, teacher_emb: Tensor, eps: float = 1e-7) -> Tensor:
    """(B, Ds), (B, Dt) -> (B,) row KL(q || p) / B, whose mean is the batch PKT loss."""
    p = cosine_conditional(student_emb, eps)
    q = cosine_conditional(teacher_emb, eps)
    return (q * torch.log((q + eps) / (p + eps))).sum(dim=1) / student_emb.shape[0]


@KNOWLEDGE.register("pkt")
class PKT(KnowledgeTerm):
    Params = PKTParams
    paper = "Passalis, Tefas. Learning Deep Representations with Probabilistic Knowledge Transfer. ECCV 2018"
    summary = "KL between teacher and student cosine-similarity distributions over the batch"
    default_weight = 30000.0

    def feature_paths(self) -> dict[str, list[str]]:
        return {"student": [self.params.student_layer], "teacher": [self.params.teacher_layer]}

    def forward(self, inputs: KnowledgeInputs, temperature: Tensor | float = 1.0) -> Tensor:
        # widened before pooling: a bfloat16 mean rounds the embedding before the kernel sees it
        fs = pool_flatten(student_feature(inputs, self.params.student_layer, "pkt").float())
        ft = pool_flatten(teacher_feature(inputs, self.teacher_index, self.params.teacher_layer, "pkt").detach().float())
        with full_precision(fs.device):
            return pkt_loss(fs, ft)
