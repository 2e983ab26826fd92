"""The report's figures: each function draws one PNG (written atomically) and returns its path.

Matplotlib runs headless (Agg backend); figures are closed after saving so long sessions do not leak memory.
Empty inputs draw a labelled placeholder rather than failing, so a partial run still gets a full report.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from curridistill.evaluate.stats import NOT_MODELS  # noqa: E402
from curridistill.io import atomic_write  # noqa: E402

DPI = 110
_MODEL_ORDER = ("teacher", "baseline", "student")
_LINESTYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


# ----------------------------------------------------------------------------------------------------- helpers
def _save(fig, out: str | Path) -> Path:
    out = Path(out)
    try:
        fig.tight_layout()
        return atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
    finally:
        plt.close(fig)


def _empty_panel(ax, text: str) -> None:
    """A panel with nothing to draw says so in grey (e.g. a run that logged no epochs), instead of empty axes."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _num(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _ordered(names) -> list[str]:
    """teacher, baseline, student first, then the rest in the order given (deduplicated)."""
    names = list(dict.fromkeys(names))
    return [n for n in _MODEL_ORDER if n in names] + [n for n in names if n not in _MODEL_ORDER]


def _colors(names: Sequence[str]) -> dict[str, str]:
    """One colour per model, the same in every figure: teacher C0, baseline C1, student C2, others after."""
    fixed = {n: f"C{i}" for i, n in enumerate(_MODEL_ORDER)}
    others = [n for n in names if n not in fixed]
    return {n: fixed.get(n) or f"C{(len(fixed) + others.index(n)) % 10}" for n in names}


