"""Training through curridistill equals a plain PyTorch loop written from the papers, step for step.

The peer loop is what a user would write by hand (Hinton et al. 2015: ``(1 - a) CE + a T^2 KL(p_t^T || p_s^T)``
with the batch-mean KL; Zhao et al. 2022 for DKD; PyTorch's own optimizers and schedulers) and shares nothing with
the engine but the starting weights and the data. Whole-batch steps make the data order irrelevant, so after N
steps the student's weights must agree with the loop's to float rounding: the loss composition, the temperature
scaling, the teacher's mode, the optimizer settings, the learning rate of every step and the batch-norm statistics
are all checked at once.

Feature terms are checked the same way on small convolutional models with named stages: the loop reads the
stages with forward hooks and writes RepDistiller's losses (AT, SP, PKT, RKD) and FitNets' hint (mdistiller),
with matching shapes and through a regressor that trains beside the student from shared starting weights.
Schedules are checked through a temperature that anneals and a DKD-style weight warm-up, at the documented
per-step progress (step k of n reads the schedule at k / n).
"""
from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from curridistill.api import distill

N, STEPS = 96, 6


def _data(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.5
    x[torch.arange(n), 0, y % 8, y // 8 + 3] += 0.5  # a pixel per class: something to learn
    return x, y


def _student() -> nn.Module:
    torch.manual_seed(1)
    # no bias before batch norm: its true gradient is 0, and Adam would turn float noise there into full steps
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32, bias=False), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))


def _teacher() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.BatchNorm1d(48), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(48, 10))


def _conv(seed: int, width: int) -> nn.Module:
    """Two named stages (8x8, then 4x4), global pooling, a linear head: what the feature terms tap."""
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict(
        stage1=nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()),
        stage2=nn.Sequential(nn.Conv2d(width, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
                             nn.ReLU()),
        pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(width, 10)))


def hinton_kd(s, t, y, T: float, alpha: float):
    kl = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean")
    return (1 - alpha) * F.cross_entropy(s, y) + alpha * T * T * kl


def dkd(s, t, y, alpha: float, beta: float, T: float):
    """Decoupled KD as in mdistiller's dkd_loss (Zhao et al. 2022), target-class and non-target parts."""
    gt = F.one_hot(y, s.shape[1]).bool()
    ps, pt = F.softmax(s / T, 1), F.softmax(t / T, 1)
    bs = torch.stack([(ps * gt).sum(1), (ps * ~gt).sum(1)], 1)
    bt = torch.stack([(pt * gt).sum(1), (pt * ~gt).sum(1)], 1)
    tckd = F.kl_div(torch.log(bs), bt, reduction="sum") * T * T / s.shape[0]
    nckd = F.kl_div(F.log_softmax(s / T - 1000.0 * gt, 1), F.softmax(t / T - 1000.0 * gt, 1),
                    reduction="sum") * T * T / s.shape[0]
    return F.cross_entropy(s, y) + alpha * tckd + beta * nckd


# RepDistiller's feature losses (HobbitLong/RepDistiller, distiller_zoo), written out again here
def at_repdistiller(fs, ft):
    def at(f):
        return F.normalize(f.pow(2).mean(1).view(f.size(0), -1))
    return (at(fs) - at(ft)).pow(2).mean()


def sp_repdistiller(fs, ft):
    b = fs.shape[0]
    gs, gt = fs.view(b, -1) @ fs.view(b, -1).t(), ft.view(b, -1) @ ft.view(b, -1).t()
    diff = F.normalize(gt) - F.normalize(gs)
    return (diff * diff).view(-1, 1).sum(0)[0] / (b * b)


def pkt_repdistiller(out, target, eps=1e-7):
    out = out / (torch.sqrt(torch.sum(out ** 2, dim=1, keepdim=True)) + eps)
    target = target / (torch.sqrt(torch.sum(target ** 2, dim=1, keepdim=True)) + eps)
    model_sim, target_sim = (out @ out.t() + 1.0) / 2.0, (target @ target.t() + 1.0) / 2.0
    model_sim = model_sim / model_sim.sum(dim=1, keepdim=True)
    target_sim = target_sim / target_sim.sum(dim=1, keepdim=True)
    return torch.mean(target_sim * torch.log((target_sim + eps) / (model_sim + eps)))


