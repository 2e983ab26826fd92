"""Multi-seed statistics: t intervals, Welch's and the paired t-test (against scipy and by hand), report
aggregation."""
from __future__ import annotations

import math

import pytest
from scipy import stats

from curridistill.errors import UserError
from curridistill.evaluate.stats import aggregate_reports, paired_t_test, summarize, welch_t_test


def test_summarize_hand_computed_interval():
    # mean 0.92; deviations -0.02, 0, 0.02 -> sample var (4e-4 + 0 + 4e-4) / 2 = 4e-4, std 0.02
    # sem = 0.02 / sqrt(3) = 0.0115470; t(0.975, df=2) = 4.3026527; half width = 0.0496828
    s = summarize([0.90, 0.92, 0.94])
    assert s["n"] == 3
    assert s["mean"] == pytest.approx(0.92)
    assert s["std"] == pytest.approx(0.02)
    assert s["sem"] == pytest.approx(0.0115470, abs=1e-7)
    assert s["ci_low"] == pytest.approx(0.92 - 0.0496828, abs=1e-6)
    assert s["ci_high"] == pytest.approx(0.92 + 0.0496828, abs=1e-6)
    assert (s["min"], s["max"]) == (0.90, 0.94)


def test_summarize_confidence_level_and_small_n():
    s90 = summarize([1.0, 2.0, 3.0, 4.0], confidence=0.90)
    half = stats.t.ppf(0.95, 3) * stats.sem([1.0, 2.0, 3.0, 4.0])
    assert s90["ci_high"] - s90["mean"] == pytest.approx(half)
    one = summarize([0.7])
    assert one["n"] == 1 and one["mean"] == 0.7 and one["min"] == one["max"] == 0.7
    assert one["std"] is None and one["sem"] is None and one["ci_low"] is None and one["ci_high"] is None
    assert summarize([])["mean"] is None
    assert summarize([0.5, None, float("nan"), 0.7])["n"] == 2  # missing values are not counted
    with pytest.raises(UserError, match="confidence"):
        summarize([1.0, 2.0], confidence=95)


def test_welch_hand_computed():
    # a: mean 2.5, var 5/3; b: mean 5, var 20/3; s_a^2/n = 5/12, s_b^2/n = 5/3, sum 25/12
    # t = -2.5 / sqrt(25/12) = -sqrt(3); df = (25/12)^2 / ((5/12)^2/3 + (5/3)^2/3) = 75/17 = 4.41176
    r = welch_t_test([1, 2, 3, 4], [2, 4, 6, 8])
    assert r["t"] == pytest.approx(-math.sqrt(3))
    assert r["df"] == pytest.approx(75 / 17)
    assert r["p_value"] == pytest.approx(0.1515805, abs=1e-6)
    assert r["mean_diff"] == pytest.approx(-2.5)


@pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")  # scipy, on the constant group
@pytest.mark.parametrize("a,b", [
    ([0.91, 0.93, 0.92, 0.95], [0.88, 0.90, 0.89]),
    ([0.5, 0.7], [0.6, 0.61, 0.59, 0.62, 0.6]),
    ([1.0, 1.0, 1.0], [0.9, 0.95, 0.97]),  # one group without spread
])
def test_welch_matches_scipy(a, b):
    ref = stats.ttest_ind(a, b, equal_var=False)
    r = welch_t_test(a, b)
    assert r["t"] == pytest.approx(float(ref.statistic))
    assert r["p_value"] == pytest.approx(float(ref.pvalue))
    if hasattr(ref, "df"):
        assert r["df"] == pytest.approx(float(ref.df))


@pytest.mark.parametrize("a,b", [
    ([0.6442, 0.6535, 0.6568, 0.6631, 0.6591], [0.6581, 0.6633, 0.6662, 0.6719, 0.6652]),  # shared seed spread
    ([0.91, 0.93, 0.92], [0.90, 0.95, 0.91]),
    ([0.5, 0.7], [0.45, 0.66]),
])
def test_paired_matches_scipy(a, b):
    ref = stats.ttest_rel(a, b)
    r = paired_t_test(a, b)
    assert r["t"] == pytest.approx(float(ref.statistic))
    assert r["p_value"] == pytest.approx(float(ref.pvalue))
    assert r["df"] == len(a) - 1 and r["n"] == len(a)


