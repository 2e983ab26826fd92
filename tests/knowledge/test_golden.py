"""Golden values: each term on fixed inputs against a hand computation (numpy) of the paper's formula,
and its per-sample mean against the reference code's batch form."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from curridistill.errors import UserError
from curridistill.knowledge import KnowledgeInputs, load_all
from curridistill.knowledge.adapters import make_adapter, pool_flatten
from curridistill.knowledge.aggregate import AGGREGATIONS, aggregate_teachers
from curridistill.knowledge.at import AT, ATParams, at_loss
from curridistill.knowledge.dist import dist_loss, dist_parts
from curridistill.knowledge.dkd import DKD, DKDParams, dkd_loss, tckd_nckd
from curridistill.knowledge.fitnet import FitNet, FitNetParams
from curridistill.knowledge.kd import kd_loss
from curridistill.knowledge.mse_logits import MSELogits, MSELogitsParams
from curridistill.knowledge.pkt import pkt_loss
from curridistill.knowledge.rkd import rkd_angle, rkd_distance, rkd_loss
from curridistill.knowledge.sp import sp_loss
from curridistill.models.taps import FeatureTaps

load_all()
D = torch.float64


def logits_pair(b: int = 5, c: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, c, generator=g, dtype=D) * 2
    t = torch.randn(b, c, generator=g, dtype=D) * 3
    y = torch.randint(0, c, (b,), generator=g)
    return s, t, y


def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_kl(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    return (q * (np.log(q) - np.log(p))).sum(axis=-1)


def huber(x: np.ndarray) -> np.ndarray:
    a = np.abs(x)
    return np.where(a < 1, 0.5 * x**2, a - 0.5)


# ------------------------------------------------------------------------------------------ KD
def test_kd_zero_for_identical_logits():
    s, _, _ = logits_pair()
    assert torch.allclose(kd_loss(s, s.clone(), 4.0), torch.zeros(len(s), dtype=D), atol=1e-12)


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_kd_is_t_squared_times_softened_kl(T):
    s, t, _ = logits_pair()
    hand = T**2 * np_kl(np_softmax(t.numpy() / T), np_softmax(s.numpy() / T))
    np.testing.assert_allclose(kd_loss(s, t, T).numpy(), hand, rtol=1e-10)


# ------------------------------------------------------------------------------------------ DKD
def hand_dkd(s: np.ndarray, t: np.ndarray, y: np.ndarray, T: float) -> tuple[np.ndarray, np.ndarray]:
    tckd, nckd = [], []
    for zs, zt, yi in zip(s, t, y):
        ps, pt = np_softmax(zs / T), np_softmax(zt / T)
        bs, bt = np.array([ps[yi], 1 - ps[yi]]), np.array([pt[yi], 1 - pt[yi]])
        keep = np.arange(len(zs)) != yi
        hs, ht = ps[keep] / ps[keep].sum(), pt[keep] / pt[keep].sum()
        tckd.append(T**2 * np_kl(bt, bs))
        nckd.append(T**2 * np_kl(ht, hs))
    return np.array(tckd), np.array(nckd)


def mdistiller_dkd_batch(s, t, y, alpha, beta, T):
    """mdistiller's batch DKD (masking trick, sum / batch), used as the reference batch form."""
    gt = torch.zeros_like(s).scatter_(1, y.unsqueeze(1), 1).bool()
    ps, pt = F.softmax(s / T, dim=1), F.softmax(t / T, dim=1)
    cat = lambda p: torch.cat([(p * gt).sum(1, keepdim=True), (p * ~gt).sum(1, keepdim=True)], dim=1)  # noqa: E731
    tckd = F.kl_div(torch.log(cat(ps)), cat(pt), reduction="sum") * T**2 / len(y)
    pt2 = F.softmax(t / T - 1000.0 * gt, dim=1)
    lps2 = F.log_softmax(s / T - 1000.0 * gt, dim=1)
    nckd = F.kl_div(lps2, pt2, reduction="sum") * T**2 / len(y)
    return alpha * tckd + beta * nckd


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_dkd_tckd_nckd_hand_computed(T):
    s, t, y = logits_pair()
    tckd, nckd = tckd_nckd(s, t, y, T)
    h_tckd, h_nckd = hand_dkd(s.numpy(), t.numpy(), y.numpy(), T)
    np.testing.assert_allclose(tckd.numpy(), h_tckd, rtol=1e-9)
    np.testing.assert_allclose(nckd.numpy(), h_nckd, rtol=1e-9)
    np.testing.assert_allclose(dkd_loss(s, t, y, T, 1.0, 8.0).numpy(), h_tckd + 8 * h_nckd, rtol=1e-9)
    ref = mdistiller_dkd_batch(s, t, y, 1.0, 8.0, T)
    torch.testing.assert_close(dkd_loss(s, t, y, T, 1.0, 8.0).mean(), ref, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_kd_equals_tckd_plus_weighted_nckd(T):
    """Zhao et al. Eq. (5): KD = TCKD + (1 - p_t^teacher) NCKD, exactly, at every temperature.
    So DKD with alpha = beta = 1 is KD with the NCKD factor (1 - p_t) dropped (DKD >= KD)."""
    s, t, y = logits_pair(seed=3)
    tckd, nckd = tckd_nckd(s, t, y, T)
    pt = F.softmax(t / T, dim=1).gather(1, y.view(-1, 1)).squeeze(1)
    torch.testing.assert_close(kd_loss(s, t, T), tckd + (1 - pt) * nckd, rtol=1e-10, atol=1e-12)
    assert (dkd_loss(s, t, y, T, 1.0, 1.0) >= kd_loss(s, t, T) - 1e-12).all()


def test_dkd_term_ls_and_identical():
    s, t, y = logits_pair()
    term = DKD(DKDParams(ls=True))
    inputs = KnowledgeInputs(student_logits=s, targets=y, teacher_logits=t)
    std = lambda z: (z - z.mean(1, keepdim=True)) / (z.std(1, keepdim=True) + 1e-7)  # noqa: E731
    torch.testing.assert_close(term(inputs, 2.0), dkd_loss(std(s), std(t), y, 2.0, 1.0, 8.0))
    same = KnowledgeInputs(student_logits=t, targets=y, teacher_logits=t.clone())
    torch.testing.assert_close(DKD()(same, 4.0), torch.zeros(len(y), dtype=D), atol=1e-12, rtol=0)


def test_dkd_stays_finite_for_confident_logits():
    s = torch.tensor([[60.0, 0.0, 0.0], [0.0, -50.0, 50.0]], requires_grad=True)
    t = torch.tensor([[80.0, 1.0, 0.0], [0.0, 0.0, 90.0]])
    y = torch.tensor([0, 2])
    loss = dkd_loss(s, t, y, 1.0)
    loss.mean().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(s.grad).all()


# ------------------------------------------------------------------------------------------ DIST
def official_dist(s, t, T, beta=1.0, gamma=1.0, eps=1e-8):
    """The authors' batch form (cosine of centered vectors with + eps in the denominator)."""
    def pearson(a, b):
        a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)

    ys, yt = (s / T).softmax(1), (t / T).softmax(1)
    return T**2 * (beta * (1 - pearson(ys, yt).mean()) + gamma * (1 - pearson(ys.t(), yt.t()).mean()))


