"""benchmarks/ship_table.py: runs a shipping config and records its stages, with the commit whose code ran."""
import json

import pytest
import yaml

from curridistill.bench import throughput
from tests.helpers import load_benchmark, tiny_config

pytest.importorskip("torch_pruning")


def test_records_the_stages_and_the_commit_taken_when_the_run_started(tmp_path, monkeypatch):
    lesson = {"loss": {"ce": 0.1, "kd": {"weight": 0.9, "temperature": 4}}, "optimizer": {"name": "sgd", "lr": 0.05}}
    cfg = tiny_config(tmp_path, student={"name": "cnn", "kwargs": {"widths": [8, 16]}}, baseline={"enabled": False},
                      course=[{"epochs": 1, **lesson}, {"epochs": 1, "prune": {"amount": 0.5}, **lesson}],
                      ship={"quantize": ["dynamic"], "export": [], "predict_samples": 0})
    config = tmp_path / "ship.yaml"
    config.write_text(yaml.safe_dump(cfg))
    script = load_benchmark("ship_table")
    # HEAD moves while an hour-long run trains: the record names the commit taken at the start, not at the end
    monkeypatch.setattr(script, "git_commit", lambda: {"commit": "at-start", "dirty": False})
    monkeypatch.setattr(throughput, "git_commit", lambda: {"commit": "at-end", "dirty": False})
    out = tmp_path / "result.json"
    argv = [str(config), "--out", str(tmp_path / "run"), "--json", str(out), "--set", "run.tensorboard=false"]
    assert script.main(argv) == 0
    record = json.loads(out.read_text())
    assert record["git"]["commit"] == "at-start" and record["invocations"] == 1
    stages = [row["stage"] for row in record["stages"]]
    assert stages == ["teacher", "student", "pruned 50% + recovery", "int8 dynamic"]
    assert len(record["prune_steps"]) == 1
    md = out.with_suffix(".md").read_text()
    assert "| pruned 50% + recovery |" in md and "Pruning steps" in md


def test_the_unpruned_control_has_no_pruning_section_and_its_result_may_go_in_a_new_folder(tmp_path):
    lesson = {"loss": {"ce": 0.1, "kd": {"weight": 0.9, "temperature": 4}}, "optimizer": {"name": "sgd", "lr": 0.05}}
    cfg = tiny_config(tmp_path, student={"name": "cnn", "kwargs": {"widths": [8, 16]}}, baseline={"enabled": False},
                      course=[{"epochs": 1, **lesson}, {"epochs": 1, **lesson}],
                      ship={"quantize": ["dynamic"], "export": [], "predict_samples": 0})
    config = tmp_path / "control.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "seeds" / "control_seed0.json"  # one folder per experiment: its tables are not README tables
    argv = [str(config), "--out", str(tmp_path / "run"), "--json", str(out), "--set", "run.tensorboard=false"]
    assert load_benchmark("ship_table").main(argv) == 0
    record = json.loads(out.read_text())
    assert [row["stage"] for row in record["stages"]] == ["teacher", "student", "int8 dynamic"]
    assert record["prune_steps"] == []
    md = out.with_suffix(".md").read_text()
    assert "| student |" in md and "Pruning steps" not in md
