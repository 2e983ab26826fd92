"""A run: teacher(s) -> baseline student -> distilled student, each a phase of lessons.

Phases write into ``RUN_DIR/<phase>/``: ``last-E.safetensors`` + ``state.pt`` after every epoch (the
state names the weights file, so a kill between the two writes leaves a consistent older pair),
``best.safetensors`` for the best validation epoch, and on completion ``model.safetensors`` +
``model.json`` (the selected checkpoint) and ``done.json``. ``resume`` skips finished phases and
continues the open one from its last epoch.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
import torch
from torch import nn

from curridistill.config import Config, LessonConfig, ModelConfig, TeacherConfig, ce_only
from curridistill.data.pipeline import Pipeline, data_fingerprint
from curridistill.errors import UserError
from curridistill.io import clean_orphans, copy_atomic, load_tensors, save_state, save_tensors, write_json
from curridistill.locks import entry_lock
from curridistill.models import build_model
from curridistill.models.registry import is_out_of_memory, with_defaults
from curridistill.models.transfer import TransferPlan, init_model
from curridistill.models.structure import apply_structure
from curridistill.models.checkpoint import (check_finite, load_model, load_weights, match_input_normalization,
                                           read_spec, save_model)
from curridistill.models.placement import probe_input, uses_amp
from curridistill.train import distributed
from curridistill.train.callbacks import Callbacks
from curridistill.train.lesson import LessonContext, LessonRun
from curridistill.train.metrics_log import MetricsLog
from curridistill.train.phase_files import done_fix, read_phase_done, read_phase_state, state_fix
from curridistill.train.pruning import PruneLesson, restore_structure
from curridistill.train.tensorboard import tensorboard_sink
from curridistill.train.teachers import TeacherBank


def _copy_files(src: Path, dst: Path, names: list[str]) -> None:
    """Copy each file atomically (temp + rename), the small JSON files last so they mark completeness."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in names:
        copy_atomic(src / f, dst / f)  # a unique temp name: concurrent copies never share one


def _transfer_desc(mc: ModelConfig) -> dict:
    """Transfer settings for a cache key; empty without them, so keys of earlier runs stay valid."""
    if mc.init is None and mc.transfer is None:
        return {}
    return {"init": mc.init, "transfer": mc.transfer.model_dump(mode="json") if mc.transfer else None}


@dataclass
class PhaseResult:
    name: str
    model: nn.Module
    train_seconds: float | None
    selected_epoch: dict | None
    reused_from: str | None = None


def _load_lesson_state(run: LessonRun, path: Path, lesson_state: dict) -> None:
    """Load the parts of ``lesson_state`` that only their owners can check; one line naming the file if they do not
    fit."""
    try:
        run.load_state_dict(lesson_state, None)
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
        if is_out_of_memory(exc):  # the state is fine, the device is full: the caller says what to lower
            raise
        detail = (str(exc).strip().splitlines() or [""])[0][:120]
        raise UserError(f"{path}: the saved lesson state does not fit lesson {run.ctx.lesson_index} "
                        f"({type(exc).__name__}: {detail}); if you resumed with --set, resume without the change "
                        f"(the state was saved for the lesson as it was), else {state_fix(path)}") from None


