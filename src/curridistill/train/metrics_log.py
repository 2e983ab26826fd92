"""metrics.jsonl: one JSON object per epoch per lesson, appended as training goes."""
from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from curridistill.io import read_jsonl, write_text


class EpochRecord(BaseModel):
    """The fields of a metrics.jsonl record that its readers rely on (the truncation a resume does, the report's
    curves and schedules), type-checked where present; a model's record names its lesson and epoch. Other keys
    pass unchecked."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str | None = None
    lesson: int | None = Field(None, ge=0)
    epoch: int | None = Field(None, ge=0)
    lesson_name: str | None = None
    lr: float | None = None
    temperature: float | None = None
    weights: dict[str, float | None] | None = None
    losses: dict[str, float | None] | None = None
    train_loss: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    data_fraction: float | None = None
    mean_sample_weight: float | None = None

    @model_validator(mode="after")
    def _placed(self) -> "EpochRecord":
        missing = [k for k in ("lesson", "epoch") if getattr(self, k) is None]
        if self.model is not None and missing:
            raise ValueError(f"{missing[0]} is missing (each record of a model names its lesson and epoch)")
        return self


def read_metrics(path: Path) -> list[dict]:
    """The epoch records of a metrics.jsonl: a line cut by a kill mid-write is skipped, a damaged one is an error."""
    return read_jsonl(path, EpochRecord)


class MetricsLog:
    def __init__(self, path: Path, writes: bool = True):
        self.path = Path(path)
        self.writes = writes  # False on every rank but 0 of a distributed run

    def append(self, record: dict) -> None:
        if not self.writes:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record) + "\n"
        with self.path.open("a+b") as f:  # appends always go to the end; reading checks the last byte
            if f.seek(0, os.SEEK_END) > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    line = "\n" + line  # close a line a kill cut mid-write, so this record is not glued to it
            f.write(line.encode("utf-8"))

    def records(self) -> list[dict]:
        return read_metrics(self.path)

    def truncate(self, model: str, lesson: int, epoch: int) -> None:
        """Drop ``model``'s records at or after (lesson, epoch): they are about to be recomputed."""
        if not self.writes or not self.path.is_file():
            return
        keep = [r for r in self.records() if r.get("model") != model or (r["lesson"], r["epoch"]) < (lesson, epoch)]
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))
