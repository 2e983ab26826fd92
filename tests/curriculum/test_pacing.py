"""Pacing functions: tables of known values, end points, monotonicity, validation."""
import math

import pytest

from curridistill.curriculum.pacing import PACING_HELP, PACINGS, PacingSpec, build_pacing, parse_pacing
from curridistill.errors import UserError

T = 101  # steps 0..100: the last step L = 100 keeps the tables in round numbers


@pytest.mark.parametrize("spec, table", [
    # Hacohen & Weinshall: p0 = 0.04, inc = 1.9, one increase every step_length steps
    ({"kind": "fixed_exponential", "step_length": 10},
     {0: 0.04, 9: 0.04, 10: 0.076, 19: 0.076, 20: 0.1444, 30: 0.27436, 50: 0.04 * 1.9 ** 5, 60: 1.0, 10_000: 1.0}),
    # default step_length = T // 10 = 10
    ({"kind": "fixed_exponential"}, {0: 0.04, 10: 0.076, 20: 0.1444}),
    ({"kind": "fixed_exponential", "start": 0.1, "inc": 2, "step_length": 5}, {0: 0.1, 4: 0.1, 5: 0.2, 10: 0.4, 15: 0.8, 20: 1.0}),
    # varied: increases after 5, 5+10 = 15, then every 20 (the last length repeats)
    ({"kind": "varied_exponential", "start": 0.1, "inc": 2, "step_lengths": [5, 10, 20]},
     {0: 0.1, 4: 0.1, 5: 0.2, 14: 0.2, 15: 0.4, 34: 0.4, 35: 0.8, 54: 0.8, 55: 1.0}),
    ({"kind": "linear"}, {0: 0.1, 50: 0.55, 100: 1.0, 150: 1.0}),
    ({"kind": "linear", "start": 0.2, "end_at": 0.5}, {0: 0.2, 25: 0.6, 50: 1.0, 99: 1.0}),
    ({"kind": "root"}, {0: 0.1, 50: math.sqrt(0.01 + 0.99 * 0.5), 100: 1.0}),
    ({"kind": "root", "power": 3, "start": 0.5}, {0: 0.5, 50: (0.125 + 0.875 * 0.5) ** (1 / 3), 100: 1.0}),
    ({"kind": "geometric"}, {0: 0.1, 50: math.sqrt(0.1), 100: 1.0}),
    ({"kind": "geometric", "start": 0.25, "end_at": 0.8}, {0: 0.25, 40: 0.5, 80: 1.0}),
    # single step: start until T * end_at / 2, then everything
    ({"kind": "step"}, {0: 0.1, 49: 0.1, 50: 1.0, 100: 1.0}),
    ({"kind": "step", "start": 0.2, "num_steps": 3}, {0: 0.2, 24: 0.2, 25: 0.2 + 0.8 / 3, 50: 0.2 + 1.6 / 3, 75: 1.0}),
])
def test_known_values(spec, table):
    g = build_pacing(spec, T)
    for i, expected in table.items():
        assert g(i) == pytest.approx(expected, rel=1e-9), (spec, i)


@pytest.mark.parametrize("kind", ["linear", "root", "geometric", "step"])
@pytest.mark.parametrize("end_at", [1.0, 0.5, 0.3])
@pytest.mark.parametrize("start", [None, 0.01, 0.5])
def test_end_points(kind, end_at, start):
    spec = {"kind": kind, "end_at": end_at, **({"start": start} if start is not None else {})}
    g = build_pacing(spec, T)
    s0 = 0.1 if start is None else start
    assert g(0) == pytest.approx(s0)
    assert g(math.ceil((T - 1) * end_at)) == pytest.approx(1.0)
    assert g(T - 1) == pytest.approx(1.0)  # the last step trains on the full data


