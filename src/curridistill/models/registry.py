"""Model registry: config name -> factory(num_classes, in_channels, **kwargs) -> nn.Module.

Zoo models expose their stages as top-level attributes (``stage1``, ``stage2``, ...) so feature taps
can name them by dotted path. A user model is ``"package.module:factory"``, called the same way.
"""
from __future__ import annotations

import copy
import importlib
import inspect
import weakref
from typing import Any, Callable

from torch import nn

from curridistill.errors import UserError
from curridistill.registry import Registry

ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")


def import_factory(ref: str) -> ModelFactory:
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"cannot import model module {module_name!r} from {ref!r} ({exc}); check it is on PYTHONPATH") from None
    if not hasattr(module, attr):
        raise UserError(f"module {module_name!r} has no factory {attr!r}; use 'package.module:function'")
    return getattr(module, attr)


def with_defaults(name: str, kwargs: dict[str, Any] | None, defaults: dict[str, Any] | None,
                  where: str = "model") -> dict[str, Any]:
    """``kwargs`` plus those ``defaults`` the factory accepts (e.g. a text dataset's ``vocab_size``, ``pad_id``)."""
    kwargs = dict(kwargs or {})
    if not defaults:
        return kwargs
    factory = import_factory(name) if ":" in name else MODELS.get(name, where=f"{where}.name")
    accepted = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    for key, value in defaults.items():
        if key in accepted or takes_any:
            kwargs.setdefault(key, value)
    return kwargs


def build_model(name: str, num_classes: int, in_channels: int = 3, kwargs: dict[str, Any] | None = None,
                where: str = "model") -> nn.Module:
    factory = import_factory(name) if ":" in name else MODELS.get(name, where=f"{where}.name")
    kwargs = dict(kwargs or {})
    accepted = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if key in accepted or takes_any:
            kwargs.setdefault(key, value)
    try:
        model = factory(**kwargs)
    except TypeError as exc:
        raise UserError(f"{where}: cannot build {name!r} with kwargs {sorted(kwargs)} ({exc}); fix {where}.kwargs") from None
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        raise UserError(f"{where}: model {name!r} with kwargs {kwargs} does not fit in memory while it is built; "
                        f"pick a smaller model or lower its width/depth kwargs") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"{where}: factory {name!r} returned {type(model).__name__}, not a torch.nn.Module")
    if model in _BUILT:  # a factory that hands out one shared object: give each caller its own, freshly initialized
        model = copy.deepcopy(model)
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    _BUILT.add(model)
    return model


_BUILT: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()  # every model build_model returned (so far alive)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a CPU or CUDA allocation failure (torch raises RuntimeError subclasses or MemoryError)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                              or "cannot allocate memory" in text)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
