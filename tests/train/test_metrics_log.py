"""MetricsLog (train/metrics_log.py): metrics.jsonl gets one JSON line per record; a line cut by a kill is skipped
by the reader, and the truncation a resume does leaves a file that appends cleanly again."""
import json

from curridistill.train.metrics_log import MetricsLog


def rec(model: str, lesson: int, epoch: int, **more) -> dict:
    return {"model": model, "lesson": lesson, "epoch": epoch, "val_accuracy": 0.5 + epoch / 100, **more}


def test_each_append_adds_one_json_line(tmp_path):
    log = MetricsLog(tmp_path / "run" / "metrics.jsonl")  # the directory does not exist yet
    assert log.records() == []
    records = [rec("teacher", 0, 0), rec("teacher", 0, 1, losses={"ce": 1.25}), rec("student", 0, 0, lr=None)]
    for i, r in enumerate(records, 1):
        log.append(r)
        lines = log.path.read_text(encoding="utf-8").splitlines()
        assert len(lines) == i and json.loads(lines[-1]) == r
    assert log.path.read_text(encoding="utf-8").endswith("\n")
    assert log.records() == records


def test_a_line_cut_by_a_kill_is_skipped(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.append(rec("student", 0, 0))
    log.append(rec("student", 0, 1))
    with log.path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(rec("student", 0, 2))[:25])  # killed mid-write: no closing brace, no newline
    assert log.records() == [rec("student", 0, 0), rec("student", 0, 1)]


def test_truncate_drops_what_a_resume_recomputes_and_repairs_a_cut_line(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    kept = [rec("teacher", 0, 0), rec("teacher", 0, 1),
            rec("student", 0, 0), rec("student", 0, 1), rec("student", 1, 0)]
    for r in kept + [rec("student", 1, 1), rec("student", 2, 0)]:
        log.append(r)
    with log.path.open("a", encoding="utf-8") as f:
        f.write('{"model": "student", "lesson": 2, "ep')  # the record being written when the run was killed
    log.truncate("student", 1, 1)  # the resume continues the student at lesson 1, epoch 1
    assert log.records() == kept  # the teacher's records and the student's earlier ones stay, in order
    assert all(line.startswith("{") and line.endswith("}") for line in log.path.read_text().splitlines())
    log.append(rec("student", 1, 1))  # the recomputed epoch is readable: the cut line is gone
    assert log.records() == kept + [rec("student", 1, 1)]
    assert not list(tmp_path.glob(".*.tmp"))  # rewritten atomically, no temp file left


def test_a_log_that_does_not_write_touches_nothing(tmp_path):
    log = MetricsLog(tmp_path / "sub" / "metrics.jsonl", writes=False)  # every rank but 0 of a distributed run
    log.append(rec("student", 0, 0))
    log.truncate("student", 0, 0)
    assert not (tmp_path / "sub").exists()
    other = MetricsLog(tmp_path / "metrics.jsonl")
    other.append(rec("student", 0, 0))
    MetricsLog(other.path, writes=False).truncate("student", 0, 0)
    assert other.records() == [rec("student", 0, 0)]


def test_a_record_appended_after_a_cut_line_is_kept(tmp_path):
    from curridistill.train.metrics_log import MetricsLog

    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.append({"a": 1})
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"b": ')  # a kill mid-write
    log.append({"c": 3})
    log.append({"d": 4})
    assert log.records() == [{"a": 1}, {"c": 3}, {"d": 4}]