def test_dist_zero_for_identical_predictions():
    s, _, _ = logits_pair(b=8, c=10)
    loss = dist_loss(s, s.clone(), 4.0)
    assert torch.allclose(loss, torch.zeros_like(loss), atol=1e-10)


def test_dist_hand_computed_pearson():
    s, t, _ = logits_pair(b=6, c=5, seed=1)
    T = 4.0
    ys, yt = np_softmax(s.numpy() / T), np_softmax(t.numpy() / T)
    inter = np.array([np.corrcoef(a, b)[0, 1] for a, b in zip(ys, yt)])
    intra = np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(ys.T, yt.T)])
    hand = T**2 * (1 - inter) + T**2 * (1 - intra)
    np.testing.assert_allclose(dist_loss(s, t, T).numpy(), hand, rtol=1e-9)
    i, j = dist_parts(s, t, T)
    np.testing.assert_allclose(j.numpy(), T**2 * (1 - intra), rtol=1e-9)
    torch.testing.assert_close(dist_loss(s, t, T, 2.0, 3.0).mean(), official_dist(s, t, T, 2.0, 3.0), rtol=1e-6, atol=1e-9)


def test_dist_default_weight_is_the_papers_two():
    cls = load_all().get("dist")
    assert cls.default_weight == 2.0 and cls.default_temperature == 4.0


