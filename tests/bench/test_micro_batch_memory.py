"""benchmarks/micro_batch_memory.py: one process per setting, a row each, JSON + Markdown."""
from __future__ import annotations

import json

from tests.helpers import load_benchmark


def test_rows_per_setting_with_memory_and_time(tmp_path):
    out = tmp_path / "mem.json"
    rc = load_benchmark("micro_batch_memory").main(["--data", "digits", "--teacher", "mlp", "--student", "mlp",
                                                    "--subset", "300", "--batch-size", "64", "--micro", "1,4",
                                                    "--steps", "2", "--threads", "1", "--json", str(out)])
    record = json.loads(out.read_text())
    assert rc == 0 and [r["micro_batches"] for r in record["rows"]] == [1, 4]
    assert all(r["peak_growth_mb"] >= 0 and r["step_seconds"] > 0 for r in record["rows"])
    assert record["git"]["commit"] and "| 4 |" in out.with_suffix(".md").read_text()


def test_a_setting_that_fails_is_one_line(tmp_path, capsys):
    rc = load_benchmark("micro_batch_memory").main(["--data", "digits", "--teacher", "mlp", "--student", "mlp",
                                                    "--batch-size", "8", "--micro", "8", "--steps", "1",
                                                    "--json", str(tmp_path / "m.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "error: micro_batches=8:" in err and "at least 2 samples" in err
    assert not (tmp_path / "m.json").exists()
