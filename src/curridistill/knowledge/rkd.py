"""Park, Kim, Lu, Cho. "Relational Knowledge Distillation", CVPR 2019.

RKD transfers the structure of a batch of embeddings (t = teacher, s = student; 4-D features are
globally average-pooled, others flattened):

    distance: psi_D(a, b) = ||e_a - e_b|| / mu,  mu = mean of the non-zero pairwise distances
    angle:    psi_A(a, b, c) = < (e_b - e_a) / ||e_b - e_a||, (e_c - e_a) / ||e_c - e_a|| >
    L = w_d * mean_{a,b} huber(psi_D^s - psi_D^t) + w_a * mean_{a,b,c} huber(psi_A^s - psi_A^t)

with the smooth-L1 (Huber, delta = 1) loss and w_d = 25, w_a = 50 (paper and RepDistiller /
mdistiller; term weight 1). The means run over all B^2 pairs and B^3 triplets including the
degenerate ones (zero on both sides), as in the reference code.

Per-sample decomposition: sample a gets its row of the relations,

    L_a = w_d * mean_b huber(...)(a, b) + w_a * mean_{b,c} huber(...)(a, b, c)   (a = anchor)

so ``loss.mean()`` equals the batch loss exactly. The normalizer mu is a batch statistic and the
teacher's relations carry no gradient (teacher features are detached).

Where this differs: the layers are parameters ``student_layer`` / ``teacher_layer`` (dotted module
paths, default ``stage3`` for both, pooled) where
RepDistiller uses the penultimate pooled embedding; the guard on mu (eps) keeps a batch of
identical points finite.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from curridistill.knowledge.adapters import full_precision, pool_flatten, student_feature, teacher_feature
from curridistill.knowledge.base import KnowledgeInputs, KnowledgeTerm
from curridistill.knowledge.registry import KNOWLEDGE


class RKDParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    student_layer: str = "stage3"
    teacher_layer: str = "stage3"
    distance_weight: float = Field(25.0, ge=0.0)
    angle_weight: float = Field(50.0, ge=0.0)


def pairwise_distances(e: Tensor, eps: float = 1e-12) -> Tensor:
    """(B, D) -> (B, B) Euclidean distances with an exact zero diagonal."""
    sq = e.pow(2).sum(dim=1)
    d2 = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * e @ e.t()).clamp_min(eps)
    eye = torch.eye(len(e), dtype=torch.bool, device=e.device)
    return d2.sqrt().masked_fill(eye, 0.0)


def normalized_distances(e: Tensor, eps: float = 1e-12) -> Tensor:
    d = pairwise_distances(e)
    positive = d > 0
    mu = d.sum() / positive.sum().clamp_min(1)
    return d / mu.clamp_min(eps)


def angles(e: Tensor) -> Tensor:
    """(B, D) -> (B, B, B): cos of the angle at anchor a between b and c."""
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # [a, b] = e_b - e_a
    return diff @ diff.transpose(1, 2)


def rkd_distance(student_emb: Tensor, teacher_emb: Tensor) -> Tensor:
    """(B, Ds), (B, Dt) -> (B,) mean over partners of huber(psi_D^s - psi_D^t)."""
    ds, dt = normalized_distances(student_emb), normalized_distances(teacher_emb)
    return F.smooth_l1_loss(ds, dt, reduction="none").mean(dim=1)


def rkd_angle(student_emb: Tensor, teacher_emb: Tensor) -> Tensor:
    """(B, Ds), (B, Dt) -> (B,) mean over (b, c) of huber(psi_A^s - psi_A^t) with anchor a."""
    a_s, a_t = angles(student_emb), angles(teacher_emb)
    return F.smooth_l1_loss(a_s, a_t, reduction="none").flatten(1).mean(dim=1)


def rkd_loss(student_emb: Tensor, teacher_emb: Tensor, distance_weight: float = 25.0,
             angle_weight: float = 50.0) -> Tensor:
    """(B, Ds), (B, Dt) -> (B,) per-anchor RKD whose mean is the batch RKD loss."""
    loss = student_emb.new_zeros(student_emb.shape[0])
    if distance_weight:
        loss = loss + distance_weight * rkd_distance(student_emb, teacher_emb)
    if angle_weight:
        loss = loss + angle_weight * rkd_angle(student_emb, teacher_emb)
    return loss


@KNOWLEDGE.register("rkd")
class RKD(KnowledgeTerm):
    Params = RKDParams
    paper = "Park, Kim, Lu, Cho. Relational Knowledge Distillation. CVPR 2019"
    summary = "match normalized pairwise distances (w 25) and triplet angles (w 50) of embeddings in the batch"
    default_weight = 1.0

    def feature_paths(self) -> dict[str, list[str]]:
        return {"student": [self.params.student_layer], "teacher": [self.params.teacher_layer]}

    def forward(self, inputs: KnowledgeInputs, temperature: Tensor | float = 1.0) -> Tensor:
        # widened before pooling: a bfloat16 mean rounds the embedding before the distances see it
        fs = pool_flatten(student_feature(inputs, self.params.student_layer, "rkd").float())
        ft = pool_flatten(teacher_feature(inputs, self.teacher_index, self.params.teacher_layer, "rkd").detach().float())
        with full_precision(fs.device):
            return rkd_loss(fs, ft, self.params.distance_weight, self.params.angle_weight)