def rkd_repdistiller(student, teacher, w_d=25.0, w_a=50.0):
    def pdist(e, eps=1e-12):
        sq = e.pow(2).sum(dim=1)
        res = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps).sqrt().clone()
        res[range(len(e)), range(len(e))] = 0
        return res

    with torch.no_grad():
        t_d = pdist(teacher)
        t_d = t_d / t_d[t_d > 0].mean()
    d = pdist(student)
    d = d / d[d > 0].mean()
    loss_d = F.smooth_l1_loss(d, t_d)
    with torch.no_grad():
        td = F.normalize(teacher.unsqueeze(0) - teacher.unsqueeze(1), p=2, dim=2)
        t_angle = torch.bmm(td, td.transpose(1, 2)).view(-1)
    sd = F.normalize(student.unsqueeze(0) - student.unsqueeze(1), p=2, dim=2)
    s_angle = torch.bmm(sd, sd.transpose(1, 2)).view(-1)
    return w_d * loss_d + w_a * F.smooth_l1_loss(s_angle, t_angle)


def pooled(f):
    return f.mean(dim=(2, 3))


CASES = {
    "Hinton KD, SGD nesterov + weight decay, constant lr": dict(
        loss={"ce": 0.1, "kd": {"weight": 0.9, "temperature": 4.0}},
        optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
        schedule={"kind": "constant"},
        peer_loss=lambda s, t, y, **_: hinton_kd(s, t, y, T=4.0, alpha=0.9),
        peer_optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
        peer_schedule=None),
    "Hinton KD, AdamW, linear decay per step": dict(
        loss={"ce": 0.5, "kd": {"weight": 0.5, "temperature": 2.0}},
        optimizer={"name": "adamw", "lr": 0.01, "weight_decay": 0.01},  # decoupled decay
        schedule={"kind": "linear", "start": 1.0, "end": 0.0},
        peer_loss=lambda s, t, y, **_: hinton_kd(s, t, y, T=2.0, alpha=0.5),
        peer_optimizer=lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.01),
        # PyTorch's LinearLR: factor 1 - k / STEPS at step k, as the schedule at progress step / total steps
        peer_schedule=lambda o: torch.optim.lr_scheduler.LinearLR(o, 1.0, 0.0, total_iters=STEPS)),
    "Hinton KD, SGD, cosine decay per step, gradient norm clipped at 0.5": dict(
        loss={"ce": 0.1, "kd": {"weight": 0.9, "temperature": 4.0}},
        optimizer={"name": "sgd", "lr": 0.2, "momentum": 0.9, "weight_decay": 5e-4},
        schedule={"kind": "cosine", "start": 1.0, "end": 0.0}, grad_clip=0.5,
        peer_loss=lambda s, t, y, **_: hinton_kd(s, t, y, T=4.0, alpha=0.9),
        peer_optimizer=lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.9, weight_decay=5e-4),
        peer_schedule=lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=STEPS)),
    "DKD (alpha 1, beta 8, T 4) + CE, SGD": dict(
        loss={"ce": 1.0, "dkd": {"weight": 1.0, "alpha": 1.0, "beta": 8.0, "temperature": 4.0}},
        optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
        schedule={"kind": "constant"},
        peer_loss=lambda s, t, y, **_: dkd(s, t, y, alpha=1.0, beta=8.0, T=4.0),
        peer_optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4),
        peer_schedule=None),
    "CE alone (the baseline), Adam": dict(
        loss={"ce": 1.0},
        optimizer={"name": "adam", "lr": 0.01, "weight_decay": 5e-4},  # L2 added to the gradient
        schedule={"kind": "constant"},
        peer_loss=lambda s, t, y, **_: F.cross_entropy(s, y),
        peer_optimizer=lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=5e-4),
        peer_schedule=None),
    "KD with the temperature annealed 8 -> 2 per step, SGD": dict(
        loss={"ce": 0.1, "kd": {"weight": 0.9, "temperature": {"kind": "linear", "start": 8.0, "end": 2.0}}},
        optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4},
        schedule={"kind": "constant"},
        peer_loss=lambda s, t, y, step, **_: hinton_kd(s, t, y, T=8.0 - 6.0 * step / STEPS, alpha=0.9),
        peer_optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
        peer_schedule=None),
    "DKD with its weight warmed up over 4 of 6 epochs (one step each), SGD": dict(
        loss={"ce": 1.0, "dkd": {"weight": {"kind": "constant", "value": 1.0, "warmup": 4, "unit": "epoch"},
                                 "alpha": 1.0, "beta": 8.0, "temperature": 4.0}},
        optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
        schedule={"kind": "constant"},
        # per step: during epoch e (1-based) the factor is (e - 1) / 4, where mdistiller holds e / 4 (documented)
        peer_loss=lambda s, t, y, step, **_: F.cross_entropy(s, y) + min(step / 4, 1.0) * (
            dkd(s, t, y, alpha=1.0, beta=8.0, T=4.0) - F.cross_entropy(s, y)),
        peer_optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4),
        peer_schedule=None),
}

