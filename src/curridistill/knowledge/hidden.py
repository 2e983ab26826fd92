"""Hidden-state matching with a layer map and learned projections, masked by padding.

Jiao et al. "TinyBERT: Distilling BERT for Natural Language Understanding", Findings of EMNLP 2020
(hidden-state loss MSE(H^S W_h, H^T), embedding loss MSE(E^S W_e, E^T)); Sun et al. "Patient
Knowledge Distillation for BERT Model Compression", EMNLP 2019 (PKD: the student's layer i learns the
teacher's layer m(i), with L2-normalized states).

    L = mean over mapped pairs (s -> t) of  sum_l mask_l * mean_h (W f^s_l - f^t_l)^2 / sum_l mask_l

``layers`` (at least one pair) maps student module paths to teacher module paths, e.g. ``{backbone.encoder.layer.0:
backbone.encoder.layer.2, backbone.encoder.layer.1: backbone.encoder.layer.5}`` (PKD's "skip"
strategy); embedding matching is the pair ``{backbone.embeddings: backbone.embeddings}``. ``W`` is a
learned linear map per pair (identity when the widths match and ``project`` is false). Token features
(B, L, H) are averaged over the non-pad positions given by the student's ``mask`` tap (text models in
``models.text`` / ``models.hf`` provide it); (B, H) features are compared as they are; image maps (B, C, H, W) are read as H*W tokens of C channels.

Where this differs from the papers: TinyBERT sums the layer losses and trains in two stages
(intermediate layers first, then predictions); here pairs are averaged (set the weight to scale) and
stages are lessons. PKD matches only the [CLS] states; here every non-pad token is (``normalize: true``
gives PKD's normalization; PKD sums the squared difference over the hidden size H where this averages it, so
PKD's beta is this term's weight beta * H). TinyBERT's code averages over every position, padding included, and
TextBrewer's masked loss over every non-pad token of the batch (a long sentence weighs more than a short one);
here padding is left out and by default each sample's tokens are averaged first, so every sample weighs the
same (the term returns one loss per sample, what curriculum sample weights and per-sample hardness read);
``average: token`` gives TextBrewer's weighting (per micro-batch under ``run.micro_batches``). With equal
lengths (or no mask) the two agree.
"""
from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from curridistill.knowledge.adapters import student_feature, teacher_feature
from curridistill.knowledge.attention_maps import as_tokens
from curridistill.knowledge.base import KnowledgeInputs, KnowledgeTerm, masked_mean
from curridistill.knowledge.registry import KNOWLEDGE


class HiddenParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # student module path -> teacher module path; the default fits the zoo's image models (stage3)
    layers: dict[str, str] = Field(default_factory=lambda: {"stage3": "stage3"})
    mask: str | None = None  # student tap holding the (B, L) padding mask (``mask`` in the text models)
    project: bool = True  # learned linear map student width -> teacher width (TinyBERT's W_h)
    normalize: bool = False  # L2-normalize states before the MSE (PKD)
    average: Literal["sample", "token"] = "sample"  # with a mask: every sample, or every token, weighs the same


def masked_token_mse(fs: Tensor, ft: Tensor, mask: Tensor | None, average: str = "sample") -> Tensor:
    """(B, L, H) x (B, L, H) [x (B, L)] -> (B,) per-token mean squared error over the non-pad tokens (``masked_mean``)."""
    return masked_mean((fs - ft).pow(2).mean(dim=-1), mask, average)  # (B, L) -> (B,)


@KNOWLEDGE.register("hidden")
class Hidden(KnowledgeTerm):
    Params = HiddenParams
    paper = ("Jiao et al. TinyBERT. Findings of EMNLP 2020; Sun et al. Patient Knowledge Distillation for BERT "
             "Model Compression. EMNLP 2019")
    summary = "masked MSE between projected student hidden states and mapped teacher layers (TinyBERT / PKD)"
    default_weight = 1.0

    def __init__(self, params: BaseModel | None = None, teacher_index: int = 0):
        super().__init__(params, teacher_index)
        if not self.params.layers:
            raise ValueError("hidden needs params.layers: a map of student module paths to teacher module paths, "
                             "e.g. {backbone.encoder.layer.1: backbone.encoder.layer.5}")
        self.projections = nn.ModuleDict()  # built in build(); keys are pair indices

    def feature_paths(self) -> dict[str, list[str]]:
        student = list(self.params.layers) + ([self.params.mask] if self.params.mask else [])
        return {"student": student, "teacher": list(self.params.layers.values())}

    def _pairs(self, inputs: KnowledgeInputs) -> list[tuple[Tensor, Tensor]]:
        return [(as_tokens(student_feature(inputs, s, "hidden")),
                 as_tokens(teacher_feature(inputs, self.teacher_index, t, "hidden")))
                for s, t in self.params.layers.items()]

    def build(self, inputs: KnowledgeInputs) -> None:
        for k, (fs, ft) in enumerate(self._pairs(inputs)):
            if fs.shape[:-1] != ft.shape[:-1]:
                raise ValueError(f"hidden: pair {k} has student {tuple(fs.shape)} and teacher {tuple(ft.shape)} features; "
                                 f"only the last (width) dimension may differ (use one tokenizer for both)")
            same = fs.shape[-1] == ft.shape[-1]
            self.projections[str(k)] = (nn.Identity() if same and not self.params.project
                                        else nn.Linear(fs.shape[-1], ft.shape[-1]).to(fs.device))

    def forward(self, inputs: KnowledgeInputs, temperature: Tensor | float = 1.0) -> Tensor:
        if len(self.projections) != len(self.params.layers):
            raise RuntimeError("hidden: build(inputs) must run before the first forward (it creates the projections)")
        mask = student_feature(inputs, self.params.mask, "hidden") if self.params.mask else None
        total = 0.0
        for k, (fs, ft) in enumerate(self._pairs(inputs)):
            fs, ft = self.projections[str(k)](fs.float()), ft.detach().float()
            if self.params.normalize:
                fs, ft = F.normalize(fs, dim=-1), F.normalize(ft, dim=-1)
            if fs.dim() == 3:
                total = total + masked_token_mse(fs, ft, mask, self.params.average)
            else:
                total = total + (fs - ft).pow(2).reshape(fs.shape[0], -1).mean(dim=1)
        return total / len(self.params.layers)
