"""Pruning: remove whole channels (structured, through Torch-Pruning's dependency graph) or zero single
weights (unstructured, through ``torch.nn.utils.prune``).

Structured pruning is the one that pays on a CPU: Torch-Pruning traces the model once, groups every
layer coupled to a channel (the conv that makes it, its BatchNorm, the convs that read it, the other
branch of a residual sum) and removes the group's lowest-importance channels from all of them, so the
result is a smaller dense model with fewer parameters, FLOPs and milliseconds. The classifier's
outputs (the classes) and the model's input channels are never removed.

``amount`` is always the target relative to the *unpruned* model: a course with steps 0.3 -> 0.5 ->
0.7 removes 30% of the prunable channels, then enough of the rest to reach 50%, then 70%.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from curridistill.errors import UserError

IMPORTANCES = ("l1", "l2", "taylor", "random")
KINDS = ("channels", "unstructured")
SCOPES = ("layer", "global")
# global scope: no layer loses more than this fraction of its channels in one step (a layer at zero width
# would cut the network; Torch-Pruning's default of 1.0 allows it)
MAX_LAYER_RATIO = 0.9
_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _tp():
    try:
        import torch_pruning
    except ImportError:
        raise UserError("structured pruning needs the torch-pruning package: pip install 'curridistill[prune]'") from None
    return torch_pruning


def classifier_layers(model: nn.Module, num_classes: int) -> list[nn.Module]:
    """The last conv/linear layer producing ``num_classes`` outputs: its outputs are the classes, never pruned."""
    found = [m for m in model.modules() if isinstance(m, _LAYERS)
             and (getattr(m, "out_features", None) or getattr(m, "out_channels", None)) == num_classes]
    return found[-1:]


def prunable_width(model: nn.Module, num_classes: int) -> int:
    """Sum of output channels / units over conv and linear layers, the classifier excepted."""
    skip = {id(m) for m in classifier_layers(model, num_classes)}
    return sum(getattr(m, "out_features", None) or m.out_channels for m in model.modules()
               if isinstance(m, _LAYERS) and id(m) not in skip)


def channel_amount(model: nn.Module, reference: nn.Module, num_classes: int) -> float:
    """Fraction of the prunable channels of ``reference`` (the unpruned build) that ``model`` no longer has."""
    full = prunable_width(reference, num_classes)
    return 0.0 if full == 0 else 1.0 - prunable_width(model, num_classes) / full


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero weights in conv and linear layers."""
    weights = [m.weight for m in model.modules() if isinstance(m, _LAYERS)]
    total = sum(w.numel() for w in weights)
    return 0.0 if total == 0 else sum(int((w == 0).sum()) for w in weights) / total


def step_ratio(target: float, done: float) -> float:
    """Fraction of the *remaining* channels to remove so that ``target`` of the original ones are gone."""
    if target <= done + 1e-6:
        raise UserError(f"prune.amount {target} is not above the {done:.2f} already pruned; amounts are targets "
                        f"relative to the unpruned model, so give increasing amounts (e.g. 0.3, 0.5, 0.7)")
    return 1.0 - (1.0 - target) / (1.0 - done)


def _importance(name: str):
    tp = _tp()
    if name == "l1":
        return tp.importance.MagnitudeImportance(p=1)
    if name == "l2":
        return tp.importance.MagnitudeImportance(p=2)
    if name == "taylor":
        return tp.importance.TaylorImportance()
    if name == "random":
        return tp.importance.RandomImportance()
    raise UserError(f"prune.importance {name!r} is not one of {', '.join(IMPORTANCES)}")


def prune_channels(model: nn.Module, ratio: float, example: Tensor, num_classes: int, importance: str = "l1",
                   gradients: Callable[[nn.Module], None] | None = None, round_to: int | None = None,
                   scope: str = "layer") -> nn.Module:
    """Remove ``ratio`` of the prunable channels (in place); returns the same, smaller model.

    ``scope``: ``layer`` removes ``ratio`` of every layer's channels; ``global`` ranks the channels of all
    layers together (Torch-Pruning's global pruning: importances normalized per group) and removes the
    lowest ``ratio`` of them, so layers that matter less lose more. ``example``: one input batch (traced
    once to find the coupled layers). ``gradients(model)``: called before scoring when ``importance`` is
    ``taylor`` (it must run a backward pass on training data).
    """
    tp = _tp()
    if not 0.0 < ratio < 1.0:
        raise UserError(f"a pruning step must remove a fraction in (0, 1) of the channels, got {ratio:.3f}")
    if scope not in SCOPES:
        raise UserError(f"prune.scope {scope!r} is not one of {', '.join(SCOPES)}")
    was_training = model.training
    model.eval()  # tracing runs a forward: BatchNorm must not update its statistics
    imp = _importance(importance)
    try:
        pruner = tp.pruner.MetaPruner(model, example, importance=imp, pruning_ratio=ratio,
                                      global_pruning=scope == "global", max_pruning_ratio=MAX_LAYER_RATIO,
                                      ignored_layers=classifier_layers(model, num_classes), round_to=round_to)
    except Exception as exc:  # the tracer's errors come in many types
        raise UserError(f"Torch-Pruning cannot trace this model ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
                        f"use kind: unstructured or a zoo model") from None
    if importance == "taylor":
        if gradients is None:
            raise UserError("prune.importance taylor needs training batches for its gradients")
        model.zero_grad(set_to_none=True)
        gradients(model)
    pruner.step()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return model


