"""Tung, Mori. "Similarity-Preserving Knowledge Distillation", ICCV 2019.

Within a batch, the Gram matrix of the flattened activations, row-normalized, should match:

    G = F F^T  (F: B x (C*H*W)),   G~_i = G_i / ||G_i||_2
    L = (1 / B^2) * || G~^t - G~^s ||_F^2                 (weight gamma = 3000, RepDistiller)

Per sample (row i of the Gram matrices): L_i = (1 / B) * sum_j (G~^t_ij - G~^s_ij)^2, so
``loss.mean()`` equals the paper's batch loss exactly. The row normalization is per sample already.

Features are flattened, not pooled (the paper uses the last stage's activation maps; RepDistiller
takes the feature before the global pool). Layers: ``student_layer`` / ``teacher_layer``
(dotted module paths), default ``stage3``.
"""
from __future__ import annotations

import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from curridistill.knowledge.adapters import full_precision, student_feature, teacher_feature
from curridistill.knowledge.base import KnowledgeInputs, KnowledgeTerm
from curridistill.knowledge.registry import KNOWLEDGE


class SPParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    student_layer: str = "stage3"
    teacher_layer: str = "stage3"


def similarity_matrix(feat: Tensor) -> Tensor:
    """(B, ...) -> (B, B) row-L2-normalized Gram matrix of the flattened features."""
    f = feat.reshape(feat.shape[0], -1)
    return F.normalize(f @ f.t(), p=2, dim=1)


def sp_loss(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """(B, ...), (B, ...) -> (B,) per-row squared Gram difference / B; mean = batch SP loss."""
    diff = similarity_matrix(teacher_feat) - similarity_matrix(student_feat)
    return diff.pow(2).sum(dim=1) / student_feat.shape[0]


@KNOWLEDGE.register("sp")
class SP(KnowledgeTerm):
    Params = SPParams
    paper = "Tung, Mori. Similarity-Preserving Knowledge Distillation. ICCV 2019"
    summary = "match the row-normalized batch similarity (Gram) matrices of a feature"
    default_weight = 3000.0

    def feature_paths(self) -> dict[str, list[str]]:
        return {"student": [self.params.student_layer], "teacher": [self.params.teacher_layer]}

    def forward(self, inputs: KnowledgeInputs, temperature: Tensor | float = 1.0) -> Tensor:
        fs = student_feature(inputs, self.params.student_layer, "sp").float()
        ft = teacher_feature(inputs, self.teacher_index, self.params.teacher_layer, "sp").detach().float()
        with full_precision(fs.device):
            return sp_loss(fs, ft)
