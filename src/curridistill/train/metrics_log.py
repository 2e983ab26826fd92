"""metrics.jsonl: one JSON object per epoch per lesson, appended as training goes."""
from __future__ import annotations

import json
import os
from pathlib import Path

from curridistill.io import read_jsonl, write_text


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
        return read_jsonl(self.path)  # a line cut by a kill mid-write is skipped

    def truncate(self, model: str, lesson: int, epoch: int) -> None:
        """Drop ``model``'s records at or after (lesson, epoch): they are about to be recomputed."""
        if not self.writes or not self.path.is_file():
            return
        keep = [r for r in self.records() if r.get("model") != model or (r["lesson"], r["epoch"]) < (lesson, epoch)]
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))
