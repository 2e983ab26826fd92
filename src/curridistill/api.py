"""The Python API. The CLI is a thin layer over these functions.

>>> from curridistill import load_config, run
>>> cfg = load_config("configs/quickstart.yaml", ["course.0.epochs=5"])
>>> report = run(cfg, out="runs/try")
>>> report["student"]["accuracy"], report["comparison"]["student_minus_baseline_accuracy"]
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from curridistill.config import Config, load_config
from curridistill.data.pipeline import Pipeline, load_splits
from curridistill.errors import UserError
from curridistill.evaluate.evaluation import add_pair_metrics, compare, evaluate_model
from curridistill.io import write_json, write_text
from curridistill.train.course import CourseRunner, StopRequested  # noqa: F401  (re-exported for callers)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"run.device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"run.device {name!r} but CUDA is not available here; use run.device=auto or cpu")
    return device


def new_run_dir(cfg: Config, out: str | Path | None) -> Path:
    if out is not None:
        run_dir = Path(out)
    else:
        run_dir = Path(cfg.run.out) / f"{cfg.run.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (run_dir / "config.yaml").exists():
        raise UserError(f"{run_dir} already holds a run; continue it with `curridistill run --resume {run_dir}` "
                        f"or choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def prepare(cfg: Config) -> tuple[Pipeline, torch.device]:
    """Seed, device and data for a config."""
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = resolve_device(cfg.run.device)
    torch.manual_seed(cfg.run.seed)
    splits = load_splits(cfg.data)
    return Pipeline(splits, cfg.data, device), device


def run(cfg: Config | str | Path, out: str | Path | None = None, overrides: list[str] | None = None,
        progress=None, stop_after_epochs: int | None = None) -> dict:
    """Train teacher(s), baseline and student as the config says; write the run directory; return report.json."""
    if not isinstance(cfg, Config):
        cfg = load_config(cfg, overrides)
    run_dir = new_run_dir(cfg, out)
    write_text(run_dir / "config.yaml", cfg.to_yaml())
    return _execute(cfg, run_dir, progress, stop_after_epochs)


def resume(run_dir: str | Path, progress=None, stop_after_epochs: int | None = None) -> dict:
    """Continue a killed run from its last checkpoint; the result equals an uninterrupted run (CPU)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml); pass the directory `run` created")
    cfg = load_config(run_dir / "config.yaml")
    return _execute(cfg, run_dir, progress, stop_after_epochs)


def _execute(cfg: Config, run_dir: Path, progress, stop_after_epochs: int | None) -> dict:
    pipeline, device = prepare(cfg)
    runner = CourseRunner(cfg, run_dir, pipeline, device, progress=progress, stop_after_epochs=stop_after_epochs)
    teachers = runner.teachers()
    baseline = runner.baseline()
    student = runner.student(teachers) if teachers else runner.train_phase("student", cfg.student, cfg.course, None, cfg.run.seed)
    report = build_report(cfg, pipeline, teachers, baseline, student)
    report["run_dir"] = str(run_dir)
    write_json(run_dir / "report.json", report)
    return report


def build_report(cfg: Config, pipeline: Pipeline, teachers, baseline, student) -> dict:
    ev, amp = cfg.run.eval, cfg.run.amp and pipeline.device.type == "cuda"
    report: dict = {"selection": "best_val" if cfg.run.selection == "best_val" else "last",
                    "selection_note": ("each model is the checkpoint with the best validation accuracy, evaluated once on test"
                                       if cfg.run.selection == "best_val" else "each model is its last-epoch checkpoint"),
                    "data": {"name": cfg.data.name, **pipeline.splits.info}, "classes": pipeline.splits.train.classes,
                    "seed": cfg.run.seed, "device": str(pipeline.device)}
    teacher_logits = None
    t_metrics = []
    for t in teachers:
        m, logits = evaluate_model(t.model, pipeline, ev, t.train_seconds, amp=amp)
        m["reused_from"] = t.reused_from
        t_metrics.append(m)
        teacher_logits = logits if teacher_logits is None else teacher_logits
    if len(teachers) > 1:
        bank_logits = [evaluate_model(t.model, pipeline, ev, None, amp=amp)[1] for t in teachers]
        from curridistill.knowledge.aggregate import aggregate_teachers

        teacher_logits = aggregate_teachers(bank_logits, pipeline.splits.test.y, cfg.run.teacher_aggregation,
                                            [tc.weight for tc in cfg.all_teachers()])
        report["teachers"] = t_metrics
    if t_metrics:
        report["teacher"] = t_metrics[0]
    if baseline is not None:
        b, b_logits = evaluate_model(baseline.model, pipeline, ev, baseline.train_seconds, amp=amp)
        report["baseline"] = add_pair_metrics(b, b_logits, teacher_logits)
        report["baseline"]["selected"] = baseline.selected_epoch
    s, s_logits = evaluate_model(student.model, pipeline, ev, student.train_seconds, amp=amp)
    report["student"] = add_pair_metrics(s, s_logits, teacher_logits)
    report["student"]["selected"] = student.selected_epoch
    report["comparison"] = compare(report.get("teacher"), report.get("baseline"), report["student"])
    return report
