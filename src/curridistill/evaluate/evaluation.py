"""Evaluate teacher, baseline and student on the test split and compare them (report.json)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from torch import nn

from curridistill.config import EvalConfig
from curridistill.evaluate.efficiency import efficiency
from curridistill.evaluate.metrics import classification_metrics, pair_metrics, predict_logits
from curridistill.evaluate.stats import NOT_MODELS
from curridistill.io import explain_invalid, read_checked

MODEL_KEYS = ("accuracy", "top5", "f1_macro", "f1_weighted", "precision", "recall", "f1", "confusion", "loss",
              "params", "flops", "weights_bytes", "latency_ms", "throughput", "train_seconds")


def evaluate_model(model: nn.Module, pipeline, eval_cfg: EvalConfig, train_seconds: float | None,
                   split: str = "test", amp: bool = False, logits: torch.Tensor | None = None) -> tuple[dict, torch.Tensor]:
    """(metrics, logits) of ``model`` on ``split``: prediction quality and cost. ``logits``, when given, are
    the model's own outputs on ``split`` computed earlier (a fixed teacher's, from the cache)."""
    if logits is None:
        logits = predict_logits(model, pipeline, split, amp=amp)
    metrics = classification_metrics(logits, pipeline.split(split).y)
    metrics.update(efficiency(model, pipeline.splits.input_shape, eval_cfg.latency_runs,
                              eval_cfg.throughput_batch, eval_cfg.throughput_runs))
    metrics["train_seconds"] = train_seconds
    return metrics, logits


def compare(teacher: dict | None, baseline: dict | None, student: dict) -> dict:
    out: dict = {}
    if baseline is not None:
        out["student_minus_baseline_accuracy"] = student["accuracy"] - baseline["accuracy"]
        out["student_minus_baseline_f1_macro"] = student["f1_macro"] - baseline["f1_macro"]
    if teacher is not None:
        out["student_minus_teacher_accuracy"] = student["accuracy"] - teacher["accuracy"]
        out["teacher_student_param_ratio"] = teacher["params"] / max(student["params"], 1)
        out["teacher_student_flops_ratio"] = teacher["flops"] / max(student["flops"], 1)
        out["student_speedup_over_teacher"] = teacher["latency_ms"] / max(student["latency_ms"], 1e-9)
        out["student_throughput_ratio"] = student["throughput"] / max(teacher["throughput"], 1e-9)
    return out


def add_pair_metrics(metrics: dict, logits: torch.Tensor, teacher_logits: torch.Tensor | None) -> dict:
    if teacher_logits is not None:
        metrics.update(pair_metrics(logits, teacher_logits))
    return metrics


# ------------------------------------------------------------------------------------- reading report.json
def _selected(value: Any) -> Any:
    """``selected``: the chosen checkpoint ``{lesson, epoch, val_accuracy}``, an epoch number, or None."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, dict) and all(v is None or number(v) for v in value.values()):
        return value
    raise ValueError(f"expected the selected checkpoint {{lesson, epoch, val_accuracy}} or an epoch number, "
                     f"got {value!r}")


class ModelSection(BaseModel):
    """One model's metrics in report.json (teacher, baseline, student, an assistant): the fields that ``report``,
    ``compare``, the multi-seed aggregate and ``auto`` read, type-checked; other keys pass unchecked."""

    model_config = ConfigDict(extra="allow", strict=True)

    accuracy: float = Field(ge=0, le=1, allow_inf_nan=False)
    top5: float | None = None
    f1_macro: float | None = None
    f1_weighted: float | None = None
    loss: float | None = None
    params: int | None = Field(None, ge=0)
    flops: int | None = Field(None, ge=0)
    weights_bytes: int | None = Field(None, ge=0)
    latency_ms: float | None = None
    throughput: float | None = None
    train_seconds: float | None = None
    precision: list[float | None] | None = None
    recall: list[float | None] | None = None
    f1: list[float | None] | None = None
    confusion: list[list[int]] | None = None
    selected: Annotated[Any, AfterValidator(_selected)] = None
    reused_from: str | None = None
    name: str | None = None

    @field_validator("confusion")
    @classmethod
    def _square(cls, rows: list[list[int]] | None) -> list[list[int]] | None:
        if rows is not None and any(len(row) != len(rows) for row in rows):
            raise ValueError(f"the confusion matrix must be square (classes x classes); its rows have "
                             f"{[len(row) for row in rows]} entries for {len(rows)} rows")
        return rows


class DataSection(BaseModel):
    """report.json's ``data``: the data set and its split sizes."""

    model_config = ConfigDict(extra="allow", strict=True)

    name: str | None = None
    train: int | None = Field(None, ge=0)
    val: int | None = Field(None, ge=0)
    test: int | None = Field(None, ge=0)


class RunReport(BaseModel):
    """report.json as its readers use it (``build_report`` writes it): a student section, optional teacher, baseline,
    assistants and other model sections (any key holding a mapping with an ``accuracy``), the data, the classes and
    the comparison, type-checked; other keys pass unchecked."""

    model_config = ConfigDict(extra="allow", strict=True)

    student: ModelSection
    teacher: ModelSection | None = None
    baseline: ModelSection | None = None
    teachers: list[ModelSection] | None = None
    assistants: list[ModelSection] | None = None
    data: DataSection | None = None
    classes: list[Any] | None = None  # names, shown as text
    comparison: dict[str, float | None] | None = None
    selection: str | None = None
    selection_note: str | None = None
    seed: int | None = None
    device: str | None = None

    @model_validator(mode="after")
    def _other_models(self) -> "RunReport":
        for key, value in (self.model_extra or {}).items():
            if key in NOT_MODELS or not isinstance(value, dict) or "accuracy" not in value:
                continue
            try:
                ModelSection.model_validate(value)
            except ValidationError as exc:
                raise ValueError(explain_invalid(exc, (key,))) from None
        return self


def read_report(path: str | Path, fix: str) -> dict:
    """A run's report.json, checked (``RunReport``) before anything is read from it; one line naming the file, the
    key and ``fix`` otherwise."""
    return read_checked(path, RunReport, "a run's report", fix)
