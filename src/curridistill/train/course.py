"""A run: teacher(s) -> baseline student -> distilled student, each a phase of lessons.

Phases write into ``RUN_DIR/<phase>/``: ``last-E.safetensors`` + ``state.pt`` after every epoch (the
state names the weights file, so a kill between the two writes leaves a consistent older pair),
``best.safetensors`` for the best validation epoch, and on completion ``model.safetensors`` +
``model.json`` (the selected checkpoint) and ``done.json``. ``resume`` skips finished phases and
continues the open one from its last epoch.
"""
from __future__ import annotations

import copy
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from curridistill.config import Config, LessonConfig, ModelConfig, TeacherConfig, TermConfig
from curridistill.data.pipeline import Pipeline, data_fingerprint
from curridistill.errors import UserError
from curridistill.io import load_state, read_json, save_state, save_tensors, write_json, write_text
from curridistill.models import build_model
from curridistill.models.checkpoint import load_model, load_weights, read_spec, save_model
from curridistill.schedules import ScheduleSpec
from curridistill.train.lesson import LessonContext, LessonRun
from curridistill.train.metrics_log import MetricsLog
from curridistill.train.teachers import TeacherBank


class StopRequested(Exception):
    """Raised by ``stop_after_epochs`` to simulate a killed run (tests, time-boxed jobs)."""


@dataclass
class PhaseResult:
    name: str
    model: nn.Module
    train_seconds: float | None
    selected_epoch: dict | None
    reused_from: str | None = None


def ce_only(course: list[LessonConfig]) -> list[LessonConfig]:
    """The same lesson plan (epochs, optimizer, LR) with the hard-label loss only and no curriculum."""
    ce = {"ce": TermConfig(kind="ce", weight=ScheduleSpec(value=1.0), params={"label_smoothing": 0.0})}
    return [lesson.model_copy(update={"loss": ce, "curriculum": None}) for lesson in course]