def test_paired_uses_the_pairing_welch_ignores():
    # both seeds' spread is shared: Welch sees two overlapping groups, the pairs differ by 0.01 each time
    a, b = [0.60, 0.70, 0.80, 0.65], [0.61, 0.71, 0.805, 0.662]
    assert welch_t_test(a, b)["p_value"] > 0.8 and paired_t_test(a, b)["p_value"] < 0.01


def test_paired_degenerate_cases():
    assert paired_t_test([0.9, 0.8], [0.9, 0.8])["p_value"] == 1.0  # no difference at all
    shifted = paired_t_test([0.75, 0.5, 0.25], [0.5, 0.25, 0.0])  # the same difference on every seed
    assert shifted["p_value"] == 0.0 and shifted["t"] == math.inf and shifted["mean_diff"] == 0.25
    one = paired_t_test([0.9, float("nan")], [0.8, 0.7])  # a missing value drops its pair
    assert one["n"] == 1 and one["p_value"] is None and one["mean_diff"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_t_test([0.9, 0.8], [0.8])


def test_welch_degenerate_cases():
    same = welch_t_test([0.9, 0.9, 0.9], [0.9, 0.9])
    assert same["p_value"] == 1.0 and same["t"] == 0.0 and same["df"] is None
    differ = welch_t_test([0.9, 0.9], [0.8, 0.8, 0.8])
    assert differ["p_value"] == 0.0 and differ["t"] == math.inf
    assert differ["mean_diff"] == pytest.approx(0.1)
    small = welch_t_test([0.9], [0.8, 0.85])
    assert small["p_value"] is None and small["t"] is None and small["df"] is None
    assert small["mean_diff"] == pytest.approx(0.075)
    assert welch_t_test([], [0.8, 0.85])["mean_diff"] is None


def _report(seed: int, student: float, baseline: float, extra: dict | None = None) -> dict:
    r = {"seed": seed, "selection": "best_val", "classes": ["a", "b"], "data": {"name": "digits", "n": 100},
         "teacher": {"accuracy": 0.97, "params": 1000, "train_seconds": None, "precision": [1.0, 0.9],
                     "confusion": [[1, 0], [0, 1]], "reused_from": "x"},
         "baseline": {"accuracy": baseline, "params": 100, "train_seconds": 2.0 + seed, "selected": 3},
         "student": {"accuracy": student, "params": 100, "agreement": 0.9, "train_seconds": 2.5},
         "comparison": {"student_minus_baseline_accuracy": student - baseline}}
    r.update(extra or {})
    return r


def test_aggregate_reports():
    reports = [_report(0, 0.91, 0.88, {"student_dkd": {"accuracy": 0.93}}),
               _report(1, 0.93, 0.90, {"student_dkd": {"accuracy": 0.94}}),
               _report(2, 0.92, 0.89, {"student_dkd": {"accuracy": 0.92}})]
    agg = aggregate_reports(reports)
    assert agg["n_runs"] == 3 and agg["seeds"] == [0, 1, 2]
    assert agg["models"] == ["teacher", "baseline", "student", "student_dkd"]
    assert agg["student"]["accuracy"]["mean"] == pytest.approx(0.92)
    assert agg["student"]["accuracy"]["std"] == pytest.approx(0.01)
    assert agg["baseline"]["train_seconds"]["mean"] == pytest.approx(3.0)
    assert "train_seconds" not in agg["teacher"]  # loaded teacher: no time, no invented number
    assert agg["teacher"]["accuracy"]["std"] == 0.0
    assert "precision" not in agg["teacher"] and "selected" not in agg["baseline"] and "reused_from" not in agg["teacher"]
    comps = agg["comparisons"]
    assert set(comps) == {"student_vs_baseline", "student_dkd_vs_baseline", "student_vs_student_dkd"}
    sb = comps["student_vs_baseline"]
    assert (sb["a"], sb["b"], sb["metric"]) == ("student", "baseline", "accuracy")
    assert sb["mean_diff"] == pytest.approx(0.03)
    ref = stats.ttest_ind([0.91, 0.93, 0.92], [0.88, 0.90, 0.89], equal_var=False)
    assert sb["p_value"] == pytest.approx(float(ref.pvalue))
    assert agg["per_seed"]["student_dkd"] == [0.93, 0.94, 0.92]


def test_aggregate_single_report_and_missing_baseline():
    r = _report(0, 0.9, 0.8)
    del r["baseline"]
    agg = aggregate_reports([r])
    assert "baseline" not in agg["models"] and agg["comparisons"] == {}
    assert agg["student"]["accuracy"]["ci_low"] is None
    with pytest.raises(UserError):
        aggregate_reports([])
