"""One table across run directories: ``curridistill compare RUN_DIR...``.

Each directory is a single run (``report.json``) or a multi-seed / cross-validation parent (``aggregate.json``).
For every model of every run: test accuracy mean ± std and n, parameters, FLOPs, batch-1 latency, the gain over
that run's own baseline, and the Welch p-value against the FIRST run's student (when both have at least 2 runs).
A run whose report.json or aggregate.json is malformed is refused, naming the file: no run is left out silently.
"""
from __future__ import annotations

import math
from pathlib import Path

import yaml

from curridistill.config import read_yaml
from curridistill.errors import UserError
from curridistill.evaluate.evaluation import read_report
from curridistill.evaluate.stats import aggregate_reports, format_p, welch_t_test
from curridistill.multirun import read_aggregate

ORDER = ("teacher", "baseline", "student")


def load_run(run_dir: str | Path) -> dict:
    """{label, dir, kind, n, aggregate, data, method} of a run directory (single or multi), its files checked."""
    d = Path(run_dir)
    if not d.is_dir():
        raise UserError(f"{d} is not a directory; pass run directories made by `curridistill run`")
    leave_out = f"or leave {d} out of the comparison"
    if (d / "aggregate.json").is_file():
        agg = read_aggregate(d / "aggregate.json", f"delete it and re-create it with `curridistill run --resume {d}`, "
                                                   f"{leave_out}")
        reports = (d / c / "report.json" for c in agg.get("children") or [])
        first = next((read_report(p, f"delete it and run `curridistill run --resume {p.parent}` (its trained models "
                                     f"are evaluated again), {leave_out}") for p in reports if p.is_file()), {})
        kind = agg.get("kind") or "seeds"
    elif (d / "report.json").is_file():
        first = read_report(d / "report.json", f"delete it and run `curridistill run --resume {d}` (the trained models "
                                               f"are evaluated again), {leave_out}")
        agg = aggregate_reports([first])
        kind = "single"
    else:
        raise UserError(f"{d} has no report.json or aggregate.json; finish it with `curridistill run --resume {d}`")
    return {"dir": str(d), "label": d.name or str(d), "kind": kind, "n": agg.get("n_runs", 1), "aggregate": agg,
            "data": first.get("data") or {}, "selection": first.get("selection"), "method": method_label(d)}