# ------------------------------------------------------------------------------------------ MSE logits
def test_mse_logits_hand_values():
    s = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    t = torch.ones(2, 2)
    inputs = KnowledgeInputs(student_logits=s, targets=torch.tensor([0, 1]), teacher_logits=t)
    torch.testing.assert_close(MSELogits()(inputs), torch.tensor([0.5, 6.5]))  # (0+1)/2, (4+9)/2
    torch.testing.assert_close(MSELogits(MSELogitsParams(teacher_scale=2.0))(inputs), torch.tensor([0.5, 2.5]))
    torch.testing.assert_close(MSELogits()(inputs).mean(), F.mse_loss(s, t))


# ------------------------------------------------------------------------------------------ AT
def test_at_hand_made_maps():
    fs = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]]]])  # attention on the top-left
    ft = torch.tensor([[[[0.0, 2.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]])
    # student: mean_c f^2 = [1, 0, 0, 0] -> normalized [1, 0, 0, 0]; teacher: [4/3, 0, 0, 0] shifted -> [0, 1, 0, 0]
    torch.testing.assert_close(at_loss(fs, ft), torch.tensor([0.5]))  # (1 + 1) / 4
    torch.testing.assert_close(at_loss(fs, fs * 5), torch.tensor([0.0]))  # scale-free
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 4, 4, 4, generator=g), torch.randn(3, 6, 2, 2, generator=g)
    hand_a = F.avg_pool2d(a, 2)  # the larger map is pooled to the smaller
    qa = F.normalize(hand_a.pow(2).mean(1).flatten(1), dim=1)
    qb = F.normalize(b.pow(2).mean(1).flatten(1), dim=1)
    torch.testing.assert_close(at_loss(a, b), (qa - qb).pow(2).mean(1))
    torch.testing.assert_close(at_loss(b, a), (qa - qb).pow(2).mean(1))


def test_at_half_precision_features_past_float16s_square_root_give_the_float32_loss():
    """f^2 of a float16 activation above 256 overflows; the maps are computed in float32, so the loss is finite."""
    g = torch.Generator().manual_seed(2)
    a, b = (300 * torch.rand(2, 4, 4, 4, generator=g)).half(), (300 * torch.rand(2, 4, 4, 4, generator=g)).half()
    loss = at_loss(a, b)
    assert loss.dtype == torch.float32 and torch.isfinite(loss).all()
    torch.testing.assert_close(loss, at_loss(a.float(), b.float()))


def test_at_term_sums_stages_like_repdistiller():
    g = torch.Generator().manual_seed(1)
    fs = {"a": torch.randn(4, 3, 4, 4, generator=g), "b": torch.randn(4, 5, 2, 2, generator=g)}
    ft = {"x": torch.randn(4, 6, 4, 4, generator=g), "y": torch.randn(4, 2, 4, 4, generator=g)}
    term = AT(ATParams(student_layers=["a", "b"], teacher_layers=["x", "y"]))
    loss = term(KnowledgeInputs(student_logits=torch.zeros(4, 2), targets=torch.zeros(4, dtype=torch.long),
                                student_features=fs, teacher_features=[ft]))

    def rep_at(f_s, f_t):  # RepDistiller's Attention.at_loss
        s_h, t_h = f_s.shape[2], f_t.shape[2]
        if s_h > t_h:
            f_s = F.adaptive_avg_pool2d(f_s, (t_h, t_h))
        elif s_h < t_h:
            f_t = F.adaptive_avg_pool2d(f_t, (s_h, s_h))
        at = lambda f: F.normalize(f.pow(2).mean(1).view(f.size(0), -1))  # noqa: E731
        return (at(f_s) - at(f_t)).pow(2).mean()

    torch.testing.assert_close(loss.mean(), rep_at(fs["a"], ft["x"]) + rep_at(fs["b"], ft["y"]))
    with pytest.raises(ValueError):
        ATParams(student_layers=["a"], teacher_layers=["x", "y"])


# ------------------------------------------------------------------------------------------ FitNet
def test_fitnet_identity_adapter_is_mse():
    g = torch.Generator().manual_seed(0)
    fs, ft = torch.randn(4, 3, 2, 2, generator=g), torch.randn(4, 3, 2, 2, generator=g)
    inputs = KnowledgeInputs(student_logits=torch.zeros(4, 2), targets=torch.zeros(4, dtype=torch.long),
                             student_features={"s": fs}, teacher_features=[{"t": ft}])
    term = FitNet(FitNetParams(student_layer="s", teacher_layer="t"))
    term.build(inputs)
    assert isinstance(term.adapter, nn.Identity)
    loss = term(inputs)
    torch.testing.assert_close(loss, ((fs - ft) ** 2).flatten(1).mean(1))
    torch.testing.assert_close(loss.mean(), F.mse_loss(fs, ft))


def test_make_adapter_shapes():
    cases = [((2, 4, 8, 8), (2, 6, 4, 4)), ((2, 4, 4, 4), (2, 4, 8, 8)), ((2, 4, 8, 8), (2, 6, 8, 8)),
             ((2, 16), (2, 32)), ((2, 16), (2, 3, 2, 2)), ((2, 4, 2, 2), (2, 10))]
    for s, t in cases:
        out = make_adapter(s, t)(torch.randn(*s))
        assert tuple(out.shape) == t
    assert isinstance(make_adapter((2, 4, 3, 3), (7, 4, 3, 3)), nn.Identity)
    assert pool_flatten(torch.ones(2, 3, 4, 4)).shape == (2, 3)
    assert pool_flatten(torch.ones(2, 3, 5)).shape == (2, 15)


# ------------------------------------------------------------------------------------------ RKD
def hand_rkd(es: np.ndarray, et: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = len(es)

    def dist(e):
        d = np.array([[np.linalg.norm(e[a] - e[b]) for b in range(n)] for a in range(n)])
        return d / d[d > 0].mean()

    def ang(e):
        out = np.zeros((n, n, n))
        for a in range(n):
            for b in range(n):
                for c in range(n):
                    u, v = e[b] - e[a], e[c] - e[a]
                    if np.linalg.norm(u) > 0 and np.linalg.norm(v) > 0:
                        out[a, b, c] = u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
        return out

    d = huber(dist(es) - dist(et)).mean(axis=1)
    a = huber(ang(es) - ang(et)).reshape(n, -1).mean(axis=1)
    return d, a


def test_rkd_three_points():
    es = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]], dtype=D)  # distances 3, 4, 5; mean 4
    et = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=D)  # distances 1, 1, sqrt 2
    d, a = rkd_distance(es, et), rkd_angle(es, et)
    hd, ha = hand_rkd(es.numpy(), et.numpy())
    np.testing.assert_allclose(d.numpy(), hd, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(a.numpy(), ha, rtol=1e-6, atol=1e-9)
    # by hand for anchor 0: normalized student distances [0, .75, 1], teacher [0, 3/(2+r2), 3/(2+r2)]
    mu_t = (2 + math.sqrt(2)) / 3
    row0 = (0 + 0.5 * (0.75 - 1 / mu_t) ** 2 + 0.5 * (1 - 1 / mu_t) ** 2) / 3
    assert d[0].item() == pytest.approx(row0, rel=1e-9)
    # relations are scale- and translation-free: a scaled, shifted copy costs nothing
    torch.testing.assert_close(rkd_loss(es, 2.5 * es + 1.0), torch.zeros(3, dtype=D), atol=1e-9, rtol=0)


def test_rkd_mean_is_repdistiller_batch_loss():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 4, generator=g, dtype=D), torch.randn(6, 7, generator=g, dtype=D)

    def pdist(e):
        sq = e.pow(2).sum(1)
        r = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=1e-12).sqrt().clone()
        r[range(len(e)), range(len(e))] = 0
        return r

    td, sd = pdist(t), pdist(s)
    loss_d = F.smooth_l1_loss(sd / sd[sd > 0].mean(), td / td[td > 0].mean())
    na = lambda e: F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # noqa: E731
    ang = lambda e: torch.bmm(na(e), na(e).transpose(1, 2)).view(-1)  # noqa: E731
    loss_a = F.smooth_l1_loss(ang(s), ang(t))
    torch.testing.assert_close(rkd_loss(s, t).mean(), 25 * loss_d + 50 * loss_a)


