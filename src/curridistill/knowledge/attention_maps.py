"""Self-attention relation matching between layers, masked by padding (MiniLM / MiniLMv2 style).

Wang et al. "MiniLM: Deep Self-Attention Distillation for Task-Agnostic Compression of Pre-Trained
Transformers", NeurIPS 2020 (KL between attention distributions of the last layer); Wang et al.
"MiniLMv2: Multi-Head Self-Attention Relation Distillation", Findings of ACL 2021 (relations of queries,
keys or values, split into the same number of relation heads for teacher and student, so their
widths and head counts may differ).

    R(X) = softmax(X_h X_h^T / sqrt(d_h)) per relation head h, keys at padding masked out   (B, heads, L, L)
    L = mean over mapped pairs, heads and non-pad query rows of KL(R(X^T) || R(X^S))

``layers`` maps student module paths to teacher module paths whose outputs are token features
(B, L, H); tapping the attention's ``query`` (or ``key``, ``value``) projection gives MiniLMv2's
Q-Q (K-K, V-V) relations, e.g. ``{backbone.encoder.layer.1.attention.self.query:
backbone.encoder.layer.5.attention.self.query}``. Image features (B, C, H, W) are read as H*W tokens
of C channels. ``mask`` names the student tap holding the (B, L) padding mask (``mask`` in the text
models); null: no padding.

Where this differs from the papers: MiniLM matches the models' own attention probabilities (same head
count needed); relations are used here for every pair so any widths work. MiniLMv2 (and TextBrewer's
masked losses) average over every non-pad query row of the batch, so a long sentence weighs more than a short
one; by default each sample's rows are averaged first and every sample weighs the same (the term returns one
loss per sample, what curriculum sample weights and per-sample hardness read); ``average: token`` gives their
weighting (per micro-batch under ``run.micro_batches``). With equal lengths (or no mask) the two agree.
Defaults (``stage3`` of zoo image models, one head) exist so the term runs anywhere; for text give the layer map.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from curridistill.knowledge.adapters import student_feature, teacher_feature
from curridistill.knowledge.base import KnowledgeInputs, KnowledgeTerm, masked_mean
from curridistill.knowledge.registry import KNOWLEDGE


class AttentionMapParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layers: dict[str, str] = Field(default_factory=lambda: {"stage3": "stage3"})  # student path -> teacher path
    heads: int = Field(1, ge=1)  # relation heads: must divide the student's and the teacher's widths
    mask: str | None = None  # student tap holding the (B, L) padding mask (``mask`` in the text models)
    average: Literal["sample", "token"] = "sample"  # with a mask: every sample, or every query token, weighs the same


def as_tokens(x: Tensor) -> Tensor:
    """(B, L, H) stays; (B, C, H, W) -> (B, H*W, C); (B, H) -> (B, 1, H)."""
    if x.dim() == 4:
        return x.flatten(2).transpose(1, 2)
    return x.unsqueeze(1) if x.dim() == 2 else x


def log_relations(x: Tensor, heads: int, mask: Tensor | None) -> Tensor:
    """(B, L, H) -> (B, heads, L, L) log-softmax relations of scaled dot products, padded keys masked."""
    b, n, h = x.shape
    if h % heads:
        raise ValueError(f"attention_maps: width {h} is not divisible by heads={heads}; pick a common divisor")
    d = h // heads
    xh = x.reshape(b, n, heads, d).transpose(1, 2)  # (B, heads, L, d)
    scores = xh @ xh.transpose(-1, -2) / math.sqrt(d)  # (B, heads, L, L)
    if mask is not None:
        scores = scores.masked_fill(mask[:, None, None, :] == 0, -1e4)  # finite: an all-pad row stays defined
    return scores.log_softmax(dim=-1)


@KNOWLEDGE.register("attention_maps")
class AttentionMaps(KnowledgeTerm):
    Params = AttentionMapParams
    paper = ("Wang et al. MiniLM: Deep Self-Attention Distillation. NeurIPS 2020; Wang et al. MiniLMv2: Multi-Head "
             "Self-Attention Relation Distillation. Findings of ACL 2021")
    summary = "KL between teacher and student self-attention relations per relation head, masked by padding"

    def feature_paths(self) -> dict[str, list[str]]:
        student = list(self.params.layers) + ([self.params.mask] if self.params.mask else [])
        return {"student": student, "teacher": list(self.params.layers.values())}

    def forward(self, inputs: KnowledgeInputs, temperature: Tensor | float = 1.0) -> Tensor:
        mask = student_feature(inputs, self.params.mask, "attention_maps") if self.params.mask else None
        total = 0.0
        for s, t in self.params.layers.items():
            fs = as_tokens(student_feature(inputs, s, "attention_maps").float())
            ft = as_tokens(teacher_feature(inputs, self.teacher_index, t, "attention_maps").detach().float())
            if fs.shape[:2] != ft.shape[:2]:
                raise ValueError(f"attention_maps: {s!r} has {fs.shape[1]} tokens but {t!r} has {ft.shape[1]}; "
                                 f"map layers of equal length (one tokenizer, equal spatial sizes)")
            log_s = log_relations(fs, self.params.heads, mask)
            log_t = log_relations(ft, self.params.heads, mask)
            kl = (log_t.exp() * (log_t - log_s)).sum(dim=-1).mean(dim=1)  # (B, L): per query row, heads averaged
            total = total + masked_mean(kl, mask, self.params.average)  # non-pad query rows
        return total / len(self.params.layers)
