"""Pacing functions: how much of the difficulty-ordered data a lesson may sample from at each step.

A pacing function ``g(i)`` maps the global optimizer step ``i`` of a lesson (0-based) to the
available FRACTION of the training set, ``0 < g(i) <= 1``. The sampler draws each batch uniformly
from the ``ceil(g(i) * N)`` easiest samples (see ``sampler.PacedBatches``). In config:

    curriculum:
      pacing: {kind: root, start: 0.1, end_at: 0.5}             # Platanios et al. 2019, full data at half the lesson
      pacing: {kind: fixed_exponential, inc: 1.9, step_length: 100}  # Hacohen & Weinshall 2019
      pacing: linear                                             # a bare name takes the defaults

Formulas (``L`` = the lesson's last step, ``T - 1`` for ``T`` steps; ``t = min(1, i / (L * end_at))``, so with the
default ``end_at = 1`` the last step trains on the full data):

* ``linear``:  ``start + (1 - start) * t``
* ``root``:    ``(start^p + (1 - start^p) * t)^(1/p)`` with ``p = power``: the c_root-p competence of Platanios
  et al. 2019, with their c0 = ``start`` and T = ``L * end_at``; ``power: 1`` is their linear competence.
  Not Wu et al. 2021's "root" family ``start + (1 - start) * sqrt(t)``, a different curve
* ``geometric``: ``2^(log2(start) * (1 - t))`` (Penha & Hauff 2020)
* ``step``:    ``start`` until the first jump, then ``num_steps`` equal jumps at equal spacing, reaching 1 at
  ``t = num_steps / (num_steps + 1)``; with the default ``num_steps = 1``: ``start`` for ``i < L*end_at/2``, then 1
  (so Wu et al. 2021's step, ``b`` until ``a * T`` then all the data, is ``step`` with ``end_at = 2a``)
* ``fixed_exponential``: ``min(1, start * inc^floor(i / step_length))`` (Hacohen & Weinshall 2019);
  ``step_length`` defaults to a tenth of the lesson: ``T // 10`` steps, or with ``unit: epoch``
  ``E // 10`` epochs for a lesson of ``E`` epochs (at least 1) when the increases up to the full data fit in
  the lesson that way; otherwise (a short lesson: with the defaults, under 7 epochs) ``T // 10`` steps, so
  the lesson still ends on the full data. Their single-step pacing (``start`` until
  ``step_length``, then all the data) is ``fixed_exponential`` with ``inc = 1 / start``
* ``varied_exponential``: the same, but the k-th increase happens after the sum of the first k entries of
  ``step_lengths``; past the end of the list the last length repeats

``start`` defaults to 0.04 for the two exponential kinds (Hacohen & Weinshall's ``starting_percent``) and
to 0.1 for the others. Every pacing is clamped to ``[start, 1]`` and is non-decreasing in ``i``.

``unit: epoch`` counts ``step_length``/``step_lengths`` in epochs and makes the continuous kinds
(linear, root, geometric, step) change only at epoch boundaries (evaluated at the epoch's first step),
as in curricula that rebuild the data pool once per epoch. It needs ``steps_per_epoch``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from curridistill.errors import UserError
from curridistill.registry import Registry

PacingFn = Callable[[int], float]

EXPONENTIAL_KINDS = ("fixed_exponential", "varied_exponential")
DEFAULT_START = 0.1
DEFAULT_EXPONENTIAL_START = 0.04  # Hacohen & Weinshall's starting_percent (100 of 2500 samples)


class PacingSpec(BaseModel):
    """Config of one pacing function. Fields a kind does not use are ignored by it."""

    model_config = ConfigDict(extra="forbid")

    kind: str = "linear"
    start: float | None = None  # fraction available at step 0; None: 0.04 for *_exponential, else 0.1
    end_at: float = 1.0  # fraction of the lesson at which linear/root/geometric reach the full data (step: see above)
    power: float = 2.0  # root: p (2 = square root competence)
    num_steps: int = 1  # step: number of equal jumps from start to 1
    inc: float = 1.9  # *_exponential: factor of each increase
    step_length: int | None = None  # fixed_exponential: steps (or epochs) between increases; None: a tenth of it
    step_lengths: list[int] = Field(default_factory=list)  # varied_exponential: lengths of the successive steps
    unit: Literal["step", "epoch"] = "step"

    def start_value(self) -> float:
        if self.start is not None:
            return float(self.start)
        return DEFAULT_EXPONENTIAL_START if self.kind in EXPONENTIAL_KINDS else DEFAULT_START

    def describe(self) -> str:
        return f"{self.kind}(start={self.start_value():g})"


@dataclass(frozen=True)
class _Args:
    last: int  # the lesson's last step L at which the pacing is read (T - 1; with unit: epoch, the last epoch's first)
    start: float
    end_at: float
    power: float
    num_steps: int
    inc: float
    step_lengths: tuple[int, ...]  # in steps; fixed_exponential has one entry


PACINGS: Registry[Callable[[_Args, int], float]] = Registry("pacing")
PACING_HELP: dict[str, str] = {}


def _pacing(name: str, help_text: str):
    def add(fn):
        PACING_HELP[name] = help_text
        return PACINGS.register(name)(fn)

    return add


def _progress(a: _Args, i: int) -> float:
    """t = min(1, i / (L * end_at)): 1 at the last step with end_at = 1 (a one-step lesson has the full data)."""
    horizon = a.last * a.end_at
    return 1.0 if horizon <= 0 else min(1.0, i / horizon)


@_pacing("linear", "start + (1 - start) * t, t = i / (L * end_at), L the last step: a straight ramp to the full data")
def _linear(a: _Args, i: int) -> float:
    return a.start + (1.0 - a.start) * _progress(a, i)


@_pacing("root", "(start^p + (1 - start^p) * t)^(1/p): fast then slow growth (Platanios et al. 2019 competence)")
def _root(a: _Args, i: int) -> float:
    s = a.start ** a.power
    return (s + (1.0 - s) * _progress(a, i)) ** (1.0 / a.power)


@_pacing("geometric", "2^(log2(start) * (1 - t)): slow then fast growth (Penha & Hauff 2020)")
def _geometric(a: _Args, i: int) -> float:
    return 2.0 ** (math.log2(a.start) * (1.0 - _progress(a, i)))


@_pacing("step", "start, then num_steps equal jumps; with num_steps=1 the full data from i = L * end_at / 2")
def _step(a: _Args, i: int) -> float:
    jumps = min(a.num_steps, math.floor((a.num_steps + 1) * _progress(a, i) + 1e-9))
    return a.start + (1.0 - a.start) * jumps / a.num_steps


def _increases(lengths: tuple[int, ...], i: int) -> int:
    """How many increases happened by step i: the k-th after the sum of the first k lengths; the last repeats."""
    done = 0
    for k, length in enumerate(lengths):
        done += length
        if i < done:
            return k
    return len(lengths) + (i - done) // lengths[-1]


def _exponential(a: _Args, i: int) -> float:
    k = _increases(a.step_lengths, i)
    # past k_full the fraction is 1 anyway; capping k avoids float overflow of inc ** k
    k_full = math.ceil(math.log(1.0 / a.start) / math.log(a.inc)) if a.start < 1 else 0
    return min(1.0, a.start * a.inc ** min(k, k_full))


_pacing("fixed_exponential", "min(1, start * inc^floor(i / step_length)): Hacohen & Weinshall 2019 "
        "(start 0.04, inc 1.9, step_length T // 10 by default)")(_exponential)
_pacing("varied_exponential", "fixed_exponential with custom step_lengths: the k-th increase after the sum "
        "of the first k lengths, the last length repeating")(_exponential)


def parse_pacing(raw: Any, where: str = "pacing") -> PacingSpec:
    """A spec from config: a kind name, a mapping, or a PacingSpec."""
    if isinstance(raw, PacingSpec):
        return raw
    if isinstance(raw, str):
        raw = {"kind": raw}
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected a pacing name or a mapping like {{kind: root, start: 0.1}}, got {raw!r}")
    try:
        return PacingSpec(**raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err.get("loc", ()))
        raise UserError(f"{where}.{loc}: {err.get('msg')}; see `curridistill list pacings`") from None


def _default_step_length(total: int, per_unit: int, start: float, inc: float) -> int:
    """fixed_exponential's default step length in steps: a tenth of the lesson, in whole epochs with ``unit: epoch``
    when the increases up to the full data fit in the lesson that way, else a tenth of its steps (a short lesson
    of whole-epoch increases would end on part of the data: 52% after 5 epochs with the defaults)."""
    tenth = max(1, total // 10)
    if per_unit == 1:
        return tenth
    epochs = max(1, total // per_unit // 10) * per_unit
    increases = math.ceil(math.log(1.0 / start) / math.log(inc) - 1e-9)  # start * inc^k >= 1
    return epochs if increases * epochs <= total - 1 else tenth


def build_pacing(spec: PacingSpec | str | dict, total_steps: int, steps_per_epoch: int | None = None,
                 where: str = "pacing") -> PacingFn:
    """Turn a spec into ``g(i) -> fraction in [start, 1]`` for a lesson of ``total_steps`` optimizer steps.

    ``steps_per_epoch`` is needed only with ``unit: epoch``.
    """
    spec = parse_pacing(spec, where)
    body = PACINGS.get(spec.kind, where=f"{where}.kind")
    total = int(total_steps)
    if total < 1:
        raise UserError(f"{where}: the lesson has {total_steps} steps; need at least 1")
    start = spec.start_value()
    if not 0.0 < start <= 1.0:
        raise UserError(f"{where}.start must be in (0, 1] (a fraction of the data), got {start}")
    if spec.end_at <= 0:
        raise UserError(f"{where}.end_at must be > 0 (a fraction of the lesson), got {spec.end_at}")
    if spec.kind == "root" and spec.power <= 0:
        raise UserError(f"{where}.power must be > 0, got {spec.power}")
    if spec.kind == "step" and spec.num_steps < 1:
        raise UserError(f"{where}.num_steps must be >= 1, got {spec.num_steps}")
    per_unit = 1
    if spec.unit == "epoch":
        if not steps_per_epoch or steps_per_epoch < 1:
            raise UserError(f"{where}: unit 'epoch' needs the number of steps per epoch")
        per_unit = int(steps_per_epoch)

    lengths: tuple[int, ...] = ()
    if spec.kind in EXPONENTIAL_KINDS:
        if spec.inc <= 1:
            raise UserError(f"{where}.inc must be > 1 (the factor of each increase), got {spec.inc}")
        if spec.kind == "fixed_exponential":
            if spec.step_length is None:
                lengths = (_default_step_length(total, per_unit, start, float(spec.inc)),)
            else:
                lengths = (spec.step_length * per_unit,)
        else:
            if not spec.step_lengths:
                raise UserError(f"{where}: varied_exponential needs step_lengths, e.g. [100, 50, 50, 200]; "
                                f"or use fixed_exponential with one step_length")
            lengths = tuple(n * per_unit for n in spec.step_lengths)
        if min(lengths) < 1:
            raise UserError(f"{where}: step lengths must be >= 1, got {list(lengths)}")
    quantize = spec.unit == "epoch" and spec.kind not in EXPONENTIAL_KINDS
    last = (total - 1) // per_unit * per_unit  # continuous kinds are read at this step last (quantized by epoch)
    if quantize and last == 0:
        raise UserError(f"{where}: {spec.kind} pacing with unit 'epoch' changes only between epochs, and this lesson has "
                        f"one; use unit: step, or give the lesson more epochs")
    args = _Args(last, start, float(spec.end_at), float(spec.power), int(spec.num_steps), float(spec.inc), lengths)

    def pacing(i: int) -> float:
        i = max(int(i), 0)
        if quantize:
            i -= i % per_unit
        return min(1.0, max(start, body(args, i)))

    return pacing
