"""Shared, session-scoped runs for the experiment tests (kept tiny: digits, 2 epochs, one thread)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.helpers import run_cli, tiny_config


def write_config(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def small(tmp: Path, epochs: int = 2, **extra) -> dict:
    raw = tiny_config(tmp, epochs=epochs)
    raw["run"]["threads"] = 1
    raw.update(extra)
    return raw


@pytest.fixture(scope="session")
def exp_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("experiments")


@pytest.fixture(scope="session")
def seed_run(exp_root) -> dict:
    """`curridistill run CONFIG --seeds 0,1,2` through the CLI: {dir, stdout, aggregate, config}. Its own cache:
    seed-0 trains the teacher whichever session fixture ran first (the tensorboard test reads its training)."""
    raw = small(exp_root)
    raw["run"]["cache_dir"] = str(exp_root / "seed-run-cache")
    cfg = write_config(exp_root / "tiny.yaml", raw)
    out = exp_root / "seeds"
    proc = run_cli("run", str(cfg), "--seeds", "0,1,2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return {"dir": out, "stdout": proc.stdout, "config": cfg,
            "aggregate": json.loads((out / "aggregate.json").read_text())}
