"""benchmarks/accuracy_table.py: every method row is a valid config, the table is paired against one
student-alone baseline, and a second invocation reads finished rows back instead of retraining."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from curridistill.config import load_config
from curridistill.evaluate.stats import paired_t_test
from tests.helpers import REPO, load_benchmark, tiny_config

SCRIPT = REPO / "benchmarks" / "accuracy_table.py"


def test_every_row_of_the_cpu_scale_protocol_is_a_valid_config():
    table = load_benchmark("accuracy_table")
    base = yaml.safe_load((REPO / "configs" / "protocol" / "cifar10_cpu_scale.yaml").read_text())
    rows = table.rows(base)
    assert {"kd", "dkd", "dist", "kd+ls", "fitnet", "at", "ctkd", "ctkd (instance)", "curriculum+kd", "self-paced kd",
            "annealing-kd", "takd (resnet14)", "crd", "crd (queue)"} <= set(rows)
    for name, edits in rows.items():
        cfg = load_config({**base, **edits})
        assert sum(lesson.epochs for lesson in cfg.course) == base["course"][0]["epochs"], name  # same budget
        assert all(lesson.optimizer.lr == 0.05 for lesson in cfg.course), name


def test_takd_assistant_sits_between_teacher_and_student():
    table = load_benchmark("accuracy_table")
    base = yaml.safe_load((REPO / "configs" / "protocol" / "cifar10_cpu_scale.yaml").read_text())
    assert "takd (resnet14)" in table.rows(base)
    assert "takd (resnet32)" in table.rows({**base, "student": {"name": "resnet20"}})
    assert "takd (resnet44)" in table.rows({**base, "student": {"name": "resnet20"}}, assistant="resnet44")
    assert not any(name.startswith("takd") for name in table.rows({**base, "student": {"name": "mobilenetv2"}}))


def run_table(tmp_path, *extra, seeds="0,1"):
    raw = tiny_config(tmp_path, epochs=1)
    raw["run"]["threads"] = 1
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump(raw))
    return subprocess.run([sys.executable, str(SCRIPT), str(config), "--seeds", seeds, "--rows", "dist",
                           "--out", str(tmp_path / "rows"), "--json", str(tmp_path / "table.json"), *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_table_is_paired_against_one_baseline_and_resumes(tmp_path):
    proc = run_table(tmp_path)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "table.json").read_text())
    methods = [r["method"] for r in record["rows"]]
    assert methods == ["student alone", "kd", "dist"]  # kd is added: it holds the baseline and the p-value reference
    alone, kd, dist = record["rows"]
    kd_agg = json.loads((tmp_path / "rows" / "kd" / "aggregate.json").read_text())
    assert alone["per_seed"] == kd_agg["per_seed"]["baseline"] and len(alone["per_seed"]) == 2
    assert not (tmp_path / "rows" / "dist" / "seed-0" / "baseline").exists()  # trained once, in the kd row only
    assert dist["delta_vs_alone"] == sum(dist["per_seed"]) / 2 - sum(alone["per_seed"]) / 2
    assert kd["p_vs_kd"] is None and 0 <= dist["p_vs_kd"] <= 1 and 0 <= alone["p_vs_kd"] <= 1
    assert all(len(r["train_seconds"]) == 2 and min(r["train_seconds"]) > 0 for r in record["rows"])
    assert alone["p_vs_alone"] is None and 0 <= kd["p_vs_alone"] <= 1 and record["complete"] is True
    # the paired test over the shared seeds rides along in the JSON (the table's test stays Welch's)
    assert dist["paired_p_vs_alone"] == paired_t_test(dist["per_seed"], alone["per_seed"])["p_value"]
    assert kd["paired_p_vs_kd"] is None and "paired" in record["notes"]["paired_p_vs_kd"]
    assert record["command"].startswith("python benchmarks/accuracy_table.py") and record["seeds"] == [0, 1]
    assert "| dist |" in (tmp_path / "table.md").read_text()
    stamp = (tmp_path / "rows" / "dist" / "aggregate.json").stat().st_mtime_ns
    assert run_table(tmp_path).returncode == 0  # finished rows are read back, not retrained
    assert (tmp_path / "rows" / "dist" / "aggregate.json").stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "table.json").read_text())["rows"][2]["per_seed"] == dist["per_seed"]
    seed0 = (tmp_path / "rows" / "dist" / "seed-0" / "report.json").stat().st_mtime_ns
    assert run_table(tmp_path, seeds="0,1,2").returncode == 0  # one more seed: only seed 2 trains
    assert (tmp_path / "rows" / "dist" / "seed-0" / "report.json").stat().st_mtime_ns == seed0
    grown = json.loads((tmp_path / "table.json").read_text())["rows"]
    assert [len(r["per_seed"]) for r in grown] == [3, 3, 3] and grown[2]["per_seed"][:2] == dist["per_seed"]
    proc = run_table(tmp_path, "--set", "course.0.optimizer.lr=0.01", seeds="0,1,2")  # other settings: refused
    assert proc.returncode == 2 and "other settings" in proc.stderr and len(proc.stderr.splitlines()) == 1


BAD_INPUTS = {  # arguments after a valid config (None: no config file at all) -> what the one line names
    "unknown row": (["--rows", "nope"], "unknown row(s) ['nope']"),
    "seed that is not a number": (["--seeds", "0,x"], "--seeds"),
    "misspelt key in --set": (["--set", "course.0.epochz=1"], "epochz"),
    "config file missing": (None, "not found"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_clear_line(tmp_path, capsys, case):
    """In process (the script's ``main``), before anything trains: exit 2, one line, no JSON written."""
    extra, named = BAD_INPUTS[case]
    config = tmp_path / "base.yaml"
    if extra is not None:
        config.write_text(yaml.safe_dump(tiny_config(tmp_path, epochs=1)))
        argv = [str(config), "--seeds", "0,1", "--rows", "dist", *extra]
    else:
        argv = [str(tmp_path / "missing.yaml")]
    code = load_benchmark("accuracy_table").main([*argv, "--out", str(tmp_path / "rows"), "--json", str(tmp_path / "t.json")])
    err = capsys.readouterr().err
    assert code == 2 and named in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "t.json").exists() and not (tmp_path / "rows").exists()


