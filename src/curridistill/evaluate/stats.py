"""Honest statistics for multi-seed runs: mean with a Student-t interval, Welch's t-test, report aggregation.

One seed is an anecdote. These helpers turn several per-seed ``report.json`` dicts into means, sample standard
deviations, t confidence intervals and Welch p-values, and say ``None`` rather than inventing a number when there
are too few runs (n < 2) to estimate a spread.
"""
from __future__ import annotations

import math
from itertools import combinations
from typing import Iterable, Sequence

from curridistill.errors import UserError


def _student_t():
    """scipy's Student t distribution, imported on first use: scipy.stats takes seconds to import, and every
    command (even `--help`) imports this module through the API, while only the statistics need it."""
    from scipy import stats

    return stats.t


DEFAULT_MODELS = ("teacher", "baseline", "student")
# keys of a report.json that are never models, and scalar model keys that are bookkeeping, not metrics
NOT_MODELS = frozenset({"comparison", "comparisons", "data", "classes", "selection", "selection_note", "seed",
                         "device", "run_dir", "teachers", "config"})
_NOT_METRICS = frozenset({"selected", "seed"})


def _clean(values: Iterable) -> list[float]:
    """Finite floats of ``values``; None, NaN, inf and non-numbers (e.g. bools) are dropped."""
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        v = float(v)
        if math.isfinite(v):
            out.append(v)
    return out


def _var(xs: list[float], mean: float) -> float:
    """Sample variance (ddof=1); exactly 0.0 when all values are equal (no rounding residue from the mean)."""
    if min(xs) == max(xs):
        return 0.0
    return math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1)