def _epoch_axis(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch (cumulative per model)", fontsize=8)


def model_entries(report: dict) -> list[tuple[str, dict]]:
    """(name, metrics) of every model in a report.json: teacher/baseline/student first, then other model keys."""
    names = [k for k, v in report.items() if k not in NOT_MODELS and isinstance(v, dict) and "accuracy" in v]
    return [(n, report[n]) for n in _ordered(names)]


def _by_model(metrics: Sequence[dict]) -> dict[str, list[dict]]:
    """Records grouped by model, sorted by (lesson, epoch), last record kept when one is repeated (a resume)."""
    groups: dict[str, dict[tuple[int, int], dict]] = {}
    for rec in metrics:
        if not isinstance(rec, dict):
            continue
        key = (int(rec.get("lesson") or 0), int(rec.get("epoch") or 0))
        groups.setdefault(str(rec.get("model", "?")), {})[key] = rec
    return {m: [g[k] for k in sorted(g)] for m, g in ((m, groups[m]) for m in _ordered(groups))}


def _lesson_label(rec: dict) -> str:
    name = rec.get("lesson_name")
    lesson = rec.get("lesson", 0)
    return f"{name}" if name else f"lesson {lesson}"


# ------------------------------------------------------------------------------------------------------ curves
def train_ce(rec: dict) -> float | None:
    """The epoch's unweighted training cross-entropy: ``losses.ce``, or ``train_loss`` when the objective was
    CE alone at weight 1. None otherwise: a distilled student's ``train_loss`` is a weighted sum of CE, KD, ...
    terms, on another scale than the other models' CE, so it is not drawn beside them."""
    ce = _num((rec.get("losses") or {}).get("ce"))
    if ce is not None:
        return ce
    weights = rec.get("weights")
    if isinstance(weights, dict) and set(weights) == {"ce"} and _num(weights["ce"]) == 1.0:
        return _num(rec.get("train_loss"))
    return None


# (panel title, y label, value of a record): quantities that mean the same for every model
_CURVES = (
    ("training cross-entropy (hard labels, unweighted)", "CE", train_ce),
    ("validation loss (cross-entropy)", "CE", lambda r: _num(r.get("val_loss"))),
    ("validation accuracy", "accuracy", lambda r: _num(r.get("val_accuracy"))),
)


def plot_curves(metrics: Sequence[dict], out: str | Path) -> Path:
    """Training CE, validation CE and validation accuracy per epoch, one line per (model, lesson).

    Every panel holds one quantity comparable across models (a student's weighted CE+KD objective is not
    the baseline's CE; the weights are in the schedules figure). The x axis is the cumulative epoch of each
    model (1-based, counting across lessons).
    """
    groups = _by_model(metrics)
    colors = _colors(list(groups))
    fig, axes = plt.subplots(1, len(_CURVES), figsize=(14, 4))
    if not groups:
        for ax in axes:
            _empty_panel(ax, "no metrics recorded")
    for model, recs in groups.items():
        lessons: dict[int, list[tuple[int, dict]]] = {}
        for x, rec in enumerate(recs, start=1):
            lessons.setdefault(int(rec.get("lesson") or 0), []).append((x, rec))
        for li, (lesson, pts) in enumerate(sorted(lessons.items())):
            label = f"{model} · {_lesson_label(pts[0][1])}"
            style = dict(color=colors[model], linestyle=_LINESTYLES[li % len(_LINESTYLES)],
                         marker=_MARKERS[li % len(_MARKERS)], markersize=3, label=label)
            for ax, (_, _, value) in zip(axes, _CURVES):
                xy = [(x, value(r)) for x, r in pts]
                xy = [(x, y) for x, y in xy if y is not None]
                if xy:
                    ax.plot(*zip(*xy), **style)
    if groups:
        for ax, (title, ylabel, _) in zip(axes, _CURVES):
            ax.set_title(title, fontsize=10)
            ax.set_ylabel(ylabel)
            if not ax.lines:
                _empty_panel(ax, "not recorded")
                continue
            _epoch_axis(ax)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    return _save(fig, out)


# --------------------------------------------------------------------------------------------------- schedules
def plot_schedules(metrics: Sequence[dict], out: str | Path) -> Path:
    """Small multiples of the schedule values actually used per epoch: lr, temperature, each loss-term weight,
    and data_fraction / mean_sample_weight when the curriculum logged them. One line per model."""
    groups = _by_model(metrics)
    colors = _colors(list(groups))
    series: dict[str, str] = {}  # panel key -> title, in display order
    series["lr"] = "learning rate"
    if any(_num(r.get("temperature")) is not None for recs in groups.values() for r in recs):
        series["temperature"] = "temperature"
    for recs in groups.values():
        for r in recs:
            for term in (r.get("weights") or {}):
                series.setdefault(f"weights.{term}", f"weight of {term}")
    for key, title in (("data_fraction", "data fraction"), ("mean_sample_weight", "mean sample weight")):
        if any(_num(r.get(key)) is not None for recs in groups.values() for r in recs):
            series[key] = title

    def value(rec: dict, key: str):
        if key.startswith("weights."):
            return _num((rec.get("weights") or {}).get(key[len("weights."):]))
        return _num(rec.get(key))

    ncols = min(3, len(series))
    nrows = math.ceil(len(series) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows), squeeze=False)
    flat = list(axes.flat)
    for ax, (key, title) in zip(flat, series.items()):
        drawn = False
        for model, recs in groups.items():
            xy = [(x, value(r, key)) for x, r in enumerate(recs, start=1)]
            xy = [(x, y) for x, y in xy if y is not None]
            if xy:
                ax.plot(*zip(*xy), color=colors[model], marker="o", markersize=3, label=model)
                drawn = True
            # mark lesson boundaries
            for x, (prev, cur) in enumerate(zip(recs, recs[1:]), start=1):
                if prev.get("lesson") != cur.get("lesson"):
                    ax.axvline(x + 0.5, color=colors[model], alpha=0.25, linewidth=0.8)
        if not drawn:
            _empty_panel(ax, "not recorded")
        else:
            ax.grid(alpha=0.3)
            _epoch_axis(ax)
            ax.legend(fontsize=7)
        ax.set_title(title, fontsize=10)
        if key == "lr" and drawn:
            ys = [value(r, key) for recs in groups.values() for r in recs]
            positive = [y for y in ys if y is not None and y > 0]
            if positive and max(positive) / min(positive) > 100:
                ax.set_yscale("log")
    for ax in flat[len(series):]:
        ax.set_visible(False)
    return _save(fig, out)


