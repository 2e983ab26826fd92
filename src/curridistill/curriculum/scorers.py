"""Difficulty scorers: per-sample DIFFICULTY (higher = harder) from targets and logits.

A scorer is a pure function of a ``ScoreInputs`` (all of the training set at once) returning an
``(N,)`` float tensor, computed and returned in float64, with ``1 - p`` and the cross-entropy taken from the
log-odds against the true class. Both ends of a confident teacher's order depend on it: ``1 - softmax`` in float32
is exactly 0 for every sample with a margin above about 17 (the easiest samples would all tie), and a float32
score near 1 (a sample the teacher is confidently wrong about) rounds to 1 past a margin of about 17 (the hardest
would tie); float64 keeps them apart up to margins of about 37. The runner collects the teacher's
and/or the student's logits on the training set (without augmentation) and calls ``score(name, inputs)``;
``order_by_difficulty`` then sorts.

* ``teacher_confidence``: ``1 - p_teacher(true class)`` (Hacohen & Weinshall 2019 use a teacher's confidence)
* ``teacher_loss``: cross-entropy of the teacher on the true class
* ``teacher_entropy``: entropy of the teacher's prediction (does not use the label)
* ``teacher_student_kl``: ``KL(p_teacher || p_student)``: how far the student is from the teacher
* ``student_loss``: cross-entropy of the current student: self-paced, re-scored every ``rescore_every`` epochs
* ``random``: seeded uniform scores, the random-order control
* ``length``: number of tokens (text): short sentences first (Platanios et al. 2019 use sentence length)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from curridistill.errors import UserError
from curridistill.registry import Registry


@dataclass
class ScoreInputs:
    targets: Tensor  # (N,) class indices
    teacher_logits: Tensor | None = None  # (N, C)
    student_logits: Tensor | None = None  # (N, C)
    seed: int = 0
    lengths: Tensor | None = None  # (N,) tokens per sample, for text data


@dataclass(frozen=True)
class Scorer:
    fn: Callable[[ScoreInputs], Tensor]
    needs_teacher: bool
    needs_student: bool
    help: str
    needs_lengths: bool = False

    def __call__(self, inputs: ScoreInputs) -> Tensor:
        return self.fn(inputs)


SCORERS: Registry[Scorer] = Registry("scorer")


def _scorer(name: str, help_text: str, needs_teacher: bool = False, needs_student: bool = False,
            needs_lengths: bool = False):
    def add(fn: Callable[[ScoreInputs], Tensor]) -> Callable[[ScoreInputs], Tensor]:
        SCORERS.register(name)(Scorer(fn, needs_teacher, needs_student, help_text, needs_lengths))
        return fn

    return add


def _odds_against(logits: Tensor, targets: Tensor) -> Tensor:
    """(N,) float64 ``r = logsumexp_{c != y} z_c - z_y``: ``1 - p_y = sigmoid(r)`` and ``-log p_y = softplus(r)``.

    Both stay accurate where a confident model's ``p_y`` rounds to 1, where ``1 - p_y`` and the float32
    cross-entropy are exactly 0 for every such sample: a tie that would order the easiest samples at random
    instead of by their confidence."""
    z = logits.double()
    y = targets.long().view(-1, 1)
    others = z.scatter(1, y, -math.inf)  # (N, C) the true class masked out
    return torch.logsumexp(others, dim=1) - z.gather(1, y).squeeze(1)


def _ce(logits: Tensor, targets: Tensor) -> Tensor:
    return F.softplus(_odds_against(logits, targets))


@_scorer("teacher_confidence", "1 - teacher probability of the true class", needs_teacher=True)
def teacher_confidence(inp: ScoreInputs) -> Tensor:
    return torch.sigmoid(_odds_against(inp.teacher_logits, inp.targets))


@_scorer("teacher_loss", "teacher cross-entropy on the true class", needs_teacher=True)
def teacher_loss(inp: ScoreInputs) -> Tensor:
    return _ce(inp.teacher_logits, inp.targets)


@_scorer("teacher_entropy", "entropy of the teacher prediction (label-free)", needs_teacher=True)
def teacher_entropy(inp: ScoreInputs) -> Tensor:
    logp = inp.teacher_logits.double().log_softmax(dim=1)
    return -(logp.exp() * logp).sum(dim=1)


@_scorer("teacher_student_kl", "KL(teacher || student): where the student disagrees with the teacher most",
         needs_teacher=True, needs_student=True)
def teacher_student_kl(inp: ScoreInputs) -> Tensor:
    logp_t = inp.teacher_logits.double().log_softmax(dim=1)
    logp_s = inp.student_logits.double().log_softmax(dim=1)
    return (logp_t.exp() * (logp_t - logp_s)).sum(dim=1).clamp_min(0.0)


@_scorer("student_loss", "current student cross-entropy (self-paced: re-scored every rescore_every epochs)",
         needs_student=True)
def student_loss(inp: ScoreInputs) -> Tensor:
    return _ce(inp.student_logits, inp.targets)


@_scorer("random", "seeded uniform scores: the random-order control")
def random_scores(inp: ScoreInputs) -> Tensor:
    gen = torch.Generator().manual_seed(int(inp.seed) & 0x7FFF_FFFF_FFFF_FFFF)
    return torch.rand(len(inp.targets), generator=gen)


@_scorer("length", "number of tokens (text data): short sentences first", needs_lengths=True)
def length(inp: ScoreInputs) -> Tensor:
    return inp.lengths.float()


def _check_logits(name: str, logits: Tensor, n: int, who: str, where: str) -> None:
    if logits.dim() != 2 or logits.shape[0] != n:
        raise UserError(f"{where}: scorer {name!r} got {who} logits of shape {tuple(logits.shape)}; "
                        f"expected ({n}, num_classes) to match the {n} targets")


def score(name: str, inputs: ScoreInputs, where: str = "curriculum.scorer") -> Tensor:
    """Per-sample difficulty ``(N,)`` (float64, CPU) by the scorer ``name``; checks what it needs."""
    scorer = SCORERS.get(name, where=where)
    targets = inputs.targets
    if targets.dim() != 1:
        raise UserError(f"{where}: targets must be a 1-D tensor of class indices, got shape {tuple(targets.shape)}")
    n = targets.shape[0]
    if scorer.needs_lengths and (inputs.lengths is None or inputs.lengths.shape != targets.shape):
        raise UserError(f"{where}: scorer {name!r} needs token counts, which only text data has; pick another scorer")
    for needed, logits, who, fix in (
        (scorer.needs_teacher, inputs.teacher_logits, "teacher", "add a 'teacher' section or pick the scorer "
                                                                 "student_loss or random"),
        (scorer.needs_student, inputs.student_logits, "student", "the runner must pass the student's logits"),
    ):
        if not needed:
            continue
        if logits is None:
            raise UserError(f"{where}: scorer {name!r} needs the {who}'s logits but none are available; {fix}")
        _check_logits(name, logits, n, who, where)
        if n and (int(targets.min()) < 0 or int(targets.max()) >= logits.shape[1]):
            raise UserError(f"{where}: targets must be class indices in [0, {logits.shape[1]}) for scorer {name!r}")
    if (scorer.needs_teacher and scorer.needs_student
            and inputs.teacher_logits.shape[1] != inputs.student_logits.shape[1]):
        raise UserError(f"{where}: teacher and student predict different numbers of classes "
                        f"({inputs.teacher_logits.shape[1]} vs {inputs.student_logits.shape[1]})")
    with torch.no_grad():
        out = scorer(inputs)
    return out.detach().double().cpu()