@pytest.mark.parametrize("spec", [
    {"kind": "linear"}, {"kind": "root"}, {"kind": "root", "power": 5}, {"kind": "geometric"}, {"kind": "step"},
    {"kind": "step", "num_steps": 4, "end_at": 0.7}, {"kind": "fixed_exponential"},
    {"kind": "fixed_exponential", "inc": 1.1, "step_length": 3},
    {"kind": "varied_exponential", "step_lengths": [1, 30, 2]},
    {"kind": "linear", "unit": "epoch"}, {"kind": "fixed_exponential", "unit": "epoch", "step_length": 2},
])
def test_monotone_and_in_range(spec):
    g = build_pacing(spec, 300, steps_per_epoch=30)
    values = [g(i) for i in range(-3, 400)]
    start = PacingSpec(**spec).start_value()
    assert all(start - 1e-12 <= v <= 1.0 for v in values)
    assert all(b >= a - 1e-12 for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(1.0)


def test_default_start_depends_on_kind():
    assert PacingSpec(kind="fixed_exponential").start_value() == 0.04
    assert PacingSpec(kind="varied_exponential").start_value() == 0.04
    assert PacingSpec(kind="linear").start_value() == 0.1
    assert PacingSpec(kind="fixed_exponential", start=0.3).start_value() == 0.3


def test_epoch_unit():
    # continuous kinds hold their value over each epoch (evaluated at its first step)
    g = build_pacing({"kind": "linear", "start": 0.0001, "unit": "epoch"}, 100, steps_per_epoch=10)
    assert g(0) == g(9) == pytest.approx(0.0001)
    assert g(10) == g(19) == pytest.approx(0.0001 + 0.9999 * 10 / 90)  # 10 epochs: the last starts at step 90
    assert g(90) == g(99) == 1.0
    # exponential step lengths count epochs
    h = build_pacing({"kind": "fixed_exponential", "step_length": 2, "unit": "epoch"}, 100, steps_per_epoch=10)
    assert h(19) == pytest.approx(0.04) and h(20) == pytest.approx(0.076)
    v = build_pacing({"kind": "varied_exponential", "step_lengths": [1, 3], "unit": "epoch"}, 100, steps_per_epoch=10)
    assert [v(i) for i in (9, 10, 39, 40, 69, 70)] == pytest.approx([0.04, 0.076, 0.076, 0.1444, 0.1444, 0.27436])
    with pytest.raises(UserError, match="steps per epoch"):
        build_pacing({"kind": "linear", "unit": "epoch"}, 100)


@pytest.mark.parametrize("kind", ["linear", "root", "geometric", "step"])
@pytest.mark.parametrize("epochs", [2, 3, 10])
def test_the_last_epoch_has_the_full_data(kind, epochs):
    g = build_pacing({"kind": kind, "unit": "epoch"}, epochs * 7, steps_per_epoch=7)
    assert [g(i) for i in range((epochs - 1) * 7, epochs * 7)] == [1.0] * 7
    if kind != "step":  # step (one jump) is full from half the lesson
        assert g((epochs - 1) * 7 - 1) < 1.0


def test_epoch_pacing_in_a_one_epoch_lesson_is_refused():
    with pytest.raises(UserError, match="changes only between epochs, and this lesson has one; use unit: step"):
        build_pacing({"kind": "linear", "unit": "epoch"}, 7, steps_per_epoch=7)
    assert build_pacing({"kind": "fixed_exponential", "unit": "epoch", "step_length": 1}, 7, steps_per_epoch=7)(0) == 0.04


def test_no_overflow_far_past_the_end():
    g = build_pacing({"kind": "fixed_exponential", "step_length": 1}, 10)
    assert g(10**7) == 1.0


def test_parse_forms_and_errors():
    assert parse_pacing("root").kind == "root"
    assert build_pacing("linear", 10)(0) == pytest.approx(0.1)
    with pytest.raises(UserError, match="did you mean 'linear'"):
        build_pacing({"kind": "lineer"}, 10)
    with pytest.raises(UserError, match="stat"):
        parse_pacing({"kind": "linear", "stat": 0.1})
    with pytest.raises(UserError, match="start"):
        build_pacing({"kind": "linear", "start": 0}, 10)
    with pytest.raises(UserError, match="start"):
        build_pacing({"kind": "linear", "start": 1.5}, 10)
    with pytest.raises(UserError, match="inc"):
        build_pacing({"kind": "fixed_exponential", "inc": 1.0}, 10)
    with pytest.raises(UserError, match="step_lengths"):
        build_pacing({"kind": "varied_exponential"}, 10)
    with pytest.raises(UserError, match="end_at"):
        build_pacing({"kind": "linear", "end_at": 0}, 10)
    with pytest.raises(UserError, match="steps"):
        build_pacing("linear", 0)
    with pytest.raises(UserError):
        parse_pacing(3)


def test_help_covers_registry():
    assert set(PACING_HELP) == set(PACINGS) == {
        "linear", "root", "geometric", "step", "fixed_exponential", "varied_exponential"}
    assert all(PACING_HELP[k] for k in PACING_HELP)
