"""Self-paced weights: known values per scheme, range, zero above the threshold, spec and quantiles."""
import math

import pytest
import torch

from curridistill.curriculum.selfpaced import SELF_PACED, SELF_PACED_HELP, SelfPacedSpec, SelfPacedWeights, parse_self_paced
from curridistill.errors import UserError

L = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0, 3.0])


def _w(name, losses, lam, **kw):
    return SELF_PACED.get(name)(losses, lam, **kw).tolist()


def test_hard():
    assert _w("hard", L, 0.6) == [1, 1, 1, 0, 0, 0]
    assert _w("hard", torch.tensor([0.5]), 0.5) == [0]  # strictly below the threshold


def test_linear():
    assert _w("linear", L, 1.0) == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0, 0.0])
    assert _w("linear", L, 0.0) == [0.0] * 6


def test_logarithmic():
    lam = 0.6
    zeta = 0.4
    expected = [math.log(l + zeta) / math.log(zeta) if l < lam else 0.0 for l in L.tolist()]
    assert _w("logarithmic", L, lam) == pytest.approx(expected, abs=1e-6)
    assert expected[0] == pytest.approx(1.0)
    # lam >= 1 is clamped just below 1: still in [0, 1] and zero from the threshold on
    w = _w("logarithmic", L, 5.0)
    assert all(0.0 <= v <= 1.0 for v in w) and w[0] == pytest.approx(1.0) and w[-1] == 0.0


def test_mixture():
    # lam = 1, lam' = 0.5, zeta = 1
    w = _w("mixture", L, 1.0, lower=0.5)
    assert w == pytest.approx([1.0, 1.0, 1.0, 1 / 0.75 - 1.0, 0.0, 0.0])


def test_logistic():
    lam = 1.0
    expected = [(1 + math.exp(-lam)) / (1 + math.exp(l - lam)) for l in L.tolist()]
    assert _w("logistic", L, lam) == pytest.approx(expected, rel=1e-5)
    assert expected[0] == pytest.approx(1.0)
    big = _w("logistic", torch.tensor([0.0, 1e4]), -50.0)  # extreme values stay finite
    assert big[0] == pytest.approx(1.0) and big[1] == 0.0


def test_polynomial():
    assert _w("polynomial", L, 1.0, power=2.0) == pytest.approx(_w("linear", L, 1.0))
    assert _w("polynomial", L, 1.0, power=3.0) == pytest.approx([1.0, 0.75 ** 0.5, 0.5 ** 0.5, 0.25 ** 0.5, 0.0, 0.0])


@pytest.mark.parametrize("name", sorted(SELF_PACED_HELP))
@pytest.mark.parametrize("lam", [0.05, 0.5, 0.9, 2.0, 10.0])
def test_range_decreasing_and_zero_above(name, lam):
    losses = torch.linspace(0, 12, 97)
    w = SELF_PACED.get(name)(losses, lam)
    assert w.shape == losses.shape and w.dtype == torch.float32
    assert torch.all((w >= 0) & (w <= 1))
    assert torch.all(w[1:] <= w[:-1] + 1e-6)  # harder samples never weigh more
    assert w[0] == pytest.approx(1.0)
    if name != "logistic":  # every other scheme drops samples at or above the threshold
        cut = min(lam, 1 - 1e-6) if name == "logarithmic" else lam
        assert torch.all(w[losses >= cut] == 0)


def test_weights_have_no_gradient():
    losses = torch.tensor([0.1, 0.2, 3.0], requires_grad=True)
    w = SelfPacedWeights("linear")(losses, 0.0)
    assert not w.requires_grad


def test_spec_threshold_schedule():
    spec = SelfPacedSpec(threshold={"kind": "linear", "start": 0.5, "end": 5})
    sp = SelfPacedWeights(spec, epochs=10)
    losses = torch.tensor([0.25, 1.0, 4.0])
    assert sp.threshold(losses, 0.0) == pytest.approx(0.5)
    assert sp.threshold(losses, 1.0) == pytest.approx(5.0)
    assert sp(losses, 0.0).tolist() == pytest.approx([0.5, 0.0, 0.0])
    assert sp(losses, 1.0).tolist() == pytest.approx([0.95, 0.8, 0.2])
    assert SelfPacedSpec(threshold=3).threshold.value == 3.0
    assert parse_self_paced("hard").weighting == "hard"


def test_quantile_threshold():
    sp = SelfPacedWeights({"weighting": "hard", "quantile": True, "threshold": {"kind": "linear", "start": 0.5, "end": 1}})
    losses = torch.arange(1.0, 11.0)  # 1..10
    assert sp.threshold(losses, 0.0) == pytest.approx(5.5)
    assert sp(losses, 0.0).tolist() == [1.0] * 5 + [0.0] * 5
    assert sp(losses, 1.0).tolist() == [1.0] * 10  # q = 1: every sample is in, whatever the scheme
    assert SelfPacedWeights({"weighting": "linear", "quantile": True, "threshold": 1})(losses, 0.3).tolist() == [1.0] * 10


def test_spec_errors():
    with pytest.raises(UserError, match="did you mean 'linear'"):
        SelfPacedWeights({"weighting": "lineer"})
    with pytest.raises(UserError, match="power"):
        SelfPacedWeights({"weighting": "polynomial", "power": 1})
    with pytest.raises(UserError, match="lower"):
        SelfPacedWeights({"weighting": "mixture", "lower": 1.5})
    with pytest.raises(UserError, match="treshold"):
        parse_self_paced({"treshold": 1})
    with pytest.raises(UserError):
        SelfPacedWeights({"threshold": {"kind": "nope"}})


def test_help_covers_registry():
    assert set(SELF_PACED_HELP) == set(SELF_PACED) == {"hard", "linear", "logarithmic", "mixture", "logistic", "polynomial"}


@pytest.mark.parametrize("losses, kept", [
    ([0.0] * 60 + [1.0] * 4, 60),  # confident samples' cross-entropy is exactly 0: they are the easiest, and in
    ([2.0] * 64, 64),  # all tied: all in, not none
    ([1.0, 2.0, 3.0, 4.0], 2),  # no ties: the quantile still splits the batch
])
def test_hard_quantile_keeps_losses_tied_at_the_quantile(losses, kept):
    sp = SelfPacedWeights({"weighting": "hard", "quantile": True, "threshold": 0.5})
    assert int(sp(torch.tensor(losses), 0.0).sum()) == kept
