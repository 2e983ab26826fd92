"""Bridges between student and teacher features, shared by the feature-based terms.

Not a knowledge term: ``load_all`` imports this module but it registers nothing.

``make_adapter(student_shape, teacher_shape)`` returns a module that maps a student feature of
``student_shape`` (batch dimension included; only the dimensions after it matter) to the teacher's
``teacher_shape``:

* equal shapes: ``nn.Identity`` (no parameters);
* both 4-D ``(B, C, H, W)``: a 1x1 convolution + BatchNorm when the channel counts differ (the
  FitNets regressor as in mdistiller's ``ConvReg``, reduced to 1x1), then an adaptive average pool
  when the spatial sizes differ (it shrinks a larger map and repeats a smaller one);
* both 2-D ``(B, D)``: a linear layer;
* anything else (a 2-D student against a 4-D teacher, token features, ...): flatten, linear to the
  teacher's flattened size, reshape to the teacher's shape.

``pool_flatten(feat)`` turns any feature into a ``(B, D)`` embedding: 4-D maps are globally
average-pooled, everything else is flattened.
"""
from __future__ import annotations

import contextlib
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def pool_flatten(feat: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C) by global average pooling; any other (B, ...) -> (B, prod(...))."""
    if feat.dim() == 4:
        return F.adaptive_avg_pool2d(feat, 1).flatten(1)
    return feat.reshape(feat.shape[0], -1)


class Reshape(nn.Module):
    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


def make_adapter(student_shape: Sequence[int] | torch.Size, teacher_shape: Sequence[int] | torch.Size) -> nn.Module:
    """A trainable map from student features to the teacher's shape (batch dimension ignored)."""
    s, t = tuple(student_shape)[1:], tuple(teacher_shape)[1:]
    if s == t:
        return nn.Identity()
    if len(s) == 3 and len(t) == 3:
        layers: list[nn.Module] = []
        if s[0] != t[0]:
            layers += [nn.Conv2d(s[0], t[0], kernel_size=1, bias=False), nn.BatchNorm2d(t[0])]
        if s[1:] != t[1:]:
            layers.append(nn.AdaptiveAvgPool2d(t[1:]))
        return nn.Sequential(*layers)
    if len(s) == 1 and len(t) == 1:
        return nn.Linear(s[0], t[0])
    return nn.Sequential(nn.Flatten(1), nn.Linear(math.prod(s), math.prod(t)), Reshape(t))


def full_precision(device: torch.device):
    """A context that turns autocast off, for batch-relational maths (pairwise distances, Gram
    matrices) that bfloat16 would cancel away; call ``.float()`` on the inputs inside it."""
    if not torch.amp.is_autocast_available(device.type):
        return contextlib.nullcontext()  # no autocast exists there (the meta device), so nothing to turn off
    return torch.autocast(device_type=device.type, enabled=False)


def student_feature(inputs, path: str, who: str = "term") -> Tensor:
    """The student's tapped output at ``path``, with a clear error when the runner did not tap it."""
    feats = inputs.student_features
    if path not in feats:
        raise RuntimeError(f"{who} needs the student feature {path!r} but only {sorted(feats)} were tapped; "
                           f"list it in feature_paths()")
    return feats[path]


def teacher_feature(inputs, index: int, path: str, who: str = "term") -> Tensor:
    """Teacher ``index``'s tapped output at ``path``."""
    if index >= len(inputs.teacher_features):
        raise RuntimeError(f"{who} needs features of teacher {index} but {len(inputs.teacher_features)} "
                           f"teacher feature set(s) were given")
    feats = inputs.teacher_features[index]
    if path not in feats:
        raise RuntimeError(f"{who} needs the feature {path!r} of teacher {index} but only {sorted(feats)} were "
                           f"tapped; list it in feature_paths()")
    return feats[path]
