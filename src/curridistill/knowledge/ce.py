"""Cross-entropy with the hard labels, optionally label-smoothed (Szegedy et al., 2016)."""
from __future__ import annotations

import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from curridistill.knowledge.base import KnowledgeInputs, KnowledgeTerm
from curridistill.knowledge.registry import KNOWLEDGE


class CEParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)


@KNOWLEDGE.register("ce")
class CrossEntropy(KnowledgeTerm):
    """CE(s, y) = -sum_c q_c log softmax(s)_c with q = (1 - eps) onehot(y) + eps / C."""

    Params = CEParams
    paper = "hard labels; label smoothing: Szegedy et al., Rethinking the Inception Architecture, CVPR 2016"
    summary = "cross-entropy with the true labels (optional label smoothing)"
    uses_teacher = False

    def forward(self, inputs: KnowledgeInputs, temperature: Tensor | float = 1.0) -> Tensor:
        return F.cross_entropy(inputs.student_logits, inputs.targets, reduction="none",
                               label_smoothing=self.params.label_smoothing)
