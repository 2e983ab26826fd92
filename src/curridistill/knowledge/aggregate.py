"""Multi-teacher logit aggregation, used by the runner's ``TeacherBank`` (not a knowledge term).

``aggregate_teachers(logits, targets, mode, weights, temperature)`` turns K teachers' (B, C) logits
into one (B, C) tensor, the ``teacher_logits`` every logit term sees. Modes (``AGGREGATIONS``):

* ``mean``: the plain mean of the logits (as in Hinton et al.'s ensemble teacher, in logit space).
* ``weighted``: sum_k w_k z_k / sum_k w_k with the per-teacher weights from the config
  (``teachers[k].weight``); equal weights when none are given.
* ``confidence``: per sample, teacher k gets w_ik = (1 - softmax_k(CE_ik)) / (K - 1), where
  CE_ik = -log p_k(y_i) is teacher k's cross-entropy on the true label at the given temperature
  (the weighting of CA-MKD: Zhang, Chen, Wang, "Confidence-Aware Multi-Teacher Knowledge
  Distillation", ICASSP 2022). Since exp(CE) = 1 / p, for two teachers this is exactly
  w_i1 = p_1(y_i) / (p_1(y_i) + p_2(y_i)): weights proportional to the true-class probability.
  The weights sum to 1 per sample; a more confident-on-the-truth teacher weighs more. Here they mix
  the teachers' logits into the one teacher every logit term sees; CA-MKD itself weights each
  teacher's KD loss (the sum of weighted KLs is not the KL to the mixed logits).
* ``best``: per sample, the logits of the single teacher that is right (argmax = label) with the
  highest true-class probability; if no teacher is right, the one with the highest true-class
  probability. Ties go to the lower teacher index.

Per-teacher ``weights`` are used by ``weighted`` only. With one teacher every mode returns its
logits unchanged. Nothing here needs gradients: teachers' outputs are constants.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from curridistill.errors import UserError
from curridistill.registry import Registry

# fn(stacked logits (K, B, C), targets (B,), weights (K,) | None, temperature) -> (B, C)
AggregationFn = Callable[[Tensor, Tensor, "Tensor | None", float], Tensor]
AGGREGATIONS: Registry[AggregationFn] = Registry("teacher aggregation")


def _true_class_prob(stacked: Tensor, targets: Tensor, temperature: float) -> Tensor:
    """(K, B, C), (B,) -> (K, B) probability each teacher gives the true class."""
    probs = (stacked / temperature).softmax(dim=2)
    idx = targets.view(1, -1, 1).expand(stacked.shape[0], -1, 1)
    return probs.gather(2, idx).squeeze(2)


@AGGREGATIONS.register("mean")
def _mean(stacked: Tensor, targets: Tensor, weights: Tensor | None, temperature: float) -> Tensor:
    return stacked.mean(dim=0)


@AGGREGATIONS.register("weighted")
def _weighted(stacked: Tensor, targets: Tensor, weights: Tensor | None, temperature: float) -> Tensor:
    if weights is None:
        return stacked.mean(dim=0)
    w = weights / weights.sum()
    return (w.view(-1, 1, 1) * stacked).sum(dim=0)


@AGGREGATIONS.register("confidence")
def _confidence(stacked: Tensor, targets: Tensor, weights: Tensor | None, temperature: float) -> Tensor:
    k = stacked.shape[0]
    if k == 1:
        return stacked[0]
    p = _true_class_prob(stacked, targets, temperature)  # (K, B)
    ce = -torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))
    w = (1.0 - ce.softmax(dim=0)) / (k - 1)  # (K, B), sums to 1 over teachers
    return (w.unsqueeze(2) * stacked).sum(dim=0)


@AGGREGATIONS.register("best")
def _best(stacked: Tensor, targets: Tensor, weights: Tensor | None, temperature: float) -> Tensor:
    p = _true_class_prob(stacked, targets, temperature)  # (K, B)
    right = (stacked.argmax(dim=2) == targets.view(1, -1)).to(p.dtype)
    choice = (p + 2.0 * right).argmax(dim=0)  # a right teacher always beats a wrong one
    return stacked.gather(0, choice.view(1, -1, 1).expand(1, -1, stacked.shape[2])).squeeze(0)


def aggregate_teachers(logits: Sequence[Tensor], targets: Tensor, mode: str = "mean",
                       weights: Sequence[float] | None = None, temperature: float = 1.0) -> Tensor:
    """K teachers' (B, C) logits -> one (B, C) tensor (see the module docstring for the modes)."""
    fn = AGGREGATIONS.get(mode, where="run.teacher_aggregation")
    if len(logits) == 0:
        raise ValueError("aggregate_teachers needs at least one teacher's logits")
    stacked = torch.stack([z.float() for z in logits], dim=0)
    if len(logits) == 1:
        return stacked[0]
    w = None
    if weights is not None:
        if len(weights) != len(logits):
            raise UserError(f"{len(weights)} teacher weight(s) for {len(logits)} teachers; give one weight per teacher")
        values = [float(x) for x in weights]  # checked on the host: this runs every step
        if min(values) < 0 or sum(values) <= 0:
            raise UserError(f"teacher weights must be >= 0 with a positive sum, got {list(weights)}")
        w = torch.as_tensor(values, dtype=stacked.dtype, device=stacked.device)
    return fn(stacked, targets, w, float(temperature))