# ------------------------------------------------------------------------------------------ SP
def test_sp_small_case():
    g = torch.Generator().manual_seed(0)
    fs, ft = torch.randn(4, 3, generator=g, dtype=D), torch.randn(4, 2, 2, generator=g, dtype=D)
    a, b = fs.numpy(), ft.numpy().reshape(4, -1)
    gs, gt = a @ a.T, b @ b.T
    gs, gt = gs / np.linalg.norm(gs, axis=1, keepdims=True), gt / np.linalg.norm(gt, axis=1, keepdims=True)
    hand = ((gt - gs) ** 2).sum(axis=1) / 4
    np.testing.assert_allclose(sp_loss(fs, ft).numpy(), hand, rtol=1e-10)
    assert sp_loss(fs, ft).mean().item() == pytest.approx(((gt - gs) ** 2).sum() / 16, rel=1e-10)
    torch.testing.assert_close(sp_loss(fs, 3 * fs), torch.zeros(4, dtype=D), atol=1e-12, rtol=0)


# ------------------------------------------------------------------------------------------ PKT
def test_pkt_small_case():
    fs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=D)
    ft = torch.tensor([[1.0, 0.0], [1.0, 0.1], [-1.0, 0.0]], dtype=D)

    def cond(e):
        e = e / (np.linalg.norm(e, axis=1, keepdims=True) + 1e-7)  # the reference code's eps
        k = (e @ e.T + 1) / 2
        return k / k.sum(axis=1, keepdims=True)

    p, q = cond(fs.numpy()), cond(ft.numpy())
    hand = (q * np.log((q + 1e-7) / (p + 1e-7))).sum(axis=1) / 3
    np.testing.assert_allclose(pkt_loss(fs, ft).numpy(), hand, rtol=1e-6)
    # RepDistiller's torch.mean over the B x B matrix
    assert pkt_loss(fs, ft).mean().item() == pytest.approx((q * np.log((q + 1e-7) / (p + 1e-7))).mean(), rel=1e-6)
    assert pkt_loss(fs, fs.clone() * 4).abs().max().item() < 1e-9


