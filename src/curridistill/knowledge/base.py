"""The uniform interface every knowledge term implements.

A term is an ``nn.Module`` (so adapters and learned temperatures train with the student) that maps a
``KnowledgeInputs`` to a per-sample loss of shape (B,). The runner owns the teacher, the hooks, the
weights and the schedules; a term never trains or steps anything. The mean path is ``loss.mean()``.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn


@dataclass
class Clock:
    """Where training is: ``progress`` in [0, 1] over the lesson, ``epoch`` (0-based) and totals."""

    progress: float = 0.0
    epoch: int = 0
    epochs: int = 1
    step: int = 0


@dataclass
class KnowledgeInputs:
    student_logits: Tensor  # (B, C)
    targets: Tensor  # (B,) int64 class indices
    teacher_logits: Tensor | None = None  # (B, C), aggregated over teachers
    teachers_logits: list[Tensor] = field(default_factory=list)  # one (B, C) per teacher
    student_features: dict[str, Tensor] = field(default_factory=dict)  # dotted path -> tensor
    teacher_features: list[dict[str, Tensor]] = field(default_factory=list)  # per teacher
    indices: Tensor | None = None  # (B,) dataset indices of the samples
    clock: Clock = field(default_factory=Clock)


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KnowledgeTerm(nn.Module, abc.ABC):
    """Base class. Subclasses set ``Params`` (a pydantic model of their options with the paper's
    defaults), ``paper`` and ``uses_teacher``; they implement ``forward``."""

    Params: ClassVar[type[BaseModel]] = NoParams
    paper: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    uses_teacher: ClassVar[bool] = True
    uses_temperature: ClassVar[bool] = False
    default_temperature: ClassVar[float] = 1.0
    default_weight: ClassVar[float] = 1.0
    # True when forward puts a new tensor in the term's state for the next step (CRD's negative queue): a CUDA
    # graph reuses its output memory on the next replay, so such a step compiles without CUDA graphs. State
    # changed in place (CTKD's running sum, a BatchNorm adapter's statistics) keeps its storage and is fine
    carries_state: ClassVar[bool] = False

    def __init__(self, params: BaseModel | None = None, teacher_index: int = 0):
        super().__init__()
        self.params = params if params is not None else self.Params()
        self.teacher_index = teacher_index

    def feature_paths(self) -> dict[str, list[str]]:
        """Dotted module paths this term needs: ``{"student": [...], "teacher": [...]}``."""
        return {"student": [], "teacher": []}

    def build(self, inputs: KnowledgeInputs) -> None:
        """Called once on a first batch (no grad) before the optimizer exists: create adapters here."""

    build_reads_teacher = True  # whether ``build`` reads the teachers' outputs (the probe runs them only if so)

    def needs_build(self) -> bool:
        """Whether ``build`` has work to do: the runner runs its probe batch (a student forward and the teachers')
        only when some term needs it. By default, when the class overrides ``build``."""
        return type(self).build is not KnowledgeTerm.build

    def attach_training_labels(self, labels: Tensor) -> None:
        """Called by the runner once, before ``build``, with the labels (N,) of the training set that
        ``KnowledgeInputs.indices`` index: a term that keeps per-sample state (CRD's memory bank) sizes it here."""

    def before_step(self, clock: Clock) -> None:
        """Called by the runner on the host before each training step's forward: per-step numbers derived from
        ``clock`` (a ramp, a schedule) are computed here and written in place into the term's own device
        buffers, so that a compiled step reads them as inputs instead of baking each step's value into its
        graph. A term called directly, without the runner, computes them from ``inputs.clock`` instead."""

    @abc.abstractmethod
    def forward(self, inputs: KnowledgeInputs, temperature: Tensor | float | None = None) -> Tensor:
        """Per-sample loss, shape (B,). ``temperature``: this step's value of the lesson's schedule (None:
        the term's ``default_temperature``, the one place a default lives; see ``resolve_temperature``)."""

    def resolve_temperature(self, temperature: Tensor | float | None) -> Tensor | float:
        return self.default_temperature if temperature is None else temperature

    def learned_temperature(self) -> float | None:
        """A temperature the term learns itself (CTKD), for the epoch log; None for the others."""
        return None

    def epoch_sums(self) -> list[Tensor]:
        """Device tensors this term sums over the epoch for its log (CTKD's temperatures used and their count): under
        DDP the runner adds them up over the ranks, in place, before ``learned_temperature`` reads them."""
        return []

    def teacher_logits(self, inputs: KnowledgeInputs) -> Tensor:
        if inputs.teacher_logits is None:
            raise RuntimeError(f"{type(self).__name__} needs teacher logits but the lesson has no teacher")
        student, teacher = inputs.student_logits.shape, inputs.teacher_logits.shape
        if student != teacher:  # another class count, or another batch (which would broadcast silently)
            raise ValueError(f"{type(self).__name__}: teacher logits {tuple(teacher)} do not match the student's "
                             f"{tuple(student)}; give both the same batch and the same classes")
        return inputs.teacher_logits


def kl_per_sample(log_p_student: Tensor, log_p_teacher: Tensor) -> Tensor:
    """KL(teacher || student) summed over classes, per sample: (B, C) x (B, C) -> (B,).

    A class the teacher rules out (log-probability -inf, e.g. a teacher that masks classes with -inf logits)
    adds 0, the limit of p log p, where the plain product would give 0 * -inf = NaN."""
    p_teacher = log_p_teacher.exp()
    return torch.where(p_teacher > 0, p_teacher * (log_p_teacher - log_p_student), 0.0).sum(dim=1)


def masked_mean(values: Tensor, mask: Tensor | None, average: str = "sample") -> Tensor:
    """(B, L) [x (B, L) padding mask, nonzero = token] -> (B,) per-sample losses over the non-pad positions.

    ``average="sample"``: each sample's mean over its own tokens, so every sample weighs the same in the batch mean.
    ``average="token"``: each sample's sum over its tokens divided by the batch's tokens per sample, so the batch
    mean is the mean over every non-pad token of the batch (TextBrewer's masked losses, MiniLMv2): a long sentence
    weighs more. Without a mask both are the plain mean over L. A sample (or batch) with no token gives 0, never NaN.
    """
    if mask is None:
        return values.mean(dim=1)
    m = mask.to(values.dtype)
    sums = (values * m).sum(dim=1)
    if average == "token":
        return sums * (m.shape[0] / m.sum().clamp_min(1.0))
    return sums / m.sum(dim=1).clamp_min(1.0)


def widen(x: Tensor) -> Tensor:
    """Half-precision (float16, bfloat16) -> float32; float32 and float64 as they are."""
    return x.float() if x.is_floating_point() and torch.finfo(x.dtype).bits < 32 else x


def standardize(logits: Tensor, eps: float = 1e-7) -> Tensor:
    """Logit standardization (Sun et al., CVPR 2024): z-score each sample's logits, in float32 at least (the
    official code standardizes float32 logits; a bfloat16 z-score alone costs ~5e-3 of the KD loss)."""
    logits = widen(logits)
    return (logits - logits.mean(dim=1, keepdim=True)) / (logits.std(dim=1, keepdim=True) + eps)
