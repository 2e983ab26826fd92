"""The runner owns the teachers: one forward per batch under inference mode, shared by every term.

With a teacher-output cache (``run.teacher_cache``, on by default; see ``train.teacher_cache``) a
teacher's logits for a training batch are looked up (``logits[indices]``) in the outputs computed once
for the batch's augmentation epoch instead of running the teacher. A teacher whose terms need its
intermediate features runs online, unless ``run.cache_features`` stores those features in the cache
too. Calls without ``indices`` (inputs that are not training samples) always run online.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from curridistill.knowledge.aggregate import aggregate_teachers
from curridistill.models.placement import bf16_autocast
from curridistill.models.taps import FeatureTaps
from curridistill.train.teacher_cache import TeacherCache


@dataclass
class TeacherOutputs:
    logits: Tensor | None  # (B, C) aggregated over teachers
    each: list[Tensor] = field(default_factory=list)  # (B, C) per teacher
    features: list[dict[str, Tensor]] = field(default_factory=list)  # per teacher: path -> tensor


class TeacherBank:
    """Teachers in eval mode with the feature taps the lesson's terms asked for."""

    def __init__(self, models: list[nn.Module], weights: list[float], aggregation: str = "mean",
                 feature_paths: list[list[str]] | None = None, amp: bool = False,
                 pipeline=None, cache_dir: str | Path | None = None, cache_features: bool = False):
        """``pipeline`` and ``cache_dir`` given: serve training batches from a teacher-output cache."""
        self.models = models
        self.weights = weights
        self.aggregation = aggregation
        self.amp = amp
        self.cache_features = cache_features
        self.paths: list[list[str]] = [[] for _ in models]
        self.taps: list[FeatureTaps | None] = [None for _ in models]
        self.pipeline, self.cache_dir = pipeline, cache_dir
        self.caches: list | None = None
        if pipeline is not None and cache_dir is not None and models:
            self.caches = [self._new_cache(i) for i in range(len(models))]
        self.source: list[str] = []  # per teacher, how the last call was served: "cache" or "online"
        self.set_paths(feature_paths or [[] for _ in models])
        for m in models:
            m.eval()
            m.requires_grad_(False)

    def __len__(self) -> int:
        return len(self.models)

    def _new_cache(self, index: int):
        return TeacherCache(self.models[index], self.pipeline, self.cache_dir, split="train", amp=self.amp,
                            who=f"teacher {index}")

    def load_teacher_state(self, index: int, state: dict) -> None:
        """Load new weights into teacher ``index`` (e.g. an RCO anchor); its cache follows the new weights."""
        model = self.models[index]
        model.load_state_dict(state)
        model.eval()
        if self.caches is not None:
            self.caches[index] = self._new_cache(index)  # the key hashes the weights: another directory

    def set_paths(self, feature_paths: list[list[str]]) -> None:
        """Install taps on each teacher for the modules the current lesson's terms need."""
        self.close()
        self.paths = [list(p) for p in feature_paths]
        self.taps = [FeatureTaps(m, p, who=f"teacher {i}") if p else None
                     for i, (m, p) in enumerate(zip(self.models, feature_paths))]

    def close(self) -> None:
        for t in self.taps:
            if t is not None:
                t.remove()
        self.taps = [None for _ in self.models]
        self.paths = [[] for _ in self.models]

    def uses_cache(self, index: int, indices: Tensor | None, x: Tensor) -> bool:
        """Whether teacher ``index`` is served from the cache for this call."""
        return (self.caches is not None and indices is not None and indices.dim() == 1 and len(indices) == len(x)
                and (not self.paths[index] or self.cache_features))

    def __call__(self, x: Tensor, targets: Tensor, indices: Tensor | None = None, epoch: int | None = None) -> TeacherOutputs:
        """``indices``: training-split indices of the rows of ``x``; ``epoch``: their augmentation epoch (None: none)."""
        if not self.models:
            return TeacherOutputs(None)
        each, feats, source = [], [], []
        for i, (model, taps) in enumerate(zip(self.models, self.taps)):
            if self.uses_cache(i, indices, x):
                logits, found = self.caches[i].lookup(indices, epoch, self.paths[i], taps)
                each.append(logits.to(x.device))
                feats.append({k: v.to(x.device) for k, v in found.items()})
                source.append("cache")
                continue
            model.eval()  # a term or user code must never put a teacher back in training mode
            with torch.inference_mode(), bf16_autocast(x.device, self.amp):
                logits = model(x)
                found = dict(taps.features) if taps is not None else {}
            # clone outside inference mode: inference tensors cannot be saved for the student's backward
            each.append(logits.float().clone())
            feats.append({k: v.float().clone() for k, v in found.items()})
            source.append("online")
        self.source = source
        return TeacherOutputs(self.aggregate(each, targets), each, feats)

    def aggregate(self, each: list[Tensor], targets: Tensor) -> Tensor:
        if len(each) == 1:
            return each[0]
        return aggregate_teachers(each, targets, self.aggregation, self.weights)
