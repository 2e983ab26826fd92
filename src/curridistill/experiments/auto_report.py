"""What ``curridistill auto`` writes besides best.yaml: trials.csv, the Pareto front and history plot, auto.md.

Pure functions of finished Optuna trials and of the summary dict (``auto.json``); no training happens here.
"""
from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

from curridistill.io import atomic_write, write_text


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def mean_pm(xs: list[float] | None) -> str:
    if not xs:
        return "–"
    m, s = mean_std(xs)
    return f"{m:.4f} ± {s:.4f}" if len(xs) > 1 else f"{m:.4f}"


def trial_row(t) -> dict:
    seconds = t.user_attrs.get("seconds")
    return {"number": t.number, "state": t.state.name, "value": t.values[0] if t.values else None,
            "cost": t.values[1] if t.values and len(t.values) > 1 else None, "recipe": t.user_attrs.get("recipe", ""),
            "epochs": t.user_attrs.get("epochs"), "seconds": seconds, "params": t.user_attrs.get("params"),
            "latency_ms": t.user_attrs.get("latency_ms"), "rejected": t.user_attrs.get("rejected"),
            "values": t.user_attrs.get("values"), "run_dir": t.user_attrs.get("run_dir"),
            "error": t.user_attrs.get("error"), "interrupted": bool(t.user_attrs.get("interrupted"))}


def write_trials_csv(path: Path, trials: list) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["number", "state", "val_accuracy", "epochs", "seconds", "params", "latency_ms", "recipe", "note", "values"])
    for t in trials:
        r = trial_row(t)
        w.writerow([r["number"], r["state"], "" if r["value"] is None else f"{r['value']:.6g}", r["epochs"] or "",
                    "" if r["seconds"] is None else f"{r['seconds']:.1f}", r["params"] or "",
                    "" if r["latency_ms"] is None else f"{r['latency_ms']:.4f}", r["recipe"],
                    r["rejected"] or t.user_attrs.get("error") or ("interrupted" if t.user_attrs.get("interrupted") else ""),
                    json.dumps(r["values"], sort_keys=True)])
    write_text(path, buf.getvalue())


def pareto_front_numbers(trials: list, cost: str) -> list[int]:
    """Trial numbers not dominated on (accuracy max, cost min) among ``trials`` with values."""
    def pt(t):
        c = t.values[1] if len(t.values) > 1 else t.user_attrs.get("latency_ms" if cost == "latency" else "params") or 0
        return t.values[0], c
    pts = {t.number: pt(t) for t in trials}
    return [n for n, (a, c) in pts.items()
            if not any((a2 >= a and c2 <= c) and (a2 > a or c2 < c) for m, (a2, c2) in pts.items() if m != n)]


