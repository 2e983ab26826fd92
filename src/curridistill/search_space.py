"""A search space: dotted config paths -> distributions, as written under ``tune.space`` (and used by
``curridistill auto``'s space).

.. code-block:: yaml

    course.0.optimizer.lr: {float: [0.01, 0.2], log: true}
    course.0.epochs: {int: [5, 20], step: 5}
    student.kwargs.hidden: {categorical: [[16], [32]]}

It sits below the config (which validates ``tune.space`` with it) and knows nothing of Optuna beyond the
``trial.suggest_*`` calls that a ``Param`` makes.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from typing import Any

from curridistill.errors import UserError
from curridistill.suggest import suggest

_KINDS = ("float", "int", "categorical")
_PRIMITIVE = (type(None), bool, int, float, str)
_GRID_LIMIT = 10_000


@dataclass
class Param:
    """One dimension of the search space: the dotted config path and its distribution."""

    key: str
    kind: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list = field(default_factory=list)  # decoded values
    encoded: list = field(default_factory=list)  # what Optuna stores: the values, or their JSON text

    def suggest(self, trial) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return self.decode(trial.suggest_categorical(self.key, self.encoded))

    def decode(self, stored: Any) -> Any:
        if self.kind != "categorical":
            return stored
        for enc, value in zip(self.encoded, self.choices):
            if enc == stored and type(enc) is type(stored):
                return copy.deepcopy(value)
        return stored

    def grid(self) -> list:
        if self.kind == "categorical":
            return list(self.encoded)
        if self.kind == "int":
            values = list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
            if len(values) > _GRID_LIMIT:
                raise UserError(f"tune.space.{self.key}: {len(values)} integer values are too many for the grid sampler; "
                                f"add a step or use sampler tpe")
            return values
        raise UserError(f"tune.space.{self.key} is a float range: the grid sampler needs discrete choices; write it "
                        f"as {{categorical: [...]}} (or an int range), or use --sampler tpe / random")

    def probes(self) -> list:
        """Values that check the path and the type before any trial runs."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return [int(self.low), int(self.high)]
        return [float(self.low), float(self.high)]


def parse_space(space: Any) -> dict[str, Param]:
    """Validate ``tune.space``; raises ValueError naming the key (pydantic turns it into a config error)."""
    if not isinstance(space, dict) or not space:
        raise ValueError("tune.space must be a non-empty mapping of dotted config path -> "
                         "{float: [lo, hi]} | {int: [lo, hi]} | {categorical: [...]}")
    out: dict[str, Param] = {}
    for key, spec in space.items():
        if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
            raise ValueError(f"tune.space key {key!r} must be a dotted config path like course.0.optimizer.lr")
        out[key] = _parse_param(key, spec)
    return out


def _parse_param(key: str, spec: Any) -> Param:
    where = f"tune.space.{key}"
    if isinstance(spec, list):
        spec = {"categorical": spec}
    if not isinstance(spec, dict):
        raise ValueError(f"{where} must be {{float: [lo, hi]}}, {{int: [lo, hi]}} or {{categorical: [...]}}, got {spec!r}")
    kinds = [k for k in _KINDS if k in spec]
    if len(kinds) != 1:
        raise ValueError(f"{where} needs exactly one of float, int, categorical (got {sorted(spec) or 'none'})")
    kind = kinds[0]
    allowed = {kind} | ({"log", "step"} if kind != "categorical" else set())
    extra = sorted(set(spec) - allowed)
    if extra:
        hint = suggest(extra[0], allowed, fallback=f"valid keys: {', '.join(sorted(allowed))}")
        raise ValueError(f"{where}: unknown option {extra[0]!r}; {hint}")
    if kind == "categorical":
        choices = spec["categorical"]
        if not isinstance(choices, list) or not choices:
            raise ValueError(f"{where}.categorical must be a non-empty list of choices")
        if all(isinstance(c, _PRIMITIVE) for c in choices):
            encoded = list(choices)
        else:  # lists / mappings: Optuna stores their JSON text
            encoded = [json.dumps(c, sort_keys=True) for c in choices]
        if len({json.dumps(e, sort_keys=True) for e in encoded}) != len(encoded):
            raise ValueError(f"{where}.categorical has repeated choices")
        return Param(key, kind, choices=copy.deepcopy(choices), encoded=encoded)
    bounds = spec[kind]
    if (not isinstance(bounds, list) or len(bounds) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) for b in bounds)):
        raise ValueError(f"{where}.{kind} must be [low, high], two finite numbers, got {bounds!r}")
    low, high = bounds
    if kind == "int" and not all(float(b).is_integer() for b in bounds):
        raise ValueError(f"{where}.int bounds must be integers, got {bounds!r}")
    if not low < high:
        raise ValueError(f"{where}.{kind}: low {low} must be below high {high}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"{where}.log must be true or false")
    step = spec.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0
                             or (kind == "int" and not float(step).is_integer())):
        raise ValueError(f"{where}.step must be a positive {'integer' if kind == 'int' else 'number'}")
    if log and low <= 0:
        raise ValueError(f"{where}: a log range needs low > 0 (got {low})")
    if log and step is not None and kind == "float":
        raise ValueError(f"{where}: give either log or step for a float range, not both")
    return Param(key, kind, low=low, high=high, log=log, step=step)
