"""Several runs of one plan (student seeds or cross-validation folds) and their honest aggregate.

``RUN_DIR/config.yaml`` is the parent config (with ``run.seeds`` or ``data.cv``); every child is a normal run
directory (``RUN_DIR/seed-<s>/`` or ``RUN_DIR/fold-<i>/``) that ``curridistill run --resume`` can continue on its
own. Resuming the parent skips children that have a ``report.json``, continues those that have a
``config.yaml`` and starts the rest. ``RUN_DIR/aggregate.json`` holds ``stats.aggregate_reports`` of the
children's reports (mean, std, 95% t-interval per metric and model, Welch p-values, the per-child values) and
``RUN_DIR/aggregate.md`` a readable table.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

from curridistill.config import Config, validate_config
from curridistill.errors import UserError
from curridistill.evaluate.stats import aggregate_reports
from curridistill.io import read_json, write_json, write_text
from curridistill.locks import run_dir_lock
from curridistill.preflight import check_static

SELECTION_RULES = {"best_val": "validation-selected checkpoint, evaluated once on test", "last": "last epoch"}


# ------------------------------------------------------------------------------------------------ seeds
def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> [0, 1, 2]; ranges ``"0-4"`` are accepted. Raises UserError naming the bad item."""
    seeds: list[int] = []
    for item in (p.strip() for p in str(text).split(",")):
        if not item:
            raise UserError(f"--seeds {text!r}: empty item; give a comma-separated list of integers like --seeds 0,1,2")
        lo, sep, hi = item.partition("-") if not item.startswith("-") else (item, "", "")
        try:
            values = list(range(int(lo), int(hi) + 1)) if sep else [int(item)]
        except ValueError:
            raise UserError(f"--seeds {text!r}: {item!r} is not an integer; give a comma-separated list of "
                            f"integers like --seeds 0,1,2") from None
        if not values:
            raise UserError(f"--seeds {text!r}: the range {item!r} is empty; write it low-high, e.g. 0-4")
        seeds.extend(values)
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds {text!r}: a seed is repeated; each seed must be distinct")
    return seeds


def _child_config(cfg: Config, edit: Callable[[dict], None]) -> Config:
    raw = cfg.model_dump(mode="json")
    edit(raw)
    return validate_config(raw, "child config")


def seed_children(cfg: Config) -> list[tuple[str, Config]]:
    def child(seed: int) -> Config:
        def edit(raw: dict) -> None:
            raw["run"]["seeds"] = None
            raw["run"]["seed"] = seed
        return _child_config(cfg, edit)

    return [(f"seed-{s}", child(s)) for s in cfg.run.seeds or []]


# ------------------------------------------------------------------------------------------- the engine
def is_multi(cfg: Config) -> bool:
    """True for a parent config: several seeds, or cross-validation without a chosen fold."""
    return bool(cfg.run.seeds) or (cfg.data.cv is not None and cfg.data.cv.fold is None)


def children(cfg: Config) -> tuple[str, list[tuple[str, Config]]]:
    """("seeds" | "folds", [(child dir name, child config)])."""
    cv = cfg.data.cv is not None and cfg.data.cv.fold is None
    if cfg.run.seeds and cv:
        raise UserError("run.seeds and data.cv cannot be combined in one run; run the cross-validation once per "
                        "seed (--set run.seed=S) or drop data.cv")
    if cv:
        from curridistill.experiments.cv import fold_children

        return "folds", fold_children(cfg)
    return "seeds", seed_children(cfg)


def run_multi(cfg: Config, out: str | Path | None = None, progress=None, stop_after_epochs: int | None = None,
              on_record=None) -> dict:
    """Run every seed / fold of ``cfg`` into its own child directory; return (and write) the aggregate."""
    from curridistill import api

    kind, kids = children(cfg)  # checks before any directory is made
    for _, child in kids:
        check_static(child)
    run_dir = api.new_run_dir(cfg, out)
    with run_dir_lock(run_dir):  # one writer per parent directory (each child locks its own too)
        write_text(run_dir / "config.yaml", cfg.to_yaml())
        return _run_children(cfg, run_dir, kind, kids, progress, stop_after_epochs, on_record)


