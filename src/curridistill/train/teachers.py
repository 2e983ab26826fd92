"""The runner owns the teachers: one forward per batch under inference mode, shared by every term."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from curridistill.models.taps import FeatureTaps


@dataclass
class TeacherOutputs:
    logits: Tensor | None  # (B, C) aggregated over teachers
    each: list[Tensor] = field(default_factory=list)  # (B, C) per teacher
    features: list[dict[str, Tensor]] = field(default_factory=list)  # per teacher: path -> tensor


class TeacherBank:
    """Teachers in eval mode with the feature taps the lesson's terms asked for."""

    def __init__(self, models: list[nn.Module], weights: list[float], aggregation: str = "mean",
                 feature_paths: list[list[str]] | None = None, amp: bool = False):
        self.models = models
        self.weights = weights
        self.aggregation = aggregation
        self.amp = amp
        self.taps: list[FeatureTaps | None] = [None for _ in models]
        self.set_paths(feature_paths or [[] for _ in models])
        for m in models:
            m.eval()
            m.requires_grad_(False)

    def __len__(self) -> int:
        return len(self.models)

    def set_paths(self, feature_paths: list[list[str]]) -> None:
        """Install taps on each teacher for the modules the current lesson's terms need."""
        self.close()
        self.taps = [FeatureTaps(m, p, who=f"teacher {i}") if p else None
                     for i, (m, p) in enumerate(zip(self.models, feature_paths))]

    def close(self) -> None:
        for t in self.taps:
            if t is not None:
                t.remove()
        self.taps = [None for _ in self.models]

    def __call__(self, x: Tensor, targets: Tensor, indices: Tensor | None = None, epoch: int | None = None) -> TeacherOutputs:
        if not self.models:
            return TeacherOutputs(None)
        each, feats = [], []
        for model, taps in zip(self.models, self.taps):
            model.eval()  # a term or user code must never put a teacher back in training mode
            with torch.inference_mode(), torch.autocast(device_type=x.device.type, dtype=torch.bfloat16,
                                                         enabled=self.amp and x.device.type == "cuda"):
                logits = model(x)
                found = dict(taps.features) if taps is not None else {}
            # clone outside inference mode: inference tensors cannot be saved for the student's backward
            each.append(logits.float().clone())
            feats.append({k: v.float().clone() for k, v in found.items()})
        return TeacherOutputs(self.aggregate(each, targets), each, feats)

    def aggregate(self, each: list[Tensor], targets: Tensor) -> Tensor:
        if len(each) == 1:
            return each[0]
        from curridistill.knowledge.aggregate import aggregate_teachers

        return aggregate_teachers(each, targets, self.aggregation, self.weights)