# --------------------------------------------------------------------------------------------------- confusion
def plot_confusions(matrices: Sequence[tuple[str, Sequence[Sequence[int]]]], classes: Sequence[str],
                    out: str | Path) -> Path:
    """Every model's confusion matrix side by side in one figure (rows: true class, columns: predicted), sized
    by the class count, one shared colour scale (row-normalised rate), counts in the cells up to 20 classes."""
    mats = [(n, np.asarray(m, dtype=float)) for n, m in matrices]
    mats = [(n, m) for n, m in mats if m.ndim == 2 and m.shape[0] == m.shape[1] and m.shape[0] > 0]
    if not mats:
        fig, ax = plt.subplots(figsize=(4, 3))
        _empty_panel(ax, "no confusion matrix")
        return _save(fig, out)
    k = max(m.shape[0] for _, m in mats)
    labels = [str(c) for c in classes] if len(classes) == k else [str(i) for i in range(k)]
    cols = min(len(mats), 3 if k <= 20 else 2)
    rows = math.ceil(len(mats) / cols)
    panel = max(2.4, min(7.0, 0.32 * k + 1.4))
    fig, axes = plt.subplots(rows, cols, figsize=(panel * cols + 0.8, panel * rows + 0.3), squeeze=False)
    fs = 8 if k <= 20 else 6
    long_labels = max((len(s) for s in labels), default=0) > 2
    im = None
    for ax, (name, m) in zip(axes.flat, mats):
        n = m.shape[0]
        sums = m.sum(axis=1, keepdims=True)
        rate = np.divide(m, sums, out=np.zeros_like(m), where=sums > 0)
        im = ax.imshow(rate, cmap="Blues", vmin=0.0, vmax=1.0)
        ticks = np.arange(n)
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        ax.set_xticklabels(labels[:n], rotation=45 if long_labels else 0, ha="right" if long_labels else "center",
                           fontsize=fs)
        ax.set_yticklabels(labels[:n], fontsize=fs)
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    if m[i, j]:
                        ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=7,
                                color="white" if rate[i, j] > 0.5 else "black")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
    for ax in list(axes.flat)[len(mats):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.colorbar(im, ax=list(axes.flat), fraction=0.046 / cols, pad=0.02, label="fraction of true class")
    out = Path(out)
    try:  # no second tight_layout: it would ignore the shared colour bar
        return atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight"))
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------------------------------ pareto
def plot_pareto(report: dict, out: str | Path) -> Path:
    """Accuracy against parameter count and against batch-1 latency (log x), one point per model."""
    entries = model_entries(report)
    colors = _colors([n for n, _ in entries])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, xlabel in ((axes[0], "params", "parameters"), (axes[1], "latency_ms", "latency (ms, batch 1)")):
        pts = [(n, _num(m.get(key)), _num(m.get("accuracy"))) for n, m in entries]
        pts = [(n, x, y) for n, x, y in pts if x is not None and y is not None and x > 0]
        if not pts:
            _empty_panel(ax, f"no {key} recorded")
            ax.set_title(f"accuracy vs {xlabel}")
            continue
        for i, (n, x, y) in enumerate(pts):  # named in the legend: baseline and student often share a point
            ax.scatter([x], [y], color=colors[n], marker=_MARKERS[i % len(_MARKERS)], s=60, label=n, zorder=3)
        ax.set_xscale("log")
        xs = [x for _, x, _ in pts]
        lo, hi = min(xs), max(xs)
        ax.set_xlim(lo / 2.0, hi * 2.0)
        _log_ticks(ax, lo / 2.0, hi * 2.0)
        ax.set(xlabel=f"{xlabel} (log scale)", ylabel="test accuracy", title=f"accuracy vs {xlabel}")
        ax.grid(alpha=0.3, which="both")
    drawn = [ax for ax in axes if ax.collections]
    if drawn:  # one legend, outside the panels: inside, it hides the point in a corner (often the teacher's)
        drawn[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    return _save(fig, out)


def _short_number(value: float, _pos=None) -> str:
    """1.2M, 9k, 250, 0.5: tick labels that stay short on a log axis."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= div:
            return f"{value / div:g}{unit}"
    return f"{value:g}"


def _log_ticks(ax, lo: float, hi: float) -> None:
    """Labelled ticks at 1, 2, 5 x 10^n (only 10^n over more than 3 decades), none on minor ticks: matplotlib's
    default labels every minor tick of a short log range, and those labels overlap."""
    decades = math.log10(hi / lo) if lo > 0 and hi > lo else 0.0
    subs = (1.0,) if decades > 3 else (1.0, 2.0, 5.0) if decades > 1 else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
    ax.xaxis.set_major_locator(LogLocator(base=10.0, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(_short_number))
    ax.xaxis.set_minor_formatter(NullFormatter())


# -------------------------------------------------------------------------------------------------- seed spread
def plot_seed_spread(per_seed: dict[str, Sequence[float]], out: str | Path, metric: str = "accuracy") -> Path:
    """``metric`` of each model across seeds: a box plot with every seed drawn as a point and the mean as a bar."""
    names = [n for n in _ordered(per_seed) if any(_num(v) is not None for v in per_seed[n])]
    data = [[v for v in (_num(x) for x in per_seed[n]) if v is not None] for n in names]
    colors = _colors(names)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.4 * len(names) + 2), 4))
    if not names:
        _empty_panel(ax, "no per-seed values")
        return _save(fig, out)
    ax.boxplot(data, positions=range(1, len(names) + 1), widths=0.5, showfliers=False,
               medianprops={"color": "0.3"})
    rng = np.random.default_rng(0)  # deterministic jitter: the same runs give the same picture
    for i, (n, vals) in enumerate(zip(names, data), start=1):
        jitter = rng.uniform(-0.12, 0.12, size=len(vals))
        ax.scatter(i + jitter, vals, color=colors[n], s=28, alpha=0.85, zorder=3)
        ax.hlines(float(np.mean(vals)), i - 0.28, i + 0.28, color=colors[n], linewidth=2.0, zorder=4)
    ax.set_xticks(range(1, len(names) + 1))
    ax.set_xticklabels([f"{n}\n(n={len(v)})" for n, v in zip(names, data)], fontsize=8)
    ax.set(ylabel=f"test {metric}", title=f"{metric} across seeds (points: seeds, bar: mean)")
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, out)
