"""Batched, per-sample-deterministic augmentation of token ids: a larger transfer set for text distillation.

Small text datasets give a teacher few chances to show its knowledge: on the training sentences the student
soon fits the hard labels and the soft targets add little. Tang et al. (2019, "Distilling Task-Specific
Knowledge from BERT into Simple Neural Networks") enlarge the transfer set with perturbed sentences that the
teacher labels: each word is masked with probability p_mask or replaced with probability p_pos, and with
probability p_ng the example is cut to an n-gram (n uniform in 1..5); they used p_mask = p_pos = 0.1 and
p_ng = 0.25. Here, on token ids (the teacher's word pieces, or the ``words`` vocabulary):

* ``token_mask`` p: each content token becomes the mask token (``[MASK]``; the unknown word for ``words``);
* ``token_replace`` p: each content token becomes a token drawn from the training split's unigram
  distribution (a POS tagger is not available for arbitrary vocabularies; frequency-matched noise is the
  closest tokenizer-independent stand-in);
* ``token_span`` p: the sample keeps only a random contiguous run of 1..``span_max`` content tokens,
  shifted left; special tokens ([CLS], [SEP]) stay, so the sentence is still well formed for the teacher.

Content tokens are those that are neither padding nor special. As with images, sample i's draws in epoch e
depend only on (data_seed, e, i): the teacher-output cache stores the teacher's logits on exactly the
sentences the student sees, and the student alone (the baseline) sees the same sentences with the hard label
(for the baseline the augmentation is plain input noise; same data, same budget).
"""
from __future__ import annotations

import json

import torch
from torch import Tensor

from curridistill.data.augment import epoch_seed
from curridistill.errors import UserError

PARAMS_VERSION = 1  # bump when the draws change: caches keyed by key() are then invalidated


class TokenAugment:
    """Masking, unigram replacement and span sampling for (B, L) int64 id batches."""

    def __init__(self, cfg, train_ids: Tensor, pad_id: int, mask_id: int | None, special_ids: list[int]):
        self.mask_p, self.replace_p = float(cfg.token_mask), float(cfg.token_replace)
        self.span_p, self.span_max = float(cfg.token_span), int(cfg.span_max)
        if self.mask_p + self.replace_p > 1:
            raise UserError(f"data.augment: token_mask + token_replace is {self.mask_p + self.replace_p:g}; they are "
                            f"probabilities of exclusive changes per token, so keep their sum <= 1 (like 0.1 and 0.1)")
        if self.mask_p and mask_id is None:
            raise UserError("data.augment.token_mask: this tokenizer has no mask or unknown token to mask with; "
                            "use token_replace instead")
        self.pad_id, self.mask_id = int(pad_id), (int(mask_id) if mask_id is not None else int(pad_id))
        self.special = torch.tensor(sorted({int(s) for s in special_ids} | {int(pad_id)}), dtype=torch.int64)
        self.width = int(train_ids.shape[1])
        is_content = self.content(train_ids)
        self.content_counts = is_content.sum(1)  # (N,) content tokens per training sample, on the host
        content = train_ids[is_content]
        if self.replace_p and content.numel() == 0:
            raise UserError("data.augment.token_replace: the training split has no content tokens to draw from")
        self.unigram = torch.bincount(content, minlength=int(train_ids.max()) + 1).double() if content.numel() else None

    @property
    def active(self) -> bool:
        return bool(self.mask_p or self.replace_p or self.span_p)

    def key(self) -> str:
        return f"token-augment-v{PARAMS_VERSION}:" + json.dumps(
            [self.mask_p, self.replace_p, self.span_p, self.span_max], separators=(",", ":"))

    def content(self, ids: Tensor) -> Tensor:
        """True where a token is text (neither padding nor special)."""
        if self.special.device != ids.device:  # moved once, not copied per batch
            self.special = self.special.to(ids.device)
        return ~torch.isin(ids, self.special)

    def epoch_params(self, n: int, seed: int, epoch: int) -> dict[str, Tensor]:
        """Per-sample draws of all ``n`` samples for one epoch (CPU tensors, first dim n).

        Every draw is made whatever is enabled, so changing one probability leaves the others' draws alone."""
        g = torch.Generator().manual_seed(epoch_seed(seed, epoch) ^ 0x5EED_7E47)
        token_u = torch.rand(n, self.width, generator=g)
        if self.unigram is not None:
            pick = torch.multinomial(self.unigram, n * self.width, replacement=True, generator=g)
            replacement = pick.view(n, self.width).to(torch.int32)
        else:
            replacement = torch.full((n, self.width), self.pad_id, dtype=torch.int32)
        span_u = torch.rand(n, generator=g)
        span_len = torch.randint(1, self.span_max + 1, (n,), generator=g)
        span_start_u = torch.rand(n, generator=g)
        params = {"token_u": token_u, "replacement": replacement}
        if self.span_p:
            params.update(span=span_u < self.span_p, span_len=span_len, span_start_u=span_start_u)
        return params

    def lengths_after(self, lengths: Tensor, params: dict[str, Tensor]) -> Tensor:
        """(N,) non-pad tokens of every training sample after ``apply`` with this epoch's ``params`` (host tensors),
        from the stored counts alone: masking and replacement keep a row's length (neither writes padding), a
        span keeps the special tokens and ``min(span_len, content tokens)`` of the content. So a batch's width is a
        host lookup even when augmentation shortens rows (``apply`` packs rows left; equal to ``trim``)."""
        if "span" not in params:
            return lengths
        kept = (lengths - self.content_counts) + torch.minimum(params["span_len"], self.content_counts)
        return torch.where(params["span"], kept, lengths)

    def apply(self, ids: Tensor, params: dict[str, Tensor]) -> Tensor:
        """Augment a (B, L) batch of full-width ids; ``params`` are its samples' epoch params, on ``ids.device``."""
        if not self.active:
            return ids
        if ids.dim() != 2 or ids.shape[1] != self.width:
            raise ValueError(f"expected ids (B, {self.width}), got {tuple(ids.shape)}")
        content = self.content(ids)
        u = params["token_u"]
        out = torch.where(content & (u < self.mask_p), torch.full_like(ids, self.mask_id), ids)
        replace = content & (u >= self.mask_p) & (u < self.mask_p + self.replace_p)
        out = torch.where(replace, params["replacement"].to(ids.dtype), out)
        if self.span_p:
            out = self._keep_span(out, content, params)
        return out

    def _keep_span(self, ids: Tensor, content: Tensor, params: dict[str, Tensor]) -> Tensor:
        """Rows marked ``span`` keep their special tokens and one run of content tokens, packed to the left."""
        rank = content.long().cumsum(1) - 1  # position of each content token among its row's content tokens
        n_content = content.sum(1)
        k = torch.minimum(params["span_len"], n_content)
        start = (params["span_start_u"] * (n_content - k + 1).to(params["span_start_u"].dtype)).long()
        start = torch.minimum(start, (n_content - k).clamp(min=0))
        in_span = content & (rank >= start[:, None]) & (rank < (start + k)[:, None])
        keep = (~content & (ids != self.pad_id)) | in_span
        keep = torch.where(params["span"][:, None], keep, ids != self.pad_id)
        # kept tokens in their order, packed left: sort positions with the dropped ones pushed past the end
        pos = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        order = torch.argsort(torch.where(keep, pos, pos + ids.shape[1]), dim=1)
        packed = ids.gather(1, order)
        return torch.where(pos < keep.sum(1, keepdim=True), packed, torch.full_like(ids, self.pad_id))