def method_label(run_dir: Path) -> str:
    """The loss terms of each lesson (with KD temperature), plus curriculum, from the run's config.yaml."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return "?"
    try:
        raw = read_yaml(path.read_text(encoding="utf-8")) or {}  # bounded: a run directory is data, maybe hostile
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError):
        return "?"
    if not isinstance(raw, dict):
        return "?"
    course = raw.get("course") or []
    if isinstance(course, dict):
        course = course.get("lessons") or []
    parts = []
    for lesson in course:
        if not isinstance(lesson, dict):
            continue
        terms = []
        for name, term in (lesson.get("loss") or {}).items():
            t = term.get("temperature") if isinstance(term, dict) else None
            value = t.get("value") if isinstance(t, dict) and t.get("kind", "constant") == "constant" else None
            terms.append(f"{name}(T={value:.3g})" if isinstance(value, (int, float)) else name)
        text = "+".join(terms) or "?"
        cur = lesson.get("curriculum")
        if isinstance(cur, dict) and cur.get("scorer"):
            text += f" [curriculum: {cur['scorer']}]"
        parts.append(text)
    extra = ""
    if raw.get("assistants"):
        extra = f" via {len(raw['assistants'])} assistant(s)"
    return " → ".join(parts) + extra if parts else "?"


def _mean(agg: dict, model: str, metric: str):
    s = (agg.get(model) or {}).get(metric)
    return s.get("mean") if isinstance(s, dict) else None


def compare_runs(run_dirs: list[str | Path], metric: str = "accuracy") -> dict:
    """Rows of the comparison table (one per model per run) and notes; the first run's student is the reference."""
    if not run_dirs:
        raise UserError("compare needs at least one run directory, e.g. curridistill compare runs/a runs/b")
    runs = [load_run(d) for d in run_dirs]
    labels = [r["label"] for r in runs]
    for r in runs:  # same names: show the parent too
        if labels.count(r["label"]) > 1:
            r["label"] = str(Path(r["dir"]).parent.name + "/" + r["label"]).lstrip("/")
    ref = runs[0]
    ref_values = ref["aggregate"]["per_seed"].get("student") if metric == "accuracy" else None
    ref_values = ref_values or []
    rows = []
    for run in runs:
        agg = run["aggregate"]
        models = [m for m in ORDER if m in agg.get("models", [])] + [m for m in agg.get("models", []) if m not in ORDER]
        base = _mean(agg, "baseline", metric)
        for model in models:
            s = (agg.get(model) or {}).get(metric) or {}
            values = agg["per_seed"].get(model, [])
            is_ref = run is ref and model == "student"
            # the teacher is one fixed model (spread 0 by construction): no test against the student
            test = (welch_t_test(values, ref_values) if not is_ref and model != "teacher" and len(values) >= 2
                    and len(ref_values) >= 2 else None)
            mean = s.get("mean")
            rows.append({
                "run": run["label"], "dir": run["dir"], "method": run["method"], "kind": run["kind"], "model": model,
                "mean": mean, "std": s.get("std"), "n": s.get("n", 0), "ci_low": s.get("ci_low"), "ci_high": s.get("ci_high"),
                "params": _mean(agg, model, "params"), "flops": _mean(agg, model, "flops"),
                "latency_ms": _mean(agg, model, "latency_ms"),
                "delta_vs_baseline": (mean - base) if (model != "baseline" and model != "teacher" and mean is not None
                                                       and base is not None) else None,
                "p_vs_reference": test["p_value"] if test else None,
                "diff_vs_reference": test["mean_diff"] if test else None,
                "reference": is_ref,
            })
    notes = []
    tests = {(r["data"].get("name"), r["data"].get("test")) for r in runs}
    if len(tests) > 1:
        notes.append("WARNING: the runs are evaluated on different test sets "
                     f"({', '.join(f'{n}: {t} samples' for n, t in sorted(tests, key=str))}); their accuracies are not comparable")
    selections = {r["selection"] for r in runs if r["selection"]}
    if len(selections) > 1:
        notes.append(f"WARNING: the runs select checkpoints differently ({', '.join(sorted(selections))})")
    if len(ref_values) < 2:
        notes.append(f"no p-values: the reference run {ref['label']} has {len(ref_values)} student run(s); "
                     f"Welch's test needs ≥ 2 seeds on both sides (curridistill run CONFIG --seeds 0,1,2)")
    return {"metric": metric, "reference": f"{ref['label']} student", "runs": [
        {k: r[k] for k in ("label", "dir", "kind", "n", "method", "selection")} for r in runs], "rows": rows, "notes": notes}


def _f(value, fmt: str = ".4f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value, fmt)


def table_cells(row: dict) -> list[str]:
    acc = f"{_f(row['mean'])} ± {_f(row['std'])}" if row["std"] is not None else _f(row["mean"])
    return [row["run"], row["method"], row["model"], acc, str(row["n"]),
            "–" if row["params"] is None else f"{row['params']:,.0f}",
            "–" if row["flops"] is None else f"{row['flops'] / 1e6:.3f}",
            _f(row["latency_ms"], ".3f"),
            "–" if row["delta_vs_baseline"] is None else f"{row['delta_vs_baseline']:+.4f}",
            "ref" if row["reference"] else format_p(row["p_vs_reference"])]


def headers(result: dict) -> list[str]:
    return ["run", "method", "model", f"{result['metric']} (mean ± std)", "n", "params", "MFLOPs", "latency ms",
            "Δ vs own baseline", f"p vs {result['reference']}"]


def markdown(result: dict) -> str:
    lines = [f"# Comparison of {len(result['runs'])} run(s)", "",
             f"Test {result['metric']}: mean ± sample std over each run's seeds/folds (n); Δ is the gain over the same "
             f"run's baseline; p is the two-sided Welch t-test against {result['reference']}.", ""]
    hs = headers(result)
    lines.append("| " + " | ".join(hs) + " |")
    lines.append("| " + " | ".join("---" for _ in hs) + " |")
    for row in result["rows"]:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in table_cells(row)) + " |")
    if result["notes"]:
        lines.append("")
        lines += [f"- {n}" for n in result["notes"]]
    lines += ["", "Runs:", ""] + [f"- {r['label']}: `{r['dir']}` ({r['kind']}, n = {r['n']})" for r in result["runs"]]
    return "\n".join(lines) + "\n"


def print_table(result: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"test {result['metric']} across runs")
    for h in headers(result):
        table.add_column(h, justify="left" if h in ("run", "method", "model") else "right", overflow="fold")
    for row in result["rows"]:
        table.add_row(*table_cells(row))
    console.print(table)
    for note in result["notes"]:
        console.print(note)