_SGD = dict(optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}, schedule={"kind": "constant"},
            peer_optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4), peer_schedule=None)
STAGES = {"student_layers": ["stage1", "stage2"], "teacher_layers": ["stage1", "stage2"]}
ON_STAGE2 = {"student_layer": "stage2", "teacher_layer": "stage2"}
FEATURE_CASES = {
    "AT (beta 1000, two stages) + CE": dict(
        loss={"ce": 1.0, "at": {"weight": 1000.0, **STAGES}}, teacher_width=12,
        peer_loss=lambda s, t, y, fs, ft, **_: F.cross_entropy(s, y) + 1000.0 * sum(
            at_repdistiller(fs[k], ft[k]) for k in ("stage1", "stage2")), **_SGD),
    "SP (gamma 3000) + CE": dict(
        loss={"ce": 1.0, "sp": {"weight": 3000.0, **ON_STAGE2}}, teacher_width=12,
        peer_loss=lambda s, t, y, fs, ft, **_: F.cross_entropy(s, y) + 3000.0 * sp_repdistiller(
            fs["stage2"], ft["stage2"]), **_SGD),
    "PKT (30000, pooled) + CE": dict(
        loss={"ce": 1.0, "pkt": {"weight": 30000.0, **ON_STAGE2}}, teacher_width=12,
        peer_loss=lambda s, t, y, fs, ft, **_: F.cross_entropy(s, y) + 30000.0 * pkt_repdistiller(
            pooled(fs["stage2"]), pooled(ft["stage2"])), **_SGD),
    "RKD (distance 25, angle 50, pooled) + CE": dict(
        loss={"ce": 1.0, "rkd": {"weight": 1.0, **ON_STAGE2}}, teacher_width=12,
        peer_loss=lambda s, t, y, fs, ft, **_: F.cross_entropy(s, y) + rkd_repdistiller(
            pooled(fs["stage2"]), pooled(ft["stage2"])), **_SGD),
    "FitNets hint (100, matching shapes: no regressor) + KD": dict(
        loss={"ce": 0.1, "kd": {"weight": 0.9, "temperature": 4.0}, "fitnet": {"weight": 100.0, **ON_STAGE2}},
        teacher_width=8,
        peer_loss=lambda s, t, y, fs, ft, **_: hinton_kd(s, t, y, T=4.0, alpha=0.9) + 100.0 * F.mse_loss(
            fs["stage2"], ft["stage2"]), **_SGD),
    "FitNets hint (100) through a trained 1x1 conv + BN regressor (8 -> 12 channels) + CE": dict(
        loss={"ce": 1.0, "fitnet": {"weight": 100.0, **ON_STAGE2}}, teacher_width=12,
        regressor=lambda: nn.Sequential(nn.Conv2d(8, 12, 1, bias=False), nn.BatchNorm2d(12)),
        peer_loss=lambda s, t, y, fs, ft, regressor, **_: F.cross_entropy(s, y) + 100.0 * F.mse_loss(
            regressor(fs["stage2"]), ft["stage2"]), **_SGD),
}


