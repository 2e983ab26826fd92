"""The shipping path measured: run a config with prune lessons and a `ship:` section (teacher trained from
scratch in a fresh cache, so the wall time is the whole path) and record its compression report.

    python benchmarks/ship_table.py configs/ship_quickstart.yaml --out runs/ship-bench \
        --json benchmarks/results/ship_quickstart.json

Writes the JSON (command, git commit, machine, date, wall seconds, every stage and pruning step, the
ONNX check and the PNG predictions) and, beside it, the Markdown tables the README shows verbatim.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import torch

from curridistill import api
from curridistill.bench.throughput import git_commit, save_result
from curridistill.compress.report import stages_table, steps_table
from curridistill.config import load_config
from curridistill.evaluate.measure import ROUNDS
from curridistill.io import read_json, write_json


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--out", required=True, help="run directory (must not hold a run); its cache lives inside it")
    ap.add_argument("--json", required=True, help="result JSON; the Markdown tables go beside it (.md)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--resume", action="store_true",
                    help="continue the killed run in --out (same config); the times add up over the invocations")
    ap.add_argument("--shared-cache", action="store_true",
                    help="use the config's run.cache_dir (teacher outputs another benchmark cached) instead of a fresh "
                         "one inside --out; the wall time then leaves out the teacher's passes")
    args = ap.parse_args(argv)
    fresh = [] if args.shared_cache else [f"run.cache_dir={Path(args.out) / 'cache'}"]
    cfg = load_config(args.config, [*fresh, *args.overrides])
    load = os.getloadavg()[0]  # other processes on the machine stretch the wall time, not the CPU time
    clock = Path(args.out) / "ship_table_seconds.json"  # wall and CPU seconds of earlier, killed invocations
    before = read_json(clock) if args.resume and clock.is_file() else {"wall": 0.0, "cpu": 0.0, "invocations": 0}
    # the commit whose code runs: taken now, since HEAD may move during an hour of training (kept over resumes)
    started_at = before.get("git") or git_commit()
    t0, c0 = time.perf_counter(), time.process_time()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))  # a polite kill still records the time spent
    try:
        report = api.resume(args.out, overrides=args.overrides) if args.resume else api.run(cfg, out=args.out)
    finally:
        spent = {"wall": before["wall"] + time.perf_counter() - t0, "cpu": before["cpu"] + time.process_time() - c0,
                 "invocations": before["invocations"] + 1, "git": started_at}
        if Path(args.out).is_dir():
            write_json(clock, spent)
    wall, cpu = spent["wall"], spent["cpu"]
    comp = report["compression"]
    md = (f"Stages (`{args.config}`, test split, {report['data']['test']} samples; latency: median batch-1 "
          f"forward, the stages timed in turn over {ROUNDS} rounds; the whole path{', teacher outputs from a shared cache' if args.shared_cache else ', teacher included'}: "
          f"{wall:.0f} s wall, {cpu:.0f} s CPU):\n\n{stages_table(comp['rows'])}\n")
    if comp["prune_steps"]:  # a run without prune lessons (e.g. the unpruned control) has no steps to show
        md += f"\nPruning steps (validation accuracy):\n\n{steps_table(comp['prune_steps'])}\n"
    record = {"git": started_at, "config": args.config, "teacher_outputs": "shared cache" if args.shared_cache else "fresh cache", "wall_seconds": wall, "cpu_seconds": cpu, "invocations": spent["invocations"], "load_average_1min_at_start": load, "torch_threads": torch.get_num_threads(),
              "stages": comp["rows"], "prune_steps": comp["prune_steps"], "exports": comp.get("exports"),
              "predict": comp.get("predict"), "notes": comp["notes"],
              "report": {k: report[k]["accuracy"] for k in ("teacher", "baseline", "student") if k in report}}
    save_result(args.json, record, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
