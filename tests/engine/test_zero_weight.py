"""A lesson whose only term has weight 0 at the first steps (a warm-up from 0) trains instead of crashing."""
from curridistill import api
from curridistill.config import load_config
from tests.helpers import tiny_config


def test_warm_up_from_zero_weight(tmp_path):
    cfg = tiny_config(tmp_path, epochs=2)
    cfg["course"][0]["loss"] = {"kd": {"weight": {"kind": "linear", "start": 0, "end": 1}, "temperature": 4}}
    report = api.run(load_config(cfg), out=tmp_path / "run")
    assert report["student"]["accuracy"] > 0.15  # it learned from the teacher once the weight rose
