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
from pathlib import Path
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from curridistill.config import Config, validate_config
from curridistill.errors import UserError
from curridistill.evaluate.stats import aggregate_reports, format_p
from curridistill.io import explain_invalid, read_checked, write_json, write_text

SELECTION_RULES = {"best_val": "validation-selected checkpoint, evaluated once on test", "last": "last epoch"}


# ------------------------------------------------------------------------------------------------ seeds
MAX_SEEDS = 1000  # a range like 0-2000000000 is a typo, not a plan (and its list alone would fill the memory)


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> [0, 1, 2]; ranges ``"0-4"`` are accepted. Raises UserError naming the bad item."""
    seeds: list[int] = []
    for item in (p.strip() for p in str(text).split(",")):
        if not item:
            raise UserError(f"--seeds {text!r}: empty item; give a comma-separated list of integers like --seeds 0,1,2")
        lo, sep, hi = item.partition("-") if not item.startswith("-") else (item, "", "")
        try:
            values = range(int(lo), int(hi) + 1) if sep else range(int(item), int(item) + 1)  # lazy until checked
        except ValueError:
            raise UserError(f"--seeds {text!r}: {item!r} is not an integer; give a comma-separated list of "
                            f"integers like --seeds 0,1,2") from None
        count = values.stop - values.start  # not len(): a huge range overflows it
        if count < 1:
            raise UserError(f"--seeds {text!r}: the range {item!r} is empty; write it low-high, e.g. 0-4")
        if len(seeds) + count > MAX_SEEDS:
            raise UserError(f"--seeds {text!r}: more than {MAX_SEEDS} seeds (each is a whole training run); "
                            f"give fewer")
        seeds.extend(values)
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds {text!r}: a seed is repeated; each seed must be distinct")
    return seeds


def _child_config(cfg: Config, edit: Callable[[dict], None]) -> Config:
    raw = cfg.model_dump(mode="json")
    edit(raw)
    raw["run"]["parallel"] = 1  # a child is one run: running children side by side is the parent's setting
    return validate_config(raw, "child config")


def seed_children(cfg: Config) -> list[tuple[str, Config]]:
    def child(seed: int) -> Config:
        def edit(raw: dict) -> None:
            raw["run"]["seeds"] = None
            raw["run"]["seed"] = seed
        return _child_config(cfg, edit)

    return [(f"seed-{s}", child(s)) for s in cfg.run.seeds or []]


def fold_children(cfg: Config) -> list[tuple[str, Config]]:
    """(``fold-<i>``, the config of fold i) for every fold of ``cfg.data.cv``."""
    def child(i: int) -> Config:
        def edit(raw: dict) -> None:
            raw["data"]["cv"]["fold"] = i
        return _child_config(cfg, edit)

    return [(f"fold-{i}", child(i)) for i in range(cfg.data.cv.folds)]


# ------------------------------------------------------------------------------------------- the engine
def is_multi(cfg: Config) -> bool:
    """True for a parent config: several seeds, or cross-validation without a chosen fold."""
    return bool(cfg.run.seeds) or (cfg.data.cv is not None and cfg.data.cv.fold is None)


def check_parallel(cfg: Config) -> None:
    """``run.parallel`` > 1 needs several runs to put side by side: refused on a single run (it did nothing)."""
    if cfg.run.parallel > 1 and not is_multi(cfg):
        raise UserError(f"run.parallel {cfg.run.parallel} (--parallel) runs seeds or folds side by side, and this run "
                        f"is one; add --seeds 0,1,2 (run.seeds) or data.cv, or set run.parallel: 1")


def children(cfg: Config) -> tuple[str, list[tuple[str, Config]]]:
    """("seeds" | "folds", [(child dir name, child config)])."""
    cv = cfg.data.cv is not None and cfg.data.cv.fold is None
    if cfg.run.seeds and cv:
        raise UserError("run.seeds and data.cv cannot be combined in one run; run the cross-validation once per "
                        "seed (--set run.seed=S) or drop data.cv")
    if cv:
        return "folds", fold_children(cfg)
    return "seeds", seed_children(cfg)


# ------------------------------------------------------------------------------------------- aggregate
def write_aggregate(run_dir: Path, cfg: Config, reports: list[dict], kind: str, names: list[str]) -> dict:
    """aggregate.json and aggregate.md of the children's (checked) reports; both are computed before either is
    written, so a failure leaves the previous aggregate as it was."""
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
    markdown = aggregate_markdown(agg, reports)
    write_json(run_dir / "aggregate.json", agg)
    write_text(run_dir / "aggregate.md", markdown)
    return agg


class Summary(BaseModel):
    """One metric of one model across runs (``stats.summarize``)."""

    model_config = ConfigDict(extra="allow", strict=True)

    n: int = Field(ge=0)
    mean: float | None = None
    std: float | None = None
    sem: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    min: float | None = None
    max: float | None = None
    confidence: float = Field(0.95, gt=0, lt=1)


class Comparison(BaseModel):
    """A Welch test between two models (``stats.welch_t_test``)."""

    model_config = ConfigDict(extra="allow", strict=True)

    a: str | None = None
    b: str | None = None
    metric: str | None = None
    mean_diff: float | None = None
    t: float | None = None
    df: float | None = None
    p_value: float | None = None


_SUMMARIES = TypeAdapter(dict[str, Summary])


class AggregateFile(BaseModel):
    """aggregate.json as ``report`` and ``compare`` read it: the run count, the models and, per model, a summary per
    metric, the per-run values and the comparisons, type-checked; other keys pass unchecked."""

    model_config = ConfigDict(extra="allow", strict=True)

    kind: Literal["seeds", "folds"] | None = None
    n_runs: int = Field(ge=1)
    models: list[str] = Field(min_length=1)
    per_seed: dict[str, list[float]]
    seeds: list[int | None] | None = None
    children: list[str] | None = None
    comparisons: dict[str, Comparison] | None = None

    @model_validator(mode="after")
    def _summaries(self) -> "AggregateFile":
        for name in self.models:
            try:
                _SUMMARIES.validate_python((self.model_extra or {}).get(name), strict=True)
            except ValidationError as exc:
                raise ValueError(explain_invalid(exc, (name,))) from None
        return self


def read_aggregate(path: str | Path, fix: str) -> dict:
    """A multi-seed / cross-validation parent's aggregate.json, checked (``AggregateFile``); one line naming the file,
    the key and ``fix`` otherwise."""
    return read_checked(path, AggregateFile, "an aggregate of runs", fix)


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
        p = "reference" if row["model"] == "baseline" else format_p(row["p_value_vs_baseline"])
        lines.append(f"| {row['model']} | {_num(row['mean'])} ± {_num(row['std'])} | {ci} | {row['n']} | {p} |")
    comp = agg.get("comparisons", {}).get("student_vs_baseline")
    if comp and comp.get("mean_diff") is not None:
        lines += ["", f"Distillation gain (student − baseline): {comp['mean_diff']:+.4f} accuracy, Welch t-test "
                      f"p = {format_p(comp['p_value'])}" + (" (needs ≥ 2 runs per model)" if comp["p_value"] is None else "")
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
        p = "ref" if row["model"] == "baseline" else format_p(row["p_value_vs_baseline"])
        table.add_row(row["model"], f"{_num(row['mean'])} ± {_num(row['std'])}", ci, str(row["n"]), diff, p)
    Console(width=max(console.width, 120)).print(table) if not console.is_terminal else console.print(table)
    if agg.get("teacher_note"):
        console.print(agg["teacher_note"])
    console.print(f"run directory: {agg['run_dir']}  (aggregate.json, aggregate.md, one run directory per {unit[:-1]})")
