"""A prune lesson: the course runner prunes the model when the lesson starts, the lesson's epochs then
recover accuracy by distillation, and the step is recorded in ``RUN_DIR/<phase>/prune.json``. A lesson
with ``quantize_aware`` trains with fake-quantized weights (hooks installed at its start, removed at its
end), alone or after its prune step.

Files of a phase with prune lessons: ``prune-<L>-before.safetensors`` (the model just before lesson L
pruned it), ``prune-<L>.safetensors`` (after its recovery: the lesson's best validation epoch),
``prune.json`` (one record per step: pruned fraction, params, FLOPs, latency, validation accuracy
before, just after and after recovery) and ``structure.json`` (layer widths after each step, so that
``--resume`` rebuilds the pruned model before loading its weights).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated

import torch
from pydantic import Field, RootModel
from torch import nn

from curridistill.compress.prune import achieved, keep_zeros, prune, recalibrate_batchnorm, weight_sparsity
from curridistill.compress.quantize import fake_quantize_weights
from curridistill.config import LessonConfig, ModelConfig
from curridistill.errors import UserError
from curridistill.evaluate.efficiency import count_params, efficiency
from curridistill.evaluate.metrics import predict_logits
from curridistill.io import read_checked, read_json, write_json
from curridistill.models.checkpoint import load_model, save_model
from curridistill.models.registry import build_model
from curridistill.models.structure import LayerWidths, apply_structure, structure_of
from curridistill.train.teachers import TeacherBank


def reference_model(spec: dict) -> nn.Module:
    """The unpruned build of a spec, on the meta device (no memory, no RNG draw)."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        return build_model(spec["name"], spec["num_classes"], spec["in_channels"], spec["kwargs"])


# structure.json: lesson index -> {module path -> {width name -> width(s)}}, as ``structure_of`` gives them
PrunedWidths = RootModel[dict[Annotated[str, Field(pattern=r"^[0-9]+$")], LayerWidths]]


def restore_structure(model: nn.Module, phase_dir: Path, lesson: int) -> None:
    """Before loading a checkpoint of lesson ``lesson``: give the model the widths its last prune step left."""
    path = Path(phase_dir) / "structure.json"
    if not path.is_file():
        return
    fix = f"restore it from a backup, or delete {path.parent} to train the {path.parent.name} phase again"
    steps = {int(k): v for k, v in read_checked(path, PrunedWidths, "a record of pruned widths", fix).items()
             if int(k) <= lesson}
    if steps:
        apply_structure(model, steps[max(steps)], where=str(path))


def val_accuracy(model: nn.Module, pipeline, amp: bool) -> float:
    logits = predict_logits(model, pipeline, "val", amp=amp)
    return float((logits.argmax(1) == pipeline.splits.val.y.to(logits.device)).double().mean())


def _measure(model: nn.Module, pipeline, amp: bool, latency_runs: int) -> dict:
    cost = efficiency(model, pipeline.splits.input_shape, latency_runs=latency_runs, throughput_batch=64, throughput_runs=2)
    return {"val_accuracy": val_accuracy(model, pipeline, amp), "params": cost["params"], "flops": cost["flops"],
            "weights_bytes": cost["weights_bytes"], "latency_ms": cost["latency_ms"]}


def train_batches(pipeline, batch_size: int, n: int):
    """The first ``n`` training batches (fewer when the split is smaller), un-augmented, in a fixed order."""
    total = len(pipeline.splits.train)
    for start in range(0, min(n * batch_size, total), batch_size):
        yield pipeline.batch("train", torch.arange(start, min(start + batch_size, total)))


