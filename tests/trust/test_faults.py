"""Fault suite: SIGKILL during a checkpoint write, a teacher-output cache build and a tuning trial; two
concurrent writers of one run directory; two runs sharing a cache. Each recovers or refuses in one line."""
import json
import os
import subprocess
import sys

import yaml

from tests.helpers import REPO, run_cli, tiny_config

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _cfg(tmp_path, epochs=2, **over) -> str:
    cfg = tiny_config(tmp_path, epochs=epochs, baseline={"enabled": False})
    cfg["run"]["tensorboard"] = False
    cfg.update(over)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)


def _killed(*spec: str, cli_args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests.trust.fault_driver", *spec, "--", *cli_args], cwd=REPO,
                          env=ENV, capture_output=True, text=True, timeout=300)


def _orphans(root):
    return [p for p in root.rglob(".*.tmp")]


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_sigkill_during_a_checkpoint_write_then_resume_matches_an_uninterrupted_run(tmp_path):
    cfg = _cfg(tmp_path, epochs=3)
    ref = run_cli("run", cfg, "--out", str(tmp_path / "ref"), "--quiet")
    assert ref.returncode == 0, ref.stderr
    rd = tmp_path / "killed"
    proc = _killed("write", "state.pt", "2", cli_args=["run", cfg, "--out", str(rd), "--quiet"])  # student epoch 2 (teacher reused)
    assert proc.returncode == -9
    assert _orphans(rd), "the kill left a half-written temp file"
    resumed = run_cli("run", "--resume", str(rd), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert not _orphans(rd)
    a = json.loads((tmp_path / "ref" / "report.json").read_text())["student"]
    b = json.loads((rd / "report.json").read_text())["student"]
    assert a["accuracy"] == b["accuracy"] and a["loss"] == b["loss"]


def test_sigkill_during_a_teacher_output_cache_build_then_rerun(tmp_path):
    cfg = _cfg(tmp_path, epochs=1)
    rd = tmp_path / "run"
    proc = _killed("write", "epoch-*.safetensors", "1", cli_args=["run", cfg, "--out", str(rd), "--quiet"])
    assert proc.returncode == -9
    cache = tmp_path / "cache" / "teacher_outputs"
    assert _orphans(cache) and not list(cache.rglob("epoch-*.safetensors"))
    resumed = run_cli("run", "--resume", str(rd), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert not _orphans(cache) and list(cache.rglob("epoch-*.safetensors"))


def test_sigkill_during_a_tuning_trial_then_resume_requeues_it(tmp_path):
    cfg = tiny_config(tmp_path, epochs=1)
    cfg["run"]["tensorboard"] = False
    cfg["tune"] = {"space": {"course.0.optimizer.lr": {"float": [0.01, 0.1], "log": True}}, "sampler": "random",
                   "pruner": "none"}
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = tmp_path / "study"
    # trial 0: teacher epoch + student epoch (records 1, 2); trial 1 reuses the teacher: killed at its student epoch
    proc = _killed("record", "3", cli_args=["tune", str(path), "--trials", "2", "--out", str(out), "--quiet"])
    assert proc.returncode == -9
    resumed = run_cli("tune", str(path), "--trials", "2", "--out", str(out), "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert "were interrupted: marked failed, their parameters queued again" in resumed.stderr
    import csv

    rows = list(csv.DictReader((out / "trials.csv").open()))
    states = [r["state"] for r in rows]
    assert states.count("FAIL") == 1 and states.count("COMPLETE") == 2
    failed = next(r for r in rows if r["state"] == "FAIL")
    retried = rows[-1]
    assert retried["state"] == "COMPLETE"
    params = [json.loads(r["params"])["course.0.optimizer.lr"] for r in (rows[0], failed, retried)]
    assert params[1] == params[2]  # the interrupted parameters were tried again
    assert params[0] != params[1]  # and trial 1 did not repeat trial 0's draw


def test_two_concurrent_writers_of_one_run_directory(tmp_path):
    cfg = _cfg(tmp_path, epochs=2)
    rd = tmp_path / "run"
    cmd = [sys.executable, "-m", "curridistill", "run", cfg, "--out", str(rd), "--quiet"]
    procs = [subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert refused.count("\n") == 1 and ("is in use by another curridistill process" in refused
                                         or "already holds a run" in refused)
    keys = [(r["model"], r["lesson"], r["epoch"]) for r in _records(rd)]
    assert len(keys) == len(set(keys))


def test_two_runs_sharing_a_cache_train_the_teacher_once(tmp_path):
    cfg = _cfg(tmp_path, epochs=2)
    procs = [subprocess.Popen([sys.executable, "-m", "curridistill", "run", cfg, "--out", str(tmp_path / f"r{i}"),
                               "--quiet"], cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    trained = [any(r["model"] == "teacher" for r in _records(tmp_path / f"r{i}")) for i in range(2)]
    assert sorted(trained) == [False, True]
    reports = [json.loads((tmp_path / f"r{i}" / "report.json").read_text()) for i in range(2)]
    assert reports[0]["teacher"]["accuracy"] == reports[1]["teacher"]["accuracy"]
