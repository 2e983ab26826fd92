"""benchmarks/prune_vs_scratch.py: a row per run directory, pruned or trained from scratch, read from the runs."""
import json

import pytest
import yaml
from scipy import stats as scipy_stats

from curridistill import cli
from tests.helpers import load_benchmark, tiny_config

pytest.importorskip("torch_pruning")


def run(tmp_path, name: str, course: list[dict], seed: int = 0) -> str:
    cfg = tiny_config(tmp_path, student={"name": "cnn", "kwargs": {"widths": [8, 16]}},
                      teacher={"name": "cnn", "kwargs": {"widths": [16, 32]}}, baseline={"enabled": False}, course=course)
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / name
    assert cli.main(["run", str(tmp_path / f"{name}.yaml"), "--out", str(out), "--quiet", "--set", "run.tensorboard=false",
                     "--set", f"run.seed={seed}"]) == 0
    return str(out)


def test_rows_for_a_pruned_and_a_scratch_run(tmp_path, capsys):
    lesson = {"loss": {"ce": 0.1, "kd": {"weight": 0.9, "temperature": 4}}, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}}
    pruned = run(tmp_path, "pruned", [{"epochs": 2, **lesson}, {"epochs": 1, "prune": {"amount": 0.5}, **lesson}])
    scratch = run(tmp_path, "scratch", [{"epochs": 3, **lesson}])
    out = tmp_path / "pvs.json"
    assert load_benchmark("prune_vs_scratch").main([pruned, scratch, "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["git"] and record["command"] and record["machine"]
    first, second = record["rows"]
    assert first["how"] == "pruned 50% from the trained model" and first["epochs_per_lesson"] == [2, 1]
    assert second["how"] == "trained from random weights" and second["epochs"] == 3
    assert first["params"] < second["params"]  # the same cnn, half its channels gone
    report = json.loads((tmp_path / "pruned" / "report.json").read_text())
    assert first["test_accuracy"] == report["student"]["accuracy"]
    md = out.with_suffix(".md").read_text()
    assert first["seed"] == 0 and first["lr"] == 0.05
    assert len(first["train_accuracy_by_epoch"]) == 3 and len(second["val_accuracy_by_epoch"]) == 3
    assert md.count("\n| ") == 2 and "| pruned | pruned 50% from the trained model | 0 | 0.05 | 3 (2+1) |" in md


def test_seeds_of_one_arm_are_summarized_and_tested_against_the_first_arm(tmp_path):
    lesson = {"loss": {"ce": 0.1, "kd": {"weight": 0.9, "temperature": 4}}, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}}
    pruned = [run(tmp_path, f"pruned-s{s}", [{"epochs": 1, **lesson}, {"epochs": 1, "prune": {"amount": 0.5}, **lesson}], s)
              for s in (0, 1)]
    control = [run(tmp_path, f"control-s{s}", [{"epochs": 1, **lesson}, {"epochs": 1, **lesson}], s) for s in (0, 1)]
    out = tmp_path / "arms.json"
    assert load_benchmark("prune_vs_scratch").main([*pruned, *control, "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    first, second = record["arms"]
    assert first["seeds"] == [0, 1] and second["seeds"] == [0, 1] and first["params"] < second["params"]
    accs = [json.loads((tmp_path / d / "report.json").read_text())["student"]["accuracy"] for d in pruned]
    others = [json.loads((tmp_path / d / "report.json").read_text())["student"]["accuracy"] for d in control]
    assert first["accuracy"]["n"] == 2 and first["accuracy"]["mean"] == pytest.approx(sum(accs) / 2)
    expected = scipy_stats.ttest_ind(others, accs, equal_var=False)
    assert len(set(accs + others)) > 2  # the seeds differ, so the test is defined
    assert second["vs_first_arm"]["p_value"] == pytest.approx(expected.pvalue)
    # each pruned seed is compared with its own student before the cut: the ship report's `student` stage
    before = [next(r["accuracy"] for r in json.loads((tmp_path / d / "report.json").read_text())["compression"]["rows"]
                   if r["stage"] == "student") for d in pruned]
    assert first["drop_from_unpruned"]["mean"] == pytest.approx(sum(a - b for a, b in zip(accs, before)) / 2)
    assert second["drop_from_unpruned"] is None  # nothing was cut
    md = out.with_suffix(".md").read_text()
    assert "Over seeds" in md and "| pruned 50% from the trained model |" in md.split("Over seeds")[1]


def test_an_unfinished_run_is_one_line(tmp_path, capsys):
    (tmp_path / "half").mkdir()
    assert load_benchmark("prune_vs_scratch").main([str(tmp_path / "half"), "--json", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "has no report.json" in err and not (tmp_path / "x.json").exists()
