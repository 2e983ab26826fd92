"""The shape of a model's layers, so a pruned model can be rebuilt from its name, kwargs and a small table.

Structured pruning removes channels: a zoo model rebuilt from its spec has the original widths and its
pruned weights would not fit. ``structure_of`` lists the width attributes of every conv / linear /
norm layer by dotted path; ``apply_structure`` sets them on a freshly built model and resizes its
parameters and buffers (to uninitialized tensors: the weights are loaded next). No code is executed
from data: the table holds integers only.
"""
from __future__ import annotations

import torch
from pydantic import PositiveInt
from torch import nn

from curridistill.errors import UserError

# a pruned model's table as files hold it: {dotted path: {width attribute: width, or a LayerNorm's shape}}
LayerWidths = dict[str, dict[str, PositiveInt | list[PositiveInt]]]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _attrs(module: nn.Module) -> dict | None:
    if isinstance(module, _CONV):
        return {"in_channels": module.in_channels, "out_channels": module.out_channels, "groups": module.groups}
    if isinstance(module, nn.Linear):
        return {"in_features": module.in_features, "out_features": module.out_features}
    if isinstance(module, _BN):
        return {"num_features": module.num_features}
    if isinstance(module, nn.LayerNorm):
        return {"normalized_shape": list(module.normalized_shape)}
    if isinstance(module, nn.GroupNorm):
        return {"num_channels": module.num_channels, "num_groups": module.num_groups}
    return None


def structure_of(model: nn.Module) -> dict[str, dict]:
    """``{dotted path: {width attribute: value}}`` for every conv, linear and norm layer."""
    return {path: a for path, m in model.named_modules() if (a := _attrs(m)) is not None}


def structure_diff(model: nn.Module, reference: nn.Module) -> dict[str, dict]:
    """The entries of ``structure_of(model)`` that differ from ``reference`` (the unpruned build)."""
    ref = structure_of(reference)
    return {path: a for path, a in structure_of(model).items() if ref.get(path) != a}


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """Expected shapes of the module's own parameters and buffers under its (new) attributes."""
    if isinstance(module, _CONV):
        k = tuple(module.kernel_size)
        return {"weight": (module.out_channels, module.in_channels // module.groups, *k), "bias": (module.out_channels,)}
    if isinstance(module, nn.Linear):
        return {"weight": (module.out_features, module.in_features), "bias": (module.out_features,)}
    if isinstance(module, _BN):
        n = (module.num_features,)
        return {"weight": n, "bias": n, "running_mean": n, "running_var": n}
    if isinstance(module, nn.LayerNorm):
        return {"weight": tuple(module.normalized_shape), "bias": tuple(module.normalized_shape)}
    if isinstance(module, nn.GroupNorm):
        return {"weight": (module.num_channels,), "bias": (module.num_channels,)}
    return {}


def apply_structure(model: nn.Module, structure: dict[str, dict] | None, where: str = "checkpoint") -> nn.Module:
    """Give the layers named in ``structure`` those widths (in place); parameters become uninitialized."""
    if not structure:
        return model
    modules = dict(model.named_modules())
    for path, attrs in structure.items():
        module = modules.get(path)
        if module is None or _attrs(module) is None or set(attrs) != set(_attrs(module)):
            raise UserError(f"{where}: its layer table names {path!r}, which this model does not have as a conv, "
                            f"linear or norm layer; the checkpoint belongs to another model")
        for key, value in attrs.items():
            setattr(module, key, tuple(value) if key == "normalized_shape" else int(value))
        for name, shape in _shapes(module).items():
            old = getattr(module, name, None)
            if old is None or tuple(old.shape) == shape:
                continue
            new = torch.empty(shape, dtype=old.dtype, device=old.device)
            if isinstance(old, nn.Parameter):
                setattr(module, name, nn.Parameter(new, requires_grad=old.requires_grad))
            else:
                module.register_buffer(name, new)
    return model