# ------------------------------------------------------------------------------------------ aggregation
T1 = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [3.0, 0.0, 1.0], [1.0, 0.9, 0.9]])
T2 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 3.0], [0.0, 0.5, 2.0], [0.0, 0.1, -10.0]])
Y = torch.tensor([0, 2, 1, 0])


def test_aggregation_mean_and_weighted():
    torch.testing.assert_close(aggregate_teachers([T1, T2], Y, "mean"), (T1 + T2) / 2)
    torch.testing.assert_close(aggregate_teachers([T1, T2], Y, "weighted", [3.0, 1.0]), (3 * T1 + T2) / 4)
    torch.testing.assert_close(aggregate_teachers([T1, T2], Y, "weighted", None), (T1 + T2) / 2)
    torch.testing.assert_close(aggregate_teachers([T1], Y, "best"), T1)
    assert set(AGGREGATIONS) == {"mean", "weighted", "confidence", "best"}
    with pytest.raises(UserError):
        aggregate_teachers([T1, T2], Y, "median")
    with pytest.raises(UserError):
        aggregate_teachers([T1, T2], Y, "weighted", [1.0])


def test_aggregation_confidence():
    p1 = np_softmax(T1.numpy())[np.arange(4), Y.numpy()]
    p2 = np_softmax(T2.numpy())[np.arange(4), Y.numpy()]
    w1 = p1 / (p1 + p2)  # two teachers: CA-MKD's weights are proportional to the true-class probability
    hand = w1[:, None] * T1.numpy() + (1 - w1)[:, None] * T2.numpy()
    np.testing.assert_allclose(aggregate_teachers([T1, T2], Y, "confidence").numpy(), hand, rtol=1e-5)
    # three teachers: w_k = (1 - softmax_k(CE_k)) / (K - 1)
    T3 = torch.tensor([[0.0, 2.0, 0.0], [1.0, 1.0, 1.0], [0.0, 4.0, 0.0], [5.0, 0.0, 0.0]])
    ps = np.stack([np_softmax(t.numpy())[np.arange(4), Y.numpy()] for t in (T1, T2, T3)])
    ce = -np.log(ps)
    w = (1 - np.exp(ce) / np.exp(ce).sum(0)) / 2
    hand3 = sum(w[k][:, None] * t.numpy() for k, t in enumerate((T1, T2, T3)))
    np.testing.assert_allclose(aggregate_teachers([T1, T2, T3], Y, "confidence").numpy(), hand3, rtol=1e-5)


