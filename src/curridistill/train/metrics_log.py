"""metrics.jsonl: one JSON object per epoch per lesson, appended as training goes."""
from __future__ import annotations

import json
from pathlib import Path

from curridistill.io import write_text


class MetricsLog:
    def __init__(self, path: Path, sinks=(), writes: bool = True):
        self.path = Path(path)
        self.sinks = [s for s in sinks if s is not None]  # called with each record after it is written (TensorBoard, tune)
        self.writes = writes  # False on every rank but 0 of a distributed run

    def append(self, record: dict) -> None:
        if not self.writes:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        for sink in self.sinks:
            sink(record)

    def records(self) -> list[dict]:
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill mid-write
        return out

    def truncate(self, model: str, lesson: int, epoch: int) -> None:
        """Drop ``model``'s records at or after (lesson, epoch): they are about to be recomputed."""
        if not self.writes or not self.path.is_file():
            return
        keep = [r for r in self.records() if r.get("model") != model or (r["lesson"], r["epoch"]) < (lesson, epoch)]
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))