class CourseRunner:
    def __init__(self, cfg: Config, run_dir: Path, pipeline: Pipeline, device: torch.device,
                 progress=None, stop_after_epochs: int | None = None):
        self.cfg, self.run_dir, self.pipeline, self.device = cfg, Path(run_dir), pipeline, device
        self.progress = progress
        self.log = MetricsLog(self.run_dir / "metrics.jsonl")
        self.stop_after_epochs = stop_after_epochs
        self.epochs_this_call = 0
        self.amp = cfg.run.amp and device.type == "cuda"

    # ----------------------------------------------------------------- model building
    def model_spec(self, mc: ModelConfig) -> dict:
        s = self.pipeline.splits
        return {"name": mc.name, "kwargs": mc.kwargs, "num_classes": s.num_classes,
                "in_channels": s.input_shape[0] if len(s.input_shape) == 3 else 1,
                "input_shape": list(s.input_shape), "classes": s.train.classes,
                "mean": list(s.mean), "std": list(s.std), "normalize": self.cfg.data.normalize,
                "data": self.cfg.data.model_dump(mode="json")}

    def build(self, mc: ModelConfig, seed: int, where: str) -> nn.Module:
        spec = self.model_spec(mc)
        torch.manual_seed(seed)
        model = build_model(mc.name, spec["num_classes"], spec["in_channels"], mc.kwargs, where=where)
        self._check_output(model, where)
        return model.to(self.device)

    def _check_output(self, model: nn.Module, where: str) -> None:
        x = torch.zeros((2, *self.pipeline.splits.input_shape))
        model.eval()
        try:
            with torch.no_grad():
                out = model(x)
        except RuntimeError as exc:
            raise UserError(f"{where}: the model cannot take inputs of shape {tuple(x.shape[1:])} "
                            f"({str(exc).splitlines()[0]}); pick a model for this data or adjust its kwargs") from None
        if out.dim() != 2 or out.shape[1] != self.pipeline.splits.num_classes:
            raise UserError(f"{where}: the model outputs shape {tuple(out.shape)} but the data has "
                            f"{self.pipeline.splits.num_classes} classes; set num_classes to match")
        model.train()

    # ----------------------------------------------------------------- phases
    def teachers(self) -> list[PhaseResult]:
        results = []
        teachers = self.cfg.all_teachers()
        for i, tc in enumerate(teachers):
            name = "teacher" if len(teachers) == 1 else f"teacher{i}"
            results.append(self.teacher(name, tc, i))
        return results

    def teacher(self, name: str, tc: TeacherConfig, index: int) -> PhaseResult:
        where = "teacher" if self.cfg.teacher is not None else f"teachers.{index}"
        if tc.checkpoint:
            return PhaseResult(name, self.load_teacher(tc, where), None, None, reused_from=tc.checkpoint)
        course = tc.course or ce_only(self.cfg.course)
        key = self.teacher_key(tc, course, index)
        cached = Path(self.cfg.run.cache_dir) / "teachers" / key / "model.safetensors"
        phase_dir = self.run_dir / name
        if tc.reuse and cached.is_file() and not (phase_dir / "done.json").is_file():
            model = self.load_teacher(tc.model_copy(update={"checkpoint": str(cached)}), where)
            info = read_json(cached.with_name("done.json")) if cached.with_name("done.json").is_file() else {}
            self.finish_phase(name, model, self.model_spec(tc), info.get("train_seconds"), info.get("selected"),
                              reused_from=str(cached.parent))
            return PhaseResult(name, model, info.get("train_seconds"), info.get("selected"), reused_from=str(cached.parent))
        result = self.train_phase(name, tc, course, teachers=None, seed=self.cfg.run.teacher_seed + index)
        if tc.reuse and not cached.is_file():
            cached.parent.mkdir(parents=True, exist_ok=True)
            for f in ("model.safetensors", "model.json", "done.json"):
                shutil.copyfile(phase_dir / f, cached.parent / f".{f}.tmp")
                (cached.parent / f".{f}.tmp").replace(cached.parent / f)
        return result

    def teacher_key(self, tc: TeacherConfig, course: list[LessonConfig], index: int) -> str:
        desc = {"model": tc.name, "kwargs": tc.kwargs, "course": [c.model_dump(mode="json") for c in course],
                "data": data_fingerprint(self.pipeline.splits, self.cfg.data),
                "augment": self.pipeline.augment_key(), "batch_size": self.cfg.data.batch_size, "seed": self.cfg.run.teacher_seed + index}
        return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:20]

    def load_teacher(self, tc: TeacherConfig, where: str) -> nn.Module:
        path = Path(tc.checkpoint)
        if not path.with_suffix(".json").is_file():  # bare weights: build from the config's model section
            model = self.build(tc, self.cfg.run.seed, where)
            return load_weights(model, path, where=f"{where}.checkpoint").eval()
        spec = read_spec(path)
        if spec["num_classes"] != self.pipeline.splits.num_classes:
            raise UserError(f"{where}.checkpoint {path} predicts {spec['num_classes']} classes but data "
                            f"{self.cfg.data.name!r} has {self.pipeline.splits.num_classes}; use a teacher trained on this data")
        model, spec = load_model(path, self.device)
        self._check_output(model, f"{where}.checkpoint")
        return model.eval()

    def train_phase(self, name: str, mc: ModelConfig, course: list[LessonConfig], teachers: TeacherBank | None,
                    seed: int, init_from: dict | None = None) -> PhaseResult:
        phase_dir = self.run_dir / name
        model = self.build(mc, seed, where=name if name != "baseline" else "student")
        if init_from is not None:
            model.load_state_dict(init_from)
        if (phase_dir / "done.json").is_file():
            done = read_json(phase_dir / "done.json")
            load_weights(model, phase_dir / "model.safetensors", where=name)
            return PhaseResult(name, model.eval(), done.get("train_seconds"), done.get("selected"), done.get("reused_from"))
        state = load_state(phase_dir / "state.pt") if (phase_dir / "state.pt").is_file() else None
        start = int(state["lesson"]) if state else 0
        if state:
            load_weights(model, phase_dir / state["weights"], where=f"{name} checkpoint")
            self.log.truncate(name, start, int(state["lesson_state"]["epoch"]))
        else:
            self.log.truncate(name, 0, 0)
        phase = {"best_value": state["best_value"] if state else -float("inf"),
                 "best": state.get("best") if state else None,
                 "seconds": float(state["seconds"]) if state else 0.0}
        carried = None
        for li in range(start, len(course)):
            if self.progress:
                self.progress.phase(f"{name} L{li}")
            ctx = LessonContext(phase=name, lesson_index=li, pipeline=self.pipeline, device=self.device,
                                seed=seed, teachers=teachers, amp=self.amp, log=self.log.append,
                                progress=self.progress, optimizer_state=carried)
            run = LessonRun(model, course[li], ctx)
            if state and li == start:
                run.load_state_dict(state["lesson_state"], None)
            t_lesson = time.perf_counter()
            ctx.on_epoch_end = lambda r, li=li, t0=t_lesson: self.checkpoint(name, li, r, phase, t0)
            run.run()
            phase["seconds"] += time.perf_counter() - t_lesson
            carried = run.carried_optimizer_state()
        if teachers is not None:
            teachers.set_paths([[] for _ in range(len(teachers))])
        if self.cfg.run.selection == "best_val" and (phase_dir / "best.safetensors").is_file():
            load_weights(model, phase_dir / "best.safetensors", where=f"{name} best checkpoint")
        self.finish_phase(name, model, self.model_spec(mc), phase["seconds"], phase["best"])
        return PhaseResult(name, model.eval(), phase["seconds"], phase["best"])

    def checkpoint(self, name: str, lesson: int, run: LessonRun, phase: dict, t0: float) -> None:
        phase_dir = self.run_dir / name
        improved = run.best.epoch == run.epoch - 1 and run.best.value > phase["best_value"]
        if improved:
            phase["best_value"] = run.best.value
            phase["best"] = {"lesson": lesson, "epoch": run.best.epoch, "val_accuracy": run.best.value}
            save_tensors(phase_dir / "best.safetensors", run.best.state)
        tag = f"last-{lesson}-{run.epoch}.safetensors"
        save_tensors(phase_dir / tag, run.model.state_dict())
        elapsed = phase["seconds"] + (time.perf_counter() - t0)
        save_state(phase_dir / "state.pt", {
            "lesson": lesson, "weights": tag, "lesson_state": run.state_dict(),
            "best_value": phase["best_value"], "best": phase["best"], "seconds": elapsed,
        })
        for old in phase_dir.glob("last-*.safetensors"):
            if old.name != tag:
                old.unlink(missing_ok=True)
        self.epochs_this_call += 1
        if self.stop_after_epochs is not None and self.epochs_this_call >= self.stop_after_epochs:
            raise StopRequested(f"stopped after {self.epochs_this_call} epochs as requested")

    def finish_phase(self, name: str, model: nn.Module, spec: dict, seconds: float | None, selected: dict | None,
                     reused_from: str | None = None) -> None:
        phase_dir = self.run_dir / name
        save_model(phase_dir / "model.safetensors", model, spec)
        write_json(phase_dir / "done.json", {"train_seconds": seconds, "selected": selected,
                                             "selection": self.cfg.run.selection, "reused_from": reused_from})
        (phase_dir / "state.pt").unlink(missing_ok=True)
        for old in phase_dir.glob("last-*.safetensors"):
            old.unlink(missing_ok=True)

    def baseline(self) -> PhaseResult | None:
        if not self.cfg.baseline.enabled:
            return None
        return self.train_phase("baseline", self.cfg.student, ce_only(self.cfg.course), teachers=None, seed=self.cfg.run.seed)

    def student(self, teachers: list[PhaseResult]) -> PhaseResult:
        weights = [tc.weight for tc in self.cfg.all_teachers()]
        bank = TeacherBank([t.model for t in teachers], weights, self.cfg.run.teacher_aggregation, amp=self.amp)
        try:
            return self.train_phase("student", self.cfg.student, self.cfg.course, teachers=bank, seed=self.cfg.run.seed)
        finally:
            bank.close()
