"""Malformed files in a run directory given to `report` and `compare`, in-process through ``cli.main``: exit code 2,
one line on stderr naming the file, the key (or line) and the fix, no traceback, and nothing written (no plots,
no report.md / report.html, no compare --out). `compare` refuses a malformed run rather than leaving it out.

One tiny real run and one two-seed parent are trained once per module; each case edits a copy.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from curridistill import api
from curridistill.config import load_config
from tests.helpers import one_error, run_main
from tests.trust.catalogue import base, write_cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("report-runs")
    api.run(load_config(write_cfg(tmp, base(tmp))), out=tmp / "single")
    api.run(load_config(write_cfg(tmp, base(tmp), "s.yaml"), ["run.seeds=[0,1]"]), out=tmp / "seeds")
    return {"single": tmp / "single", "seeds": tmp / "seeds"}


def edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def student(key: str, value):
    return lambda r: r["student"].update({key: value})


def append(path: Path, line: bytes) -> int:
    """Append ``line`` to ``path``; its line number."""
    n = len(path.read_bytes().splitlines()) + 1
    path.write_bytes(path.read_bytes() + line)
    return n


REPORT_CASES = [
    ("classes-a-number", lambda r: r.update(classes=5), "report.json: classes: Input should be a valid list (got 5)"),
    ("confusion-ragged", student("confusion", [[1, 2], [3]]),
     "report.json: student.confusion: the confusion matrix must be square"),
    ("confusion-strings", student("confusion", [["a"]]),
     "report.json: student.confusion.0.0: Input should be a valid integer"),
    ("accuracy-a-string", student("accuracy", "high"),
     "report.json: student.accuracy: Input should be a valid number (got 'high')"),
    ("accuracy-above-1", student("accuracy", 3.5),
     "report.json: student.accuracy: Input should be less than or equal to 1"),
    ("params-a-string", student("params", "many"), "report.json: student.params: Input should be a valid integer"),
    ("f1-a-string", student("f1", "abc"), "report.json: student.f1: Input should be a valid list"),
    ("student-a-string", lambda r: r.update(student="x"),
     "report.json: student: Input should be a valid dictionary (got 'x')"),
    ("student-missing", lambda r: r.pop("student"), "report.json: student is missing"),
    ("teacher-a-list", lambda r: r.update(teacher=[1, 2]), "report.json: teacher: Input should be a valid dictionary"),
    ("data-a-string", lambda r: r.update(data="x"), "report.json: data: Input should be a valid dictionary (got 'x')"),
    ("comparison-a-list", lambda r: r.update(comparison=[1]),
     "report.json: comparison: Input should be a valid dictionary"),
    ("selection-a-mapping", lambda r: r.update(selection={"a": 1}),
     "report.json: selection: Input should be a valid string"),
    ("other-model-accuracy-a-string", lambda r: r.update(student_kd={"accuracy": "high"}),
     "report.json: student_kd.accuracy: Input should be a valid number (got 'high')"),
]


@pytest.mark.parametrize("edit, expect", [c[1:] for c in REPORT_CASES], ids=[c[0] for c in REPORT_CASES])
def test_report_refuses_a_malformed_report_json(edit, expect, runs, tmp_path, capsys):
    d = Path(shutil.copytree(runs["single"], tmp_path / "run"))
    edit_json(d / "report.json", edit)
    line = one_error(*run_main(["report", str(d)], capsys))
    assert f"{d}/{expect}" in line and f"curridistill run --resume {d}" in line, line
    assert not (d / "plots").exists() and not (d / "report.md").exists() and not (d / "report.html").exists()


METRICS_CASES = [
    ("not-utf8", b"\xff\n", "not UTF-8 text (byte 0xff at column 1)"),
    ("epoch-a-string", b'{"model": "student", "lesson": 0, "epoch": "x"}\n',
     "epoch: Input should be a valid integer (got 'x')"),
    ("losses-a-string", b'{"model": "student", "lesson": 0, "epoch": 0, "losses": "x"}\n',
     "losses: Input should be a valid dictionary"),
    ("weights-a-list", b'{"model": "student", "lesson": 0, "epoch": 0, "weights": [1]}\n',
     "weights: Input should be a valid dictionary"),
    ("lesson-missing", b'{"model": "student", "epoch": 0}\n',
     "lesson is missing (each record of a model names its lesson and epoch)"),
    ("model-a-number", b'{"model": 5, "lesson": 0, "epoch": 0}\n', "model: Input should be a valid string (got 5)"),
    ("val-accuracy-a-string", b'{"model": "student", "lesson": 0, "epoch": 0, "val_accuracy": "abc"}\n',
     "val_accuracy: Input should be a valid number"),
    ("nested-too-deep", b"[" * 100_000 + b"\n", "JSON nested too deeply to read"),
]


@pytest.mark.parametrize("line, expect", [c[1:] for c in METRICS_CASES], ids=[c[0] for c in METRICS_CASES])
def test_report_names_a_malformed_metrics_line(line, expect, runs, tmp_path, capsys):
    d = Path(shutil.copytree(runs["single"], tmp_path / "run"))
    n = append(d / "metrics.jsonl", line)
    msg = one_error(*run_main(["report", str(d)], capsys))
    assert f"{d / 'metrics.jsonl'}, line {n}: {expect}" in msg, msg
    assert not (d / "report.md").exists() and not (d / "report.html").exists()


def test_a_line_cut_by_a_kill_is_still_skipped(runs, tmp_path, capsys):
    d = Path(shutil.copytree(runs["single"], tmp_path / "run"))
    append(d / "metrics.jsonl", b'{"model": "student", "les')
    code, _, err = run_main(["report", str(d)], capsys)
    assert code == 0, err
    assert (d / "report.html").is_file()


AGGREGATE_CASES = [
    ("per-seed-a-string", lambda a: a.update(per_seed="x"),
     "aggregate.json: per_seed: Input should be a valid dictionary"),
    ("n-runs-missing", lambda a: a.pop("n_runs"), "aggregate.json: n_runs is missing"),
    ("no-models", lambda a: a.update(models=[]), "aggregate.json: models: List should have at least 1 item"),
    ("summary-a-string", lambda a: a.update(student="zz"),
     "aggregate.json: student: Input should be a valid dictionary"),
    ("confidence-a-string", lambda a: a["student"]["accuracy"].update(confidence="x"),
     "aggregate.json: student.accuracy.confidence: Input should be a valid number (got 'x')"),
    ("p-value-a-string", lambda a: a.update(comparisons={"student_vs_baseline": {"p_value": "x"}}),
     "aggregate.json: comparisons.student_vs_baseline.p_value: Input should be a valid number (got 'x')"),
]


@pytest.mark.parametrize("edit, expect", [c[1:] for c in AGGREGATE_CASES], ids=[c[0] for c in AGGREGATE_CASES])
def test_report_and_compare_refuse_a_malformed_aggregate(edit, expect, runs, tmp_path, capsys):
    d = Path(shutil.copytree(runs["seeds"], tmp_path / "seeds"))
    edit_json(d / "aggregate.json", edit)
    line = one_error(*run_main(["report", str(d)], capsys))
    assert f"{d}/{expect}" in line, line
    assert not (d / "report.md").exists()
    line = one_error(*run_main(["compare", str(runs["single"]), str(d), "--out", str(tmp_path / "c.md")], capsys))
    assert f"{d}/{expect}" in line and f"or leave {d} out of the comparison" in line, line
    assert not (tmp_path / "c.md").exists()


COMPARE_CASES = [
    ("data-a-string", lambda r: r.update(data="x"), "report.json: data: Input should be a valid dictionary (got 'x')"),
    ("empty-object", lambda r: r.clear(), "report.json: student is missing"),
    ("student-a-string", lambda r: r.update(student="x"), "report.json: student: Input should be a valid dictionary"),
    ("accuracy-none", student("accuracy", None),
     "report.json: student.accuracy: Input should be a valid number (got None)"),
    ("latency-a-string", student("latency_ms", "y"), "report.json: student.latency_ms: Input should be a valid number"),
]


@pytest.mark.parametrize("edit, expect", [c[1:] for c in COMPARE_CASES], ids=[c[0] for c in COMPARE_CASES])
def test_compare_refuses_a_malformed_run_instead_of_leaving_it_out(edit, expect, runs, tmp_path, capsys):
    d = Path(shutil.copytree(runs["single"], tmp_path / "bad"))
    edit_json(d / "report.json", edit)
    out = tmp_path / "c.md"
    line = one_error(*run_main(["compare", str(runs["single"]), str(d), "--out", str(out)], capsys))
    assert f"{d}/{expect}" in line and f"or leave {d} out of the comparison" in line, line
    assert not out.exists()


def test_compare_checks_the_child_report_of_a_parent(runs, tmp_path, capsys):
    d = Path(shutil.copytree(runs["seeds"], tmp_path / "seeds"))
    edit_json(d / "seed-0" / "report.json", lambda r: r.update(data="x"))
    line = one_error(*run_main(["compare", str(d), str(runs["single"])], capsys))
    assert f"{d}/seed-0/report.json: data: Input should be a valid dictionary" in line, line


def test_report_and_compare_accept_the_real_runs(runs, tmp_path, capsys):
    d = Path(shutil.copytree(runs["seeds"], tmp_path / "seeds"))
    assert run_main(["report", str(d)], capsys)[0] == 0
    code, _, err = run_main(["compare", str(d), str(runs["single"])], capsys)
    assert code == 0, err
