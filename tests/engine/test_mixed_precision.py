"""The bfloat16 paths a GPU run takes (``run.amp``, on by default), run on the CPU's autocast.

On CUDA, ``run.amp`` puts the student's forward, every knowledge term, the teachers and the evaluation under
bf16 autocast and caches the teacher's outputs in bf16. CPU runs leave it off (it is slower there), so a dtype
mismatch in those paths (a bf16 feature meeting a float32 buffer, a queue or an adapter) would only show on a
GPU. Here ``placement.AMP_DEVICE_TYPES`` lets the CPU take them: every term and the teacher cache.
"""
from __future__ import annotations

import json
import math

import pytest
import yaml

from curridistill.models import placement
from tests.engine.test_host_sync import CASES, every_term_config
from tests.helpers import run_main, tiny_config

def _every_term_small(tmp, data, name) -> dict:
    """Every term with the teacher cache and a paced curriculum; a resnet8 teacher, since bf16 convolutions are
    slow on a CPU (the terms, not the teacher's depth, are what this checks)."""
    raw = every_term_config(tmp, data, CASES["teacher cache + paced curriculum"], 36, name)
    raw["teacher"]["name"] = "resnet8"
    return raw


RUNS = {"digits kd": lambda tmp, data, name: tiny_config(tmp / name),
        "every term, teacher cache + paced curriculum": _every_term_small}


@pytest.mark.parametrize("case", list(RUNS))
def test_a_bf16_autocast_run_trains_every_term_near_the_float32_run(tmp_path, cifar_shaped, capsys, monkeypatch,
                                                                     case):
    reports = {}
    for precision in ("fp32", "bf16"):
        raw = RUNS[case](tmp_path, cifar_shaped, precision)
        raw["run"]["amp"] = True
        raw["run"]["cache_dir"] = str(tmp_path / f"cache-{precision}")
        path = tmp_path / f"{precision}.yaml"
        path.write_text(yaml.safe_dump(raw))
        with monkeypatch.context() as patch:
            if precision == "bf16":
                patch.setattr(placement, "AMP_DEVICE_TYPES", ("cuda", "cpu"))
            code, _, err = run_main(["run", str(path), "--out", str(tmp_path / precision), "--quiet"], capsys)
        assert code == 0, err
        reports[precision] = json.loads((tmp_path / precision / "report.json").read_text())
    fp32, bf16 = reports["fp32"], reports["bf16"]
    models = [m for m in ("teacher", "baseline", "student") if m in fp32]
    assert all(math.isfinite(bf16[m]["loss"]) for m in models)
    assert any(bf16[m]["loss"] != fp32[m]["loss"] for m in models)  # autocast was on: bf16 rounding shows
    for m in ("teacher", "baseline"):  # trained without the terms: bf16 only rounds, it does not change the path
        if m in fp32:
            assert bf16[m]["loss"] == pytest.approx(fp32[m]["loss"], rel=0.05), m
    if "cache" in case:  # the teacher's outputs were cached at the precision they were computed in
        assert list((tmp_path / "cache-bf16").rglob("eval-*-bf16-cpu.safetensors"))
