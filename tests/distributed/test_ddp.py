"""Two CPU processes under torchrun (gloo) against one process, and a resumed distributed run."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from safetensors.torch import load_file

from tests.helpers import REPO, needs_gpus, run_cli, tiny_config


def _torchrun(*args):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "curridistill", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def config(tmp_path):
    raw = tiny_config(tmp_path, epochs=2)
    raw["teacher"]["course"] = [{"epochs": 2, "optimizer": {"lr": 0.05}}]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _report(run_dir):
    return json.loads((run_dir / "report.json").read_text())


def test_two_processes_take_the_documented_steps_and_match_one_process(tmp_path, config):
    """Also in micro-batches (run.micro_batches=2): the parts before the last backward without DDP's all-reduce
    (no_sync), the last one all-reduces the whole batch's gradients."""
    single = tmp_path / "single"
    assert run_cli("run", str(config), "--out", str(single), "--quiet").returncode == 0
    out = tmp_path / "ddp"
    proc = _torchrun("run", str(config), "--out", str(out), "--quiet", "--set", "run.micro_batches=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = _report(out)
    assert report["distributed"] == {"world_size": 2, "global_batch": 64}
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    # data.batch_size is the global batch: two processes take ceil(N / 64) steps per epoch, like one
    assert all(r["steps"] == -(-report["data"]["train"] // 64) for r in records)
    assert [(r["model"], r["epoch"]) for r in records] == [("baseline", 0), ("baseline", 1), ("student", 0), ("student", 1)]
    for model in ("baseline", "student"):  # the same samples per step and averaged gradients: the same result
        assert report[model]["accuracy"] == pytest.approx(_report(single)[model]["accuracy"], abs=0.02)


def test_distributed_run_resumes_after_a_stop(tmp_path, config):
    out = tmp_path / "ddp"
    # teacher 2 epochs + baseline 2 + student 1: stops inside the student phase
    first = _torchrun("run", str(config), "--out", str(out), "--quiet", "--stop-after-epochs", "5")
    # torchrun turns a child's exit code 3 into its own failure code; the message and files tell
    assert first.returncode != 0 and "stopped after 5 epochs" in first.stderr, first.stderr[-3000:]
    assert (out / "baseline" / "done.json").is_file() and (out / "student" / "state.pt").is_file()
    second = _torchrun("run", "--resume", str(out), "--quiet")
    assert second.returncode == 0, second.stderr[-3000:]
    full = tmp_path / "full"
    assert _torchrun("run", str(config), "--out", str(full), "--quiet").returncode == 0
    a = load_file(str(out / "student" / "model.safetensors"))
    b = load_file(str(full / "student" / "model.safetensors"))
    assert all(float((a[k].float() - b[k].float()).abs().max()) < 1e-5 for k in a)


@needs_gpus(2)
def test_two_gpus_under_nccl_match_one_gpu(tmp_path, config):
    """torchrun with nccl, one GPU per rank: the run directory broadcast, cache decisions and metrics all-reduce
    work on the bound devices, and the result matches one GPU (up to CUDA's non-deterministic kernels)."""
    single = tmp_path / "single"
    assert run_cli("run", str(config), "--out", str(single), "--quiet", "--set", "run.device=cuda").returncode == 0
    out = tmp_path / "ddp"
    proc = _torchrun("run", str(config), "--out", str(out), "--quiet", "--set", "run.device=cuda")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = _report(out)
    assert report["distributed"] == {"world_size": 2, "global_batch": 64}
    for model in ("baseline", "student"):
        assert report[model]["accuracy"] == pytest.approx(_report(single)[model]["accuracy"], abs=0.03)
