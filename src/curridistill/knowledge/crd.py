"""Tian, Krishnan, Isola. "Contrastive Representation Distillation", ICLR 2020.

CRD embeds the student's and the teacher's penultimate features with two trainable heads
(linear -> 128-d, L2-normalized: v^s = g_s(f^s), v^t = g_t(f^t)) and trains them, with the
student, to make each sample's (v^s_i, v^t_i) pair stand out against K negatives, in both
directions (student anchor vs. teacher embeddings, teacher anchor vs. student embeddings):

    L_i = -log  exp(<v^s_i, v^t_i> / tau) / ( exp(<v^s_i, v^t_i> / tau) + sum_k exp(<v^s_i, m^t_k> / tau) )
          -log  exp(<v^t_i, v^s_i> / tau) / ( exp(<v^t_i, v^s_i> / tau) + sum_k exp(<v^t_i, m^s_k> / tau) )

with tau = 0.07, K = 16384 negatives, feat_dim = 128 and weight 0.8 (RepDistiller / mdistiller
CIFAR-100). In each direction the other side (positive and negatives) carries no gradient, as
RepDistiller's memory bank entries carry none.

Deviations from RepDistiller, on purpose:

* **Bounded memory.** RepDistiller keeps one momentum-updated embedding per training sample
  (memory O(N), N = dataset size) and draws K indices from it. Here the negatives are a FIFO
  queue of the last K student and teacher embeddings (as in MoCo, He et al. 2020): memory O(K)
  whatever the dataset, stored in registered buffers so it is checkpointed. The queue is
  updated without gradient after each forward, in training mode only; it starts with random unit
  vectors. Queue entries of the same dataset index as the anchor (the sample seen in an earlier
  epoch) are masked out of its negatives, so a sample is never its own negative.
* **InfoNCE instead of NCE.** With a queue there is no fixed dataset size for NCE's noise prior
  Pn = 1 / N, so each direction is the softmax (InfoNCE) loss above, the paper's Eq. (16)
  alternative, rather than RepDistiller's binary NCE with a Z normalizer.
* The positive is the current batch's paired embedding rather than the memory entry of the same
  index.

Features: ``student_layer`` / ``teacher_layer`` dotted module paths (default ``stage3``), 4-D maps globally
average-pooled, others flattened. Per sample: (B,), the mean is the batch loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from curridistill.knowledge.adapters import pool_flatten, student_feature, teacher_feature
from curridistill.knowledge.base import KnowledgeInputs, KnowledgeTerm
from curridistill.knowledge.registry import KNOWLEDGE


class CRDParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    student_layer: str = "stage3"
    teacher_layer: str = "stage3"
    feat_dim: int = Field(128, ge=1)
    num_negatives: int = Field(16384, ge=1)  # queue length K
    nce_t: float = Field(0.07, gt=0.0)


class Embed(nn.Module):
    """Linear projection followed by L2 normalization."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.linear(x.reshape(x.shape[0], -1)), dim=1)


def info_nce(anchor: Tensor, positive: Tensor, negatives: Tensor, tau: float,
             negative_mask: Tensor | None = None) -> Tensor:
    """(B, D) anchors, (B, D) positives, (K, D) negatives -> (B,) -log softmax of the positive.

    ``negative_mask`` (B, K), True where a negative must be ignored for that anchor."""
    pos = (anchor * positive).sum(dim=1, keepdim=True) / tau
    neg = anchor @ negatives.t() / tau
    if negative_mask is not None:
        neg = neg.masked_fill(negative_mask, float("-inf"))
    logits = torch.cat([pos, neg], dim=1)
    return torch.logsumexp(logits, dim=1) - pos.squeeze(1)