def resume_multi(cfg: Config, run_dir: str | Path, progress=None, stop_after_epochs: int | None = None,
                 on_record=None) -> dict:
    """Finish a multi-seed / cross-validation parent: skip finished children, resume or start the others."""
    kind, kids = children(cfg)
    with run_dir_lock(run_dir):
        return _run_children(cfg, Path(run_dir), kind, kids, progress, stop_after_epochs, on_record)


def _run_children(cfg: Config, run_dir: Path, kind: str, kids: list[tuple[str, Config]], progress,
                  stop_after_epochs: int | None, on_record) -> dict:
    from curridistill import api

    if cfg.run.parallel > 1 and len(kids) > 1:
        reports = run_side_by_side(kids, run_dir, cfg.run.parallel, stop_after_epochs, progress)
        return write_aggregate(run_dir, cfg, reports, kind, [n for n, _ in kids])
    reports = []
    for name, child in kids:
        child_dir = run_dir / name
        if progress is not None and hasattr(progress, "note"):
            progress.note(f"[bold]{name}[/] ({run_dir})")
        if (child_dir / "report.json").is_file():
            report = read_json(child_dir / "report.json")
        elif (child_dir / "config.yaml").is_file():
            report = api.resume(child_dir, progress=progress, stop_after_epochs=stop_after_epochs, on_record=on_record)
        else:
            report = api.run(child, out=child_dir, progress=progress, stop_after_epochs=stop_after_epochs,
                             on_record=on_record)
        reports.append(report)
    return write_aggregate(run_dir, cfg, reports, kind, [n for n, _ in kids])


