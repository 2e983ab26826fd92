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
from curridistill.evaluate.metrics import pair_metrics
from curridistill.io import write_json, write_text
from curridistill.train import distributed
from curridistill.train.course import CourseRunner, StopRequested  # noqa: F401  (re-exported for callers)
from curridistill.train.teacher_cache import cached_eval_logits


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
    """Seed, device and data for a config (and the process group under torchrun)."""
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    dist = distributed.init_from_env(cfg.run.device)
    device = resolve_device(cfg.run.device)
    if dist.active and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    torch.manual_seed(cfg.run.seed)
    splits = load_splits(cfg.data)
    if cfg.data.cv is not None and cfg.data.cv.fold is not None:  # one fold of a cross-validation
        from curridistill.experiments.cv import fold_splits

        splits = fold_splits(splits, cfg.data.cv)
    return Pipeline(splits, cfg.data, device), device


def run(cfg: Config | str | Path, out: str | Path | None = None, overrides: list[str] | None = None,
        progress=None, stop_after_epochs: int | None = None, on_record=None) -> dict:
    """Train teacher(s), baseline and student as the config says; write the run directory; return report.json.

    With ``run.seeds`` or ``data.cv`` the plan runs once per seed / fold into ``RUN_DIR/seed-<s>/`` or
    ``RUN_DIR/fold-<i>/`` and the result is ``aggregate.json`` (see ``curridistill.experiments``).
    ``on_record(record)`` is called after every epoch record of metrics.jsonl (it may raise to stop the run).
    """
    if not isinstance(cfg, Config):
        cfg = load_config(cfg, overrides)
    from curridistill.experiments import is_multi, run_multi

    if is_multi(cfg):
        return run_multi(cfg, out, progress=progress, stop_after_epochs=stop_after_epochs, on_record=on_record)
    distributed.init_from_env(cfg.run.device)
    run_dir, problem = None, None
    if distributed.info().is_main:  # rank 0 creates the directory; the others learn its name
        try:
            run_dir = new_run_dir(cfg, out)
            write_text(run_dir / "config.yaml", cfg.to_yaml())
        except UserError as exc:
            problem = str(exc)
    run_dir, problem = distributed.broadcast((run_dir, problem))
    if problem:
        raise UserError(problem)
    return _execute(cfg, Path(run_dir), progress, stop_after_epochs, on_record)


def resume(run_dir: str | Path, progress=None, stop_after_epochs: int | None = None, on_record=None) -> dict:
    """Continue a killed run from its last checkpoint; the result equals an uninterrupted run (CPU)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml); pass the directory `run` created")
    cfg = load_config(run_dir / "config.yaml")
    from curridistill.experiments import is_multi, resume_multi

    if is_multi(cfg):  # a multi-seed / cross-validation parent: finish every unfinished child
        return resume_multi(cfg, run_dir, progress=progress, stop_after_epochs=stop_after_epochs, on_record=on_record)
    return _execute(cfg, run_dir, progress, stop_after_epochs, on_record)


def _execute(cfg: Config, run_dir: Path, progress, stop_after_epochs: int | None, on_record=None) -> dict:
    pipeline, device = prepare(cfg)
    runner = CourseRunner(cfg, run_dir, pipeline, device, progress=progress, stop_after_epochs=stop_after_epochs,
                          on_record=on_record)
    teachers = runner.teachers()
    baseline = runner.baseline()
    links = runner.chain(teachers)
    if teachers:
        student, rounds = runner.rounds(links[-1:] or teachers, from_assistant=bool(links))
    else:  # no teacher: the course trains the student alone (e.g. a self-paced curriculum on labels)
        student, rounds = runner.train_phase("student", cfg.student, cfg.course, None, cfg.run.seed), []
    if not distributed.info().is_main:  # rank 0 evaluates and reports; the others are done
        distributed.barrier()
        return {"run_dir": str(run_dir), "rank": distributed.info().rank}
    report = build_report(cfg, pipeline, teachers, baseline, student, links, rounds)
    report["run_dir"] = str(run_dir)
    if distributed.info().active:
        report["distributed"] = {"world_size": distributed.info().world, "global_batch": cfg.data.batch_size}
    write_json(run_dir / "report.json", report)
    distributed.barrier()
    return report


def build_report(cfg: Config, pipeline: Pipeline, teachers, baseline, student, links=(), rounds=()) -> dict:
    ev, amp = cfg.run.eval, cfg.run.amp and pipeline.device.type == "cuda"
    report: dict = {"selection": "best_val" if cfg.run.selection == "best_val" else "last",
                    "selection_note": ("each model is the checkpoint with the best validation accuracy, evaluated once on test"
                                       if cfg.run.selection == "best_val" else "each model is its last-epoch checkpoint"),
                    "data": {"name": cfg.data.name, **pipeline.splits.info}, "classes": pipeline.splits.train.classes,
                    "seed": cfg.run.seed, "device": str(pipeline.device)}
    t_metrics, t_logits = [], []
    for i, t in enumerate(teachers):
        cached = (cached_eval_logits(t.model, pipeline, "test", cfg.run.cache_dir, amp=amp, who=f"teacher {i}")
                  if cfg.run.teacher_cache else None)  # a fixed teacher is evaluated once across seeds and methods
        m, logits = evaluate_model(t.model, pipeline, ev, t.train_seconds, amp=amp, logits=cached)
        m["reused_from"] = t.reused_from
        t_metrics.append(m)
        t_logits.append(logits)
    teacher_logits = t_logits[0] if t_logits else None
    if len(teachers) > 1:  # the student learned from the aggregate: compare it against that
        from curridistill.knowledge.aggregate import aggregate_teachers

        teacher_logits = aggregate_teachers(t_logits, pipeline.splits.test.y, cfg.run.teacher_aggregation,
                                            [tc.weight for tc in cfg.all_teachers()])
        report["teachers"] = t_metrics
    if t_metrics:
        report["teacher"] = t_metrics[0]
    if baseline is not None:
        b, b_logits = evaluate_model(baseline.model, pipeline, ev, baseline.train_seconds, amp=amp)
        report["baseline"] = add_pair_metrics(b, b_logits, teacher_logits)
        report["baseline"]["selected"] = baseline.selected_epoch
    previous = teacher_logits
    for link in links:  # TAKD: each assistant against the model it learned from
        a, a_logits = evaluate_model(link.model, pipeline, ev, link.train_seconds, amp=amp)
        a["name"], a["selected"] = link.name, link.selected_epoch
        report.setdefault("assistants", []).append(add_pair_metrics(a, a_logits, previous))
        previous = a_logits
    if len(rounds) > 1 or cfg.repeat is not None:
        report["rounds"] = list(rounds)
    s, s_logits = evaluate_model(student.model, pipeline, ev, student.train_seconds, amp=amp)
    report["student"] = add_pair_metrics(s, s_logits, teacher_logits)
    if links:
        report["student"]["vs_last_assistant"] = pair_metrics(s_logits, previous)
    report["student"]["selected"] = student.selected_epoch
    report["comparison"] = compare(report.get("teacher"), report.get("baseline"), report["student"])
    return report
