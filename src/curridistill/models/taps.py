"""Feature taps: forward hooks on modules named by dotted path, installed and removed by the runner."""
from __future__ import annotations

from contextlib import AbstractContextManager

from torch import Tensor, nn

from curridistill.errors import UserError
from curridistill.suggest import suggest


def find_module(model: nn.Module, path: str, who: str = "model") -> nn.Module:
    modules = dict(model.named_modules())
    if path not in modules:
        hint = suggest(path, [n for n in modules if n], n=3, cutoff=0.4,
                       fallback="list them with model.named_modules()")
        raise UserError(f"{who} has no module {path!r} to tap; {hint}")
    return modules[path]


class FeatureTaps(AbstractContextManager):
    """Records the outputs of the named modules on every forward while active.

    >>> with FeatureTaps(model, ["stage2"]) as taps:
    ...     logits = model(x)
    ...     f = taps.features["stage2"]
    """

    def __init__(self, model: nn.Module, paths: list[str], who: str = "model"):
        self.features: dict[str, Tensor] = {}
        self._handles = []
        for path in dict.fromkeys(paths):  # unique, ordered
            module = find_module(model, path, who)
            self._handles.append(module.register_forward_hook(self._recorder(path)))

    def _recorder(self, path: str):
        def hook(_module: nn.Module, _inputs, output) -> None:
            self.features[path] = output[0] if isinstance(output, (tuple, list)) else output

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __exit__(self, *exc) -> None:
        self.remove()