def crd_loss(v_s: Tensor, v_t: Tensor, queue_s: Tensor, queue_t: Tensor, tau: float,
             negative_mask: Tensor | None = None) -> Tensor:
    """Symmetric per-sample InfoNCE: student anchors vs. teacher queue plus teacher anchors vs. student queue."""
    s_anchor = info_nce(v_s, v_t.detach(), queue_t.detach(), tau, negative_mask)
    t_anchor = info_nce(v_t, v_s.detach(), queue_s.detach(), tau, negative_mask)
    return s_anchor + t_anchor


@KNOWLEDGE.register("crd")
class CRD(KnowledgeTerm):
    Params = CRDParams
    paper = "Tian, Krishnan, Isola. Contrastive Representation Distillation. ICLR 2020"
    summary = "contrastive (InfoNCE) match of student/teacher embeddings against a bounded negative queue"
    default_weight = 0.8
    carries_state = True

    def __init__(self, params: BaseModel | None = None, teacher_index: int = 0):
        super().__init__(params, teacher_index)
        k, d = self.params.num_negatives, self.params.feat_dim
        gen = torch.Generator().manual_seed(0)  # the initial queue does not consume the global RNG
        self.register_buffer("queue_s", F.normalize(torch.randn(k, d, generator=gen), dim=1))
        self.register_buffer("queue_t", F.normalize(torch.randn(k, d, generator=gen), dim=1))
        self.register_buffer("queue_index", torch.full((k,), -1, dtype=torch.long))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.embed_s: nn.Module | None = None
        self.embed_t: nn.Module | None = None

    def feature_paths(self) -> dict[str, list[str]]:
        return {"student": [self.params.student_layer], "teacher": [self.params.teacher_layer]}

    def _features(self, inputs: KnowledgeInputs) -> tuple[Tensor, Tensor]:
        fs = pool_flatten(student_feature(inputs, self.params.student_layer, "crd")).float()
        ft = pool_flatten(teacher_feature(inputs, self.teacher_index, self.params.teacher_layer, "crd")).detach().float()
        return fs, ft

    def build(self, inputs: KnowledgeInputs) -> None:
        fs, ft = self._features(inputs)
        self.embed_s = Embed(fs.shape[1], self.params.feat_dim).to(fs.device)
        self.embed_t = Embed(ft.shape[1], self.params.feat_dim).to(fs.device)

    @torch.no_grad()
    def _enqueue(self, v_s: Tensor, v_t: Tensor, indices: Tensor | None) -> None:
        k = self.queue_s.shape[0]
        b = v_s.shape[0]
        if indices is None:
            indices = torch.full((b,), -1, dtype=torch.long, device=v_s.device)
        if b > k:
            v_s, v_t, indices = v_s[-k:], v_t[-k:], indices[-k:]
            b = k
        slots = (self.queue_ptr + torch.arange(b, device=self.queue_ptr.device)) % k
        # out of place: this step's graph saved the old queues for its backward
        queue_s, queue_t, queue_index = self.queue_s.clone(), self.queue_t.clone(), self.queue_index.clone()
        queue_s[slots] = v_s.detach().to(queue_s.dtype)
        queue_t[slots] = v_t.detach().to(queue_t.dtype)
        queue_index[slots] = indices.to(queue_index.device, torch.long)
        self.queue_s, self.queue_t, self.queue_index = queue_s, queue_t, queue_index
        self.queue_ptr.copy_((self.queue_ptr + b) % k)

    def forward(self, inputs: KnowledgeInputs, temperature: Tensor | float = 1.0) -> Tensor:
        if self.embed_s is None or self.embed_t is None:
            raise RuntimeError("crd: build(inputs) must run before the first forward (it creates the embed heads)")
        fs, ft = self._features(inputs)
        v_s, v_t = self.embed_s(fs), self.embed_t(ft)
        mask = None
        if inputs.indices is not None:
            mask = inputs.indices.view(-1, 1).to(self.queue_index.device) == self.queue_index.view(1, -1)
        loss = crd_loss(v_s, v_t, self.queue_s, self.queue_t, self.params.nce_t, mask)
        if self.training:
            self._enqueue(v_s, v_t, inputs.indices)
        return loss
