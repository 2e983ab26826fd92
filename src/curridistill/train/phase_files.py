"""The files of a phase directory that a resume reads: ``state.pt`` (an open phase, after every epoch) and
``done.json`` (a finished phase, or a cached teacher).

A run directory is data: what these files hold is checked before anything is read from them, so a damaged or
edited file is one line naming it and the fix, not a traceback or a silently different training.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from curridistill.config import LessonConfig
from curridistill.errors import UserError
from curridistill.io import explain_invalid, load_state, read_checked


class _Checked(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, arbitrary_types_allowed=True)


class SelectedEpoch(_Checked):
    """The checkpoint a phase selected (``best`` in state.pt, ``selected`` in done.json)."""

    lesson: int = Field(ge=0)
    epoch: int = Field(ge=0)
    val_accuracy: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)


class PhaseDone(_Checked):
    """``done.json`` of a finished phase (written by ``finish_phase``), type-checked; other keys pass unchecked."""

    train_seconds: float | None = Field(None, ge=0, allow_inf_nan=False)
    selected: SelectedEpoch | None = None
    selection: str | None = None
    reused_from: str | None = None


class LessonState(_Checked):
    """``lesson_state`` in state.pt (``LessonRun.state_dict``). The optimizer's, LR schedule's, sampler's, terms' and
    curriculum's own states are only checked to be mappings here: their loaders check the rest."""

    epoch: int = Field(ge=0)
    optimizer: dict
    lr: dict
    sampler: dict
    terms: dict
    curriculum: dict = {}  # read only by a lesson with a curriculum
    best_value: float
    best_epoch: int = Field(ge=-1)
    stale_epochs: int = Field(ge=0)
    early_best: float
    stopped_early: bool
    rng: torch.Tensor
    cuda_rng: torch.Tensor | list[torch.Tensor] | None = None

    @field_validator("rng")
    @classmethod
    def _cpu_generator_state(cls, rng: torch.Tensor) -> torch.Tensor:
        expected = torch.get_rng_state()
        if rng.dtype != expected.dtype or rng.shape != expected.shape:
            raise ValueError(f"expected the random generator's state (a uint8 tensor of {expected.numel()} values), "
                             f"got a {rng.dtype} tensor of shape {tuple(rng.shape)}")
        return rng


class PhaseState(_Checked):
    """``state.pt`` of an open phase (written by ``_save_checkpoint`` after every epoch), type-checked."""

    lesson: int = Field(ge=0)
    weights: str
    lesson_state: LessonState
    best_value: float
    best: SelectedEpoch | None = None
    seconds: float = Field(ge=0, allow_inf_nan=False)


def state_fix(path: Path) -> str:
    return f"restore {path.name} from a backup, or delete it to train the {path.parent.name} phase again from its start"


def read_phase_state(path: Path, course: list[LessonConfig]) -> dict[str, Any] | None:
    """The checked ``state.pt`` of the phase at ``path.parent`` (None when there is none): its types, a lesson and an
    epoch within ``course``, and weights that are a file of that phase's directory."""
    if not path.is_file():
        return None
    state = load_state(path)
    if not isinstance(state, dict):
        raise UserError(f"{path} is not a training state (expected a dict, got a {type(state).__name__}); "
                        f"{state_fix(path)}")
    try:
        PhaseState.model_validate(state)
    except ValidationError as exc:
        raise UserError(f"{path}: {explain_invalid(exc)}; {state_fix(path)}") from None
    _check_progress(path, state, course)
    _check_weights_file(path, state["weights"])
    return state


def _check_progress(path: Path, state: dict, course: list[LessonConfig]) -> None:
    """The saved position must be one the course has: lesson ``lesson``, after ``epoch`` of its epochs."""
    lesson, epoch, phase = state["lesson"], state["lesson_state"]["epoch"], path.parent.name
    fix = f"if the config's course was shortened, put it back; else {state_fix(path)}"
    if lesson >= len(course):
        raise UserError(f"{path}: lesson is {lesson} but the {phase} course has {len(course)} lesson(s) "
                        f"(0 to {len(course) - 1}); {fix}")
    if epoch > course[lesson].epochs:
        raise UserError(f"{path}: lesson_state.epoch is {epoch} but lesson {lesson} of the {phase} course has "
                        f"{course[lesson].epochs} epoch(s); {fix}")


def _check_weights_file(path: Path, weights: str) -> None:
    """``weights`` names a file next to the state: never a path that leaves the run directory."""
    target = path.parent / weights
    if Path(weights).name != weights or weights in ("", ".", "..") or \
            not target.resolve().is_relative_to(path.parent.resolve()):
        raise UserError(f"{path}: weights is {weights!r}, which is not a file name in {path.parent}; "
                        f"{state_fix(path)}")
    if not target.is_file():
        raise UserError(f"{path}: weights names {weights}, which is not in {path.parent}; {state_fix(path)}")


def read_phase_done(path: Path, fix: str) -> dict[str, Any]:
    """The checked ``done.json`` of a finished phase (or a cached teacher); ``fix``: how to recover from a bad one."""
    return read_checked(path, PhaseDone, "a finished phase's record", fix)


def done_fix(path: Path) -> str:
    return f"restore {path.name} from a backup, or delete it to train the {path.parent.name} phase again"
