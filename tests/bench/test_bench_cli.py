"""`curridistill bench throughput` and a CIFAR-10 smoke distillation through the CLI (shared data)."""
import json

import pytest

from tests.helpers import REPO, run_cli


def test_bench_throughput_writes_json_with_every_mode(tmp_path, shared_data):
    out = tmp_path / "bench.json"
    proc = run_cli("bench", "throughput", "--teacher", "resnet8", "--student", "resnet8", "--data", "cifar10",
                   "--root", str(shared_data), "--subset", "256", "--steps", "3", "--warmup", "1", "--rounds", "2",
                   "--with-reference", "--workers", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert set(result["modes"]) == {"ceiling", "plain", "online_kd", "cached_kd", "reference"}
    for name, mode in result["modes"].items():
        assert mode["images_per_s"] > 0 and len(mode["rounds_images_per_s"]) == 2, name
        assert "peak_rss_mb" in mode and "peak_rss_delta_mb" in mode
    assert result["ratios"]["cached_kd/online_kd"] == pytest.approx(
        result["modes"]["cached_kd"]["images_per_s"] / result["modes"]["online_kd"]["images_per_s"])
    assert result["cache_build"]["seconds"] > 0 and result["cache_build"]["images"] == result["settings"]["train_images"]
    assert result["command"].startswith("curridistill bench throughput") and "--subset 256" in result["command"]
    assert result["torch"] and result["machine"]["cpu_model"] and result["machine"]["cpu_count"] >= 1
    assert result["machine"]["OMP_NUM_THREADS"] == "1" and result["date"]
    assert "git" in result and "commit" in result["git"]
    assert "cached_kd" in proc.stdout and "vs ceiling" in proc.stdout


def test_bench_rejects_bad_input_in_one_line(tmp_path, shared_data):
    proc = run_cli("bench", "throughput", "--data", "cifar10", "--root", str(shared_data), "--subset", "100",
                   "--batch-size", "512", "--steps", "1")
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
    proc = run_cli("bench", "latency")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_cifar10_quick_distillation_through_cli(tmp_path, shared_data):
    # the quick config with tiny CNNs in place of the ResNets, so the 10,000 test images evaluate in seconds
    out = tmp_path / "run"
    proc = run_cli("run", str(REPO / "configs" / "cifar10_quick.yaml"), "--set", f"data.root={shared_data}",
                   "--set", "teacher.name=cnn", "--set", "teacher.kwargs={widths: [8, 16]}",
                   "--set", "student.name=cnn", "--set", "student.kwargs={widths: [4, 8]}",
                   "--set", "baseline.enabled=false", "--set", f"run.cache_dir={tmp_path / 'cache'}",
                   "--set", "run.tensorboard=false", "--set", "run.eval.latency_runs=2",
                   "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["train"] == 900 and report["data"]["test"] == 10000
    assert 0.0 <= report["student"]["accuracy"] <= 1.0
    entries = list((tmp_path / "cache" / "teacher_outputs").glob("*/epoch-0.safetensors"))
    assert len(entries) == 1  # the student's KD read the teacher from the cache of epoch 0's augmented stream


def test_bench_throughput_captured_adds_the_compiled_ceiling_and_step(tmp_path, shared_data):
    from curridistill import cli

    out = tmp_path / "bench.json"
    code = cli.main(["bench", "throughput", "--teacher", "cnn", "--student", "cnn", "--data", "cifar10",
                     "--root", str(shared_data), "--subset", "256", "--steps", "2", "--warmup", "3", "--rounds", "1",
                     "--captured", "--quiet", "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert set(result["modes"]) == {"ceiling", "plain", "online_kd", "cached_kd", "ceiling_captured", "cached_kd_captured"}
    assert result["settings"]["captured"] is True
    ratios, modes = result["ratios"], result["modes"]
    assert ratios["cached_kd_captured/ceiling_captured"] == pytest.approx(
        modes["cached_kd_captured"]["images_per_s"] / modes["ceiling_captured"]["images_per_s"])
    assert "cached_kd_captured >= 0.85 x ceiling_captured" in result["targets"]
