"""Callbacks: one list of hooks into training (train/callbacks.py), on real runs of the tiny config."""
import json

import pytest

from curridistill import StopAfterEpochs, StopRequested, UserError, api
from curridistill.train.callbacks import Callbacks
from tests.helpers import tiny_config


class Recorder:
    def __init__(self):
        self.records, self.saved = [], 0

    def on_record(self, record):
        self.records.append(record)

    def on_epoch_saved(self):
        self.saved += 1


def test_each_epoch_record_reaches_every_callback_as_written_to_metrics(tmp_path):
    seen, recorder = [], Recorder()
    report = api.run(tiny_config(tmp_path, epochs=2), out=tmp_path / "run", callbacks=[seen.append, recorder])
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert seen == logged == recorder.records and len(logged) == recorder.saved > 0
    assert {r["model"] for r in logged} >= {"student", "baseline"} and "student" in report


def test_stop_after_epochs_stops_like_a_kill_and_resume_equals_an_uninterrupted_run(tmp_path):
    full = api.run(tiny_config(tmp_path, epochs=2), out=tmp_path / "full")
    with pytest.raises(StopRequested, match="after 3 epochs"):
        api.run(tiny_config(tmp_path, epochs=2), out=tmp_path / "cut", callbacks=[StopAfterEpochs(3)])
    resumed = api.resume(tmp_path / "cut")
    assert resumed["student"]["accuracy"] == full["student"]["accuracy"]


def test_a_callback_that_raises_stops_the_run(tmp_path):
    def stop(record):
        raise RuntimeError(f"stop at {record['model']} epoch {record['epoch']}")

    with pytest.raises(RuntimeError, match="epoch 0"):
        api.run(tiny_config(tmp_path, epochs=2), out=tmp_path / "run", callbacks=[stop])


def test_parallel_children_refuse_a_callback_that_cannot_be_sent(tmp_path):
    raw = tiny_config(tmp_path, epochs=1)
    raw["run"]["seeds"], raw["run"]["parallel"] = [0, 1], 2
    with pytest.raises(UserError, match="cannot be sent"):
        api.run(raw, out=tmp_path / "run", callbacks=[lambda record: None])


def test_none_entries_and_objects_without_hooks_are_skipped():
    calls = []
    hooks = Callbacks([None, object(), calls.append, StopAfterEpochs(2)])
    hooks.on_record({"epoch": 0})
    hooks.on_epoch_saved()
    with pytest.raises(StopRequested):
        hooks.on_epoch_saved()
    assert calls == [{"epoch": 0}]