def prune_unstructured(model: nn.Module, amount: float, num_classes: int) -> list:
    """Zero the ``amount`` smallest-magnitude weights over all conv/linear layers (global L1, in place).

    The zeros are made permanent (``prune.remove``: state_dict keys stay as they were) and returned hooks
    mask the gradients so that a recovery lesson keeps them at zero (with SGD or Adam, a zero weight
    with a zero gradient stays zero). Remove the hooks when the lesson ends.
    """
    from torch.nn.utils import prune

    if not 0.0 < amount < 1.0:
        raise UserError(f"prune.amount must be in (0, 1), got {amount}")
    skip = {id(m) for m in classifier_layers(model, num_classes)}
    layers = [(m, "weight") for m in model.modules() if isinstance(m, _LAYERS) and id(m) not in skip]
    if not layers:
        raise UserError("the model has no conv or linear layer to prune")
    prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=amount)
    for m, name in layers:
        prune.remove(m, name)
    return keep_zeros(model, skip)


def keep_zeros(model: nn.Module, skip: set[int] = frozenset()) -> list:
    """Gradient hooks that keep today's zero weights at zero (unstructured sparsity during training)."""
    handles = []
    for m in model.modules():
        if isinstance(m, _LAYERS) and id(m) not in skip and bool((m.weight == 0).any()):
            mask = (m.weight != 0).to(m.weight.dtype).detach()
            handles.append(m.weight.register_hook(lambda g, mask=mask: g * mask))
    return handles


def recalibrate_batchnorm(model: nn.Module, batches: Iterable[Tensor]) -> int:
    """Replace every BatchNorm's running mean and variance by the statistics of ``batches`` (in place).

    Removing channels changes what each BatchNorm sees, so the statistics it kept no longer fit and a
    just-pruned network can sit at chance although its weights are fine; re-estimating them on a few
    training batches (adaptive BN, Li et al. 2020, "EagleEye") restores much of it without a gradient
    step. Uses ``torch.optim.swa_utils.update_bn`` (the average of the per-batch statistics). Returns the
    number of BatchNorm layers updated (0: the model has none and is unchanged).
    """
    from torch.optim.swa_utils import update_bn

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if norms:
        with torch.no_grad():  # update_bn itself keeps autograd on
            update_bn(batches, model)
    return len(norms)


def prune(model: nn.Module, amount: float, example: Tensor, num_classes: int, kind: str = "channels",
          importance: str = "l1", reference: nn.Module | None = None,
          gradients: Callable[[nn.Module], None] | None = None, scope: str = "layer", round_to: int | None = None) -> dict:
    """Prune ``model`` in place to ``amount`` (a target relative to ``reference``, default: no earlier
    pruning). Returns what was done: kind, amount, the step's ratio and the hooks (unstructured).
    ``round_to`` (channels): each pruned layer keeps a multiple of this many channels (rounded down, so the
    step may remove more than ``amount``; ``achieved`` says how much)."""
    if kind == "channels":
        done = channel_amount(model, reference, num_classes) if reference is not None else 0.0
        ratio = step_ratio(amount, done)
        prune_channels(model, ratio, example, num_classes, importance, gradients, round_to=round_to, scope=scope)
        return {"kind": kind, "amount": amount, "step_ratio": ratio, "hooks": []}
    if kind == "unstructured":
        if importance not in ("l1",):
            raise UserError(f"unstructured pruning ranks single weights by magnitude (importance: l1), not {importance!r}")
        done = weight_sparsity(model)
        step_ratio(amount, done)  # the same check: increasing targets
        return {"kind": kind, "amount": amount, "step_ratio": amount, "hooks": prune_unstructured(model, amount, num_classes)}
    raise UserError(f"prune.kind {kind!r} is not one of {', '.join(KINDS)}")


def achieved(model: nn.Module, reference: nn.Module | None, num_classes: int, kind: str) -> float:
    """The pruned fraction as the kind counts it: channels removed, or weights zeroed."""
    if kind == "unstructured":
        return weight_sparsity(model)
    return channel_amount(model, reference, num_classes) if reference is not None else math.nan
