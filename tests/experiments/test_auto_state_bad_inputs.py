"""`auto --resume` with a malformed OUT/auto-state.json, in-process through ``cli.main``: exit code 2, one line on
stderr naming the file and the key, no traceback, nothing trained and nothing written (the state file is left as
it was, no best.yaml). The state is checked before anything is read from it, so none of these loads data."""
from __future__ import annotations

import json
import math

import pytest

from curridistill import cli
from curridistill.experiments.auto import STATE, _load_raw
from tests.trust.catalogue import base, write_cfg


def state(config: str, **over) -> dict:
    """A plausible state of a search killed during its re-runs, with ``over`` replacing keys."""
    raw, where = _load_raw(config, [])
    s = {"budget_s": 600.0, "config": where, "config_raw": json.loads(json.dumps(raw)),
         "costs": {'{"name": "mlp"}': {"params": 1210, "latency_ms": 0.05, "stage": "stage1"}},
         "estimate_at_start": {"teacher_s": 2.0, "trial_s": 1.0, "full_run_s": 2.0, "step_s": 0.001},
         "invocations": 1, "phases": {"teacher": 1.5, "search": 20.0}, "used_s": 30.0,
         "teacher_paths": ["/nonexistent/teacher/model.safetensors"], "teacher_reused_from": [None],
         "reference_proxy": {"val_accuracy": 0.5, "seconds": 1.0},
         "plan": {"top_k": 2, "seeds": [0, 1], "reference": True, "finals_estimate_s": 8.0, "search_s": 500.0,
                  "full_run_estimate_s": 2.0, "trial_estimate_s": 1.0},
         "finals_started": True, "finals_done": []}
    s.update(over)
    return s


def plan(**over) -> dict:
    return {"top_k": 2, "seeds": [0, 1], "reference": True, "finals_estimate_s": 8.0, "search_s": 500.0,
            "full_run_estimate_s": 2.0, "trial_estimate_s": 1.0, **over}


CASES = [
    ("a-list", lambda c: [1],
     "auto-state.json is not the state of an auto search (expected a JSON object, got a list)"),
    ("used-nan", lambda c: state(c, used_s=math.nan), "auto-state.json: used_s: Input should be a finite number"),
    ("used-infinite", lambda c: state(c, used_s=math.inf), "auto-state.json: used_s: Input should be a finite number"),
    ("used-negative", lambda c: state(c, used_s=-1e9),
     "auto-state.json: used_s: Input should be greater than or equal to 0"),
    ("used-a-string", lambda c: state(c, used_s="x"),
     "auto-state.json: used_s: Input should be a valid number (got 'x')"),
    ("used-a-list", lambda c: state(c, used_s=[1]),
     "auto-state.json: used_s: Input should be a valid number (got [1])"),
    ("phase-nan", lambda c: state(c, phases={"search": math.nan}),
     "auto-state.json: phases.search: Input should be a finite"),
    ("plan-top-k-zero", lambda c: state(c, plan=plan(top_k=0)), "auto-state.json: plan.top_k: Input should be greater"),
    ("plan-no-seeds", lambda c: state(c, plan=plan(seeds=[])),
     "auto-state.json: plan.seeds: List should have at least 1"),
    ("plan-search-a-string", lambda c: state(c, plan=plan(search_s="soon")),
     "auto-state.json: plan.search_s: Input should be"),
    ("cost-params-a-string", lambda c: state(c, costs={"k": {"params": "many", "latency_ms": 1.0, "stage": None}}),
     "auto-state.json: costs.k.params: Input should be a valid integer"),
    ("cost-unknown-key", lambda c: state(c, costs={"k": {"params": 1, "latency_ms": 1.0, "stage": None, "x": 1}}),
     "auto-state.json: costs.k.x: Extra inputs are not permitted"),
    ("reference-accuracy-nan", lambda c: state(c, reference_proxy={"val_accuracy": math.nan, "seconds": 1.0}),
     "auto-state.json: reference_proxy.val_accuracy: Input should be a finite number"),
    ("teacher-paths-a-string", lambda c: state(c, teacher_paths="x"),
     "auto-state.json: teacher_paths: Input should be a valid list"),
    ("finals-done-a-string", lambda c: state(c, finals_done="x"),
     "auto-state.json: finals_done: Input should be a valid list"),
    ("finals-started-a-string", lambda c: state(c, finals_started="yes"),
     "auto-state.json: finals_started: Input should be a valid boolean"),
]


@pytest.mark.parametrize("make, expect", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_auto_resume_refuses_a_malformed_state(make, expect, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = write_cfg(tmp_path, base(tmp_path))
    out = tmp_path / "search"
    out.mkdir()
    (out / STATE).write_text(json.dumps(make(config)))  # NaN and Infinity as Python's json writes them
    before = (out / STATE).read_bytes()
    code = cli.main(["auto", config, "--budget", "10m", "--out", str(out), "--resume", "--quiet"])
    stdout, err = capsys.readouterr()
    assert code == 2, f"exit {code}; stderr: {err}"
    assert "Traceback" not in err and stdout == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert f"{out}/{expect}" in lines[0], lines[0]
    assert "start the search again with another --out" in lines[0]
    assert (out / STATE).read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == [STATE]  # no best.yaml, no study, no teacher


def test_a_valid_state_passes_the_check(tmp_path):
    from curridistill.experiments.auto import read_state

    config = write_cfg(tmp_path, base(tmp_path))
    (tmp_path / STATE).write_text(json.dumps(state(config)))
    assert read_state(tmp_path / STATE)["plan"]["seeds"] == [0, 1]
