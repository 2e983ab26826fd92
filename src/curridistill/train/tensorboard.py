"""TensorBoard event files from the per-epoch records of metrics.jsonl.

``tensorboard_sink(RUN_DIR / "tensorboard")`` returns a callable that ``MetricsLog`` calls with every epoch record,
or ``None`` when the ``tensorboard`` package is not installed (then nothing is written and nothing fails).

Every numeric value of a record becomes one scalar, tagged ``<model>/L<lesson>-<lesson name>/<key>`` with the
epoch of the lesson as the step; nested mappings are flattened, so a record gives e.g.
``student/L0-distill/losses/kd``, ``.../weights/kd``, ``.../temperature``, ``.../lr``, ``.../data_fraction``,
``.../val_accuracy``, ``.../train_loss``. View with ``tensorboard --logdir RUN_DIR/tensorboard``.

Events are written synchronously (no background thread; each record is appended and the file closed), so a killed
run keeps every epoch it logged and nothing needs closing. A resumed run writes a new event file beside the old.
"""
from __future__ import annotations

import importlib.util
import math
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Callable

# record keys that identify the epoch rather than measure it
_SKIP = frozenset({"model", "lesson", "lesson_name", "epoch", "epoch_seconds"})
_counter = 0


def available() -> bool:
    """True when the ``tensorboard`` package can be imported."""
    try:
        return importlib.util.find_spec("tensorboard") is not None
    except (ImportError, ValueError):
        return False


def flatten_scalars(record: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of ``record`` (bools and non-finite values dropped), nested keys joined with '/'."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if not prefix and key in _SKIP:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_scalars(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value)):
            out[name] = float(value)
    return out


def record_tag(record: dict) -> str:
    lesson = record.get("lesson", 0)
    name = str(record.get("lesson_name") or f"lesson{lesson}").replace("/", "_").replace(" ", "_")
    return f"{record.get('model', 'model')}/L{lesson}-{name}"


class TensorBoardWriter:
    """Appends scalar events to one ``events.out.tfevents.*`` file in ``log_dir`` (created on the first write)."""

    def __init__(self, log_dir: str | Path):
        from tensorboard.compat.proto import event_pb2, summary_pb2  # noqa: F401  (fail early when unusable)

        global _counter
        _counter += 1
        self.log_dir = Path(log_dir)
        self.path = self.log_dir / (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
                                    f".{os.getpid()}.{_counter}")
        self._started = False
        self._broken = False

    def _write(self, events: list) -> None:
        from tensorboard.summary.writer.record_writer import RecordWriter

        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as f:
            writer = RecordWriter(f)
            for event in events:
                writer.write(event.SerializeToString())
            f.flush()

    def add_scalars(self, scalars: dict[str, float], step: int, wall_time: float | None = None) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2

        wall = time.time() if wall_time is None else wall_time
        events = []
        if not self._started:
            events.append(event_pb2.Event(wall_time=wall, file_version="brain.Event:2"))
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)
                                             for tag, value in scalars.items()])
        events.append(event_pb2.Event(wall_time=wall, step=int(step), summary=summary))
        self._write(events)
        self._started = True

    def __call__(self, record: dict) -> None:
        """Log one metrics.jsonl record; an I/O error warns once and turns the writer off (training goes on)."""
        if self._broken:
            return
        base = record_tag(record)
        scalars = {f"{base}/{k}": v for k, v in flatten_scalars(record).items()}
        if not scalars:
            return
        try:
            self.add_scalars(scalars, int(record.get("epoch", 0)))
        except OSError as exc:
            self._broken = True
            warnings.warn(f"TensorBoard events could not be written to {self.log_dir} ({exc}); continuing without them",
                          stacklevel=2)


def tensorboard_sink(log_dir: str | Path) -> Callable[[dict], None] | None:
    """A per-record writer for ``log_dir``, or None when tensorboard is not installed."""
    if not available():
        return None
    try:
        return TensorBoardWriter(log_dir)
    except ImportError:
        return None