class CourseRunner:
    def __init__(self, cfg: Config, run_dir: Path, pipeline: Pipeline, device: torch.device,
                 callbacks=(), given=None):
        self.cfg, self.run_dir, self.pipeline, self.device = cfg, Path(run_dir), pipeline, device
        self.given = given  # objects.Given: models the caller passed as objects (distill), built from them
        self.main = distributed.info().is_main  # only rank 0 of a distributed run writes files
        self.log = MetricsLog(self.run_dir / "metrics.jsonl", writes=self.main)
        tensorboard = tensorboard_sink(self.run_dir / "tensorboard") if cfg.run.tensorboard and self.main else None
        self.callbacks = Callbacks([tensorboard, *callbacks])
        self.amp = uses_amp(device, cfg.run.amp)

    # ----------------------------------------------------------------- model building
    def model_spec(self, mc: ModelConfig) -> dict:
        s = self.pipeline.splits
        kwargs = with_defaults(mc.name, mc.kwargs, s.train.meta.get("model_defaults"))  # text: vocab_size, pad_id
        return {"name": mc.name, "kwargs": kwargs, "num_classes": s.num_classes,
                "in_channels": s.input_shape[0] if len(s.input_shape) == 3 else 1,
                "input_shape": list(s.input_shape), "classes": s.train.classes,
                "mean": list(s.mean), "std": list(s.std), "normalize": self.cfg.data.normalize,
                "data": self.cfg.data.model_dump(mode="json"), **self._tokenizer(), **self._object_class(mc)}

    def _tokenizer(self) -> dict:
        """``{"tokenizer": ...}`` for text data: how the ids were made, so ``predict`` tokenizes new text the same way."""
        state = self.pipeline.splits.train.meta.get("tokenizer_state")
        return {"tokenizer": state} if state is not None else {}

    def _object_class(self, mc: ModelConfig) -> dict:
        """``{"object": "pkg.Class"}`` for a module the caller passed: named for information, never imported."""
        user = self.given.model(mc.name) if self.given is not None else None
        return {"object": user.cls or "unknown"} if user is not None else {}

    def build(self, mc: ModelConfig, seed: int, where: str) -> nn.Module:
        spec = self.model_spec(mc)
        torch.manual_seed(seed)
        model = self.given.build(mc.name) if self.given is not None else None  # a copy of the caller's module
        if model is None:
            model = build_model(mc.name, spec["num_classes"], spec["in_channels"], spec["kwargs"], where=where)
        init_model(model, mc.init, mc.transfer, where, spec["classes"])  # transfer: weights trained on other data
        self._check_output(model, where)
        model = model.to(self.device)
        if self.cfg.run.channels_last and len(self.pipeline.splits.input_shape) == 3:  # speed options (run.*)
            model, self.pipeline.channels_last = model.to(memory_format=torch.channels_last), True
        if self.cfg.run.compile is True and not where.startswith("teacher"):  # "step" compiles in the lesson
            model.compile()  # in place: state_dict keys stay the same
        return model

    def _check_output(self, model: nn.Module, where: str) -> None:
        x = probe_input(model, tuple(self.pipeline.splits.input_shape), batch=2)  # the model's device and dtype
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
        """Load, reuse or train one teacher. The cache entry is locked while it is decided and trained, so a
        second run needing the same teacher waits for it and reuses it instead of training it again."""
        user = self.given.model(tc.name) if self.given is not None else None
        if user is not None and user.trained:  # distill(teacher_trained=True): the caller's module, used as it is
            model = self.build(tc, self.cfg.run.teacher_seed + index, name).eval()
            self.finish_phase(name, model, self.model_spec(tc), None, None, reused_from="caller's module")
            return PhaseResult(name, model, None, None, reused_from="caller's module")
        if tc.checkpoint or not tc.reuse or distributed.info().active:
            return self._teacher(name, tc, index)
        course = self.cfg.teacher_course(tc)
        entry = Path(self.cfg.run.cache_dir) / "teachers" / self.teacher_key(tc, course, index)
        with entry_lock(entry, what="cached teacher"):
            clean_orphans(entry)
            return self._teacher(name, tc, index)

    def _teacher(self, name: str, tc: TeacherConfig, index: int) -> PhaseResult:
        where = "teacher" if self.cfg.teacher is not None else f"teachers.{index}"
        if tc.checkpoint:
            return PhaseResult(name, self.load_teacher(tc, where), None, None, reused_from=tc.checkpoint)
        course = self.cfg.teacher_course(tc)  # a teacher is never pruned
        key = self.teacher_key(tc, course, index)
        cached = Path(self.cfg.run.cache_dir) / "teachers" / key / "model.safetensors"
        phase_dir = self.run_dir / name
        if tc.reuse and cached.is_file() and not (phase_dir / "done.json").is_file():
            done = cached.with_name("done.json")
            info = read_phase_done(done, f"the cached teacher is damaged: delete {cached.parent} to train it again") \
                if done.is_file() else {}
            model = self.load_teacher(tc.model_copy(update={"checkpoint": str(cached)}), where)
            if self.main:
                _copy_files(cached.parent, phase_dir, [p.name for p in cached.parent.glob("epoch_*.safetensors")])
            self.finish_phase(name, model, self.model_spec(tc), info.get("train_seconds"), info.get("selected"),
                              reused_from=str(cached.parent))
            return PhaseResult(name, model, info.get("train_seconds"), info.get("selected"), reused_from=str(cached.parent))
        result = self.train_phase(name, tc, course, teachers=None, seed=self.cfg.run.teacher_seed + index,
                                  keep_epochs=tc.keep_epochs)
        if tc.reuse and self.main and not cached.is_file():
            anchors = [p.name for p in phase_dir.glob("epoch_*.safetensors")]
            _copy_files(phase_dir, cached.parent, anchors + ["done.json", "model.json", "model.safetensors"])
        return result

    def teacher_key(self, tc: TeacherConfig, course: list[LessonConfig], index: int) -> str:
        augmented = any(c.augment for c in course)
        lessons = [_without_name(c) for c in course]
        if not augmented:  # trained on clean data: the same teacher as that of a config without augmentation
            for lesson in lessons:
                lesson.pop("augment", None)
        desc = {"model": tc.name, "kwargs": tc.kwargs, **_transfer_desc(tc), "course": lessons,
                "data": data_fingerprint(self.pipeline.splits, self.cfg.data),
                "augment": self.pipeline.augment_key(augmented), "batch_size": self.cfg.data.batch_size, "seed": self.cfg.run.teacher_seed + index,
                "keep_epochs": sorted(tc.keep_epochs)}
        return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:20]

    def load_teacher(self, tc: TeacherConfig, where: str) -> nn.Module:
        path = Path(tc.checkpoint)
        if not path.with_suffix(".json").is_file():  # bare weights: build from the config's model section
            model = self.build(tc, self.cfg.run.seed, where)
            return load_weights(model, path, where=f"{where}.checkpoint").eval()
        spec = read_spec(path)
        if spec["name"] != tc.name:  # the config (code) names the model; a checkpoint of another model is refused
            raise UserError(f"{where}.checkpoint {path} holds a {spec['name']!r} model but {where}.name is {tc.name!r}; "
                            f"set {where}.name: {spec['name']} or point at a {tc.name!r} checkpoint")
        if spec["num_classes"] != self.pipeline.splits.num_classes:
            raise UserError(f"{where}.checkpoint {path} predicts {spec['num_classes']} classes but data "
                            f"{self.cfg.data.name!r} has {self.pipeline.splits.num_classes}; use a teacher trained on this data")
        model, spec = load_model(path, self.device, allowed=(tc.name,))
        self._check_output(model, f"{where}.checkpoint")
        match_input_normalization(model, spec, self.pipeline.mean, self.pipeline.std)
        return model.eval()

    def train_phase(self, name: str, mc: ModelConfig, course: list[LessonConfig], teachers: TeacherBank | None,
                    seed: int, init_from: dict | None = None, keep_epochs: list[int] | tuple = (),
                    anchors: dict[str, dict] | None = None) -> PhaseResult:
        phase_dir = self.run_dir / name
        model = self.build(mc, seed, where=name if name != "baseline" else "student")
        if init_from is not None:
            model.load_state_dict(init_from)
        if (phase_dir / "done.json").is_file():
            done = read_phase_done(phase_dir / "done.json", done_fix(phase_dir / "done.json"))
            apply_structure(model, read_spec(phase_dir / "model.safetensors").get("structure"))  # pruned: its widths
            load_weights(model, phase_dir / "model.safetensors", where=name)
            return PhaseResult(name, model.eval(), done.get("train_seconds"), done.get("selected"), done.get("reused_from"))
        state = read_phase_state(phase_dir / "state.pt", course)
        start = state["lesson"] if state else 0
        if state:
            restore_structure(model, phase_dir, start)  # after a prune lesson: the pruned widths
            load_weights(model, phase_dir / state["weights"], where=f"{name} checkpoint")
            check_finite(model, phase_dir / state["weights"])  # a diverged or damaged epoch: say so, not "lower the lr"
            self.log.truncate(name, start, state["lesson_state"]["epoch"])
        else:
            self.log.truncate(name, 0, 0)
        phase = {"best_value": state["best_value"] if state else -float("inf"),
                 "best": state.get("best") if state else None,
                 "seconds": float(state["seconds"]) if state else 0.0}
        carried = None
        offsets = [sum(lesson.epochs for lesson in course[:i]) for i in range(len(course))]
        for li in range(start, len(course)):
            pruning = PruneLesson.begin(self, name, mc, li, course[li], model, phase, teachers,
                                        resumed=bool(state) and li == start)  # None unless the lesson prunes
            ctx = LessonContext(phase=name, lesson_index=li, pipeline=self.pipeline, device=self.device,
                                seed=seed, teachers=pruning.teachers if pruning else teachers, amp=self.amp, log=self._log,
                                callbacks=self.callbacks, optimizer_state=carried, anchors=anchors,
                                capture=self.cfg.run.compile == "step", micro_batches=self.cfg.run.micro_batches,
                                transfer=(TransferPlan(model, mc.transfer, [c.epochs for c in course], where=f"{name}.transfer")
                                          if mc.transfer is not None else None))
            run = LessonRun(model, course[li], ctx)
            if state and li == start:
                _load_lesson_state(run, phase_dir / "state.pt", state["lesson_state"])
            # once the lesson is built and its saved state loaded: a resume's --set changes are accepted here
            # (api._PendingChanges), so a change the saved state does not fit leaves config.yaml as it was
            self.callbacks.on_phase(f"{name} L{li}")
            t_lesson = time.perf_counter()
            ctx.on_epoch_end = lambda r, li=li, t0=t_lesson: self.checkpoint(name, li, r, phase, t0, keep_epochs, offsets[li])
            run.run()
            if pruning:
                pruning.finish(run)
            phase["seconds"] += time.perf_counter() - t_lesson
            carried = run.carried_optimizer_state()
        if teachers is not None:
            teachers.set_paths([[] for _ in range(len(teachers))])
        if self.cfg.run.selection == "best_val":
            if phase.get("best_state") is not None:
                model.load_state_dict(phase["best_state"])
            elif (phase_dir / "best.safetensors").is_file():  # best epoch was before a resume: written by then
                load_weights(model, phase_dir / "best.safetensors", where=f"{name} best checkpoint")
        self.finish_phase(name, model, self.model_spec(mc), phase["seconds"], phase["best"])
        return PhaseResult(name, model.eval(), phase["seconds"], phase["best"])

    def _log(self, record: dict) -> None:
        """An epoch's record: appended to metrics.jsonl, then handed to the callbacks (rank 0 only)."""
        if self.main:
            self.log.append(record)
            self.callbacks.on_record(record)

    def checkpoint(self, name: str, lesson: int, run: LessonRun, phase: dict, t0: float,
                   keep_epochs: list[int] | tuple = (), offset: int = 0) -> None:
        phase_dir = self.run_dir / name
        improved = run.best.epoch == run.epoch - 1 and run.best.value > phase["best_value"]
        if improved:  # tracked on every rank; only rank 0 writes it
            phase["best_value"] = run.best.value
            phase["best"] = {"lesson": lesson, "epoch": run.best.epoch, "val_accuracy": run.best.value}
            phase["best_state"] = run.best.state
        if self.main:
            self._save_checkpoint(phase_dir, lesson, run, phase, t0, keep_epochs, offset, improved)
        self.callbacks.on_epoch_saved()  # every rank: a stop-after callback stops all ranks at the same epoch

    def _save_checkpoint(self, phase_dir: Path, lesson: int, run: LessonRun, phase: dict, t0: float,
                         keep_epochs: list[int] | tuple, offset: int, improved: bool) -> None:
        if offset + run.epoch in keep_epochs:  # an RCO anchor: the model after this many epochs of the phase
            save_tensors(phase_dir / f"epoch_{offset + run.epoch}.safetensors", run.model.state_dict())
        if improved:
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

    def finish_phase(self, name: str, model: nn.Module, spec: dict, seconds: float | None, selected: dict | None,
                     reused_from: str | None = None) -> None:
        if not self.main:
            return
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

    def student(self, teachers: list[PhaseResult], name: str = "student", mc: ModelConfig | None = None,
                weights: list[float] | None = None, seed: int | None = None, init_from: dict | None = None,
                anchors: dict[str, dict] | None = None) -> PhaseResult:
        """Distill ``mc`` (default: the student) from ``teachers`` with the course."""
        weights = weights if weights is not None else [tc.weight for tc in self.cfg.all_teachers()]
        models = [t.model for t in teachers]
        if self.cfg.run.channels_last and len(self.pipeline.splits.input_shape) == 3:
            models = [m.to(memory_format=torch.channels_last) for m in models]
            self.pipeline.channels_last = True
        run = self.cfg.run  # teacher outputs from run.cache_dir/teacher_outputs (train.teacher_cache) when enabled
        bank = TeacherBank(models, weights, run.teacher_aggregation, amp=self.amp,
                           pipeline=self.pipeline if run.teacher_cache else None, cache_dir=run.cache_dir,
                           cache_features=run.cache_features)
        try:
            return self.train_phase(name, mc or self.cfg.student, self.cfg.course, teachers=bank,
                                    seed=self.cfg.run.seed if seed is None else seed, init_from=init_from, anchors=anchors)
        finally:
            bank.close()

    def chain(self, teachers: list[PhaseResult]) -> list[PhaseResult]:
        """TAKD: each assistant learns from the previous link (the first from the teachers)."""
        links, source, weights = [], teachers, None
        for i, ac in enumerate(self.cfg.assistants):
            link = self.student(source, name=f"assistant{i}", mc=ac, weights=weights, seed=self.cfg.run.seed + 100 * (i + 1),
                                anchors=self.anchors(teachers) if i == 0 else None)
            links.append(link)
            source, weights = [link], [1.0]
        return links

    def rounds(self, sources: list[PhaseResult], from_assistant: bool) -> tuple[PhaseResult, list[dict]]:
        """Repeat the course until the target or the round budget (one round without ``repeat``)."""
        repeat = self.cfg.repeat
        max_rounds = repeat.max_rounds if repeat else 1
        weights = [1.0] if from_assistant else None
        anchors = None if from_assistant else self.anchors(sources)
        history: list[dict] = []
        result, init = None, None
        for r in range(max_rounds):
            name = "student" if r == 0 else f"student-round{r}"
            if r > 0 and repeat.student_becomes_teacher:  # born-again: a fresh student learns from the last one
                sources, weights, anchors, init = [result], [1.0], None, None
            elif r > 0:
                init = {k: v.detach().clone() for k, v in result.model.state_dict().items()}
            result = self.student(sources, name=name, weights=weights, seed=self.cfg.run.seed + r, init_from=init,
                                  anchors=anchors)
            val = (result.selected_epoch or {}).get("val_accuracy")
            reached = bool(repeat and repeat.until and val is not None and val >= repeat.until.at_least)
            history.append({"round": r, "phase": name, "val_accuracy": val, "target_reached": reached})
            if reached:
                break
        return result, history

    def anchors(self, teachers: list[PhaseResult]) -> dict[str, dict] | None:
        """RCO anchors of the (single) teacher: its saved ``epoch_E`` checkpoints and ``final``."""
        if len(teachers) != 1 or not any(lesson.teacher is not None for lesson in self.cfg.course):
            return None
        found = {"final": {k: v.detach().cpu().clone() for k, v in teachers[0].model.state_dict().items()}}
        phase_dir = self.run_dir / teachers[0].name
        for path in sorted(phase_dir.glob("epoch_*.safetensors")):
            found[path.stem] = load_tensors(path)
        return found


def _without_name(lesson: LessonConfig) -> dict:
    """A lesson as it decides a teacher's weights: its name is a label (configs name the same lesson differently)."""
    raw = lesson.model_dump(mode="json")
    raw.pop("name", None)
    for key in ("prune", "quantize_aware"):  # newer lesson keys: absent when unused, so earlier cache keys stay valid
        if raw.get(key) is None:
            raw.pop(key, None)
    if raw.get("augment") is True:
        raw.pop("augment")
    return raw
