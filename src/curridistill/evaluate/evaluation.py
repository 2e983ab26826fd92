"""Evaluate teacher, baseline and student on the test split and compare them (report.json)."""
from __future__ import annotations

import torch
from torch import nn

from curridistill.config import EvalConfig
from curridistill.evaluate.efficiency import efficiency
from curridistill.evaluate.metrics import classification_metrics, pair_metrics, predict_logits

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
