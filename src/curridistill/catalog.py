"""What is registered, as rows for `curridistill list ...`."""
from __future__ import annotations

import inspect

from curridistill.curriculum.pacing import PACING_HELP
from curridistill.curriculum.scorers import SCORERS
from curridistill.data import DATASETS
from curridistill.errors import UserError
from curridistill.evaluate.efficiency import count_params, flops_per_sample
from curridistill.knowledge import load_all
from curridistill.models import MODELS, build_model
from curridistill.schedules import SCHEDULE_HELP


def listing(what: str, input_size: str = "3,32,32", num_classes: int = 10) -> list[dict]:
    if what == "models":
        return _models(input_size, num_classes)
    if what == "datasets":
        return [{"name": n, "options (data.options)": options(fn, skip=("root",)), "help": summary(fn)}
                for n, fn in DATASETS.items()]
    if what == "knowledge":
        rows = []
        for name, cls in load_all().items():
            params = ", ".join(f"{k}={v.get_default(call_default_factory=True)!r}" for k, v in cls.Params.model_fields.items())
            rows.append({"name": name, "weight": cls.default_weight,
                         "temperature": cls.default_temperature if cls.uses_temperature else "-",
                         "options": params or "-", "summary": cls.summary, "paper": cls.paper})
        return rows
    if what == "schedules":
        return [{"name": n, "formula": h} for n, h in sorted(SCHEDULE_HELP.items())]
    if what == "pacings":
        return [{"name": n, "help": h} for n, h in sorted(PACING_HELP.items())]
    if what == "scorers":
        return [{"name": n, "help": getattr(s, "help", "")} for n, s in SCORERS.items()]
    raise UserError(f"nothing to list for {what!r}")


def options(fn, skip: tuple[str, ...] = ()) -> str:
    """``name=default`` of every keyword ``fn`` takes (a loader's data.options, a factory's model.kwargs)."""
    params = [p for p in inspect.signature(fn).parameters.values()
              if p.name not in skip and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return ", ".join(p.name if p.default is p.empty else f"{p.name}={_default(p.default)}" for p in params) or "-"


def _default(value) -> str:
    return "[" + ", ".join(map(str, value)) + "]" if isinstance(value, tuple) else str(value)


def summary(fn) -> str:
    """The first paragraph of ``fn``'s docstring (else its module's) as one line, ``code`` marks kept as `code`."""
    doc = inspect.getdoc(fn) or inspect.getdoc(inspect.getmodule(fn)) or ""
    return " ".join(doc.split("\n\n")[0].split()).replace("``", "`")


def _models(input_size: str, num_classes: int) -> list[dict]:
    import torch

    if num_classes < 1:
        raise UserError(f"--num-classes {num_classes}: give a number of classes >= 1")
    try:
        shape = tuple(int(v) for v in input_size.split(","))
    except ValueError:
        raise UserError(f"--input-size {input_size!r}: expected C,H,W such as 3,32,32") from None
    if not shape or len(shape) > 3 or min(shape) < 1:
        raise UserError(f"--input-size {input_size!r}: expected C,H,W such as 3,32,32 (or D for feature vectors)")
    rows = []
    for name, factory in MODELS.items():
        kwargs = {}
        if name == "mlp":  # its input width is a kwarg: the listed size decides it
            kwargs = {"in_features": shape[0]} if len(shape) == 1 else {"image_size": list(shape[-2:])}
        try:
            model = build_model(name, num_classes, shape[0] if len(shape) == 3 else 1, kwargs)
            flops = f"{flops_per_sample(model, shape) / 1e6:.2f}"
            params = f"{count_params(model) / 1e6:.3f}"
        except (RuntimeError, UserError, ValueError, TypeError, IndexError, torch.cuda.OutOfMemoryError):
            params, flops = "-", "n/a at this input size"
        rows.append({"name": name, "params (M)": params, f"MFLOPs @ {input_size}": flops,
                     "kwargs (model.kwargs)": options(factory, skip=("num_classes", "in_channels"))})
    return rows