def test_aggregation_best():
    out = aggregate_teachers([T1, T2], Y, "best")
    # 0: both right, T1 more confident; 1: only T2 right; 2: none right, T2 gives y=1 more probability;
    # 3: T1 right (p=.36) beats T2 wrong although T2 gives the label more probability (p=.48)
    torch.testing.assert_close(out, torch.stack([T1[0], T2[1], T2[2], T1[3]]))


# ------------------------------------------------------------------------------------------ taps on a user model
class UserNet(nn.Module):
    """Not in the zoo: a body Sequential whose inner modules are tapped by dotted path."""

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1))
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        return self.head(self.body(x).mean(dim=(2, 3)))


def test_fitnet_distils_a_user_model_by_dotted_path():
    torch.manual_seed(0)
    student, teacher = UserNet(4), UserNet(8).eval()
    x, y = torch.randn(16, 1, 6, 6), torch.randint(0, 3, (16,))
    term = FitNet(FitNetParams(student_layer="body.1", teacher_layer="body.1"))

    def inputs() -> KnowledgeInputs:
        with torch.no_grad(), FeatureTaps(teacher, ["body.1"]) as tt:
            tl = teacher(x)
        with FeatureTaps(student, ["body.1"]) as st:
            sl = student(x)
        return KnowledgeInputs(student_logits=sl, targets=y, teacher_logits=tl,
                               student_features=dict(st.features), teacher_features=[dict(tt.features)])

    with torch.no_grad():
        term.build(inputs())
    assert isinstance(term.adapter, nn.Sequential)  # 4 -> 8 channels: 1x1 conv + BN
    opt = torch.optim.SGD(list(student.parameters()) + list(term.parameters()), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(15):
        loss = term(inputs()).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    assert all(p.grad is None for p in teacher.parameters())


# --------------------------------------------------------------- classes a teacher rules out, half precision, CTKD
def _masked_teacher() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    t[:, 0] = float("-inf")  # class 0 ruled out by the teacher (never the target below)
    return s, t, torch.tensor([1, 2, 3, 5])


def _kd_with_class_dropped(s, t, T):
    """KD on the classes the teacher keeps, with the student's softmax still over every class."""
    log_ps = F.log_softmax(s / T, dim=1)[:, 1:]
    p_t = F.softmax(t[:, 1:] / T, dim=1)
    return (p_t * (p_t.log() - log_ps)).sum(1) * T * T


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_kd_with_a_class_the_teacher_rules_out_is_the_limit_not_nan(T):
    s, t, _ = _masked_teacher()
    torch.testing.assert_close(kd_loss(s, t, T), _kd_with_class_dropped(s, t, T))


def test_dkd_with_a_class_the_teacher_rules_out_is_finite_and_keeps_the_kd_identity():
    s, t, y = _masked_teacher()
    tckd, nckd = tckd_nckd(s, t, y, 4.0)
    assert torch.isfinite(tckd).all() and torch.isfinite(nckd).all()
    p_target = F.softmax(t / 4.0, dim=1).gather(1, y.view(-1, 1)).squeeze(1)
    torch.testing.assert_close(tckd + (1 - p_target) * nckd, kd_loss(s, t, 4.0))


def test_ctkd_temperature_gradient_is_finite_with_a_class_the_teacher_rules_out():
    from curridistill.knowledge.ctkd import CTKD

    s, t, y = _masked_teacher()
    term = CTKD()
    s.requires_grad_(True)
    loss = term(KnowledgeInputs(student_logits=s, targets=y, teacher_logits=t)).mean()
    loss.backward()
    tau = float(term.temperature().detach())
    torch.testing.assert_close(loss.detach(), _kd_with_class_dropped(s.detach(), t, tau).mean())
    assert torch.isfinite(term.theta.grad).all() and torch.isfinite(s.grad).all()


@pytest.mark.parametrize("name, options", [("kd", {}), ("kd", {"ls": True}), ("dkd", {}), ("dkd", {"ls": True}),
                                           ("dist", {})])
def test_logit_terms_compute_half_precision_inputs_in_float32(name, options):
    """Through the term, so logit standardization (``ls``) is inside what must run in float32."""
    g = torch.Generator().manual_seed(0)
    s, t = 8 * torch.randn(16, 100, generator=g), 8 * torch.randn(16, 100, generator=g)
    y = torch.randint(0, 100, (16,), generator=g)
    cls = load_all().get(name)
    term = cls(cls.Params(**options))
    s16, t16 = s.bfloat16(), t.bfloat16()
    half = term(KnowledgeInputs(student_logits=s16, targets=y, teacher_logits=t16), 4.0)
    assert half.dtype == torch.float32
    # the bf16 inputs' own rounding aside, the loss is the float32 loss of those inputs
    full = term(KnowledgeInputs(student_logits=s16.float(), targets=y, teacher_logits=t16.float()), 4.0)
    torch.testing.assert_close(half, full)


@pytest.mark.parametrize("epoch, expected", [(1, -0.02447), (5, -0.5), (9, -0.97553), (10, -1.0), (30, -1.0)])
def test_ctkd_lambda_follows_the_official_per_epoch_cosine(epoch, expected):
    """CTKD's CosineDecay(max_value=0, min_value=-1, num_loops=10).get_value(epoch), 1-based epochs."""
    from curridistill.knowledge.base import Clock
    from curridistill.knowledge.ctkd import CTKD

    term = CTKD()
    for progress in (0.0, 0.5, 0.99):  # constant within the epoch
        term.before_step(Clock(progress=progress, epoch=epoch - 1, epochs=40))
        assert float(term.step_lambda) == pytest.approx(expected, abs=1e-5)


# ------------------------------------------------------------------------------------------ token losses, padded
def textbrewer_hidden_mse(fs, ft, mask):
    """TextBrewer's hid_mse_loss (airaria/TextBrewer, losses.py), written out again: every non-pad token of the
    batch weighs the same."""
    mask = mask.to(fs)
    return (F.mse_loss(fs, ft, reduction="none") * mask.unsqueeze(-1)).sum() / (mask.sum() * fs.size(-1))


def relation_kl_rows(fs, ft, mask, heads):
    """MiniLMv2's relation KL per query row, heads averaged, keys at padding excluded: (B, L)."""
    def log_rel(x):
        b, n, h = x.shape
        xh = x.reshape(b, n, heads, h // heads).transpose(1, 2)
        scores = xh @ xh.transpose(-1, -2) / math.sqrt(h // heads)
        return scores.masked_fill(~mask.bool()[:, None, None, :], float("-inf")).log_softmax(-1)
    log_s, log_t = log_rel(fs), log_rel(ft)
    pt = log_t.exp()
    return torch.where(pt > 0, pt * (log_t - log_s), 0.0).sum(-1).mean(1)


LENGTHS = [7, 5, 3, 1]  # one sentence per length: the weighting decides the loss


def _padded_pair(width: int):
    g = torch.Generator().manual_seed(4)
    fs, ft = torch.randn(4, 7, width, generator=g), torch.randn(4, 7, width, generator=g)
    mask = (torch.arange(7)[None, :] < torch.tensor(LENGTHS)[:, None]).long()
    return fs, ft, mask


@pytest.mark.parametrize("average", ["sample", "token"])
def test_hidden_weighs_samples_or_tokens_as_asked(average):
    from curridistill.knowledge.hidden import Hidden

    fs, ft, mask = _padded_pair(8)
    term = Hidden(Hidden.Params(layers={"s": "t"}, mask="mask", project=False, average=average))
    inputs = KnowledgeInputs(student_logits=torch.zeros(4, 2), targets=torch.zeros(4, dtype=torch.long),
                             student_features={"s": fs, "mask": mask}, teacher_features=[{"t": ft}])
    term.build(inputs)
    loss = term(inputs)
    if average == "token":
        torch.testing.assert_close(loss.mean(), textbrewer_hidden_mse(fs, ft, mask))
    else:
        per_sample = torch.stack([(fs[i, :n] - ft[i, :n]).pow(2).mean() for i, n in enumerate(LENGTHS)])
        torch.testing.assert_close(loss, per_sample)
        assert not torch.isclose(loss.mean(), textbrewer_hidden_mse(fs, ft, mask))  # the lengths do matter here


@pytest.mark.parametrize("average", ["sample", "token"])
def test_attention_maps_weigh_samples_or_query_tokens_as_asked(average):
    from curridistill.knowledge.attention_maps import AttentionMaps

    fs, ft, mask = _padded_pair(8)
    term = AttentionMaps(AttentionMaps.Params(layers={"s": "t"}, heads=2, mask="mask", average=average))
    loss = term(KnowledgeInputs(student_logits=torch.zeros(4, 2), targets=torch.zeros(4, dtype=torch.long),
                                student_features={"s": fs, "mask": mask}, teacher_features=[{"t": ft}]))
    rows, m = relation_kl_rows(fs, ft, mask, heads=2), mask.float()
    if average == "token":  # MiniLMv2: the mean over every non-pad query row of the batch
        torch.testing.assert_close(loss.mean(), (rows * m).sum() / m.sum())
    else:
        torch.testing.assert_close(loss, (rows * m).sum(1) / m.sum(1))
