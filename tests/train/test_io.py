"""Atomic writes (io.py): a write either replaces the file whole or leaves the old one untouched, with no
temporary file behind; what cannot be written is refused with one line."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from curridistill.errors import UserError
from curridistill.io import atomic_write, clean_orphans, write_json, write_text

OLD = '{\n  "accuracy": 0.9\n}\n'


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_write_json_replaces_the_file_and_converts_tensors_and_paths(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(OLD)
    write_json(path, {"accuracy": torch.tensor(0.5), "logits": torch.tensor([1.0, 2.0]), "dir": tmp_path,
                      "count": np.int64(3), "f": np.float32(0.25)})
    assert json.loads(path.read_text()) == {"accuracy": 0.5, "logits": [1.0, 2.0], "dir": str(tmp_path), "count": 3,
                                            "f": 0.25}
    assert leftovers(tmp_path) == []


def test_an_object_json_cannot_serialize_leaves_the_old_file_intact(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(OLD)
    with pytest.raises(TypeError, match="not JSON serializable: object"):
        write_json(path, {"accuracy": 0.95, "model": object()})
    assert path.read_text() == OLD
    assert leftovers(tmp_path) == []
    with pytest.raises(TypeError):
        write_json(tmp_path / "new.json", {"x": {1, 2}})  # a set: nothing is created at all
    assert not (tmp_path / "new.json").exists()


def test_a_write_that_fails_half_way_leaves_the_old_file_intact(tmp_path):
    path = tmp_path / "notes.md"
    path.write_text("old\n")
    with pytest.raises(UnicodeEncodeError):  # a lone surrogate cannot be encoded: the write fails
        write_text(path, "new text " * 1000 + "\ud800")
    assert path.read_text() == "old\n"
    assert leftovers(tmp_path) == []

    def half(tmp: str) -> None:
        Path(tmp).write_text("partial")
        raise KeyboardInterrupt  # a Ctrl-C mid-write is cleaned up too

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half)
    assert path.read_text() == "old\n"
    assert leftovers(tmp_path) == []


def test_new_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    path = write_text(tmp_path / "deep" / "er" / "a.txt", "x")  # parents are created
    assert path.read_text() == "x"
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not the 0600 of a temp file


def test_unwritable_targets_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="is a directory; give a file path"):
        write_text(tmp_path, "x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="cannot write .*; choose a writable path"):
        write_json(tmp_path / "file" / "report.json", {})
    assert (tmp_path / "file").read_text() == "x"


def test_clean_orphans_removes_only_temp_files_of_killed_writers(tmp_path):
    (tmp_path / "state.pt").write_text("keep")
    (tmp_path / ".state.pt.abc123.tmp").write_text("orphan")
    (tmp_path / ".other.json.x.tmp").write_text("orphan of another file")
    removed = clean_orphans(tmp_path, "state.pt")
    assert [p.name for p in removed] == [".state.pt.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.x.tmp", "state.pt"]
    assert clean_orphans(tmp_path / "absent") == []
