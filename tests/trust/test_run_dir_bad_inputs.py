"""Bad input in run directories given back to `run --resume`, in-process through ``cli.main``: exit code 2, one line
on stderr naming the file (or the value) and the fix, no traceback, and nothing lost or half-written: a rejected
``--set`` leaves config.yaml as it was (a plain --resume still works), a malformed child report leaves
aggregate.json as it was, a malformed metrics.jsonl is neither truncated nor rewritten. Also the timing settings
(run.eval) that would measure nothing, refused before training and by the timing code itself.

One tiny stopped run, one finished run and one two-seed parent are trained once per module and copied per case.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from curridistill import api
from curridistill.config import load_config
from curridistill.errors import UserError
from curridistill.evaluate.efficiency import efficiency, latency_ms, throughput
from curridistill.train.callbacks import StopAfterEpochs, StopRequested
from tests.helpers import one_error, run_main
from tests.trust.catalogue import base, write_cfg

CONFIG_FILES = ("config.yaml", api.APPLIED)


def snapshot(d: Path, names) -> dict[str, bytes]:
    return {n: (d / n).read_bytes() for n in names if (d / n).is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """{"stopped": a run stopped in the student's lesson (teacher done, student checkpointed),
    "finished": a complete run, "seeds": a finished two-seed parent}."""
    tmp = tmp_path_factory.mktemp("run-dirs")
    cfg = load_config(write_cfg(tmp, base(tmp)))
    with pytest.raises(StopRequested):
        api.run(cfg, out=tmp / "stopped", callbacks=[StopAfterEpochs(2)])  # the teacher's epoch, the student's
    api.run(cfg, out=tmp / "finished")
    api.run(load_config(write_cfg(tmp, base(tmp), "s.yaml"), ["run.seeds=[0,1]"]), out=tmp / "seeds")
    assert (tmp / "stopped" / "student" / "state.pt").is_file() and (tmp / "seeds" / "aggregate.json").is_file()
    return {name: tmp / name for name in ("stopped", "finished", "seeds")}


def copy_of(runs: dict[str, Path], name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(runs[name], tmp_path / name))


# ------------------------------------------------------------------ 1. --resume --set: checked before it is saved
SET_CASES = [
    ("teacher-cannot-be-built", "stopped", "teacher.name=resnet8", "cannot build 'resnet8'"),
    ("teacher-cannot-be-built-finished", "finished", "teacher.name=resnet8", "cannot build 'resnet8'"),
    ("batch-larger-than-the-data", "finished", "data.batch_size=100000", "is larger than the"),
    ("student-checkpoint-does-not-fit", "stopped", "student.kwargs.hidden=[32]", "do not fit the model"),
    ("finished-student-does-not-fit", "finished", "student.kwargs.hidden=[32]", "do not fit the model"),
    ("momentum-out-of-range-finished", "finished", "course.0.optimizer.momentum=-1", "momentum"),
]


@pytest.mark.parametrize("run, override, expect", [c[1:] for c in SET_CASES], ids=[c[0] for c in SET_CASES])
def test_a_rejected_set_on_resume_changes_nothing(run, override, expect, runs, tmp_path, capsys):
    d = copy_of(runs, run, tmp_path)
    before = snapshot(d, CONFIG_FILES)
    line = one_error(*run_main(["run", "--quiet", "--resume", str(d), "--set", override], capsys))
    assert expect in line, line
    assert snapshot(d, CONFIG_FILES) == before  # the saved config still describes the training state
    assert run_main(["run", "--quiet", "--resume", str(d)], capsys)[0] == 0  # so a plain resume still works
    assert (d / "report.json").is_file()


def test_an_accepted_set_on_resume_is_saved_and_noted_once(runs, tmp_path, capsys):
    d = copy_of(runs, "stopped", tmp_path)
    code, _, err = run_main(["run", "--quiet", "--resume", str(d), "--set", "course.0.optimizer.lr=0.02"], capsys)
    assert code == 0, err
    assert err.count("note: resuming") == 1 and "course.0.optimizer.lr: 0.05 -> 0.02" in err
    for name in CONFIG_FILES:
        assert "lr: 0.02" in (d / name).read_text()


# ------------------------------------------------------------------ 2. a multi-seed parent's malformed child report
CHILD_CASES = [
    ("student-not-an-object", '{"student": "x"}', "seed-1/report.json: student: Input should be a valid dictionary"),
    ("report-a-list", "[1, 2]", "seed-1/report.json is not a run's report (expected a JSON object, got a list)"),
    ("student-missing", "{}", "seed-1/report.json: student is missing"),
    ("accuracy-a-string", '{"student": {"accuracy": "high"}}', "seed-1/report.json: student.accuracy"),
    ("accuracy-nan", '{"student": {"accuracy": NaN}}', "seed-1/report.json: student.accuracy"),
]


@pytest.mark.parametrize("content, expect", [c[1:] for c in CHILD_CASES], ids=[c[0] for c in CHILD_CASES])
def test_a_malformed_child_report_is_named_and_the_aggregate_kept(content, expect, runs, tmp_path, capsys):
    d = copy_of(runs, "seeds", tmp_path)
    (d / "seed-1" / "report.json").write_text(content)
    before = snapshot(d, ("aggregate.json", "aggregate.md"))
    line = one_error(*run_main(["run", "--quiet", "--resume", str(d)], capsys))
    assert expect in line, line
    assert f"delete it and resume {d} again" in line  # the fix the code supports
    assert snapshot(d, ("aggregate.json", "aggregate.md")) == before


def test_a_malformed_child_report_stops_the_parent_before_any_training(runs, tmp_path, capsys):
    d = copy_of(runs, "seeds", tmp_path)
    shutil.rmtree(d / "seed-1")  # an unfinished seed: it would train first
    (d / "seed-0" / "report.json").write_text('{"student": "x"}')
    line = one_error(*run_main(["run", "--quiet", "--resume", str(d)], capsys))
    assert "seed-0/report.json: student" in line
    assert not (d / "seed-1").exists()


def test_the_suggested_fix_for_a_malformed_child_report_works(runs, tmp_path, capsys):
    d = copy_of(runs, "seeds", tmp_path)
    good = json.loads((d / "aggregate.json").read_text())
    (d / "seed-1" / "report.json").write_text('{"student": "x"}')
    one_error(*run_main(["run", "--quiet", "--resume", str(d)], capsys))
    (d / "seed-1" / "report.json").unlink()  # as the message says: the seed's models are evaluated again
    assert run_main(["run", "--quiet", "--resume", str(d)], capsys)[0] == 0
    agg = json.loads((d / "aggregate.json").read_text())
    assert agg["n_runs"] == 2 and agg["seeds"] == [0, 1] and agg["per_seed"] == good["per_seed"]


# ------------------------------------------------------------------ 3. metrics.jsonl on resume
METRICS_CASES = [
    ("not-utf8", b'\xff{"model": "student"}\n', "not UTF-8 text (byte 0xff at column 1)"),
    ("epoch-a-string", b'{"model": "student", "lesson": 0, "epoch": "x"}\n', "epoch: Input should be a valid integer"),
    ("model-a-number", b'{"model": 5, "lesson": 0, "epoch": 0}\n', "model: Input should be a valid string"),
    ("lesson-missing", b'{"model": "student", "epoch": 0}\n', "lesson is missing"),
    ("losses-a-string", b'{"model": "teacher", "lesson": 0, "epoch": 0, "losses": "x"}\n', "losses: Input should be"),
]


@pytest.mark.parametrize("line, expect", [c[1:] for c in METRICS_CASES], ids=[c[0] for c in METRICS_CASES])
def test_a_malformed_metrics_line_is_named_on_resume(line, expect, runs, tmp_path, capsys):
    d = copy_of(runs, "stopped", tmp_path)
    log = d / "metrics.jsonl"
    n = len(log.read_bytes().splitlines()) + 1
    log.write_bytes(log.read_bytes() + line)
    before = log.read_bytes()
    msg = one_error(*run_main(["run", "--quiet", "--resume", str(d)], capsys))
    assert f"{log}, line {n}: {expect}" in msg and "repair or delete that line" in msg, msg
    assert log.read_bytes() == before  # not truncated, not rewritten


def test_nan_weights_in_the_last_checkpoint_are_named_on_resume(runs, tmp_path, capsys):
    """A damaged (or diverged) epoch checkpoint: the file is named, not blamed on the learning rate."""
    from safetensors.torch import load_file

    from curridistill.io import save_tensors

    d = copy_of(runs, "stopped", tmp_path)
    last = next((d / "student").glob("last-*.safetensors"))
    tensors = load_file(last)
    first = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[first] = torch.full_like(tensors[first], float("nan"))
    save_tensors(last, tensors)
    msg = one_error(*run_main(["run", "--quiet", "--resume", str(d)], capsys))
    assert f"{last}: tensor {first!r} holds NaN or infinite values" in msg, msg


# ------------------------------------------------------------------ 6. timing settings that measure nothing
@pytest.mark.parametrize("override", ["run.eval.latency_runs=0", "run.eval.latency_runs=-1",
                                      "run.eval.throughput_runs=0", "run.eval.throughput_batch=0"])
def test_timing_that_measures_nothing_is_refused_before_training(override, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = write_cfg(tmp_path, base(tmp_path))
    line = one_error(*run_main(["run", cfg, "--quiet", "--out", str(tmp_path / "r"), "--set", override], capsys))
    assert override.split("=")[0] in line, line
    assert not list(tmp_path.rglob("state.pt")) and not list(tmp_path.rglob("*.safetensors"))


@pytest.mark.parametrize("call, key", [
    (lambda m: latency_ms(m, (1, 8, 8), runs=0), "run.eval.latency_runs is 0"),
    (lambda m: throughput(m, (1, 8, 8), batch=0), "run.eval.throughput_batch is 0"),
    (lambda m: throughput(m, (1, 8, 8), runs=0), "run.eval.throughput_runs is 0"),
    (lambda m: efficiency(m, (1, 8, 8), latency_runs=-1), "run.eval.latency_runs is -1"),
], ids=["latency-runs", "throughput-batch", "throughput-runs", "efficiency"])
def test_the_timing_code_refuses_settings_that_measure_nothing(call, key):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with pytest.raises(UserError, match=key):
        call(model)


def test_evaluate_refuses_bad_timing_settings_in_one_line():
    with pytest.raises(UserError, match="eval: .*latency_runs"):
        api.evaluate(torch.nn.Linear(64, 10), (torch.zeros(4, 64), torch.zeros(4, dtype=torch.long)),
                     eval={"latency_runs": 0})
