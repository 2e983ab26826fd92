"""Schedules: pure functions of training progress p in [0, 1] giving a number.

The same machinery drives temperatures, loss weights, learning-rate multipliers and data fractions.
A schedule is written in config as a number (constant) or a mapping with ``kind``:

    temperature: 4
    weight: {kind: linear, start: 1.0, end: 0.0}
    weight: {kind: constant, value: 1, warmup: 20, unit: epoch}   # DKD's warm-up min(epoch / 20, 1), per step
    lr: {kind: multistep, milestones: [150, 180, 210], gamma: 0.1, unit: epoch}

Durations (``warmup``, ``step_size``, ``milestones``) are fractions of the lesson by default, or
epochs with ``unit: epoch`` (converted once, when the lesson's epoch count is known). Schedules move
every step: a warmup of 20 epochs passes during epoch e (1-based) from (e-1)/20 to e/20 of its value,
where mdistiller's DKD holds e/20 for the whole epoch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field

from curridistill.errors import UserError
from curridistill.registry import Registry

ScheduleFn = Callable[[float], float]


class ScheduleSpec(BaseModel):
    """Config of one schedule. Unused fields are ignored by kinds that do not need them."""

    model_config = ConfigDict(extra="forbid")

    kind: str = "constant"
    value: float = 1.0  # constant
    start: float | None = None  # value at p=0 (defaults to ``value``)
    end: float = 0.0  # value at p=1 for linear/cosine/exponential
    gamma: float = 0.1  # factor per step for step/multistep
    step_size: float = 0.3  # step: decay every step_size
    milestones: list[float] = Field(default_factory=list)  # multistep: decay at each milestone
    steps: int = Field(10, ge=2)  # staircase: number of levels from start to end
    warmup: float = 0.0  # linear ramp from warmup_start to the schedule over this long
    warmup_start: float = 0.0
    unit: Literal["progress", "epoch"] = "progress"

    def describe(self) -> str:
        return self.kind if self.kind != "constant" else f"{self.value:g}"


@dataclass(frozen=True)
class _Args:
    start: float
    end: float
    gamma: float
    step_size: float
    milestones: tuple[float, ...]
    steps: int = 10


SCHEDULES: Registry[Callable[[_Args, float], float]] = Registry("schedule")
SCHEDULE_HELP: dict[str, str] = {}


def _schedule(name: str, help_text: str):
    def add(fn):
        SCHEDULE_HELP[name] = help_text
        return SCHEDULES.register(name)(fn)

    return add


@_schedule("constant", "value (or start) for all p")
def _constant(a: _Args, p: float) -> float:
    return a.start


@_schedule("linear", "start + (end - start) * p")
def _linear(a: _Args, p: float) -> float:
    return a.start + (a.end - a.start) * p


@_schedule("cosine", "end + (start - end) * (1 + cos(pi p)) / 2")
def _cosine(a: _Args, p: float) -> float:
    return a.end + (a.start - a.end) * 0.5 * (1.0 + math.cos(math.pi * p))


@_schedule("exponential", "start * (end / start) ** p: geometric decay from start to end (end > 0)")
def _exponential(a: _Args, p: float) -> float:
    if a.start == 0 or a.end / a.start <= 0:
        raise UserError("exponential schedule needs start and end of the same sign and non-zero; set end > 0")
    return a.start * (a.end / a.start) ** p


@_schedule("step", "start * gamma ** floor(p / step_size)")
def _step(a: _Args, p: float) -> float:
    return a.start * a.gamma ** math.floor(p / a.step_size + 1e-9)


@_schedule("multistep", "start * gamma ** (number of milestones <= p)")
def _multistep(a: _Args, p: float) -> float:
    return a.start * a.gamma ** sum(1 for m in a.milestones if p >= m - 1e-9)


@_schedule("staircase", "start + (end - start) * floor(p * steps) / (steps - 1): equal stairs (Annealing-KD)")
def _staircase(a: _Args, p: float) -> float:
    level = min(math.floor(p * a.steps + 1e-9), a.steps - 1)
    return a.start + (a.end - a.start) * level / (a.steps - 1)


def parse_schedule(raw: Any, where: str = "schedule") -> ScheduleSpec:
    if isinstance(raw, ScheduleSpec):
        return raw
    if isinstance(raw, bool):
        raise UserError(f"{where}: expected a number or a schedule mapping, got {raw!r}")
    if isinstance(raw, (int, float)):
        return ScheduleSpec(kind="constant", value=float(raw))
    if isinstance(raw, dict):
        return ScheduleSpec(**raw)
    raise UserError(f"{where}: expected a number or a mapping like {{kind: linear, start: 1, end: 0}}, got {raw!r}")


def build_schedule(spec: ScheduleSpec | float | dict, epochs: float = 1.0, where: str = "schedule") -> ScheduleFn:
    """Turn a spec into ``f(p) -> float`` for a lesson of ``epochs`` epochs."""
    spec = parse_schedule(spec, where)
    body = SCHEDULES.get(spec.kind, where=f"{where}.kind")
    scale = 1.0 / max(epochs, 1e-12) if spec.unit == "epoch" else 1.0
    start = spec.value if spec.start is None else spec.start
    step_size = spec.step_size * scale
    if spec.kind == "step" and step_size <= 0:
        raise UserError(f"{where}.step_size must be > 0")
    args = _Args(start, spec.end, spec.gamma, step_size, tuple(m * scale for m in spec.milestones), spec.steps)
    warmup = spec.warmup * scale
    warmup_start = spec.warmup_start

    def schedule(p: float) -> float:
        p = min(max(float(p), 0.0), 1.0)
        value = body(args, p)
        if warmup > 0 and p < warmup:
            return warmup_start + (value - warmup_start) * (p / warmup)
        return value

    return schedule
