"""Test helpers: tiny configs on the digits data and a CLI runner."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "datasets"

torch.set_num_threads(1)  # tests run beside each other on 2 cores; one thread is faster and deterministic


def tiny_config(tmp_path: Path, epochs: int = 2, **overrides) -> dict:
    """A fast digits config: CNN teacher, MLP student, KD; caches inside tmp_path."""
    cfg = {
        "data": {"name": "digits", "val_size": 0.1, "batch_size": 64},
        "teacher": {"name": "cnn", "kwargs": {"widths": [8, 16]}},
        "student": {"name": "mlp", "kwargs": {"hidden": [16], "image_size": 8}},
        "course": [{"name": "distill", "epochs": epochs, "loss": {"ce": 0.1, "kd": {"weight": 0.9, "temperature": 4}},
                    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, "lr_schedule": {"kind": "cosine", "end": 0}}],
        "run": {"seed": 0, "device": "cpu", "cache_dir": str(tmp_path / "cache"), "out": str(tmp_path / "runs"),
                "eval": {"latency_runs": 3, "throughput_runs": 1, "throughput_batch": 32}},
    }
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def cuda_marks() -> list:
    """``cuda`` (gpu_check runs ``pytest -m cuda``) and a skip where no CUDA device is present: CI and this suite's
    machines have none, and a CPU cannot stand in for CUDA graphs or device placement. For ``pytest.param(marks=)``."""
    import pytest

    return [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


def needs_cuda(test):
    """A test that runs only on CUDA (see ``cuda_marks``)."""
    for mark in cuda_marks():
        test = mark(test)
    return test


def needs_gpus(count: int):
    """Marks a test ``multigpu`` and skips it with fewer than ``count`` CUDA devices. Not ``cuda``: gpu_check runs
    on one GPU, where a skip would fail its CUDA step; run these with ``pytest -m multigpu`` on a larger machine."""
    import pytest

    def mark(test):
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return pytest.mark.multigpu(pytest.mark.skipif(have < count, reason=f"needs {count} CUDA devices, has {have}")(test))
    return mark


def load_benchmark(name: str):
    """The script benchmarks/<name>.py as a module (the benchmarks are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "curridistill", *args], cwd=cwd or REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)




def write_image_folder(root: Path, splits: dict[str, int], classes: int = 3, size: int = 12, seed: int = 0,
                       bright: bool = True) -> Path:
    """An image-folder data set: ``root/<split>/class<c>/<i>.png``, ``splits[split]`` RGB images per class of
    size x size random pixels; with ``bright``, class c has channel c at 255 (a learnable signal)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, per_class in splits.items():
        for c in range(classes):
            d = Path(root) / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(per_class):
                px = rng.integers(0, 256, size=(size, size, 3)).astype(np.uint8)
                if bright:
                    px[..., c] = 255
                Image.fromarray(px).save(d / f"{i:03d}.png")
    return Path(root)


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    """``cli.main(argv)`` in this process: (exit code, stdout, stderr). argparse's usage errors leave through
    SystemExit, whose code is returned like the others."""
    from curridistill import cli

    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_error(code: int, out: str, err: str) -> str:
    """The single stderr line of a refused command: exit 2, no traceback, one line starting with 'error: '."""
    assert code == 2, f"exit {code}; stderr: {err}"
    assert "Traceback" not in err and "Traceback" not in out
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]
