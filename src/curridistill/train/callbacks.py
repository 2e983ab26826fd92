"""Hooks into training: one list of callbacks instead of one argument per hook.

A callback is any object with some of these methods (the missing ones are skipped):

- ``on_record(record)``: after every epoch's record is appended to metrics.jsonl (TensorBoard, tune's
  pruner, a notebook's live plot, the progress display). Raising stops the run before that epoch is
  checkpointed.
- ``on_epoch_saved()``: after an epoch's checkpoint is written. Raising ``StopRequested`` here stops a run
  that ``--resume`` continues exactly (nothing of the epoch is lost).
- ``on_phase(label)``: a model's lesson starts ("student L0"); ``on_batches_start(total)``, ``on_batch()``,
  ``on_batches_end()``: an epoch's optimizer steps (a progress bar); ``on_note(text)``: a line for the
  user (which seed of several is running), in rich markup.

A plain function in the list is an ``on_record`` hook. Callbacks that cross into other processes
(``run.parallel``) must be picklable: module-level classes and functions, not lambdas.
"""
from __future__ import annotations

from typing import Any, Iterable


class StopRequested(Exception):
    """Raised to stop a run as if it were killed; the run directory resumes where it stopped."""


class StopAfterEpochs:
    """Stop after ``epochs`` epochs trained by this call (tests, time-boxed jobs, `--stop-after-epochs`)."""

    def __init__(self, epochs: int):
        self.epochs, self.seen = int(epochs), 0

    def on_epoch_saved(self) -> None:
        self.seen += 1
        if self.seen >= self.epochs:
            raise StopRequested(f"stopped after {self.seen} epochs as requested")


class Callbacks:
    """The list, called in order; ``None`` entries (an optional writer that is not installed) are dropped."""

    def __init__(self, callbacks: Iterable[Any] = ()):
        self.items = [c for c in callbacks if c is not None]

    def on_record(self, record: dict) -> None:
        for c in self.items:
            hook = getattr(c, "on_record", None) or (c if callable(c) else None)
            if hook is not None:
                hook(record)

    def on_epoch_saved(self) -> None:
        self._call("on_epoch_saved")

    def on_phase(self, label: str) -> None:
        self._call("on_phase", label)

    def on_batches_start(self, total: int) -> None:
        self._call("on_batches_start", total)

    def on_batch(self) -> None:
        self._call("on_batch")

    def on_batches_end(self) -> None:
        self._call("on_batches_end")

    def on_note(self, text: str) -> None:
        self._call("on_note", text)

    def _call(self, name: str, *args) -> None:
        for c in self.items:
            hook = getattr(c, name, None)
            if hook is not None:
                hook(*args)
