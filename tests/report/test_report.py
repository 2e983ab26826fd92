"""report.md / report.html / plots from a fake but realistic run directory."""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from curridistill.errors import UserError
from curridistill.evaluate.stats import aggregate_reports
from curridistill.io import write_json, write_text
from curridistill.report import write_report
from curridistill.report.plots import (plot_confusions, plot_curves, plot_pareto, plot_schedules,
                                       plot_seed_spread)

PNG = b"\x89PNG\r\n\x1a\n"
CLASSES = ["zero", "one", "two"]


def _model(acc: float, params: int, latency: float, train_seconds: float | None, student: bool = False) -> dict:
    m = {"accuracy": acc, "top5": 1.0, "f1_macro": acc - 0.01, "f1_weighted": acc - 0.005,
         "precision": [acc, acc - 0.02, acc + 0.01], "recall": [acc - 0.01, acc, acc + 0.005],
         "f1": [acc - 0.005, acc - 0.01, acc + 0.007], "confusion": [[30, 2, 1], [1, 28, 3], [0, 2, 33]],
         "loss": 0.31, "params": params, "flops": params * 2, "weights_bytes": params * 4, "latency_ms": latency,
         "throughput": 1000.0 / latency, "train_seconds": train_seconds, "selected": 2}
    if student:
        m.update(agreement=0.93, kl_teacher_student=0.12, entropy=0.4, mutual_information=1.1)
    return m


def _report(student_acc: float = 0.91, seed: int = 0) -> dict:
    teacher = _model(0.97, 120_000, 0.9, None)
    teacher["reused_from"] = "runs/teacher/teacher.safetensors"
    baseline, student = _model(0.88, 9_000, 0.12, 3.2), _model(student_acc, 9_000, 0.12, 3.5, student=True)
    return {"teacher": teacher, "baseline": baseline, "student": student,
            "comparison": {"student_minus_baseline_accuracy": student_acc - 0.88, "teacher_student_param_ratio": 13.3,
                           "student_speedup_over_teacher": 7.5},
            "selection": "best_val", "selection_note": "best validation accuracy", "classes": CLASSES,
            "data": {"name": "digits", "train": 1200, "val": 130, "test": 360}, "seed": seed, "device": "cpu"}


def _metrics() -> list[dict]:
    recs = []
    for model in ("baseline", "student"):
        for lesson, (name, epochs) in enumerate((("warmup", 1), ("distill", 2))):
            for epoch in range(epochs):
                step = len([r for r in recs if r["model"] == model]) + (0.5 if model == "student" else 0.0)
                kd = model == "student" and lesson == 1
                recs.append({"model": model, "lesson": lesson, "lesson_name": name, "epoch": epoch,
                             "lr": 0.1 / (1 + step), "temperature": 4.0 - epoch if kd else None,
                             "weights": {"ce": 0.1 + 0.2 * epoch, "kd": 0.9 - 0.2 * epoch} if kd else {"ce": 1.0},
                             "train_loss": 1.5 / (1 + step), "losses": {"ce": 1.0 / (1 + step)},
                             "train_accuracy": 0.6 + 0.1 * step, "val_accuracy": 0.62 + 0.1 * step,
                             "val_loss": 1.2 / (1 + step), "seconds": 0.5,
                             **({"data_fraction": 0.5 + 0.25 * epoch, "mean_sample_weight": 0.7} if kd else {})})
    return recs


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    d = tmp_path / "run-0001"
    write_json(d / "report.json", _report())
    lines = [json.dumps(r) for r in _metrics()]
    write_text(d / "metrics.jsonl", "\n".join(lines) + "\n" + '{"model": "student", "les')  # a line cut by a kill
    return d


def _img_count(html: str) -> int:
    return len(re.findall(r'<img [^>]*src="data:image/png;base64,', html))


def test_write_report(run_dir: Path):
    paths = write_report(run_dir)
    md, page = paths["report.md"], paths["report.html"]
    assert md == run_dir / "report.md" and page == run_dir / "report.html"
    plot_paths = [p for k, p in paths.items() if not k.startswith("report.")]
    assert len(plot_paths) >= 4  # curves, schedules, pareto, the confusion matrices in one figure
    for p in plot_paths:
        assert p.parent == run_dir / "plots" and p.read_bytes().startswith(PNG)
    text = md.read_text(encoding="utf-8")
    for p in plot_paths:
        assert f"plots/{p.name}" in text
    assert "| accuracy | 0.9700 | 0.8800 | 0.9100 |" in text
    assert "student minus baseline accuracy" in text and "+0.0300" in text
    assert "agreement with teacher" in text and "zero" in text

    html = page.read_text(encoding="utf-8")
    assert _img_count(html) == len(plot_paths) >= 4
    assert "http://" not in html and "https://" not in html and 'src="plots/' not in html  # self-contained
    for blob in re.findall(r'src="data:image/png;base64,([^"]+)"', html):
        assert base64.b64decode(blob).startswith(PNG)
    assert "<table>" in html and "<style>" in html and "0.9100" in html
    assert not list(run_dir.rglob("*.tmp"))  # atomic writes left no temp files


def test_report_with_aggregate_and_no_baseline(tmp_path: Path):
    d = tmp_path / "agg"
    reports = [_report(a, seed=s) for s, a in enumerate((0.90, 0.92, 0.91))]
    write_json(d / "aggregate.json", aggregate_reports(reports))
    single = reports[0]
    del single["baseline"], single["teacher"]["train_seconds"]
    single["comparison"] = {}
    write_json(d / "report.json", single)  # no metrics.jsonl: models were loaded, not trained
    paths = write_report(d)
    assert "seed_spread" in paths and paths["seed_spread"].read_bytes().startswith(PNG)
    assert "curves" not in paths
    text = paths["report.md"].read_text(encoding="utf-8")
    assert "Across seeds" in text and "student − baseline" in text and "p-value" in text
    assert _img_count(paths["report.html"].read_text(encoding="utf-8")) == len(paths) - 2


def test_report_of_a_multi_seed_parent_uses_its_children(tmp_path: Path):
    d = tmp_path / "seeds"
    reports = [_report(a, seed=s) for s, a in enumerate((0.90, 0.92))]
    for s, r in enumerate(reports):
        write_json(d / f"seed-{s}" / "report.json", r)
        write_text(d / f"seed-{s}" / "metrics.jsonl", "\n".join(json.dumps(m) for m in _metrics()) + "\n")
    write_json(d / "aggregate.json", aggregate_reports(reports))  # the parent has no report.json of its own
    paths = write_report(d)
    assert {"curves", "schedules", "pareto", "seed_spread"} <= set(paths)
    assert paths["report.html"].parent == d


def test_missing_report(tmp_path: Path):
    with pytest.raises(UserError) as exc:
        write_report(tmp_path)
    msg = str(exc.value)
    assert msg == (f"no report.json in {tmp_path}; is this a run directory? run `curridistill run CONFIG` first")


def test_plot_functions_handle_empty_input(tmp_path: Path):
    for fn, arg in ((plot_curves, []), (plot_schedules, []), (plot_pareto, {}), (plot_seed_spread, {})):
        assert fn(arg, tmp_path / f"{fn.__name__}.png").read_bytes().startswith(PNG)
    assert plot_confusions([], [], tmp_path / "c.png").read_bytes().startswith(PNG)