def tapped(model: nn.Module, stages: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Forward hooks that keep each named stage's latest output."""
    out: dict[str, torch.Tensor] = {}
    for name in stages:
        getattr(model, name).register_forward_hook(lambda module, args, result, name=name: out.__setitem__(name, result))
    return out


def peer_loop(student: nn.Module, teacher: nn.Module, x, y, case: dict, regressor: nn.Module | None = None
              ) -> nn.Module:
    """The loop a user writes by hand; a regressor trains with the student in one optimizer (as mdistiller's
    ``get_learnable_parameters``: student + connector, same learning rate and weight decay)."""
    stages = ("stage1", "stage2") if hasattr(student, "stage1") else ()
    fs, ft = tapped(student, stages), tapped(teacher, stages)
    teacher.eval()
    with torch.no_grad():
        t = teacher(x)
    trained = [*student.parameters(), *(regressor.parameters() if regressor is not None else ())]
    opt = case["peer_optimizer"](trained)
    sched = case["peer_schedule"](opt) if case["peer_schedule"] else None
    student.train()
    for step in range(STEPS):
        loss = case["peer_loss"](student(x), t, y, fs=fs, ft=ft, step=step, regressor=regressor)
        opt.zero_grad()
        loss.backward()
        if case.get("grad_clip"):
            torch.nn.utils.clip_grad_norm_(trained, case["grad_clip"])
        opt.step()
        if sched is not None:
            sched.step()
    return student


def start_regressor_as(monkeypatch, start: nn.Module) -> None:
    """The engine builds FitNets' regressor from the first batch's shapes with its own random draw; like the
    student, it starts here from the peer's weights (a copy of ``start``), after checking the engine would build
    the same layers. Only the starting weights are shared: how it trains is the engine's own."""
    import curridistill.knowledge.fitnet as fitnet
    engine_build = fitnet.make_adapter

    def build(student_shape, teacher_shape):
        assert repr(engine_build(student_shape, teacher_shape)) == repr(start)
        return copy.deepcopy(start)
    monkeypatch.setattr(fitnet, "make_adapter", build)


@pytest.mark.parametrize("name", [*CASES, *FEATURE_CASES])
def test_training_equals_the_peer_loop(tmp_path, monkeypatch, name):
    case = CASES.get(name) or FEATURE_CASES[name]
    (x, y), val, test = _data(0, N), _data(1, 20), _data(2, 20)
    if name in CASES:
        student, teacher = _student(), _teacher()
    else:
        student, teacher = _conv(1, 8), _conv(2, case["teacher_width"])
    regressor = None
    if "regressor" in case:
        torch.manual_seed(3)
        regressor = case["regressor"]()
        start_regressor_as(monkeypatch, regressor)
    expected = peer_loop(copy.deepcopy(student), copy.deepcopy(teacher), x, y, case, copy.deepcopy(regressor))

    lesson = {"epochs": STEPS, "loss": case["loss"], "optimizer": case["optimizer"], "lr_schedule": case["schedule"],
              "grad_clip": case.get("grad_clip")}
    result = distill(student, teacher=teacher, teacher_trained=True, train=(x, y), val=val, test=test,
                     course=[lesson], out=tmp_path / "run",
                     data={"batch_size": N, "normalize": False}, baseline={"enabled": False},
                     run={"seed": 0, "selection": "last", "tensorboard": False, "cache_dir": str(tmp_path / "cache"),
                          "eval": {"latency_runs": 1, "throughput_runs": 1, "throughput_batch": 4}})
    got = result.student.state_dict()
    for key, want in expected.state_dict().items():
        assert torch.allclose(got[key].float(), want.float(), rtol=1e-4, atol=1e-5), key
    first = next(iter(student.state_dict()))
    assert not torch.equal(expected.state_dict()[first], student.state_dict()[first])  # it trained
