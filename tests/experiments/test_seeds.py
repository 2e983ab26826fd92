"""Several student seeds: child run dirs, aggregate.json statistics, aggregate.md, resume, --seeds parsing."""
import json

import pytest

from curridistill import api
from curridistill.config import load_config
from curridistill.errors import UserError
from curridistill.experiments import parse_seeds
from tests.experiments.conftest import small, write_config
from tests.helpers import run_cli


def test_three_seeds_aggregate(seed_run):
    out, agg = seed_run["dir"], seed_run["aggregate"]
    for s in (0, 1, 2):
        report = json.loads((out / f"seed-{s}" / "report.json").read_text())
        assert report["seed"] == s  # each child is a normal run with its own student seed
    assert agg["kind"] == "seeds" and agg["n_runs"] == 3 and agg["seeds"] == [0, 1, 2]
    for model in ("teacher", "baseline", "student"):
        acc = agg[model]["accuracy"]
        assert acc["n"] == 3 and acc["std"] is not None and acc["ci_low"] <= acc["mean"] <= acc["ci_high"]
        assert len(agg["per_seed"][model]) == 3
    comp = agg["comparisons"]["student_vs_baseline"]
    assert comp["b"] == "baseline" and 0.0 <= comp["p_value"] <= 1.0
    assert agg["p_value_student_vs_baseline"] == comp["p_value"]
    # the teacher is trained once (fixed teacher_seed) and reused from the cache: identical on every seed
    assert len(set(agg["per_seed"]["teacher"])) == 1 and agg["teacher"]["accuracy"]["std"] == 0.0
    reused = [json.loads((out / f"seed-{s}" / "report.json").read_text())["teacher"]["reused_from"] for s in (1, 2)]
    assert all(reused)
    assert agg["selection_rule"] == "validation-selected checkpoint, evaluated once on test"
    md = (out / "aggregate.md").read_text()
    assert "| model | accuracy (mean ± std) | 95% CI | n | p-value vs baseline |" in md
    assert "validation-selected checkpoint, evaluated once on test" in md and "trained once" in md
    parent = load_config(out / "config.yaml")
    assert parent.run.seeds == [0, 1, 2]
    # the CLI printed the aggregate table
    assert "p vs baseline" in seed_run["stdout"] and str(out) in seed_run["stdout"]


def test_resume_parent_skips_finished_and_matches(seed_run, exp_root):
    cfg = load_config(small(exp_root, run={**small(exp_root)["run"], "seeds": [0, 1]}))
    out = exp_root / "resume-seeds"
    with pytest.raises(api.StopRequested):
        api.run(cfg, out=out, callbacks=[api.StopAfterEpochs(3)])  # killed inside seed-0's baseline
    assert not (out / "seed-0" / "report.json").exists() and not (out / "aggregate.json").exists()
    first = api.resume(out)
    assert first["per_seed"]["student"] == seed_run["aggregate"]["per_seed"]["student"][:2]
    stamp = (out / "seed-0" / "report.json").stat().st_mtime_ns
    again = api.resume(out)  # everything finished: nothing is retrained
    assert (out / "seed-0" / "report.json").stat().st_mtime_ns == stamp
    assert again["per_seed"] == first["per_seed"]


def test_parse_seeds():
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("3-5,9") == [3, 4, 5, 9]
    assert parse_seeds("-1") == [-1]
    for bad in ("0,x", "0,,1", "1,1", "5-3"):
        with pytest.raises(UserError):
            parse_seeds(bad)


def test_cli_bad_seeds(exp_root):
    cfg = write_config(exp_root / "bad-seeds.yaml", small(exp_root))
    proc = run_cli("run", str(cfg), "--seeds", "0,x", "--out", str(exp_root / "never"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "'x' is not an integer" in lines[0], proc.stderr
    assert not (exp_root / "never").exists()


def test_seeds_and_cv_together_rejected(exp_root):
    raw = small(exp_root)
    raw["run"]["seeds"] = [0, 1]
    raw["data"]["cv"] = {"folds": 2}
    with pytest.raises(UserError, match="cannot be combined"):
        api.run(load_config(raw), out=exp_root / "never2")
    assert not (exp_root / "never2").exists()
    with pytest.raises(UserError, match="distinct"):
        load_config(small(exp_root, run={"seeds": [1, 1]}))