class PruneLesson:
    """Created by ``begin`` for a lesson with ``prune``; ``finish`` after the lesson's epochs."""

    def __init__(self, runner, phase: str, lesson_index: int, lesson: LessonConfig, model: nn.Module,
                 spec: dict, teachers: TeacherBank | None):
        self.runner, self.phase, self.li, self.cfg = runner, phase, lesson_index, lesson.prune
        self.model, self.spec = model, spec
        self.phase_dir = runner.run_dir / phase
        self.teachers = teachers  # what the recovery lesson learns from
        self.own_bank: TeacherBank | None = None
        self.hooks: list = []

    @classmethod
    def begin(cls, runner, phase: str, mc: ModelConfig, lesson_index: int, lesson: LessonConfig, model: nn.Module,
              phase_state: dict, teachers: TeacherBank | None, resumed: bool) -> "PruneLesson | None":
        """Prune ``model`` in place (unless ``resumed``: it was pruned before the kill) and record the step."""
        if lesson.prune is None and lesson.quantize_aware is None:
            return None
        if lesson.prune is not None and getattr(runner.pipeline, "tokens", False):
            raise UserError(f"course.{lesson_index}.prune: pruning text models (token ids) is not supported yet; "
                            f"drop the prune key or use an image/tabular student")
        self = cls(runner, phase, lesson_index, lesson, model, runner.model_spec(mc), teachers)
        if lesson.prune is None:  # a quantization-aware lesson only: fake-quantized weights until finish()
            self.hooks = fake_quantize_weights(model, lesson.quantize_aware.bits)
            return self
        before_path = self.phase_dir / f"prune-{lesson_index}-before.safetensors"
        if resumed:
            unpruned = load_model(before_path, runner.device)[0] if self.cfg.teacher == "unpruned" and teachers else None
            if self.cfg.kind == "unstructured":
                self.hooks = keep_zeros(model)
        else:
            unpruned = self._prune(phase_state, before_path)
        if unpruned is not None:
            self.own_bank = TeacherBank([unpruned], [1.0], amp=runner.amp)
            self.teachers = self.own_bank
        if lesson.quantize_aware is not None:  # prune, then recover with fake-quantized weights
            self.hooks += fake_quantize_weights(model, lesson.quantize_aware.bits)
        return self

    def _prune(self, phase_state: dict, before_path: Path) -> nn.Module | None:
        runner, cfg, model, pipeline = self.runner, self.cfg, self.model, self.runner.pipeline
        runs = runner.cfg.run.eval.latency_runs
        before = _measure(model, pipeline, runner.amp, runs)
        if runner.main:
            save_model(before_path, model, self.spec)
        unpruned = copy.deepcopy(model).eval() if cfg.teacher == "unpruned" and self.teachers is not None else None
        example = pipeline.batch("train", torch.arange(min(2, len(pipeline.splits.train))))[0]  # traced once

        def gradients(m: nn.Module) -> None:  # Taylor importance: |w * dL/dw| over a few training batches
            for x, y in train_batches(pipeline, runner.cfg.data.batch_size, cfg.taylor_batches):
                nn.functional.cross_entropy(m(x), y).backward()

        reference = reference_model(self.spec)
        done = prune(model, cfg.amount, example, self.spec["num_classes"], kind=cfg.kind, importance=cfg.importance,
                     reference=reference, gradients=gradients, scope=cfg.scope, round_to=cfg.round_to)
        self.hooks = done["hooks"]
        after = _measure(model, pipeline, runner.amp, runs)
        if cfg.recalibrate_bn and cfg.kind == "channels":  # unstructured zeros leave the statistics nearly right
            batches = [x for x, _ in train_batches(pipeline, runner.cfg.data.batch_size, cfg.recalibrate_bn)]
            if recalibrate_batchnorm(model, batches):
                after["val_accuracy_raw"] = after["val_accuracy"]  # before the statistics were re-estimated
                after["val_accuracy"] = val_accuracy(model, pipeline, runner.amp)
                after["recalibrated_batches"] = len(batches)
        # the phase's best checkpoint so far has the old widths: selection starts again after each step
        phase_state.update(best_value=-float("inf"), best=None, best_state=None)
        (self.phase_dir / "best.safetensors").unlink(missing_ok=True)
        record = {"lesson": self.li, "kind": cfg.kind, "importance": cfg.importance, "scope": cfg.scope,
                  "target": cfg.amount, "round_to": cfg.round_to,
                  "step_ratio": done["step_ratio"], "achieved": achieved(model, reference, self.spec["num_classes"], cfg.kind),
                  # fraction of the unpruned model's weights gone (channels) or zero (unstructured)
                  "sparsity": (weight_sparsity(model) if cfg.kind == "unstructured"
                               else 1.0 - after["params"] / max(count_params(reference), 1)),
                  "recovery_teacher": cfg.teacher, "before": before, "pruned": after}
        if runner.main:
            structures = self._read("structure.json", {})
            structures[str(self.li)] = structure_of(model)
            write_json(self.phase_dir / "structure.json", structures)
            self._write_step(record)
        return unpruned

    def _read(self, name: str, default):
        path = self.phase_dir / name
        return read_json(path) if path.is_file() else default

    def _write_step(self, record: dict) -> None:
        steps = [s for s in self._read("prune.json", []) if s["lesson"] != record["lesson"]] + [record]
        write_json(self.phase_dir / "prune.json", sorted(steps, key=lambda s: s["lesson"]))

    def finish(self, run) -> None:
        """After the recovery epochs: save the recovered model (the lesson's best epoch) and its numbers."""
        for handle in self.hooks:
            handle.remove()
        if self.own_bank is not None:
            self.own_bank.close()
        if not self.runner.main or self.cfg is None:
            return
        recovered = copy.deepcopy(self.model)
        if run.best.state is not None:
            recovered.load_state_dict(run.best.state)
        save_model(self.phase_dir / f"prune-{self.li}.safetensors", recovered, self.spec)
        steps = self._read("prune.json", [])
        for step in steps:
            if step["lesson"] == self.li:
                step["recovered"] = {"val_accuracy": run.best.value, "best_epoch": run.best.epoch, "epochs": run.epoch}
        write_json(self.phase_dir / "prune.json", steps)


def prune_steps(run_dir: Path) -> dict[str, list[dict]]:
    """``{phase: prune.json records}`` of a run directory (empty when the course has no prune lesson)."""
    found = {}
    for path in sorted(Path(run_dir).glob("*/prune.json")):
        found[path.parent.name] = read_json(path)
    return found