def test_seeds_recorded_in_the_json_are_read_back_when_the_run_folders_are_gone(tmp_path):
    assert run_table(tmp_path).returncode == 0
    first = json.loads((tmp_path / "table.json").read_text())
    shutil.rmtree(tmp_path / "rows")  # a fresh checkout: the committed JSON is all that is left
    proc = run_table(tmp_path, seeds="0,1,2")
    assert proc.returncode == 0, proc.stderr
    again = json.loads((tmp_path / "table.json").read_text())
    for old, new in zip(first["rows"], again["rows"]):
        assert new["per_seed"][:2] == old["per_seed"] and len(new["per_seed"]) == 3, new["method"]
        assert set(new["read_back"]) == {"0", "1"} and new["read_back"]["0"]["commit"] == first["git"]["commit"]
    assert load_config(tmp_path / "rows" / "dist" / "config.yaml").run.seeds == [2]  # only the new seed trained
    assert not (tmp_path / "rows" / "dist" / "seed-0").exists()
    assert "read back" in proc.stdout


def test_a_json_for_another_protocol_is_not_read_back(tmp_path):
    assert run_table(tmp_path).returncode == 0
    record = json.loads((tmp_path / "table.json").read_text())
    record["protocol"]["epochs"] += 1
    (tmp_path / "table.json").write_text(json.dumps(record))
    shutil.rmtree(tmp_path / "rows")
    assert run_table(tmp_path).returncode == 0
    assert load_config(tmp_path / "rows" / "dist" / "config.yaml").run.seeds == [0, 1]  # trained again
    assert all(not r["read_back"] for r in json.loads((tmp_path / "table.json").read_text())["rows"])


def test_an_invocation_on_fewer_rows_keeps_the_others_in_the_json(tmp_path):
    """More seeds for kd alone rewrites the JSON after its row: the dist row it did not touch stays recorded,
    so stopping it there (or at any row) never loses what the durable record held."""
    assert run_table(tmp_path).returncode == 0
    first = {r["method"]: r for r in json.loads((tmp_path / "table.json").read_text())["rows"]}
    proc = run_table(tmp_path, "--rows", "kd", "--more-seeds", "kd=0,1,2")
    assert proc.returncode == 0, proc.stderr
    again = {r["method"]: r for r in json.loads((tmp_path / "table.json").read_text())["rows"]}
    assert again["dist"]["per_seed"] == first["dist"]["per_seed"]
    assert len(again["kd"]["per_seed"]) == 3 and again["kd"]["per_seed"][:2] == first["kd"]["per_seed"]


def test_holm_counts_kd_vs_alone_once_and_marks_both_of_its_cells_alike():
    table = load_benchmark("accuracy_table")
    rows = [{"method": "student alone", "p_vs_alone": None, "p_vs_kd": 0.022},
            {"method": "kd", "p_vs_alone": 0.022, "p_vs_kd": None},
            {"method": "dkd", "p_vs_alone": 0.001, "p_vs_kd": 0.5}]
    table._mark_holm(rows)
    # one family of three distinct tests: 0.001 * 3, 0.022 * 2, 0.5 * 1
    assert rows[2]["holm_p_vs_alone"] == pytest.approx(0.003)
    assert rows[1]["holm_p_vs_alone"] == rows[0]["holm_p_vs_kd"] == pytest.approx(0.044)
    assert rows[1]["holm_p_vs_alone_significant"] and rows[0]["holm_p_vs_kd_significant"]
    assert rows[2]["holm_p_vs_kd"] == pytest.approx(0.5) and not rows[2]["holm_p_vs_kd_significant"]
    assert rows[0]["holm_p_vs_alone"] is None and rows[1]["holm_p_vs_kd"] is None


def test_caption_names_the_rows_with_other_seeds():
    table = load_benchmark("accuracy_table")
    record = {"seeds": [0, 1, 2], "rows": [{"method": "kd", "seeds": [0, 1, 2, 3, 4]}, {"method": "at", "seeds": [0, 1, 2]},
                                          {"method": "dkd", "seeds": [0, 1, 2, 3, 4]}, {"method": "old"}]}
    assert table._seeds_text(record) == "0,1,2 (kd, dkd: 0,1,2,3,4)"


def test_paired_vs_welch_counts_each_comparison_once(capsys):
    """kd vs alone sits in two cells (the kd row's p vs alone, the alone row's p vs kd): counted once."""
    record = {"rows": [
        {"method": "student alone", "p_vs_alone": None, "paired_p_vs_alone": None, "p_vs_kd": 0.04, "paired_p_vs_kd": 0.2},
        {"method": "kd", "p_vs_alone": 0.04, "paired_p_vs_alone": 0.2, "p_vs_kd": None, "paired_p_vs_kd": None},
        {"method": "dkd", "p_vs_alone": 0.3, "paired_p_vs_alone": 0.01, "p_vs_kd": 0.5, "paired_p_vs_kd": 0.6}]}
    found = load_benchmark("paired_vs_welch").comparisons(record)
    assert {frozenset((r, ref)) for r, ref, _, _ in found} == {frozenset(p) for p in (
        ("dkd", "kd"), ("dkd", "student alone"), ("kd", "student alone"))} and len(found) == 3
