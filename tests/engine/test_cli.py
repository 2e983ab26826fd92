"""The CLI: the quickstart end to end, eval/predict/validate and run directories in subprocesses; list and --help
in-process (one case per command).

Bad input is tested in-process in test_cli_bad_inputs.py (and tests/trust/test_bad_inputs.py)."""
import json

import numpy as np
import pytest
import yaml

from tests.helpers import REPO, run_cli, tiny_config


def test_quickstart_end_to_end(tmp_path):
    out = tmp_path / "qs"
    proc = run_cli("run", str(REPO / "configs" / "quickstart.yaml"), "--out", str(out),
                   "--set", "course.0.epochs=4", "--set", f"run.cache_dir={tmp_path / 'cache'}",
                   "--set", "run.eval.latency_runs=3")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert {"teacher", "baseline", "student", "comparison"} <= set(report)
    assert report["student"]["accuracy"] > 0.8  # 4 epochs only; the full quickstart reaches >= 0.93
    assert report["comparison"]["teacher_student_param_ratio"] >= 5
    assert str(out) in proc.stdout and "curridistill report" in proc.stdout
    # the saved student is usable by eval and predict
    student = out / "student" / "model.safetensors"
    ev = run_cli("eval", str(student), "--json", str(tmp_path / "ev.json"))
    assert ev.returncode == 0, ev.stderr
    assert json.loads((tmp_path / "ev.json").read_text())["accuracy"] == pytest.approx(report["student"]["accuracy"])
    from sklearn.datasets import load_digits

    samples = (load_digits().images[:5] * 255 / 16).round().astype(np.uint8)
    np.save(tmp_path / "x.npy", samples)
    pred = run_cli("predict", str(student), str(tmp_path / "x.npy"))
    assert pred.returncode == 0, pred.stderr
    rows = json.loads(pred.stdout)
    assert len(rows) == 5 and abs(sum(rows[0]["probabilities"]) - 1) < 1e-4
    assert sum(r["label"] == t for r, t in zip(rows, load_digits().target[:5])) >= 4
    csv_out = tmp_path / "p.csv"
    assert run_cli("predict", str(student), str(tmp_path / "x.npy"), "--format", "csv", "--out", str(csv_out)).returncode == 0
    assert csv_out.read_text().splitlines()[0].startswith("index,label,class,p_0")


def test_validate_print_shows_defaults():
    proc = run_cli("validate", str(REPO / "configs" / "quickstart.yaml"), "--print")
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load(proc.stdout)
    assert resolved["run"]["selection"] == "best_val" and resolved["data"]["augment"]["flip"] is False


@pytest.mark.parametrize("what", ["models", "datasets", "knowledge", "schedules"])
def test_list_commands(what, capsys):
    from curridistill import cli

    assert cli.main(["list", what, "--input-size", "1,8,8"]) == 0
    if what == "models":
        assert "cnn" in capsys.readouterr().out


@pytest.mark.parametrize("cmd", ["run", "validate", "eval", "predict", "list", "report"])
def test_help_has_examples(cmd, capsys):
    from curridistill import cli

    with pytest.raises(SystemExit) as exc:
        cli.main([cmd, "--help"])
    assert exc.value.code == 0 and "example:" in capsys.readouterr().out


def _write(tmp_path, raw, name="c.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def test_existing_run_dir_is_not_overwritten(tmp_path):
    cfg = _write(tmp_path, tiny_config(tmp_path, epochs=1))
    out = tmp_path / "r"
    assert run_cli("run", str(cfg), "--out", str(out), "--quiet").returncode == 0
    before = (out / "report.json").read_bytes()
    proc = run_cli("run", str(cfg), "--out", str(out), "--quiet")
    assert proc.returncode == 2 and "already holds a run" in proc.stderr
    assert (out / "report.json").read_bytes() == before


def test_stop_after_epochs_exits_3_and_resume_finishes(tmp_path):
    cfg = _write(tmp_path, tiny_config(tmp_path, epochs=2))
    out = tmp_path / "r"
    stopped = run_cli("run", str(cfg), "--out", str(out), "--quiet", "--stop-after-epochs", "3")
    assert stopped.returncode == 3 and "--resume" in stopped.stderr
    assert not (out / "report.json").exists() and (out / "baseline" / "state.pt").is_file()
    resumed = run_cli("run", "--resume", str(out), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "report.json").read_text())["student"]["accuracy"] > 0.3
