import math

import pytest

from curridistill.errors import UserError
from curridistill.schedules import build_schedule


@pytest.mark.parametrize("spec, table", [
    (3.5, {0: 3.5, 0.5: 3.5, 1: 3.5}),
    ({"kind": "constant", "value": 2}, {0: 2, 1: 2}),
    ({"kind": "linear", "start": 1, "end": 0}, {0: 1, 0.25: 0.75, 0.5: 0.5, 1: 0}),
    ({"kind": "linear", "start": 1, "end": 4}, {0: 1, 0.5: 2.5, 1: 4}),
    ({"kind": "cosine", "start": 1, "end": 0}, {0: 1, 0.5: 0.5, 1: 0}),
    ({"kind": "exponential", "start": 1, "end": 0.01}, {0: 1, 0.5: 0.1, 1: 0.01}),
    ({"kind": "step", "start": 1, "gamma": 0.1, "step_size": 0.5}, {0: 1, 0.49: 1, 0.5: 0.1, 1: 0.01}),
    ({"kind": "multistep", "start": 1, "gamma": 0.1, "milestones": [0.5, 0.75]}, {0.4: 1, 0.5: 0.1, 0.8: 0.01}),
    ({"kind": "constant", "value": 8, "warmup": 0.5}, {0: 0, 0.25: 4, 0.5: 8, 1: 8}),
    ({"kind": "cosine", "start": 1, "end": 0, "warmup": 0.1, "warmup_start": 0.0}, {0: 0, 0.05: 0.5 * (0.5 * (1 + math.cos(math.pi * 0.05)))}),
])
def test_schedule_tables(spec, table):
    f = build_schedule(spec)
    for p, expected in table.items():
        assert f(p) == pytest.approx(expected, abs=1e-9), (spec, p)


def test_epoch_unit_dkd_warmup():
    # DKD: weight = min(epoch / 20, 1) * 8 over a 240-epoch lesson
    f = build_schedule({"kind": "constant", "value": 8, "warmup": 20, "unit": "epoch"}, epochs=240)
    assert f(0) == 0
    assert f(10 / 240) == pytest.approx(4)
    assert f(20 / 240) == pytest.approx(8)
    assert f(1) == 8


def test_multistep_in_epochs_matches_standard_protocol():
    f = build_schedule({"kind": "multistep", "milestones": [150, 180, 210], "gamma": 0.1, "unit": "epoch"}, epochs=240)
    assert [f(e / 240) for e in (0, 149, 150, 180, 239)] == pytest.approx([1, 1, 0.1, 0.01, 0.001])


def test_progress_is_clamped():
    f = build_schedule({"kind": "linear", "start": 0, "end": 1})
    assert f(-1) == 0 and f(2) == 1


def test_unknown_schedule_kind_names_nearest():
    with pytest.raises(UserError, match="did you mean 'cosine'"):
        build_schedule({"kind": "cosin"})
