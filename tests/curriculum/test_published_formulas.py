"""The curriculum engine against the published methods.

Every expected value here is an independent transcription of the paper's formula (or of its official
code), written inline; the library's function is only ever the thing under test. Where the library
deliberately differs from the paper (its docstrings say so), the test pins the documented relation
between the two instead of equality.

Sources:
* HW: Hacohen & Weinshall 2019, "On the Power of Curriculum Learning in Training Deep Networks" (ICML),
  sec. 3 pacing functions; official code github.com/GuyHacohen/curriculum_learning
  (``exponent_data_function_generator``, ``generate_random_batch``, ``balance_order``).
* Platanios et al. 2019, "Competence-based Curriculum Learning for Neural Machine Translation" (NAACL):
  c_linear, c_root-p, and the difficulty CDF.
* Penha & Hauff 2020, "Curriculum Learning Strategies for IR" (ECIR): geometric progression pacing.
* Wu, Dyer & Neyshabur 2021, "When Do Curricula Work?" (ICLR): pacing family with a (fraction of training
  to reach the full data) and b (initial fraction).
* Kumar, Packer & Koller 2010, "Self-Paced Learning for Latent Variable Models" (NeurIPS): hard weights,
  threshold 1/K grown by a factor mu per iteration.
* Jiang et al. 2014, "Easy Samples First: Self-paced Reranking for Zero-Example Multimedia Search" (ACM MM)
  and Jiang et al. 2015, "Self-Paced Curriculum Learning" (AAAI): linear, logarithmic, mixture weighting.
"""
import math
from fractions import Fraction

import pytest
import torch
from scipy.stats import chi2

from curridistill.curriculum.ordering import order_by_difficulty
from curridistill.curriculum.pacing import build_pacing
from curridistill.curriculum.sampler import PacedBatches
from curridistill.curriculum.scorers import ScoreInputs, score
from curridistill.curriculum.selfpaced import SELF_PACED, SelfPacedWeights


def _pool(pacing, n, step, batch_size=1, min_size=1):
    """The library's pool size at ``step`` for N = n, with no batch-size floor unless asked."""
    return PacedBatches(torch.arange(n), pacing, batch_size, 1, seed=0, min_size=min_size).prefix_size(step)


# --------------------------------------------------------------------------------------------------------
# Hacohen & Weinshall 2019: fixed / varied exponential pacing
# --------------------------------------------------------------------------------------------------------

def hw_official_percent(num_batches, starting_percent, increase_amount, batches_to_increase):
    """``exponent_data_function_generator`` of the official code, per batch: at batch 0 the starting
    percent; at every later multiple of batches_to_increase, ``min(cur_percent * increase_amount, 1)``."""
    out, cur = [], None
    for batch in range(num_batches):
        if batch % batches_to_increase == 0:
            cur = starting_percent if batch == 0 else min(cur * increase_amount, 1)
        out.append(cur)
    return out


