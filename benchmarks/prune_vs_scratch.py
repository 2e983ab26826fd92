"""Pruning against its control: the same small architecture reached by pruning a trained model (ship runs with
prune lessons) or trained from random weights (a plain distillation run), one row per run directory.

    python benchmarks/prune_vs_scratch.py runs/ship-cifar10-resnet20-long runs/resnet20-half-scratch \
        --json benchmarks/results/prune_vs_scratch_resnet20.json

A row: how the student was made, its seed, the peak learning rate of its last lesson, the epochs it trained
(recovery epochs after each cut, or from scratch), its test accuracy, parameters and MFLOPs, from each run's
config.yaml, report.json and metrics.jsonl (the runs are not re-evaluated). The JSON also keeps each run's
training and validation accuracy per epoch, so the runs' curves compare epoch by epoch.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from curridistill.bench.throughput import save_result
from curridistill.config import load_config
from curridistill.errors import UserError
from curridistill.io import read_json, read_jsonl


def describe(run_dir: Path) -> dict:
    """One row of the table for a finished run directory."""
    report_path = run_dir / "report.json"
    if not report_path.is_file():
        raise UserError(f"{run_dir} has no report.json; finish the run (curridistill run --resume {run_dir}) first")
    report = read_json(report_path)
    epochs = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("model") == "student" and "epoch" in r]
    steps_path = run_dir / "student" / "prune.json"
    steps = read_json(steps_path) if steps_path.is_file() else []
    per_lesson: dict[int, int] = {}
    for r in epochs:
        per_lesson[r["lesson"]] = per_lesson.get(r["lesson"], 0) + 1
    if steps:
        how = "pruned " + " -> ".join(f"{s['achieved']:.0%}" for s in steps) + " from the trained model"
    else:
        how = "trained from random weights"
    student, teacher = report["student"], report.get("teacher") or {}
    cfg = load_config(run_dir / "config.yaml")
    return {"run": str(run_dir), "how": how, "seed": cfg.run.seed, "lr": cfg.course[-1].optimizer.lr, "epochs": len(epochs),
            "epochs_per_lesson": [per_lesson[k] for k in sorted(per_lesson)],
            "test_accuracy": student["accuracy"], "params": student["params"], "flops": student["flops"],
            "teacher_accuracy": teacher.get("accuracy"), "test_samples": report["data"]["test"],
            "train_accuracy_by_epoch": [r.get("train_accuracy") for r in epochs],
            "val_accuracy_by_epoch": [r.get("val_accuracy") for r in epochs]}


def markdown(rows: list[dict]) -> str:
    lines = ["| run | how the student was made | seed | peak lr | student epochs | test accuracy | params | MFLOPs |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        split = "+".join(str(e) for e in r["epochs_per_lesson"])
        lines.append(f"| {Path(r['run']).name} | {r['how']} | {r['seed']} | {r['lr']:g} | {r['epochs']} ({split}) | "
                     f"{r['test_accuracy']:.4f} | "
                     f"{r['params']:,} | {r['flops'] / 1e6:.3g} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dirs", nargs="+", type=Path)
    ap.add_argument("--json", required=True, help="result JSON; the Markdown table goes beside it (.md)")
    args = ap.parse_args(argv)
    try:
        rows = [describe(d) for d in args.run_dirs]
        if len({r["test_samples"] for r in rows}) > 1:
            raise UserError("the runs were tested on different test sets; their accuracies do not compare")
    except UserError as exc:  # an unfinished or missing run: one line, exit 2, nothing written
        print(f"error: {exc}", file=sys.stderr)
        return 2
    save_result(args.json, {"rows": rows}, markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