def run_side_by_side(kids: list[tuple[str, Config]], run_dir: Path, parallel: int, stop_after_epochs: int | None,
                     progress=None) -> list[dict]:
    """Children in ``parallel`` spawned processes at once (one GPU, or the CPU cores split between them).

    Each child is the same config as in a sequential run and writes its own directory, so the results
    equal running them one by one (on the CPU, bit for bit when ``run.threads`` is set: the thread count
    is the only thing that could change float reductions). Without ``run.threads`` each process gets
    cores // parallel threads. Children sharing a teacher wait for the one that trains it (cache lock).
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from curridistill.train import distributed

    if distributed.info().active:
        raise UserError("run.parallel > 1 cannot be combined with torchrun; use one or the other")
    workers = min(parallel, len(kids))
    threads = max(1, (os.cpu_count() or 1) // workers)
    if progress is not None and hasattr(progress, "note"):
        progress.note(f"[bold]{len(kids)} runs, {workers} side by side[/] ({run_dir})")
    jobs = [(child.model_dump(mode="json"), str(run_dir / name), stop_after_epochs, threads) for name, child in kids]
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_child_job, *zip(*jobs)))


def _child_job(raw: dict, child_dir: str, stop_after_epochs: int | None, threads: int) -> dict:
    """One child in its own process: finished -> its report; started -> resumed; else run."""
    import torch

    from curridistill import api

    if raw["run"].get("threads") is None:
        torch.set_num_threads(threads)
    path = Path(child_dir)
    if (path / "report.json").is_file():
        return read_json(path / "report.json")
    if (path / "config.yaml").is_file():
        return api.resume(path, stop_after_epochs=stop_after_epochs)
    return api.run(validate_config(raw, "child config"), out=path, stop_after_epochs=stop_after_epochs)


# ------------------------------------------------------------------------------------------- aggregate
def write_aggregate(run_dir: Path, cfg: Config, reports: list[dict], kind: str, names: list[str]) -> dict:
    agg = aggregate_reports(reports)
    selection = reports[0].get("selection", cfg.run.selection)
    agg = {"kind": kind, "name": cfg.run.name, "children": names, **agg,
           "selection": selection, "selection_rule": SELECTION_RULES.get(selection, selection),
           "teacher_note": teacher_note(reports, kind, cfg)}
    if kind == "folds":
        agg["folds"] = [int(n.split("-")[1]) for n in names]
        agg["cv"] = {"folds": cfg.data.cv.folds, "seed": cfg.data.cv.seed}
    comp = agg["comparisons"].get("student_vs_baseline")
    agg["p_value_student_vs_baseline"] = comp["p_value"] if comp else None
    agg["run_dir"] = str(run_dir)
    write_json(run_dir / "aggregate.json", agg)
    write_text(run_dir / "aggregate.md", aggregate_markdown(agg, reports))
    return agg


def teacher_note(reports: list[dict], kind: str, cfg: Config) -> str | None:
    teachers = [r.get("teacher") for r in reports if isinstance(r.get("teacher"), dict)]
    if not teachers:
        return None
    many = "teachers are" if len(cfg.all_teachers()) > 1 else "teacher is"
    if all(tc.checkpoint for tc in cfg.all_teachers()):
        return f"The {many} loaded from the configured checkpoint for every {kind[:-1]}; only the students vary."
    if kind == "folds":
        return (f"The {many} trained once per fold (each fold has its own training data, and the teacher must not "
                f"see its fold's validation data), with the fixed run.teacher_seed and cached in run.cache_dir.")
    reused = sum(1 for t in teachers if t.get("reused_from"))
    same = len({t.get("accuracy") for t in teachers}) == 1
    if not all(tc.reuse for tc in cfg.all_teachers()):
        return (f"The {many} retrained for every seed (teacher.reuse is false) with the same run.teacher_seed "
                f"{cfg.run.teacher_seed}, so it is the same model each time; only the student seed varies.")
    return (f"The {many} trained once (run.teacher_seed {cfg.run.teacher_seed}, independent of the student seed), "
            f"cached in run.cache_dir and reused for every seed ({reused} of {len(teachers)} seeds loaded it from the "
            f"cache{'' if same else '; WARNING: the teacher accuracies differ between seeds'}): its spread is 0 by "
            f"construction, the spread shown is that of the student seeds.")


def _num(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def fmt_p(p) -> str:
    if p is None:
        return "–"
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def summary_rows(agg: dict, metric: str = "accuracy") -> list[dict]:
    """One row per model: mean, std, CI, n, p-value vs the baseline (Welch)."""
    rows = []
    for name in agg.get("models", []):
        s = (agg.get(name) or {}).get(metric)
        if not s:
            continue
        comp = agg.get("comparisons", {}).get(f"{name}_vs_baseline")
        rows.append({"model": name, "mean": s["mean"], "std": s["std"], "ci_low": s["ci_low"], "ci_high": s["ci_high"],
                     "n": s["n"], "p_value_vs_baseline": comp["p_value"] if comp else None,
                     "diff_vs_baseline": comp["mean_diff"] if comp else None})
    return rows


def aggregate_markdown(agg: dict, reports: list[dict]) -> str:
    kind = agg["kind"]
    unit = "seed" if kind == "seeds" else "fold"
    ids = agg.get("seeds") if kind == "seeds" else agg.get("folds")
    n = agg["n_runs"]
    conf = next((s["accuracy"]["confidence"] for s in (agg.get(m) for m in agg["models"]) if s and "accuracy" in s), 0.95)
    lines = [f"# {agg.get('name', 'run')}: {n} {kind} ({', '.join(str(i) for i in ids or [])})", ""]
    lines.append(f"Test accuracy over {n} {kind}: mean ± sample standard deviation, {conf:.0%} Student-t confidence "
                 f"interval of the mean, and the two-sided Welch t-test p-value of each model against the baseline.")
    lines.append("")
    lines.append(f"- checkpoint selection: {agg['selection_rule']}")
    if kind == "folds":
        cv = agg.get("cv", {})
        lines.append(f"- {cv.get('folds')}-fold stratified cross-validation (seed {cv.get('seed')}): fold i validates on the "
                     f"i-th fold of the pooled training data and trains on the rest; the test set is the same for every fold")
    else:
        lines.append(f"- student seeds: {', '.join(str(s) for s in ids or [])} (initialization of baseline and student; "
                     f"the data order and augmentation use data.data_seed)")
    if agg.get("teacher_note"):
        lines.append(f"- {agg['teacher_note']}")
    lines += ["", "| model | accuracy (mean ± std) | 95% CI | n | p-value vs baseline |",
              "| --- | --- | --- | --- | --- |"]
    for row in summary_rows(agg):
        ci = f"[{_num(row['ci_low'])}, {_num(row['ci_high'])}]" if row["ci_low"] is not None else "– (n < 2)"
        p = "reference" if row["model"] == "baseline" else fmt_p(row["p_value_vs_baseline"])
        lines.append(f"| {row['model']} | {_num(row['mean'])} ± {_num(row['std'])} | {ci} | {row['n']} | {p} |")
    comp = agg.get("comparisons", {}).get("student_vs_baseline")
    if comp and comp.get("mean_diff") is not None:
        lines += ["", f"Distillation gain (student − baseline): {comp['mean_diff']:+.4f} accuracy, Welch t-test "
                      f"p = {fmt_p(comp['p_value'])}" + (" (needs ≥ 2 runs per model)" if comp["p_value"] is None else "")
                  + (f"; t = {comp['t']:.3f}, df = {comp['df']:.1f}" if comp.get("df") else "") + "."]
    lines += ["", f"## Per {unit}", ""]
    models = agg["models"]
    lines.append(f"| {unit} | " + " | ".join(models) + " |")
    lines.append("| --- | " + " | ".join("---" for _ in models) + " |")
    for i, (child, report) in enumerate(zip(agg.get("children", []), reports)):
        cells = [_num((report.get(m) or {}).get("accuracy")) for m in models]
        lines.append(f"| {child} | " + " | ".join(cells) + " |")
    other = [k for k in ("f1_macro", "params", "flops", "latency_ms", "train_seconds")
             if any(k in (agg.get(m) or {}) for m in models)]
    if other:
        lines += ["", "## Other metrics (mean ± std)", "", "| model | " + " | ".join(other) + " |",
                  "| --- | " + " | ".join("---" for _ in other) + " |"]
        for m in models:
            cells = []
            for k in other:
                s = (agg.get(m) or {}).get(k)
                cells.append("–" if not s or s["mean"] is None else
                             (f"{s['mean']:,.0f}" if k in ("params", "flops") else f"{_num(s['mean'])} ± {_num(s['std'])}"))
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "Each child directory is a complete run (report.json, metrics.jsonl, checkpoints); "
                  "`curridistill report RUN_DIR/<child>` draws its plots.", ""]
    return "\n".join(lines)


def print_aggregate(agg: dict, console=None) -> None:
    """A rich table of the aggregate (the CLI's summary after a multi-seed or cross-validation run)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    unit = agg["kind"]
    table = Table(title=f"test accuracy over {agg['n_runs']} {unit} ({agg['selection_rule']})")
    for col in ("model", "accuracy mean ± std", "95% CI", "n", "Δ vs baseline", "p vs baseline"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for row in summary_rows(agg):
        ci = f"[{_num(row['ci_low'])}, {_num(row['ci_high'])}]" if row["ci_low"] is not None else "–"
        diff = "–" if row["diff_vs_baseline"] is None else f"{row['diff_vs_baseline']:+.4f}"
        p = "ref" if row["model"] == "baseline" else fmt_p(row["p_value_vs_baseline"])
        table.add_row(row["model"], f"{_num(row['mean'])} ± {_num(row['std'])}", ci, str(row["n"]), diff, p)
    Console(width=max(console.width, 120)).print(table) if not console.is_terminal else console.print(table)
    if agg.get("teacher_note"):
        console.print(agg["teacher_note"])
    console.print(f"run directory: {agg['run_dir']}  (aggregate.json, aggregate.md, one run directory per {unit[:-1]})")