def plot_front(path: Path, trials: list, front: list, cost: str) -> Path | None:
    """Left: accuracy vs cost, the front in red; right: the search history. Pruned trials (their last epoch's
    value, a partial run) are drawn apart and never count as the best so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in trials if t.values]
    if not done:
        return None
    key = "latency_ms" if cost == "latency" else "params"

    def x_of(t) -> float:
        return t.values[1] if len(t.values) > 1 else t.user_attrs.get(key) or 0

    complete = [t for t in done if t.state.name == "COMPLETE"]
    pruned = [t for t in done if t.state.name != "COMPLETE"]
    front_nums = {t.number for t in front} or set(pareto_front_numbers(complete, cost))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for group, style in ((pruned, {"c": "0.75", "marker": "x", "label": "pruned (partial run)"}),
                         (complete, {"c": "0.35", "marker": "o", "label": "complete"})):
        if group:
            a1.scatter([x_of(t) for t in group], [t.values[0] for t in group], s=14, **style)
            a2.scatter([t.number for t in group], [t.values[0] for t in group], s=14, **style)
    fr = sorted((x_of(t), t.values[0]) for t in complete if t.number in front_nums)
    if fr:
        a1.plot([p[0] for p in fr], [p[1] for p in fr], "o-", c="C3", label="Pareto front")
    a1.set_xlabel("batch-1 CPU latency (ms)" if cost == "latency" else "parameters")
    a1.set_ylabel("validation accuracy (proxy)")
    a1.legend(loc="lower right", fontsize=8)
    best, xs, ys = -1.0, [], []
    for t in sorted(complete, key=lambda t: t.number):
        best = max(best, t.values[0])
        xs.append(t.number)
        ys.append(best)
    if xs:
        a2.step(xs, ys, where="post", c="C3", label="best complete so far")
    a2.set_xlabel("trial")
    a2.set_ylabel("validation accuracy (proxy)")
    a2.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)


def auto_markdown(s: dict) -> str:
    ph = s["phases_s"]
    est = s["estimate_at_start"] or {}
    plan = s["plan"]
    lines = [f"## Automated distillation (`curridistill auto`)", "",
             f"Config `{s['config']}`, objective **{s['objective']}**"
             + (f" (validation accuracy vs {s['cost']})" if s["objective"] == "pareto" else " (validation accuracy)")
             + f"; study `{s['study_name']}` in `{s['storage']}`.", "",
             "### Budget: estimated vs used", "",
             *([f"Over {s['invocations']} invocations (killed and resumed): the used column adds them up; the "
                f"estimates are the last invocation's plan.", ""] if s.get("invocations", 1) > 1 else []),
             "| phase | estimated | used |", "| --- | ---: | ---: |",
             f"| teacher (once) | {fmt_seconds(est.get('teacher_s'))} | {fmt_seconds(ph.get('teacher'))} |",
             f"| search ({s['n_trials']} trials; one ≈ {fmt_seconds(plan['trial_estimate_s'])}) | {fmt_seconds(plan['search_s'])} | "
             f"{fmt_seconds(ph.get('search'))} |",
             f"| full-fidelity re-runs ({plan['top_k']} candidate(s){' + reference' if plan['reference'] else ''} × "
             f"{len(plan['seeds'])} seed(s)) | {fmt_seconds(plan['finals_estimate_s'])} | {fmt_seconds(ph.get('final'))} |",
             f"| **total** | **{fmt_seconds(s['budget_s'])}** (budget) | **{fmt_seconds(s['used_s'])}** |", "",
             f"Proxy trials: {describe_fidelity(s['fidelity']['proxy'])}; full fidelity: "
             f"{describe_fidelity(s['fidelity']['full'])}. Trials: "
             + ", ".join(f"{v} {k}" for k, v in sorted(s["counts"].items()))
             + f" ({s['rejected_before_training']} rejected by the constraints before training).", ""]
    g = s["gains"]
    ch = s["chosen"]
    lines += ["### Result (chosen on validation, then evaluated once on test)", "",
              "| run | recipe | proxy val | full val (mean ± std) | test (mean ± std) |", "| --- | --- | ---: | ---: | ---: |"]
    for f in s["finals"]:
        is_chosen = f["name"] == ch["name"]
        show_test = is_chosen or f["trial"] is None
        lines.append(f"| {'**' + f['name'] + '**' if is_chosen else f['name']} | {f['recipe']} | "
                     f"{'–' if f['proxy_val'] is None else format(f['proxy_val'], '.4f')} | {mean_pm(f['val'])} | "
                     f"{mean_pm(f['test']) if show_test else 'not read'} |")
    lines.append("")
    if g:
        surv = "–" if g["survived"] is None else f"{100 * g['survived']:.0f}%"
        lines += [f"Gain over the config's own recipe: {g['search_val_gain']:+.4f} validation accuracy in the search "
                  f"(proxy, one seed), {g['full_val_gain']:+.4f} at full fidelity over {len(s['seeds'])} seed(s), "
                  f"{g['test_gain']:+.4f} on test: **{surv} of the search-time gain survived**.", ""]
    lines += ["Seeds " + ", ".join(map(str, s["seeds"])) + ". Candidates other than the chosen one are compared on "
              "validation only; their test numbers are not read.", ""]
    if s["pareto_front"] or s["objective"] == "pareto":
        lines += ["### Pareto front", "", "| trial | recipe | val (proxy) | params | latency ms |",
                  "| ---: | --- | ---: | ---: | ---: |"]
        rows = {r["number"]: r for r in s["trials"]}
        for n in sorted(s["pareto_front"], key=lambda n: rows[n]["latency_ms"] or 0):
            r = rows[n]
            lines.append(f"| {n} | {r['recipe']} | {r['value']:.4f} | {r['params']:,} | {r['latency_ms']:.4f} |")
        lines.append("")
    if s.get("plot"):
        lines += [f"![Pareto front and search history]({Path(s['plot']).name})", ""]
    lines += ["### Search history", "", "| trial | state | val (proxy) | epochs | s | recipe |",
              "| ---: | --- | ---: | ---: | ---: | --- |"]
    for r in s["trials"]:
        note = (f" (rejected: {r['rejected']})" if r["rejected"] else f" ({r['error']})" if r.get("error") else
                " (interrupted)" if r.get("interrupted") else "")
        lines.append(f"| {r['number']} | {r['state'].lower()}{note} | {'–' if r['value'] is None else format(r['value'], '.4f')} | "
                     f"{r['epochs'] or '–'} | {'–' if r['seconds'] is None else format(r['seconds'], '.1f')} | {r['recipe']} |")
    lines.append("")
    if s["space_notes"]:
        lines += ["### Space notes", ""] + [f"- {n}" for n in s["space_notes"]] + [""]
    return "\n".join(lines)


def describe_fidelity(fid: dict) -> str:
    return f"{fid['epochs']} epochs" + (f", {fid['subset']} samples" if fid.get("subset") else ", all data")
