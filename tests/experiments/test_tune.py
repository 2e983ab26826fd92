"""tune: Optuna study over tune.space on digits; outputs; bad input."""
import csv
import json

import pytest

from curridistill import api
from curridistill.config import load_config
from curridistill.errors import UserError
from curridistill.experiments.tune import parse_space, tune
from tests.experiments.conftest import small, write_config
from tests.helpers import REPO, run_cli

SPACE = {"course.0.loss.kd.temperature": {"float": [1, 8]},
         "course.0.optimizer.lr": {"float": [0.01, 0.2], "log": True},
         "student.kwargs.hidden": {"categorical": [[16], [32]]},
         "course.0.epochs": {"int": [1, 3]}}


def test_tune_three_trials_cli(exp_root):
    raw = small(exp_root)
    raw["tune"] = {"space": SPACE, "n_startup_trials": 2}
    cfg = write_config(exp_root / "tune.yaml", raw)
    out = exp_root / "tune"
    proc = run_cli("tune", str(cfg), "--trials", "3", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert (out / "study.db").is_file()
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["number"] for r in rows] == ["0", "1", "2"]
    assert {"number", "state", "value", "params", "seconds"} <= set(rows[0])
    assert all(r["state"] in ("COMPLETE", "PRUNED") for r in rows)
    best = json.loads((out / "best_params.json").read_text())
    assert best["metric"] == "val_accuracy" and 0 < best["value"] <= 1 and set(best["params"]) == set(SPACE)
    assert best["params"]["student.kwargs.hidden"] in ([16], [32])
    # the objective is the student's best validation accuracy, never a test number
    records = [json.loads(l) for l in (out / f"trial-{best['trial']}" / "metrics.jsonl").read_text().splitlines()]
    assert best["value"] == max(r["val_accuracy"] for r in records if r["model"] == "student")
    # the teacher is trained once and reused by the other trials (its course is pinned)
    reused = [json.loads((out / f"trial-{i}" / "report.json").read_text())["teacher"]["reused_from"] for i in (1, 2)
              if (out / f"trial-{i}" / "report.json").is_file()]
    assert all(reused)
    assert "best: trial" in proc.stdout
    # best.yaml: the original config with the best values, without tune; it validates and runs
    best_cfg = load_config(out / "best.yaml", ["course.0.epochs=1"])
    assert best_cfg.tune is None and best_cfg.student.kwargs["hidden"] == best["params"]["student.kwargs.hidden"]
    assert best_cfg.course[0].optimizer.lr == pytest.approx(best["params"]["course.0.optimizer.lr"])
    report = api.run(best_cfg, out=exp_root / "best-run")
    assert report["student"]["accuracy"] > 0
    # resume: the study already has 3 finished trials, so --trials 3 runs nothing more
    again = tune(cfg, 3, out=out, resume=True)
    assert again["n_trials"] == 3 and again["trial"] == best["trial"]
    with pytest.raises(UserError, match="already holds a study"):
        tune(cfg, 3, out=out)


def test_tune_unknown_key_cli(exp_root):
    raw = small(exp_root)
    raw["tune"] = {"space": {"course.0.optimizer.lrr": {"float": [0.01, 0.1]}}}
    cfg = write_config(exp_root / "tune-bad.yaml", raw)
    proc = run_cli("tune", str(cfg), "--trials", "1", "--out", str(exp_root / "tune-bad"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "course.0.optimizer.lrr" in lines[0] and "course.0.optimizer.lr'" in lines[0], proc.stderr


def test_tune_space_checks(exp_root):
    raw = small(exp_root)
    raw["tune"] = {"space": {"course.0.optimizer.lr": {"float": [0.01, 0.1]}}, "sampler": "grid"}
    with pytest.raises(UserError, match="grid sampler needs discrete choices"):
        tune(raw, 1, out=exp_root / "grid-bad")
    raw["tune"] = {"space": {"course.0.epochs": {"float": [0.5, 2.5]}}}  # epochs must be an int
    with pytest.raises(UserError, match="course.0.epochs"):
        tune(raw, 1, out=exp_root / "type-bad")
    raw["tune"] = {"space": {"student.kwargs.hiden": {"categorical": [[8]]}}}
    with pytest.raises(UserError, match="student.kwargs.hidden"):
        tune(raw, 1, out=exp_root / "kw-bad")
    with pytest.raises(UserError, match="validation metric"):
        load_config(small(exp_root, tune={"space": SPACE, "metric": "test_accuracy"}))
    with pytest.raises(UserError, match="exactly one of"):
        load_config(small(exp_root, tune={"space": {"course.0.epochs": {"int": [1, 2], "float": [1, 2]}}}))
    with pytest.raises(UserError, match="log range needs low > 0"):
        load_config(small(exp_root, tune={"space": {"course.0.optimizer.lr": {"float": [0, 1], "log": True}}}))


def test_grid_space_and_encoding():
    params = parse_space({"a.b": {"categorical": [[16], [32, 16]]}, "c": {"int": [1, 3]}, "d": ["x", "y"]})
    assert params["a.b"].grid() == ["[16]", "[32, 16]"] and params["a.b"].decode("[32, 16]") == [32, 16]
    assert params["c"].grid() == [1, 2, 3] and params["d"].grid() == ["x", "y"]


def test_tune_quickstart_config_is_valid():
    cfg = load_config(REPO / "configs" / "tune_quickstart.yaml")
    assert cfg.tune is not None and cfg.tune.metric == "val_accuracy"


def test_bad_storage_is_one_line(exp_root):
    raw = small(exp_root)
    raw["tune"] = {"space": {"course.0.epochs": {"int": [1, 2]}}}
    for url in ("nosuchdb://x", "sqlite:////nonexistent-dir/x/study.db", "journal:/nonexistent-dir/x/study.log"):
        with pytest.raises(UserError, match="cannot open it"):
            tune(raw, 1, out=exp_root / "bad-storage", storage=url)
        assert not (exp_root / "bad-storage").exists()  # nothing half-made is left


def test_journal_storage_needs_no_database_and_resumes(exp_root):
    """journal:PATH: Optuna's journal file (no SQLAlchemy, e.g. on a GPU machine without it); --resume goes on."""
    raw = small(exp_root, epochs=1)
    raw["tune"] = {"space": {"course.0.optimizer.lr": {"float": [0.01, 0.2], "log": True}}}
    journal = exp_root / "journal" / "study.log"
    journal.parent.mkdir()
    first = tune(raw, 1, out=exp_root / "journal" / "t", storage=f"journal:{journal}")
    assert journal.is_file() and first["n_trials"] == 1 and not (exp_root / "journal" / "t" / "study.db").exists()
    again = tune(raw, 2, out=exp_root / "journal" / "t", storage=f"journal:{journal}", resume=True)
    assert again["n_trials"] == 2
    with pytest.raises(UserError, match="journal: needs a file path"):
        tune(raw, 1, out=exp_root / "journal-bad", storage="journal:")


def test_help_has_examples():
    for cmd in ("tune", "compare"):
        proc = run_cli(cmd, "--help")
        assert proc.returncode == 0 and "example:" in proc.stdout, cmd
    assert "--seeds" in run_cli("run", "--help").stdout