def hw_paper_fraction(i, starting_percent, inc, step_length):
    """HW sec. 3, fixed exponential pacing: g(i) = min(starting_percent * inc^floor(i / step_length), 1),
    in exact arithmetic (Fractions in, Fraction out)."""
    return min(starting_percent * inc ** (i // step_length), Fraction(1))


@pytest.mark.parametrize("total", [1, 7, 101])
@pytest.mark.parametrize("step_length", [1, 3, 10, 500])  # 500: longer than every lesson here
@pytest.mark.parametrize("inc", [1.1, 1.9, 2.0, 10.0])
@pytest.mark.parametrize("start", [0.04, 0.1, 0.3, 1.0])
def test_hw_fixed_exponential_matches_the_official_code(start, inc, step_length, total):
    g = build_pacing({"kind": "fixed_exponential", "start": start, "inc": inc, "step_length": step_length}, total)
    horizon = total + 3 * step_length + 50  # past the end of the lesson, too
    expected = hw_official_percent(horizon, start, inc, step_length)
    assert [g(i) for i in range(horizon)] == pytest.approx(expected, rel=1e-12)
    assert g(0) == start  # the first step serves exactly the starting percent
    if step_length > total:
        assert all(g(i) == start for i in range(total))  # no increase within the lesson


@pytest.mark.parametrize("n", [1, 2, 3, 7, 13, 100, 2500])
@pytest.mark.parametrize("start, inc", [("0.04", "1.9"), ("0.1", "2"), ("0.3", "1.5"), ("1", "1.9"), ("0.01", "3")])
@pytest.mark.parametrize("step_length", [1, 3])
def test_hw_pool_is_ceil_of_the_exact_fraction(n, start, inc, step_length):
    # HW's code takes order[:ceil(N * percent)]; in exact arithmetic (no float noise such as 0.04 * 2500 =
    # 100.00000000000001, which the library does not round up to 101)
    g = build_pacing({"kind": "fixed_exponential", "start": float(start), "inc": float(inc),
                      "step_length": step_length}, 40)
    for i in range(40):
        exact = math.ceil(hw_paper_fraction(i, Fraction(start), Fraction(inc), step_length) * n)
        assert _pool(g, n, i) == exact, (i, n)


def test_hw_defaults_are_the_papers():
    # starting_percent 0.04 (100 of 2500 images) and inc 1.9; one increase every tenth of the lesson
    g = build_pacing("fixed_exponential", 1000)
    expected = hw_official_percent(1000, 0.04, 1.9, 100)
    assert [g(i) for i in range(1000)] == pytest.approx(expected, rel=1e-12)
    assert _pool(g, 2500, 0, batch_size=100) == 100  # exactly one batch at the start, as in HW


def hw_varied_fraction(i, start, inc, step_lengths):
    """Varied exponential pacing (HW sec. 3: fixed exponential with step lengths that vary), as the library
    documents it: the k-th increase after the sum of the first k step lengths; the last length repeats."""
    boundary, k, lengths = 0, 0, list(step_lengths)
    while True:
        boundary += lengths[min(k, len(lengths) - 1)]
        if i < boundary:
            return min(1.0, start * inc ** k)
        k += 1


@pytest.mark.parametrize("step_lengths", [[5], [5, 10, 20], [1, 1, 40], [100, 3], [7, 2, 2, 9]])
@pytest.mark.parametrize("start, inc", [(0.04, 1.9), (0.1, 2.0), (0.5, 1.3)])
def test_hw_varied_exponential(step_lengths, start, inc):
    g = build_pacing({"kind": "varied_exponential", "start": start, "inc": inc, "step_lengths": step_lengths}, 60)
    for i in range(200):
        assert g(i) == pytest.approx(hw_varied_fraction(i, start, inc, step_lengths), rel=1e-12), i
    # one length = fixed_exponential
    if len(step_lengths) == 1:
        f = build_pacing({"kind": "fixed_exponential", "start": start, "inc": inc, "step_length": step_lengths[0]}, 60)
        assert [g(i) for i in range(200)] == [f(i) for i in range(200)]


@pytest.mark.parametrize("start", [0.04, 0.1, 0.25, 0.5])
@pytest.mark.parametrize("step_length", [1, 10, 99])
def test_hw_single_step_pacing(start, step_length):
    # HW sec. 3, single step pacing: g(i) = starting_percent if i < step_length else 1; documented as
    # fixed_exponential with inc = 1 / start
    g = build_pacing({"kind": "fixed_exponential", "start": start, "inc": 1 / start, "step_length": step_length}, 100)
    assert [g(i) for i in range(300)] == [start if i < step_length else 1.0 for i in range(300)]


@pytest.mark.parametrize("epochs, per_epoch, every",
                         [(7, 10, 1), (25, 4, 2), (15, 7, 1), (30, 10, 3), (100, 3, 10), (9, 1, 1)])
def test_default_step_length_with_epoch_unit_is_whole_epochs(epochs, per_epoch, every):
    # unit: epoch counts step lengths in epochs; the default (a tenth of the lesson) too, so the data grows only
    # at epoch boundaries: once every max(1, E // 10) epochs
    g = build_pacing({"kind": "fixed_exponential", "unit": "epoch"}, epochs * per_epoch, steps_per_epoch=per_epoch)
    for i in range(epochs * per_epoch):
        assert g(i) == pytest.approx(min(1.0, 0.04 * 1.9 ** (i // per_epoch // every)), rel=1e-12), i


@pytest.mark.parametrize("epochs, per_epoch", [(5, 10), (2, 50), (6, 7)])
def test_a_short_epoch_lesson_still_ends_on_the_full_data(epochs, per_epoch):
    # whole-epoch increases would stop short (5 epochs: 0.04 * 1.9^4 = 52% of the data): the default falls back
    # to a tenth of the lesson's steps, as with unit: step, and the lesson ends on all of it
    total = epochs * per_epoch
    g = build_pacing({"kind": "fixed_exponential", "unit": "epoch"}, total, steps_per_epoch=per_epoch)
    for i in range(total):
        assert g(i) == pytest.approx(min(1.0, 0.04 * 1.9 ** (i // (total // 10))), rel=1e-12), i
    assert g(total - 1) == 1.0


# --------------------------------------------------------------------------------------------------------
# Hacohen & Weinshall 2019: scoring, orders, class balance
# --------------------------------------------------------------------------------------------------------

def _teacher(n=60, c=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, c, (n,), generator=gen), torch.randn(n, c, generator=gen) * 3


def test_hw_transfer_scoring_order():
    # HW: the score of an image is the classifier's confidence in its true label; the curriculum sorts by it,
    # most confident first (``sorted(..., key=score, reverse=True)``); anti-curriculum flips that order
    targets, logits = _teacher()
    probs = logits.double().softmax(1).tolist()
    confidence = [probs[k][int(targets[k])] for k in range(len(targets))]
    hw_order = sorted(range(len(confidence)), key=lambda k: confidence[k], reverse=True)
    for name in ("teacher_confidence", "teacher_loss"):  # 1 - p and -log p: both rank as the confidence does
        s = score(name, ScoreInputs(targets, teacher_logits=logits))
        assert order_by_difficulty(s, targets, "easy_first", seed=3).tolist() == hw_order
        assert order_by_difficulty(s, targets, "hard_first", seed=3).tolist() == hw_order[::-1]
    s = score("teacher_confidence", ScoreInputs(targets, teacher_logits=logits))
    assert s.tolist() == pytest.approx([1 - p for p in confidence], abs=1e-6)


def _scored_by_margin(name: str, low: int, high: int, teacher_class: int, seed: int):
    """Samples of class 0 whose teacher logits are ``margin`` on ``teacher_class`` and 0 on the other two classes,
    margins ``low..high-1`` in a shuffled order: (margins, targets, scores)."""
    n = high - low
    margins = torch.arange(float(low), float(high))[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]
    logits = torch.zeros(n, 3)
    logits[:, teacher_class] = margins
    targets = torch.zeros(n, dtype=torch.long)
    return margins, targets, score(name, ScoreInputs(targets, teacher_logits=logits))


@pytest.mark.parametrize("name", ["teacher_confidence", "teacher_loss", "teacher_entropy"])
def test_confident_teacher_still_orders_by_confidence(name):
    # a teacher on its own training set: margins of 17..60 put p_true within float32 (from 37 on, float64)
    # rounding of 1, so a naive 1 - p or cross-entropy is 0 for all of them; the order must still follow
    # the confidence (HW sort by it): for logits (m, 0, 0), p_true = 1 / (1 + 2 e^-m) grows with m
    margins, targets, s = _scored_by_margin(name, 17, 61, teacher_class=0, seed=0)
    most_confident_first = sorted(range(44), key=lambda k: -float(margins[k]))
    assert order_by_difficulty(s, targets, seed=1).tolist() == most_confident_first
    if name == "teacher_confidence":
        assert s.double().tolist() == pytest.approx([2 * math.exp(-float(m)) for m in margins], rel=1e-5)


@pytest.mark.parametrize("name", ["teacher_confidence", "teacher_loss"])
def test_a_teacher_confidently_wrong_keeps_the_hard_end_in_order(name):
    # the hard end of the same order: the teacher puts its mass on another class by margins of 17..36, so
    # p_true ~ e^-m; 1 - p_true rounds to 1 in float32 for all of them, and hard_first (or the last samples of an
    # easy-first pool) must still follow the margin: most confidently wrong first
    margins, targets, s = _scored_by_margin(name, 17, 37, teacher_class=1, seed=1)
    most_wrong_first = sorted(range(20), key=lambda k: -float(margins[k]))
    assert order_by_difficulty(s, targets, "hard_first", seed=1).tolist() == most_wrong_first


def test_random_order_control():
    # HW's "random" curriculum: the same pacing over a random order, a fresh one per seed
    targets = torch.zeros(100, dtype=torch.long)
    orders = [order_by_difficulty(score("random", ScoreInputs(targets, seed=s)), targets, seed=s) for s in (0, 0, 1)]
    assert sorted(orders[0].tolist()) == list(range(100))
    assert torch.equal(orders[0], orders[1]) and not torch.equal(orders[0], orders[2])


def hw_balance_order(order, labels, num_classes):
    """``balance_order`` of the official code: take the j-th easiest of every class as group j; each group
    is sorted by difficulty (by position in ``order``) and the groups follow one another."""
    size_each_class = len(order) // num_classes
    class_orders = [[i for i in range(len(order)) if labels[order[i]] == cls] for cls in range(num_classes)]
    new_order = []
    for group_idx in range(size_each_class):
        group = sorted(class_orders[cls][group_idx] for cls in range(num_classes))
        new_order.extend(order[idx] for idx in group)
    return new_order


@pytest.mark.parametrize("num_classes, per_class", [(2, 1), (2, 9), (3, 7), (4, 10), (10, 5), (7, 13)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hw_balance_order(num_classes, per_class, seed):
    gen = torch.Generator().manual_seed(seed)
    targets = torch.arange(num_classes).repeat(per_class)[torch.randperm(num_classes * per_class, generator=gen)]
    scores = torch.rand(len(targets), generator=gen)
    easy = order_by_difficulty(scores, targets, "easy_first", seed=seed).tolist()
    expected = hw_balance_order(easy, targets.tolist(), num_classes)
    assert order_by_difficulty(scores, targets, "class_balanced", seed=seed).tolist() == expected


# --------------------------------------------------------------------------------------------------------
# Platanios et al. 2019: competence
# --------------------------------------------------------------------------------------------------------

def platanios_competence(t, T, c0, p):
    """c_root-p(t) = min(1, (t * (1 - c0^p) / T + c0^p)^(1/p)); p = 1 is c_linear, p = 2 c_sqrt."""
    return min(1.0, (t * (1 - c0 ** p) / T + c0 ** p) ** (1 / p))


@pytest.mark.parametrize("total", [2, 11, 101])
@pytest.mark.parametrize("end_at", [1.0, 0.5, 0.3, 1.5])
@pytest.mark.parametrize("c0", [0.01, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("p", [1, 2, 3, 5])
def test_platanios_competence(p, c0, end_at, total):
    # the library's T (the step at which competence reaches 1) is L * end_at with L = total - 1, the last step
    T = (total - 1) * end_at
    specs = [{"kind": "root", "power": p, "start": c0, "end_at": end_at}]
    if p == 1:
        specs.append({"kind": "linear", "start": c0, "end_at": end_at})  # c_linear
    for spec in specs:
        g = build_pacing(spec, total)
        for i in range(total + 20):
            assert g(i) == pytest.approx(platanios_competence(i, T, c0, p), rel=1e-12, abs=1e-15), (spec, i)
    if end_at <= 1:
        assert g(total - 1) == 1.0  # the last step sees all the data


@pytest.mark.parametrize("kind", ["linear", "root", "geometric", "step"])
def test_one_step_lesson_has_all_the_data(kind):
    # T = 0 is undefined in the paper; documented: a one-step lesson has the full data
    assert build_pacing({"kind": kind, "start": 0.01}, 1)(0) == 1.0


def platanios_pool(difficulty, c):
    """Platanios et al.: the CDF of the difficulty over the data, d_bar(s_i) = #{j : d_j <= d_i} / N;
    at competence c the batch is sampled from {s_i : d_bar(s_i) <= c}."""
    n = len(difficulty)
    return {i for i in range(n) if sum(1 for d in difficulty if d <= difficulty[i]) / n <= c}


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_platanios_cdf_pool_against_the_documented_prefix(ties, seed):
    # documented deviation (sampler.py): the pool is the first ceil(c N) of the order, which always contains
    # Platanios's CDF pool; the rest comes from the next tie group only, chosen by the order's seed
    n = 50
    gen = torch.Generator().manual_seed(seed)
    difficulty = torch.randint(1, 9, (n,), generator=gen).float() if ties else torch.rand(n, generator=gen)
    d = difficulty.tolist()
    order = order_by_difficulty(difficulty, torch.zeros(n, dtype=torch.long), seed=seed)
    for c in [0.01, 0.02, 0.1, 0.13, 0.25, 0.5, 0.77, 0.98, 1.0]:
        sampler = PacedBatches(order, lambda i, c=c: c, 1, 1, seed=0, min_size=1)
        lib = set(order[:sampler.prefix_size(0)].tolist())
        ref = platanios_pool(d, c)
        assert len(lib) == math.ceil(round(c * n, 9))
        assert ref <= lib
        if not ties:
            assert len(lib) - len(ref) == (0 if float(c * n).is_integer() else 1)
        if lib - ref:
            next_level = min(d[i] for i in range(n) if i not in ref)
            assert {d[i] for i in lib - ref} == {next_level}


def test_platanios_ties_split_by_the_seed():
    # ties in the difficulty: which of the straddling group are in is fixed by the order's seed
    difficulty = torch.tensor([0.0] * 10 + [1.0] * 30 + [2.0] * 10)
    targets = torch.zeros(50, dtype=torch.long)
    pools = {}
    for seed in range(4):
        order = order_by_difficulty(difficulty, targets, seed=seed)
        again = order_by_difficulty(difficulty, targets, seed=seed)
        assert torch.equal(order, again)
        pool = set(order[:PacedBatches(order, lambda i: 0.5, 1, 1, seed=0, min_size=1).prefix_size(0)].tolist())
        assert set(range(10)) <= pool <= set(range(40)) and len(pool) == 25
        pools[seed] = frozenset(pool)
    assert len(set(pools.values())) > 1  # not the lowest indices every time


# --------------------------------------------------------------------------------------------------------
# Penha & Hauff 2020: geometric progression; Wu et al. 2021: the (a, b) family
# --------------------------------------------------------------------------------------------------------

def penha_hauff_geometric(t, T, c0):
    """geom_progression: min(1, 2^(t * (log2(1) - log2(c0)) / T + log2(c0)))."""
    return min(1.0, 2 ** (t * (math.log2(1) - math.log2(c0)) / T + math.log2(c0)))


@pytest.mark.parametrize("total", [2, 11, 101])
@pytest.mark.parametrize("end_at", [1.0, 0.5, 0.3])
@pytest.mark.parametrize("c0", [0.01, 0.1, 0.25, 1.0])
def test_penha_hauff_geometric(c0, end_at, total):
    g = build_pacing({"kind": "geometric", "start": c0, "end_at": end_at}, total)
    T = (total - 1) * end_at
    for i in range(total + 20):
        assert g(i) == pytest.approx(penha_hauff_geometric(i, T, c0), rel=1e-12), i


def wu_linear(t, T, a, b):
    """Wu et al. 2021, linear: N b + N (1 - b) t / (a T), capped at N (as a fraction of N here)."""
    return min(1.0, b + (1 - b) * t / (a * T))


def wu_step(t, T, a, b):
    """Wu et al. 2021, step: N b + N floor(t / (a T)), capped at N."""
    return min(1.0, b + math.floor(t / (a * T)))


@pytest.mark.parametrize("a", [0.2, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("b", [0.05, 0.2, 0.6])
def test_wu_family(a, b):
    total = 101  # the library's T is the last step, L = 100
    T = total - 1
    lin = build_pacing({"kind": "linear", "start": b, "end_at": a}, total)
    step = build_pacing({"kind": "step", "start": b, "end_at": 2 * a}, total)  # documented: Wu's step(a) = step(2a)
    for i in range(total + 10):
        assert lin(i) == pytest.approx(wu_linear(i, T, a, b), rel=1e-12), i
        assert step(i) == pytest.approx(wu_step(i, T, a, b), rel=1e-12), i


def step_documented(t, start, num_steps):
    """The library's own step (no paper): num_steps + 1 equal plateaus over t in [0, 1], then 1."""
    level = min(num_steps, math.floor(t * (num_steps + 1) + 1e-9))
    return start + (1 - start) * level / num_steps


@pytest.mark.parametrize("num_steps", [1, 2, 3, 9])
@pytest.mark.parametrize("end_at", [1.0, 0.4])
def test_step_documented(num_steps, end_at):
    g = build_pacing({"kind": "step", "start": 0.1, "num_steps": num_steps, "end_at": end_at}, 61)
    for i in range(80):
        assert g(i) == pytest.approx(step_documented(min(1.0, i / (60 * end_at)), 0.1, num_steps), rel=1e-12), i


# --------------------------------------------------------------------------------------------------------
# Self-paced learning: closed forms checked against the regularisers they minimise
# --------------------------------------------------------------------------------------------------------

V = torch.linspace(0, 1, 200_001, dtype=torch.float64)  # the weight grid the brute-force minimiser searches


def argmin_v(objective):
    """argmin over v in [0, 1] of objective(v) (a float64 tensor of the grid), by exhaustive search."""
    return float(V[torch.argmin(objective(V))])


LOSSES = [0.0, 0.01, 0.1, 0.3, 0.45, 0.7, 0.95, 1.3, 2.9, 7.0]


@pytest.mark.parametrize("lam", [0.2, 0.5, 0.8, 1.5, 4.0])
def test_kumar_hard(lam):
    # Kumar et al. 2010: min_v sum v_i l_i - (1/K) sum v_i, lam = 1/K: v_i = 1 iff l_i < lam
    w = SELF_PACED.get("hard")(torch.tensor(LOSSES), lam).tolist()
    for l, v in zip(LOSSES, w):
        if abs(l - lam) > 1e-3:
            assert v == argmin_v(lambda v: v * l - lam * v), (l, lam)
    assert SELF_PACED.get("hard")(torch.tensor([lam]), lam).tolist() == [0.0]  # the tie: strictly below, as Kumar


def test_kumar_threshold_growth():
    # Kumar et al.: K <- K / mu each iteration, i.e. lam = 1/K grows by mu; with one iteration per epoch the
    # documented schedule {kind: step, gamma: mu, step_size: 1, unit: epoch} gives lam0 * mu^e in epoch e
    lam0, mu, epochs, steps = 0.2, 1.3, 8, 5
    sp = SelfPacedWeights({"weighting": "hard", "threshold": {"kind": "step", "start": lam0, "gamma": mu,
                                                               "step_size": 1, "unit": "epoch"}}, epochs)
    losses = torch.tensor(LOSSES)
    for e in range(epochs):
        lam_e = lam0 * mu ** e
        for k in range(steps):
            progress = (e * steps + k) / (epochs * steps)  # the runner's progress: step / total steps
            assert sp.threshold(losses, progress) == pytest.approx(lam_e, rel=1e-12)
            assert sp(losses, progress).tolist() == [1.0 if l < lam_e else 0.0 for l in LOSSES]


def _spl_regularisers(lam, power, lower):
    zeta_log = 1 - lam
    lam_low = lower * lam
    zeta_mix = lam * lam_low / (lam - lam_low)
    return {
        # Jiang et al. 2014 / 2015, linear: lam * (v^2 / 2 - v)
        "linear": lambda v: lam * (v ** 2 / 2 - v),
        # Jiang et al. 2014, logarithmic: zeta v - zeta^v / log(zeta), zeta = 1 - lam (0 < lam < 1)
        "logarithmic": lambda v: zeta_log * v - zeta_log ** v / math.log(zeta_log),
        # Jiang et al. 2014, mixture: -zeta log(v + zeta / lam), zeta = lam lam' / (lam - lam')
        "mixture": lambda v: -zeta_mix * torch.log(v + zeta_mix / lam),
        # polynomial: lam * (v^t / t - v)
        "polynomial": lambda v: lam * (v ** power / power - v),
    }


@pytest.mark.parametrize("name, lam", [(name, lam) for name in ("linear", "logarithmic", "mixture", "polynomial")
                                       for lam in (0.2, 0.5, 0.9, 2.0, 6.0)
                                       if name != "logarithmic" or lam < 1])  # logarithmic needs 0 < lam < 1
@pytest.mark.parametrize("power, lower", [(2.0, 0.5), (3.0, 0.2), (1.5, 0.8)])
def test_soft_weights_minimise_their_regulariser(name, lam, power, lower):
    regulariser = _spl_regularisers(lam, power, lower)[name]
    w = SELF_PACED.get(name)(torch.tensor(LOSSES), lam, power=power, lower=lower).tolist()
    for l, v in zip(LOSSES, w):
        assert v == pytest.approx(argmin_v(lambda v: v * l + regulariser(v)), abs=2e-5), (name, l)


@pytest.mark.parametrize("lam", [0.2, 1.0, 3.0])
def test_jiang_closed_forms(lam):
    losses = torch.tensor(LOSSES)
    assert SELF_PACED.get("linear")(losses, lam).tolist() == pytest.approx([max(0.0, 1 - l / lam) for l in LOSSES])
    lam_low = 0.5 * lam
    zeta = lam * lam_low / (lam - lam_low)
    mix = [1.0 if l <= lam_low else 0.0 if l >= lam else zeta / l - zeta / lam for l in LOSSES]
    assert SELF_PACED.get("mixture")(losses, lam, lower=0.5).tolist() == pytest.approx(mix, abs=1e-6)


def test_logistic_documented():
    # no paper named: the documented soft step (1 + e^-lam) / (1 + e^(l - lam))
    for lam in (0.3, 1.0, 5.0):
        w = SELF_PACED.get("logistic")(torch.tensor(LOSSES), lam).tolist()
        assert w == pytest.approx([(1 + math.exp(-lam)) / (1 + math.exp(l - lam)) for l in LOSSES], rel=1e-5)


# --------------------------------------------------------------------------------------------------------
# The paced sampler end to end
# --------------------------------------------------------------------------------------------------------

def test_sampler_end_to_end_hw():
    # a real curriculum: teacher-confidence order, HW pacing; every index drawn at step i is among the
    # ceil(g(i) N) easiest (g transcribed from the paper, floored at one batch), the pool only grows
    n, bs, epochs = 300, 16, 6
    targets, logits = _teacher(n, 4, seed=5)
    order = order_by_difficulty(score("teacher_confidence", ScoreInputs(targets, teacher_logits=logits)), targets)
    steps = math.ceil(n / bs)
    total = steps * epochs
    pacing = build_pacing({"kind": "fixed_exponential", "start": 0.04, "inc": 1.9, "step_length": 11}, total)
    sampler = PacedBatches(order, pacing, bs, steps, seed=7)
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n)
    sizes = []
    for epoch in range(epochs):
        for k, batch in enumerate(sampler.epoch_batches(epoch)):
            i = epoch * steps + k
            expected = max(bs, math.ceil(hw_paper_fraction(i, Fraction("0.04"), Fraction("1.9"), 11) * n))
            assert sampler.prefix_size(i) == min(n, expected)
            assert len(batch) == bs and len(set(batch.tolist())) == bs
            assert int(rank[batch].max()) < min(n, expected), i
            sizes.append(min(n, expected))
    assert all(b >= a for a, b in zip(sizes, sizes[1:])) and sizes[-1] == n


def _chi2_ok(counts, expected):
    stat = float(((counts - expected) ** 2 / expected).sum())
    return stat < chi2.ppf(0.9999, len(counts) - 1), stat


@pytest.mark.parametrize("step", [0, 6, 13, 19])
def test_sampler_batches_are_uniform_over_the_pool(step):
    # the marginal law of the batch at a given step, over seeds: uniform over the pool, nothing outside it
    n, bs, steps, seeds = 100, 5, 20, 400
    pacing = build_pacing({"kind": "linear", "start": 0.1}, steps)  # one epoch: 10 samples growing to 100
    order = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    counts = torch.zeros(n, dtype=torch.float64)
    for seed in range(seeds):
        batch = list(PacedBatches(order, pacing, bs, steps, seed=seed).epoch_batches(0))[step]
        counts[batch] += 1
    pool = PacedBatches(order, pacing, bs, steps, seed=0).prefix_size(step)
    assert pool == math.ceil(round((0.1 + 0.9 * step / (steps - 1)) * n, 9))
    in_pool = counts[order[:pool]]
    assert counts.sum() == in_pool.sum() == seeds * bs  # nothing from outside the pool
    ok, stat = _chi2_ok(in_pool, seeds * bs / pool)
    assert ok, stat


def test_sampler_uniform_over_a_long_run():
    # one sampler, a fixed pool of 60 of 200, 30 epochs of 20 steps: every pool sample equally often
    n, bs, steps = 200, 10, 20
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    sampler = PacedBatches(order, lambda i: 0.3, bs, steps, seed=11)
    counts = torch.zeros(n, dtype=torch.float64)
    for epoch in range(30):
        for batch in sampler.epoch_batches(epoch):
            counts[batch] += 1
    in_pool = counts[sampler.order[:60]]
    assert counts.sum() == in_pool.sum() == 30 * steps * bs
    ok, stat = _chi2_ok(in_pool, 30 * steps * bs / 60)
    assert ok, stat
    assert in_pool.max() - in_pool.min() <= 30  # the shuffled passes keep counts far tighter than independent draws


def test_sampler_with_tied_difficulty_is_deterministic():
    # ties broken by the order's seed (documented in ordering.py): the same (scores, seed) gives the same
    # batches; the pool holds the whole easier groups before any of the next
    difficulty = torch.tensor([3.0, 1.0, 2.0, 1.0] * 25)  # 50 at level 1, 25 at 2, 25 at 3
    targets = torch.zeros(100, dtype=torch.long)
    pacing = build_pacing({"kind": "linear", "start": 0.3}, 40)

    def batches(seed):
        order = order_by_difficulty(difficulty, targets, seed=seed)
        s = PacedBatches(order, pacing, 8, 20, seed=1)
        return [b.tolist() for e in range(2) for b in s.epoch_batches(e)], s

    a, s = batches(4)
    assert a == batches(4)[0]
    assert a != batches(5)[0]
    for i, batch in enumerate(a):
        pool = s.prefix_size(i)
        top = difficulty[s.order[:pool]].max()
        assert all(difficulty[j] <= top for j in batch)
        assert int((difficulty < top).sum()) <= pool  # every easier sample is in the pool
