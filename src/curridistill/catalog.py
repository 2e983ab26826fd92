"""What is registered, as rows for `curridistill list ...`."""
from __future__ import annotations

from curridistill.errors import UserError


def listing(what: str, input_size: str = "3,32,32", num_classes: int = 10) -> list[dict]:
    if what == "models":
        return _models(input_size, num_classes)
    if what == "datasets":
        from curridistill.data import DATASETS

        return [{"name": n, "help": (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""} for n, fn in DATASETS.items()]
    if what == "knowledge":
        from curridistill.knowledge import load_all

        rows = []
        for name, cls in load_all().items():
            params = ", ".join(f"{k}={v.get_default(call_default_factory=True)!r}" for k, v in cls.Params.model_fields.items())
            rows.append({"name": name, "weight": cls.default_weight,
                         "temperature": cls.default_temperature if cls.uses_temperature else "-",
                         "options": params or "-", "summary": cls.summary, "paper": cls.paper})
        return rows
    if what == "schedules":
        from curridistill.schedules import SCHEDULE_HELP

        return [{"name": n, "formula": h} for n, h in sorted(SCHEDULE_HELP.items())]
    if what == "pacings":
        from curridistill.curriculum.pacing import PACING_HELP

        return [{"name": n, "help": h} for n, h in sorted(PACING_HELP.items())]
    if what == "scorers":
        from curridistill.curriculum.scorers import SCORERS

        return [{"name": n, "help": getattr(s, "help", "")} for n, s in SCORERS.items()]
    raise UserError(f"nothing to list for {what!r}")


def _models(input_size: str, num_classes: int) -> list[dict]:
    import torch

    from curridistill.evaluate.efficiency import count_params, flops_per_sample
    from curridistill.models import MODELS, build_model

    try:
        shape = tuple(int(v) for v in input_size.split(","))
    except ValueError:
        raise UserError(f"--input-size {input_size!r}: expected C,H,W such as 3,32,32") from None
    rows = []
    for name, _ in MODELS.items():
        try:
            model = build_model(name, num_classes, shape[0], {"image_size": shape[-1]} if name == "mlp" else {})
            flops = f"{flops_per_sample(model, shape) / 1e6:.2f}"
            params = f"{count_params(model) / 1e6:.3f}"
        except (RuntimeError, UserError, ValueError, torch.cuda.OutOfMemoryError):
            params, flops = "-", "n/a at this input size"
        rows.append({"name": name, "params (M)": params, f"MFLOPs @ {input_size}": flops})
    return rows
