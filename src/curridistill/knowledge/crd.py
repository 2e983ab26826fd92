"""Tian, Krishnan, Isola. "Contrastive Representation Distillation", ICLR 2020.

CRD embeds the student's and the teacher's penultimate features with two trainable heads
(linear -> 128-d, L2-normalized: v^s = g_s(f^s), v^t = g_t(f^t)) and trains them, with the
student, to make each sample's (student, teacher) pair stand out against K negatives, in both
directions (student anchor vs. teacher embeddings, teacher anchor vs. student embeddings), with
tau = 0.07, K = 16384 negatives, feat_dim = 128 and weight 0.8 (RepDistiller / mdistiller CIFAR-100).
In each direction the other side (positive and negatives) carries no gradient.

``memory`` picks where the positives and negatives come from:

* ``bank`` (default, the paper's): RepDistiller's memory bank and NCE objective, one momentum-updated
  embedding per training sample and side, negatives from the other classes, the normaliser Z fixed at
  the first batch (``contrast_memory`` gives the formulas). Memory O(N * feat_dim) per side (50,000
  CIFAR images: 26 MB each); the runner hands the term the training labels before the first batch
  (``attach_training_labels``). Under torchrun every process applies the whole global batch's memory
  update, so the memories stay identical.
* ``queue``: bounded memory for large datasets. The negatives are a FIFO queue of the last K student
  and teacher embeddings (as in MoCo, He et al. 2020): memory O(K) whatever the dataset, stored in
  registered buffers so it is checkpointed, updated without gradient after each forward in training
  mode only, starting with random unit vectors. Queue entries of the same dataset index as the anchor
  (the sample seen in an earlier epoch) are masked out of its negatives. With no fixed dataset size for
  NCE's noise prior, each direction is the softmax (InfoNCE) loss, the paper's Eq. (16) alternative::

      L_i = -log  exp(<v^s_i, v^t_i> / tau) / ( exp(<v^s_i, v^t_i> / tau) + sum_k exp(<v^s_i, m^t_k> / tau) )
            -log  exp(<v^t_i, v^s_i> / tau) / ( exp(<v^t_i, v^s_i> / tau) + sum_k exp(<v^t_i, m^s_k> / tau) )

  and the positive is the current batch's paired embedding rather than a memory entry.

Features: ``student_layer`` / ``teacher_layer`` dotted module paths (default ``stage3``), 4-D maps globally
average-pooled, others flattened. Per sample: (B,), the mean is the batch loss.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from curridistill.errors import UserError
from curridistill.knowledge.adapters import full_precision, pool_flatten, student_feature, teacher_feature
from curridistill.knowledge.contrast_memory import (NegativeSampler, contrast_scores, gathered, initial_memory,
                                                    momentum_update, nce_per_sample, process_mean)
from curridistill.knowledge.base import KnowledgeInputs, KnowledgeTerm
from curridistill.knowledge.registry import KNOWLEDGE


class CRDParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    student_layer: str = "stage3"
    teacher_layer: str = "stage3"
    feat_dim: int = Field(128, ge=1)
    num_negatives: int = Field(16384, ge=1)  # K: negatives per anchor (bank), queue length (queue)
    nce_t: float = Field(0.07, gt=0.0)
    memory: Literal["bank", "queue"] = "bank"
    nce_m: float = Field(0.5, ge=0.0, lt=1.0)  # bank: momentum of the memory update


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
    summary = ("contrastive match of student/teacher embeddings: the paper's memory bank + NCE, or a bounded "
               "queue + InfoNCE")
    default_weight = 0.8
    carries_state = True

    def __init__(self, params: BaseModel | None = None, teacher_index: int = 0):
        super().__init__(params, teacher_index)
        k, d = self.params.num_negatives, self.params.feat_dim
        if self.params.memory == "queue":
            gen = torch.Generator().manual_seed(0)  # the initial queue does not consume the global RNG
            self.register_buffer("queue_s", F.normalize(torch.randn(k, d, generator=gen), dim=1))
            self.register_buffer("queue_t", F.normalize(torch.randn(k, d, generator=gen), dim=1))
            self.register_buffer("queue_index", torch.full((k,), -1, dtype=torch.long))
            self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.sampler: NegativeSampler | None = None  # bank: set by attach_training_labels
        self.embed_s: nn.Module | None = None
        self.embed_t: nn.Module | None = None

    def attach_training_labels(self, labels: Tensor) -> None:
        if self.params.memory != "bank":
            return
        try:
            self.sampler = NegativeSampler(labels, self.params.num_negatives)
        except ValueError as exc:
            raise UserError(f"{exc}; use crd's memory: queue or data with several classes") from None
        n, d = len(labels), self.params.feat_dim
        self.register_buffer("memory_s", initial_memory(n, d, seed=0))
        self.register_buffer("memory_t", initial_memory(n, d, seed=1))
        self.register_buffer("z", torch.full((2,), -1.0))  # student-anchor and teacher-anchor Z; < 0: not yet set

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
        if self.params.memory == "bank":
            with full_precision(v_s.device):
                return self._bank_loss(v_s.float(), v_t.float(), inputs.indices)
        mask = None
        if inputs.indices is not None:
            mask = inputs.indices.view(-1, 1).to(self.queue_index.device) == self.queue_index.view(1, -1)
        loss = crd_loss(v_s, v_t, self.queue_s, self.queue_t, self.params.nce_t, mask)
        if self.training:
            self._enqueue(v_s, v_t, inputs.indices)
        return loss

    def _bank_loss(self, v_s: Tensor, v_t: Tensor, indices: Tensor | None) -> Tensor:
        if self.sampler is None or indices is None:
            raise RuntimeError("crd with memory: bank needs attach_training_labels(labels) before the first batch and "
                               "the samples' dataset indices in KnowledgeInputs.indices")
        indices = indices.to(self.memory_s.device)
        generator = None if self.training else torch.Generator().manual_seed(0)
        contrast = torch.cat([indices.view(-1, 1), self.sampler.draw(indices, generator)], dim=1)
        tau, n = self.params.nce_t, self.sampler.n
        # student anchors against the teacher's memory, teacher anchors against the student's (RepDistiller's
        # out_v1 and out_v2); memory rows carry no gradient
        scores = torch.stack([contrast_scores(v_s, self.memory_t, contrast, tau),
                              contrast_scores(v_t, self.memory_s, contrast, tau)])
        estimate = process_mean(scores.detach().mean(dim=(1, 2)) * n)
        z = torch.where(self.z > 0, self.z, estimate)  # fixed at the first batch
        loss = nce_per_sample(scores[0] / z[0], n) + nce_per_sample(scores[1] / z[1], n)
        if self.training:
            self.z = z
            every_index, every_v_s, every_v_t = gathered(indices, v_s.detach(), v_t.detach())
            self.memory_s = momentum_update(self.memory_s, every_index, every_v_s, self.params.nce_m)
            self.memory_t = momentum_update(self.memory_t, every_index, every_v_t, self.params.nce_m)
        return loss