def summarize(values: Sequence[float], confidence: float = 0.95) -> dict:
    """n, mean, sample std (ddof=1), sem, Student-t confidence interval, min and max of ``values``.

    With n == 1 the spread cannot be estimated: std, sem, ci_low and ci_high are None. With n == 0 everything
    but n is None. None/NaN/inf entries are ignored (n counts only finite values).
    """
    if not 0.0 < confidence < 1.0:
        raise UserError(f"confidence must be between 0 and 1 (exclusive), got {confidence}; e.g. 0.95")
    xs = _clean(values)
    n = len(xs)
    out: dict = {"n": n, "mean": None, "std": None, "sem": None, "ci_low": None, "ci_high": None,
                 "min": None, "max": None, "confidence": confidence}
    if n == 0:
        return out
    mean = math.fsum(xs) / n
    out.update(mean=mean, min=min(xs), max=max(xs))
    if n < 2:
        return out
    var = _var(xs, mean)
    std = math.sqrt(var)
    sem = std / math.sqrt(n)
    half = float(_student_t().ppf(0.5 + confidence / 2.0, df=n - 1)) * sem
    out.update(std=std, sem=sem, ci_low=mean - half, ci_high=mean + half)
    return out


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> dict:
    """Welch's unequal-variance t-test of mean(a) == mean(b), two-sided.

    Returns t, df (Welch–Satterthwaite), p_value, mean_diff (= mean(a) - mean(b)), n_a, n_b.

    * Either group with n < 2: no variance estimate, so t, df and p_value are None (mean_diff is still given
      when both groups have a value).
    * Both groups with zero variance (e.g. identical accuracies on every seed): the statistic is undefined; we
      report p_value = 1.0 and t = 0.0 if the means are equal, else p_value = 0.0 and t = ±inf, with df None.
      This is the limit of the test as the spread goes to zero, not evidence from a real spread: use more seeds
      or a finer metric.
    """
    xa, xb = _clean(a), _clean(b)
    na, nb = len(xa), len(xb)
    out: dict = {"t": None, "df": None, "p_value": None, "mean_diff": None, "n_a": na, "n_b": nb}
    if na == 0 or nb == 0:
        return out
    ma, mb = math.fsum(xa) / na, math.fsum(xb) / nb
    diff = ma - mb
    out["mean_diff"] = diff
    if na < 2 or nb < 2:
        return out
    va, vb = _var(xa, ma), _var(xb, mb)
    sa, sb = va / na, vb / nb
    se2 = sa + sb
    if se2 == 0.0:
        if diff == 0.0:
            out.update(t=0.0, p_value=1.0)
        else:
            out.update(t=math.copysign(math.inf, diff), p_value=0.0)
        return out
    t = diff / math.sqrt(se2)
    df = se2 ** 2 / ((sa ** 2 / (na - 1) if sa else 0.0) + (sb ** 2 / (nb - 1) if sb else 0.0))
    p = float(2.0 * _student_t().sf(abs(t), df))
    out.update(t=t, df=df, p_value=min(1.0, p))
    return out


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> dict:
    """Paired t-test of mean(a - b) == 0, two-sided: ``a[i]`` and ``b[i]`` come from the same seed (the same
    initialization and batch order), so the seed-to-seed spread they share cancels (scipy's ``ttest_rel``).

    Returns t, df (= n - 1), p_value, mean_diff, n (pairs with both values finite). Fewer than 2 pairs: t, df and
    p_value are None. Every difference equal (zero spread): p_value 1.0 when they are 0, else 0.0, as in
    ``welch_t_test``."""
    if len(a) != len(b):
        raise ValueError(f"paired_t_test needs equal lengths (one value per seed on each side), got {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b) if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    n = len(diffs)
    out: dict = {"t": None, "df": None, "p_value": None, "mean_diff": None, "n": n}
    if n == 0:
        return out
    mean = math.fsum(diffs) / n
    out["mean_diff"] = mean
    if n < 2:
        return out
    if _var(diffs, mean) == 0.0:  # scipy gives nan here
        out.update(t=0.0 if mean == 0.0 else math.copysign(math.inf, mean), df=n - 1, p_value=1.0 if mean == 0.0 else 0.0)
        return out
    from scipy import stats  # imported on first use, as in _student_t

    result = stats.ttest_1samp(diffs, 0.0)  # = ttest_rel(a, b) on the kept pairs
    out.update(t=float(result.statistic), df=n - 1, p_value=min(1.0, float(result.pvalue)))
    return out


def _model_names(reports: Sequence[dict], models: Sequence[str]) -> list[str]:
    """``models`` found in any report, in that order, then any other model-like keys in order of appearance."""
    def is_model(value) -> bool:
        return isinstance(value, dict) and "accuracy" in value

    present = [m for m in models if any(is_model(r.get(m)) for r in reports)]
    for r in reports:
        for key, value in r.items():
            if key not in NOT_MODELS and key not in present and is_model(value):
                present.append(key)
    return present


def aggregate_reports(reports: Sequence[dict], models: Sequence[str] = DEFAULT_MODELS, metric: str = "accuracy",
                      confidence: float = 0.95) -> dict:
    """Aggregate several per-seed ``report.json`` dicts.

    Returns ``{model: {metric: summarize(...)}}`` for every model (the ``models`` given, plus any other key whose
    value is a dict with an ``accuracy``, e.g. ``student_kd``) and every scalar numeric metric, plus:

    * ``comparisons``: ``{"A_vs_B": {"a", "b", "metric", "t", "df", "p_value", "mean_diff", "n_a", "n_b"}}`` — a
      Welch test on ``metric`` for every pair of non-teacher models; the baseline is always ``b`` (the
      reference), otherwise the order of appearance decides. ``mean_diff`` is mean(a) - mean(b).
    * ``per_seed``: ``{model: [metric per report, in report order]}`` (reports lacking the model are skipped).
    * ``seeds``: the ``seed`` of each report (None where absent); ``n_runs``; ``models``: the model names.

    Per-run values that are None (e.g. ``train_seconds`` of a loaded teacher) are left out of that summary.
    """
    reports = list(reports)
    if not reports:
        raise UserError("aggregate_reports needs at least one report.json; run the config with several seeds first")
    for i, r in enumerate(reports):
        if not isinstance(r, dict):
            raise UserError(f"report #{i} is a {type(r).__name__}, not a report.json object")
    names = _model_names(reports, models)
    out: dict = {"n_runs": len(reports), "seeds": [r.get("seed") for r in reports], "models": names}
    per_seed: dict[str, list[float]] = {}
    for name in names:
        runs = [r[name] for r in reports if isinstance(r.get(name), dict)]
        keys: list[str] = []
        for m in runs:
            for k, v in m.items():
                if k in keys or k in _NOT_METRICS or isinstance(v, bool):
                    continue
                if isinstance(v, (int, float)):
                    keys.append(k)
        out[name] = {k: summarize([m.get(k) for m in runs], confidence) for k in keys}
        per_seed[name] = _clean(m.get(metric) for m in runs)
    contenders = [n for n in names if n != "teacher"]
    comparisons: dict = {}
    for a, b in combinations(contenders, 2):
        if a == "baseline":
            a, b = b, a
        comparisons[f"{a}_vs_{b}"] = {"a": a, "b": b, "metric": metric, **welch_t_test(per_seed[a], per_seed[b])}
    out["comparisons"] = comparisons
    out["per_seed"] = per_seed
    return out


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values, in the input order (None entries are skipped and stay None).

    Sorted ascending, the i-th smallest of m p-values is multiplied by (m - i) (i from 0), made
    monotone non-decreasing and capped at 1; a hypothesis is rejected at level alpha when its adjusted
    p-value is below alpha. Controls the family-wise error rate without assuming independence.
    """
    present = sorted((p, i) for i, p in enumerate(p_values) if p is not None and not math.isnan(p))
    m = len(present)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def format_p(p: float | None, missing: str = "–") -> str:
    """A p-value for a table: 4 decimals, ``< 0.0001`` below that, ``missing`` when there is none (n < 2)."""
    if p is None:
        return missing
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"
