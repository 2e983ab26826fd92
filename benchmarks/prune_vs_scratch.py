"""Pruning against its controls: the small architecture reached by pruning a trained model (ship runs with
prune lessons), the same architecture trained from random weights, or the unpruned model trained as many epochs;
one row per run directory, and with several seeds per arm a summary over seeds.

    python benchmarks/prune_vs_scratch.py runs/ship-cifar10-resnet20-long runs/resnet20-half-scratch \
        --json benchmarks/results/prune_vs_scratch_resnet20.json

A row: how the student was made, its seed, the peak learning rate of its last lesson, the epochs it trained
(recovery epochs after each cut, or from scratch), its test accuracy, parameters and MFLOPs, from each run's
config.yaml, report.json and metrics.jsonl (the runs are not re-evaluated). The JSON also keeps each run's
training and validation accuracy per epoch, so the runs' curves compare epoch by epoch.

Runs that differ only in their seed form an arm (same way of making the student, parameters, epochs per lesson,
peak learning rate). When an arm has two or more seeds the Markdown adds a summary: mean, sample std and 95% t
interval per arm, and Welch's t-test of each arm against the first run's arm. A pruned run also records the test
accuracy of its student before the first cut (the ship report's `student` stage), so the summary gives the
mean drop from each seed's own unpruned model.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from curridistill.bench.throughput import save_result
from curridistill.config import load_config
from curridistill.errors import UserError
from curridistill.evaluate.stats import summarize, welch_t_test
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
    stages = {row["stage"]: row for row in (report.get("compression") or {}).get("rows", [])}
    before_cut = stages["student"]["accuracy"] if steps and "student" in stages else None
    cfg = load_config(run_dir / "config.yaml")
    return {"run": str(run_dir), "how": how, "seed": cfg.run.seed, "lr": cfg.course[-1].optimizer.lr, "epochs": len(epochs),
            "epochs_per_lesson": [per_lesson[k] for k in sorted(per_lesson)],
            "test_accuracy": student["accuracy"], "unpruned_test_accuracy": before_cut, "params": student["params"], "flops": student["flops"],
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


def arm_of(row: dict) -> tuple:
    """What a run's student is, apart from its seed: runs with equal arms are seeds of one experiment."""
    return row["how"], row["params"], tuple(row["epochs_per_lesson"]), row["lr"]


def summarize_arms(rows: list[dict]) -> list[dict]:
    """Per arm (in order of first appearance): seeds, accuracy summary, Welch's test against the first arm, and
    for pruned arms the mean drop from each seed's own unpruned student."""
    arms: dict[tuple, list[dict]] = {}
    for r in rows:
        arms.setdefault(arm_of(r), []).append(r)
    reference = [r["test_accuracy"] for r in next(iter(arms.values()))]
    out = []
    for (how, params, split, lr), members in arms.items():
        accs = [r["test_accuracy"] for r in members]
        drops = [r["test_accuracy"] - r["unpruned_test_accuracy"] for r in members
                 if r["unpruned_test_accuracy"] is not None]
        out.append({"how": how, "params": params, "epochs_per_lesson": list(split), "lr": lr,
                    "seeds": [r["seed"] for r in members], "accuracy": summarize(accs),
                    "vs_first_arm": welch_t_test(accs, reference),
                    "drop_from_unpruned": summarize(drops) if drops else None})
    return out


def _fmt(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def arms_markdown(arms: list[dict]) -> str:
    lines = ["| how the student was made | params | epochs | peak lr | seeds | test accuracy mean ± std | 95% CI | "
             "Δ vs first row | p (Welch) | Δ vs its own unpruned student |",
             "|---|---:|---:|---:|---|---|---|---:|---:|---:|"]
    for i, a in enumerate(arms):
        acc, test, drop = a["accuracy"], a["vs_first_arm"], a["drop_from_unpruned"]
        ci = f"[{acc['ci_low']:.4f}, {acc['ci_high']:.4f}]" if acc["ci_low"] is not None else "–"
        vs = ("–", "–") if i == 0 else (_fmt(test["mean_diff"], "+.4f"), _fmt(test["p_value"], ".3g"))
        own = "–" if drop is None else f"{drop['mean']:+.4f} ± {_fmt(drop['std'], '.4f')}"
        lines.append(f"| {a['how']} | {a['params']:,} | {'+'.join(map(str, a['epochs_per_lesson']))} | {a['lr']:g} | "
                     f"{','.join(map(str, a['seeds']))} | {acc['mean']:.4f} ± {_fmt(acc['std'], '.4f')} | {ci} | "
                     f"{vs[0]} | {vs[1]} | {own} |")
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
    arms = summarize_arms(rows)
    md = markdown(rows)
    if any(a["accuracy"]["n"] > 1 for a in arms):
        md += "\n\nOver seeds (Welch's t-test of each arm against the first row's):\n\n" + arms_markdown(arms)
    save_result(args.json, {"rows": rows, "arms": arms}, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
