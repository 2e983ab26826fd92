"""`--parallel N`: seeds side by side in separate processes give the results of running them one by one."""
from __future__ import annotations

import json

import yaml

from curridistill import cli
from tests.helpers import tiny_config


def _config(tmp_path) -> str:
    cfg = tiny_config(tmp_path, epochs=2)
    cfg["run"]["threads"] = 1  # the thread count is the one thing that could change CPU float reductions
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _per_seed(run_dir) -> dict:
    """Per seed: test accuracy and every epoch's training loss (equal only if training was identical)."""
    agg = json.loads((run_dir / "aggregate.json").read_text())
    out = {}
    for seed in agg["seeds"]:
        child = run_dir / f"seed-{seed}"
        records = [json.loads(line) for line in (child / "metrics.jsonl").read_text().splitlines()]
        losses = [(r["model"], r["train_loss"]) for r in records if r["model"] in ("baseline", "student")]
        out[seed] = (json.loads((child / "report.json").read_text())["student"]["accuracy"], losses)
    return out


def test_parallel_seeds_equal_sequential(tmp_path):
    cfg = _config(tmp_path)
    assert cli.main(["run", cfg, "--seeds", "0,1", "--out", str(tmp_path / "seq"), "--quiet"]) == 0
    assert cli.main(["run", cfg, "--seeds", "0,1", "--parallel", "2", "--out", str(tmp_path / "par"), "--quiet"]) == 0
    sequential, parallel = _per_seed(tmp_path / "seq"), _per_seed(tmp_path / "par")
    assert sequential == parallel and len(parallel) == 2
    saved = yaml.safe_load((tmp_path / "par" / "config.yaml").read_text())
    assert saved["run"]["parallel"] == 2


def test_parallel_below_one_is_one_line(tmp_path, capsys):
    assert cli.main(["run", _config(tmp_path), "--seeds", "0,1", "--parallel", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--parallel 0" in err


def test_tune_parallel_workers_share_one_study(tmp_path):
    """Two workers on one stored study: exactly the asked number of finished trials, no parameters twice."""
    import csv

    cfg = tiny_config(tmp_path, epochs=1)
    cfg["run"]["threads"] = 1
    cfg["tune"] = {"space": {"course.0.optimizer.lr": {"float": [0.01, 0.2], "log": True},
                             "course.0.loss.kd.temperature": {"float": [1, 8]}}, "sampler": "random"}
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "study"
    assert cli.main(["tune", str(path), "--trials", "4", "--parallel", "2", "--out", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader((out / "trials.csv").open()))
    finished = [r for r in rows if r["state"] in ("COMPLETE", "PRUNED")]
    assert len(finished) >= 4 and len({r["params"] for r in rows}) == len(rows)
    assert (out / "best.yaml").is_file()
