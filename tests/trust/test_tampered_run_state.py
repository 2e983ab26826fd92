"""A run directory's training state (``<phase>/state.pt``) and finished-phase records (``<phase>/done.json``) damaged
or edited by hand, given to `run --resume` in-process through ``cli.main``: exit code 2, one line on stderr naming the
file and the fix, no traceback, and nothing trained or rewritten (every other file of the run keeps its bytes).

One tiny run stopped in the student's lesson and one finished run are trained once per module and copied per case.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch

from curridistill import api
from curridistill.config import load_config
from curridistill.train.callbacks import StopAfterEpochs, StopRequested
from curridistill.train.metrics_log import read_metrics
from tests.helpers import one_error, run_main
from tests.trust.catalogue import base, write_cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """{"stopped": teacher done (2 epochs), student stopped after epoch 1 of 2; "finished": a complete run}."""
    tmp = tmp_path_factory.mktemp("tampered")
    cfg = base(tmp)
    cfg["course"][0]["epochs"] = 2
    cfg["data"]["subset"] = 300
    config = load_config(write_cfg(tmp, cfg))
    with pytest.raises(StopRequested):
        api.run(config, out=tmp / "stopped", callbacks=[StopAfterEpochs(3)])
    api.run(config, out=tmp / "finished")
    assert (tmp / "stopped" / "student" / "state.pt").is_file() and (tmp / "finished" / "report.json").is_file()
    return {name: tmp / name for name in ("stopped", "finished")}


def files_of(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def edit_state(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def tamper(path: Path) -> None:
        state = torch.load(path, weights_only=True)
        change(state)
        torch.save(state, path)
    return tamper


def _set(keys: str, value) -> Callable[[dict], None]:
    *parents, last = keys.split(".")

    def change(state: dict) -> None:
        for key in parents:
            state = state[key]
        state[last] = value
    return change


def _drop_rng(state: dict) -> None:
    del state["lesson_state"]["rng"]


STATE_CASES = [  # (id, tampering of student/state.pt, words the line must hold)
    ("epoch-negative", edit_state(_set("lesson_state.epoch", -5)), "lesson_state.epoch: Input should be greater"),
    ("epoch-beyond-the-lesson", edit_state(_set("lesson_state.epoch", 1000)), "epoch is 1000 but lesson 0"),
    ("lesson-beyond-the-course", edit_state(_set("lesson", 7)), "lesson is 7 but the student course has 1 lesson"),
    ("epoch-a-string", edit_state(_set("lesson_state.epoch", "2")), "lesson_state.epoch: Input should be a valid int"),
    ("only-a-lesson", lambda p: torch.save({"lesson": 0}, p), "weights is missing"),
    ("a-list", lambda p: torch.save([1, 2], p), "is not a training state (expected a dict, got a list)"),
    ("rng-missing", edit_state(_drop_rng), "lesson_state.rng is missing"),
    ("rng-not-a-generator-state", edit_state(_set("lesson_state.rng", torch.zeros(3))), "lesson_state.rng: expected"),
    ("weights-an-absolute-path", edit_state(_set("weights", "/etc/passwd")), "weights is '/etc/passwd', which is not"),
    ("weights-leave-the-run", edit_state(_set("weights", "../../finished/student/model.safetensors")), "which is not"),
    ("weights-file-missing", edit_state(_set("weights", "last-0-9.safetensors")), "which is not in"),
    ("sampler-state-empty", edit_state(_set("lesson_state.sampler", {})), "the saved lesson state does not fit"),
    ("truncated", lambda p: p.write_bytes(p.read_bytes()[:300]), "corrupt training state"),
    ("garbage", lambda p: p.write_bytes(b"not a checkpoint"), "corrupt training state"),
]


@pytest.mark.parametrize("tamper, expect", [c[1:] for c in STATE_CASES], ids=[c[0] for c in STATE_CASES])
def test_a_tampered_training_state_is_refused_before_training(tamper, expect, runs, tmp_path, capsys):
    d = Path(shutil.copytree(runs["stopped"], tmp_path / "stopped"))
    tamper(d / "student" / "state.pt")
    before = files_of(d)
    line = one_error(*run_main(["run", "--quiet", "--resume", str(d)], capsys))
    assert "student/state.pt" in line and expect in line, line
    assert "delete it to train the student phase again" in line, line
    assert files_of(d) == before  # nothing trained: metrics.jsonl, the checkpoints and the state keep their bytes


DONE_CASES = [  # (id, phase, content of its done.json, words the line must hold)
    ("a-list", "student", "[1]", "is not a finished phase's record (expected a JSON object, got a list)"),
    ("seconds-a-string", "student", '{"train_seconds": "abc", "selected": 5}', "train_seconds: Input should be a valid"),
    ("selected-a-number", "student", '{"selected": 5}', "selected: Input should be a valid dictionary"),
    ("seconds-negative", "teacher", '{"train_seconds": -1}', "train_seconds: Input should be greater than or equal"),
    ("accuracy-above-one", "teacher", '{"selected": {"lesson": 0, "epoch": 0, "val_accuracy": 7}}',
     "selected.val_accuracy: Input should be less than or equal to 1"),
    ("not-json", "student", "{not json", "corrupt JSON file"),
]


@pytest.mark.parametrize("phase, content, expect", [c[1:] for c in DONE_CASES], ids=[c[0] for c in DONE_CASES])
def test_a_tampered_phase_record_is_refused(phase, content, expect, runs, tmp_path, capsys):
    d = Path(shutil.copytree(runs["finished"], tmp_path / "finished"))
    (d / "report.json").unlink()
    (d / phase / "done.json").write_text(content)
    before = files_of(d)
    line = one_error(*run_main(["run", "--quiet", "--resume", str(d)], capsys))
    assert f"{phase}/done.json" in line and expect in line, line
    assert files_of(d) == before


def test_an_untampered_stopped_run_resumes(runs, tmp_path, capsys):
    d = Path(shutil.copytree(runs["stopped"], tmp_path / "stopped"))
    code, _, err = run_main(["run", "--quiet", "--resume", str(d)], capsys)
    assert code == 0, err
    assert (d / "report.json").is_file() and not (d / "student" / "state.pt").exists()
    assert [r["epoch"] for r in read_metrics(d / "metrics.jsonl") if r["model"] == "student"] == [0, 1]
