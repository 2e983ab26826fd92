"""Romero, Ballas, Kahou, Chassang, Gatta, Bengio. "FitNets: Hints for Thin Deep Nets", ICLR 2015.

The hint loss regresses a teacher's intermediate feature (the hint) from the student's (the guided
layer) through a trainable regressor r:

    L_i = mean over (C, H, W) of ( r(f^s_i) - f^t_i )^2

Defaults follow mdistiller's CIFAR-100 setting: hint = guided = ``stage2`` (its hint layer 2, the
middle stage's output), weight 100 (``FITNET.LOSS.FEAT_WEIGHT``), trained jointly with CE. The
layers are dotted module paths, ``student_layer`` and ``teacher_layer`` (not ``student`` /
``teacher``: a term's ``teacher`` key in the config is the teacher's index).

Where this differs from the paper / mdistiller:

* the paper trains in two stages (hints first, then KD); here that is a two-lesson course, not
  something the term does;
* the paper's loss is 1/2 * squared L2 norm; mdistiller (and this term) use the mean over
  elements, so ``loss.mean()`` equals ``F.mse_loss(r(f_s), f_t)``;
* the regressor is ``adapters.make_adapter``: a 1x1 conv + BN when channels differ and an adaptive
  average pool when spatial sizes differ (mdistiller's ConvReg uses a strided or k x k conv +
  BN + ReLU); identity when the shapes already match. It is built in ``build`` from the first
  batch's shapes and trains with the student.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from curridistill.knowledge.adapters import make_adapter, student_feature, teacher_feature
from curridistill.knowledge.base import KnowledgeInputs, KnowledgeTerm
from curridistill.knowledge.registry import KNOWLEDGE


class FitNetParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    student_layer: str = "stage2"  # dotted path of the student's guided layer
    teacher_layer: str = "stage2"  # dotted path of the teacher's hint layer


def hint_loss(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """(B, ...) x (B, ...) same shape -> (B,) per-sample mean squared error."""
    if student_feat.shape != teacher_feat.shape:
        raise ValueError(f"hint shapes differ: {tuple(student_feat.shape)} vs {tuple(teacher_feat.shape)}")
    return (student_feat - teacher_feat).pow(2).reshape(student_feat.shape[0], -1).mean(dim=1)


@KNOWLEDGE.register("fitnet")
class FitNet(KnowledgeTerm):
    Params = FitNetParams
    paper = "Romero et al. FitNets: Hints for Thin Deep Nets. ICLR 2015"
    summary = "MSE between a regressed student feature and a teacher feature (hint)"
    default_weight = 100.0

    def __init__(self, params: BaseModel | None = None, teacher_index: int = 0):
        super().__init__(params, teacher_index)
        self.adapter: nn.Module | None = None

    def feature_paths(self) -> dict[str, list[str]]:
        return {"student": [self.params.student_layer], "teacher": [self.params.teacher_layer]}

    def _pair(self, inputs: KnowledgeInputs) -> tuple[Tensor, Tensor]:
        fs = student_feature(inputs, self.params.student_layer, "fitnet")
        ft = teacher_feature(inputs, self.teacher_index, self.params.teacher_layer, "fitnet")
        return fs, ft

    def build(self, inputs: KnowledgeInputs) -> None:
        fs, ft = self._pair(inputs)
        self.adapter = make_adapter(fs.shape, ft.shape).to(fs.device)

    def forward(self, inputs: KnowledgeInputs, temperature: Tensor | float = 1.0) -> Tensor:
        if self.adapter is None:
            raise RuntimeError("fitnet: build(inputs) must run before the first forward (it creates the regressor)")
        fs, ft = self._pair(inputs)
        return hint_loss(self.adapter(fs), ft.detach())
