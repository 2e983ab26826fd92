"""compare: one table over a multi-seed parent and a single run."""
import json

from curridistill import api
from curridistill.config import load_config
from curridistill.experiments.compare import compare_runs
from tests.experiments.conftest import small
from tests.helpers import run_cli


def test_compare_two_runs(seed_run, exp_root):
    single = exp_root / "single-nokd"
    raw = small(exp_root)
    raw["course"][0]["loss"] = {"ce": 1.0}
    api.run(load_config(raw), out=single)
    md, js = exp_root / "compare.md", exp_root / "compare.json"
    proc = run_cli("compare", str(seed_run["dir"]), str(single), "--out", str(md), "--json", str(js))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(js.read_text())
    rows = {(r["run"], r["model"]): r for r in result["rows"]}
    ref = rows[("seeds", "student")]
    assert ref["reference"] and ref["n"] == 3 and ref["std"] is not None and ref["params"] > 0 and ref["flops"] > 0
    assert ref["delta_vs_baseline"] is not None and ref["latency_ms"] > 0
    assert rows[("seeds", "baseline")]["p_vs_reference"] is not None  # 3 vs 3 runs: Welch
    other = rows[("single-nokd", "student")]
    assert other["n"] == 1 and other["p_vs_reference"] is None  # one run: no p-value, never invented
    assert other["method"] == "ce" and "kd(T=4)" in ref["method"]
    text = md.read_text()
    assert "| run | method | model |" in text and "single-nokd" in text
    assert "seeds" in proc.stdout
    # the Python API gives the same rows
    assert len(compare_runs([seed_run["dir"], single])["rows"]) == len(result["rows"])


def test_compare_bad_dir(tmp_path):
    proc = run_cli("compare", str(tmp_path))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
