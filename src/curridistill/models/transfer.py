"""Transfer learning for any model: start from weights trained on other data, replace the head,
freeze named modules, unfreeze them on a schedule, and give the body a lower learning rate.

    student:
      name: cnn
      init: runs/digits-0to4/teacher/model.safetensors   # trained on other data (other classes)
      transfer:
        head: fc                     # default: the last nn.Linear of the model
        freeze: [body]               # module paths; ``body`` = every parameter outside the head
        unfreeze:                    # gradual unfreezing (Howard & Ruder 2018, ULMFiT), top layers first
          - {epoch: 2, modules: [stage2]}     # epoch counted over the phase (all its lessons)
          - {lesson: 1, modules: [body]}      # or at the start of a lesson
        body_lr: 0.1                 # the body's learning rate = 0.1 x the lesson's; the head keeps 1 x

``init`` weights must fit the model except for the head, whose tensors are left at their fresh
initialization when their shapes differ (a new class count) or ``transfer.new_head`` is true. Freezing
sets ``requires_grad`` to False, so the optimizer skips those parameters (BatchNorm running statistics
still update in training mode). Which modules are frozen is a pure function of (lesson, epoch): a
resumed run re-derives it. A Hugging Face teacher (``hf``) already starts pretrained with a new head.
"""
from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from curridistill.errors import UserError
from curridistill.io import load_tensors
from curridistill.models.taps import find_module

BODY = "body"


class UnfreezeStep(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epoch: int | None = Field(None, ge=0)  # phase epoch (0-based, counted over all lessons) at whose start to unfreeze
    lesson: int | None = Field(None, ge=0)  # or: at the start of this lesson
    modules: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_trigger(self) -> "UnfreezeStep":
        if (self.epoch is None) == (self.lesson is None):
            raise ValueError("an unfreeze step needs exactly one of 'epoch' or 'lesson'")
        return self


class TransferConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    head: str | None = None  # dotted path of the classifier head; default: the last nn.Linear
    new_head: bool = False  # re-initialize the head even when its shape fits (a new task with the same class count)
    freeze: list[str] = Field(default_factory=list)  # module paths frozen from the start; 'body' = all but the head
    unfreeze: list[UnfreezeStep] = Field(default_factory=list)
    body_lr: float = Field(1.0, gt=0)  # learning-rate multiplier of parameters outside the head


def find_head(model: nn.Module, path: str | None, where: str = "transfer.head") -> str:
    """The head's dotted path: the one given (checked) or the last ``nn.Linear`` in module order."""
    if path:
        find_module(model, path, who=where)
        return path
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UserError(f"{where}: the model has no nn.Linear to use as the head; set transfer.head to its module path")
    return linears[-1]


def _under(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def load_init(model: nn.Module, path: str | Path, head: str, new_head: bool = False, where: str = "init") -> list[str]:
    """Load weights trained on other data; the head's tensors are kept fresh when shapes differ. Returns those keys."""
    state = load_tensors(path)
    own = model.state_dict()
    fresh, load = [], {}
    for key, value in own.items():
        if key not in state:
            if _under(key, head):
                fresh.append(key)
                continue
            raise UserError(f"{where}: {path} lacks {key!r}; give a checkpoint of the same architecture (name and kwargs)")
        if _under(key, head) and (new_head or state[key].shape != value.shape):
            fresh.append(key)
            continue
        if state[key].shape != value.shape:
            raise UserError(f"{where}: {key!r} is {tuple(state[key].shape)} in {path} but {tuple(value.shape)} in the "
                            f"model; only the head (transfer.head={head!r}) may change shape")
        load[key] = state[key]
    unused = sorted(set(state) - set(own))
    if unused:
        raise UserError(f"{where}: {path} holds {unused[0]!r} (and {len(unused) - 1} more) that the model lacks; "
                        f"use the same architecture")
    model.load_state_dict(load, strict=False)
    return fresh


class TransferPlan:
    """Freezing over time and per-group learning rates of one model in one phase."""

    def __init__(self, model: nn.Module, cfg: TransferConfig, lesson_epochs: list[int], where: str = "transfer"):
        self.model, self.cfg = model, cfg
        self.head = find_head(model, cfg.head, f"{where}.head")
        self.offsets = [sum(lesson_epochs[:i]) for i in range(len(lesson_epochs))]
        self.names = [n for n, _ in model.named_parameters()]
        for i, path in enumerate(cfg.freeze):
            self._check(path, f"{where}.freeze.{i}")
        for i, step in enumerate(cfg.unfreeze):
            if step.lesson is not None and step.lesson >= len(lesson_epochs):
                raise UserError(f"{where}.unfreeze.{i}.lesson={step.lesson} but the course has {len(lesson_epochs)} lessons")
            for path in step.modules:
                self._check(path, f"{where}.unfreeze.{i}")

    def _check(self, path: str, where: str) -> None:
        if path != BODY:
            find_module(self.model, path, who=where)

    def _selected(self, path: str) -> set[str]:
        if path == BODY:
            return {n for n in self.names if not _under(n, self.head)}
        return {n for n in self.names if _under(n, path)}

    def frozen_at(self, lesson: int, epoch: int) -> set[str]:
        """Names of the parameters frozen at the start of ``epoch`` (0-based) of ``lesson``."""
        now = self.offsets[lesson] + epoch if lesson < len(self.offsets) else epoch
        frozen: set[str] = set()
        for path in self.cfg.freeze:
            frozen |= self._selected(path)
        for step in self.cfg.unfreeze:
            due = step.lesson <= lesson if step.lesson is not None else step.epoch <= now
            if due:
                for path in step.modules:
                    frozen -= self._selected(path)
        return frozen

    def at(self, lesson: int, epoch: int) -> None:
        """Apply the freezing due at the start of this epoch."""
        frozen = self.frozen_at(lesson, epoch)
        for name, p in self.model.named_parameters():
            p.requires_grad_(name not in frozen)

    def param_groups(self, lr: float) -> list[dict]:
        """Body and head as optimizer groups (frozen parameters included, so unfreezing can train them)."""
        body = [p for n, p in self.model.named_parameters() if not _under(n, self.head)]
        head = [p for n, p in self.model.named_parameters() if _under(n, self.head)]
        groups = [{"params": head, "lr": lr}]  # first: the lr that metrics.jsonl reports is the head's
        if body:
            groups.append({"params": body, "lr": lr * self.cfg.body_lr})
        return groups


def init_model(model: nn.Module, init: str | None, cfg: TransferConfig | None, where: str = "model",
               classes: list[str] | None = None) -> list[str]:
    """Apply ``init`` (weights trained on other data) to a fresh model; returns the head keys left fresh.

    The head is replaced when its shape does not fit, when ``transfer.new_head`` is set, or when the
    checkpoint's spec (``.json`` beside it) names other classes than the data's (same count, new task)."""
    if not init:
        return []
    path = Path(init)
    if not path.is_file():
        raise UserError(f"{where}.init: checkpoint {path} not found; train it first or fix the path")
    head = find_head(model, cfg.head if cfg else None, f"{where}.transfer.head")
    new_head = bool(cfg and cfg.new_head)
    spec_path = path.with_suffix(".json")
    if classes is not None and spec_path.is_file():
        try:
            trained_on = json.loads(spec_path.read_text(encoding="utf-8")).get("classes")
        except (OSError, ValueError):
            trained_on = None
        new_head = new_head or (trained_on is not None and list(trained_on) != list(classes))
    return load_init(model, path, head, new_head=new_head, where=f"{where}.init")
