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

DIST (Huang et al. 2022) is written from the official code (hunto/DIST_KD; on near-uniform rows with the engine's
documented Pearson denominator, whose departure a test of its own measures), and two teachers from the README's
default aggregation (the mean of their logits). CTKD (Li et al. 2023), whose temperature trains beside the student
through a gradient-reversal layer, is written from the official code (zhengli97/CTKD: ``Global_T``, ``CosineDecay``
read at the 1-based epoch, the temperature in the student's SGD optimizer) with one whole-batch step per epoch, so
the reversal weight changes between steps; the learned temperature (or temperature module, with its batch-norm
statistics) is compared at the end as well, from the engine's last checkpoint. The official repository has no
instance-wise module, so that case's loop is written from the engine's documented module (``knowledge/ctkd.py``:
the paper's min-max on detached logits) and checks the plumbing around it: the optimizer, the ramp, the batch-norm
statistics and the checkpoint.
"""
from __future__ import annotations

import copy
import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from curridistill.api import distill
from curridistill.models.registry import build_model

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


def _confident_teacher() -> nn.Module:
    """The teacher with its head scaled by 30: logits of std ~3, as a trained model's, not a fresh one's ~0.1. On a
    fresh teacher's near-uniform softened outputs DIST's Pearson works near its eps and CTKD's temperature moves by
    ~1e-5; here both have something to measure."""
    teacher = _teacher()
    with torch.no_grad():
        teacher[-1].weight.mul_(30.0)
        teacher[-1].bias.mul_(30.0)
    return teacher


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


# DIST as in the official code (hunto/DIST_KD, classification losses): Pearson = cosine of the centred rows
def pearson_official(a, b, eps=1e-8, floor=False):
    """``floor``: the engine's documented denominator ``max(|a||b|, eps)`` in place of the official ``|a||b| + eps``."""
    a, b = a - a.mean(1).unsqueeze(1), b - b.mean(1).unsqueeze(1)
    norms = a.norm(dim=1) * b.norm(dim=1)
    return (a * b).sum(1) / (norms.clamp_min(eps) if floor else norms + eps)


def dist_official(z_s, z_t, beta: float, gamma: float, tau: float, floor=False):
    y_s, y_t = (z_s / tau).softmax(dim=1), (z_t / tau).softmax(dim=1)
    inter = 1 - pearson_official(y_s, y_t, floor=floor).mean()  # rows: each sample's classes
    intra = 1 - pearson_official(y_s.transpose(0, 1), y_t.transpose(0, 1), floor=floor).mean()  # columns: classes
    return beta * tau**2 * inter + gamma * tau**2 * intra


# CTKD as in the official code (zhengli97/CTKD: models/temp_global.py, train_student.py, helper/loops.py)
class GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lambda_):
        ctx.lambda_ = lambda_
        return x.clone()

    @staticmethod
    def backward(ctx, grads):
        return grads.new_tensor(ctx.lambda_) * grads, None


class CosineDecay:
    """train_student.py's schedule of the reversal weight, read at the 1-based epoch."""

    def __init__(self, max_value: float, min_value: float, num_loops: float):
        self.max_value, self.min_value, self.num_loops = max_value, min_value, num_loops

    def get_value(self, i: float) -> float:
        i = min(max(i, 0), self.num_loops)
        value = (math.cos(i * math.pi / self.num_loops) + 1.0) * 0.5
        return value * (self.max_value - self.min_value) + self.min_value


class GlobalT(nn.Module):
    """``Global_T``: one temperature parameter, initialised to 1, seen through the reversal layer."""

    def __init__(self):
        super().__init__()
        self.global_T = nn.Parameter(torch.ones(1))

    def forward(self, logit_t, logit_s, lambda_):
        return GradientReversal.apply(self.global_T, lambda_)  # (1,)


def temperature_mlp(classes: int) -> nn.Sequential:
    """The instance-wise module as curridistill documents it (the mdistiller-based CTKD's ``Mlp_T`` without its
    final ReLU): (B, 2C) [teacher, student] logits -> (B, 1) raw temperature."""
    return nn.Sequential(nn.BatchNorm1d(2 * classes), nn.Linear(2 * classes, classes), nn.LeakyReLU(0.2),
                         nn.BatchNorm1d(classes), nn.Linear(classes, 1))


class InstanceT(nn.Module):
    """One temperature per sample from the detached logits, through the reversal layer."""

    def __init__(self, net: nn.Sequential):
        super().__init__()
        self.net = net

    def forward(self, logit_t, logit_s, lambda_):
        return GradientReversal.apply(self.net(torch.cat([logit_t, logit_s], dim=1).detach()), lambda_)  # (B, 1)


def distill_kl(y_s, y_t, temp):
    """CTKD's ``DistillKL``: batch-mean KL at temperature ``temp``, times temp^2; a per-sample (B, 1) temperature
    scales each sample's KL by its own tau_i^2 (the instance loss curridistill documents)."""
    log_p_s, p_t = F.log_softmax(y_s / temp, dim=1), F.softmax(y_t / temp, dim=1)
    if temp.numel() == 1:
        return F.kl_div(log_p_s, p_t, reduction="batchmean") * temp * temp
    kl = F.kl_div(log_p_s, p_t, reduction="none").sum(1)  # (B,)
    return (temp.squeeze(1) ** 2 * kl).mean()


def ctkd(s, t, y, step, aux, ramp: float, gamma: float = 0.1, alpha: float = 0.9, t_start: float = 1.0,
         t_end: float = 20.0):
    """helper/loops.py's train_distill for ``--distill kd --have_mlp 1``; one step per epoch: epoch = step + 1."""
    cos_value = CosineDecay(max_value=0, min_value=-1, num_loops=ramp).get_value(step + 1)
    temp = t_start + t_end * torch.sigmoid(aux(t, s, cos_value))
    return gamma * F.cross_entropy(s, y) + alpha * distill_kl(s, t, temp)


# The teacher read online, not from the teacher-output cache, whose float16 logits (documented) move a confident
# teacher's logits by up to 2e-3: for CTKD's temperature module that is up to 2e-4 in the weights, above the
# float rounding the cases below compare at
ONLINE_TEACHER = {"teacher_cache": False}

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
    "DIST with its defaults (tau 4, beta = gamma = 1, weight 2) + CE, SGD": dict(
        loss={"ce": 1.0, "dist": {}}, teacher=_confident_teacher, run=ONLINE_TEACHER,
        optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
        schedule={"kind": "constant"},
        # the paper's CIFAR-100 setting: beta = gamma = 2, tau = 4, as the engine's weight 2 x (beta = gamma = 1)
        peer_loss=lambda s, t, y, **_: F.cross_entropy(s, y) + dist_official(s, t, beta=2.0, gamma=2.0, tau=4.0),
        peer_optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4),
        peer_schedule=None),
    # a fresh teacher's rows at tau 4 are near-uniform, |x||y| ~ 1e-4: there the documented denominator differs from the
    # official one by up to 9e-5 relative (1.5e-4 in the weights after 6 steps; test_dist_denominator_... below)
    "DIST on near-uniform rows (a fresh teacher), the documented denominator, + CE, SGD": dict(
        loss={"ce": 1.0, "dist": {}}, run=ONLINE_TEACHER,
        optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
        schedule={"kind": "constant"},
        peer_loss=lambda s, t, y, **_: F.cross_entropy(s, y) + dist_official(s, t, beta=2.0, gamma=2.0, tau=4.0,
                                                                             floor=True),
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
        peer_loss=lambda s, t, y, fs, ft, aux, **_: F.cross_entropy(s, y) + 100.0 * F.mse_loss(
            aux(fs["stage2"]), ft["stage2"]), **_SGD),
}


def tapped(model: nn.Module, stages: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Forward hooks that keep each named stage's latest output."""
    out: dict[str, torch.Tensor] = {}
    for name in stages:
        getattr(model, name).register_forward_hook(lambda module, args, result, name=name: out.__setitem__(name, result))
    return out


def peer_loop(student: nn.Module, teacher: nn.Module, x, y, case: dict, aux: nn.Module | None = None
              ) -> nn.Module:
    """The loop a user writes by hand; ``aux`` (FitNets' regressor, CTKD's temperature) trains with the student in
    one optimizer (as mdistiller's ``get_learnable_parameters``: student + connector, and CTKD's ``trainable_list``:
    student + temperature; same learning rate, momentum and weight decay)."""
    stages = ("stage1", "stage2") if hasattr(student, "stage1") else ()
    fs, ft = tapped(student, stages), tapped(teacher, stages)
    teacher.eval()
    with torch.no_grad():
        t = teacher(x)
    trained = [*student.parameters(), *(aux.parameters() if aux is not None else ())]
    opt = case["peer_optimizer"](trained)
    sched = case["peer_schedule"](opt) if case["peer_schedule"] else None
    student.train()
    if aux is not None:
        aux.train()
    for step in range(STEPS):
        loss = case["peer_loss"](student(x), t, y, fs=fs, ft=ft, step=step, aux=aux)
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


def start_temperature_net_as(monkeypatch, start: nn.Sequential) -> None:
    """CTKD's instance module is built by the engine on its probe batch with its own random draw; it starts here
    from the peer's weights instead (``start``'s), after checking the engine builds the same layers in the same
    order (the documented module). Only the starting weights are shared: how it trains is the engine's own."""
    import curridistill.knowledge.ctkd as ctkd

    class StartedAsThePeer(ctkd.TemperatureMLP):
        def __init__(self, classes: int):
            super().__init__(classes)
            assert [repr(m) for m in self] == [repr(m) for m in start]
            self.load_state_dict(start.state_dict())
    monkeypatch.setattr(ctkd, "TemperatureMLP", StartedAsThePeer)


class LastCheckpoint:
    """A ``distill`` callback keeping the knowledge terms' state from the engine's latest checkpoint (the phase's
    state.pt, written just before ``on_epoch_saved``; removed when the phase finishes)."""

    def __init__(self, phase_dir):
        self.phase_dir, self.terms = phase_dir, None

    def on_epoch_saved(self) -> None:
        self.terms = torch.load(self.phase_dir / "state.pt", weights_only=True)["lesson_state"]["terms"]


def engine_student(tmp_path, student: nn.Module, case: dict, callbacks=(), **teachers) -> nn.Module:
    """``distill`` on the peer's data with whole-batch steps: the student after the last epoch."""
    (x, y), val, test = _data(0, N), _data(1, 20), _data(2, 20)
    lesson = {"epochs": STEPS, "loss": case["loss"], "optimizer": case["optimizer"], "lr_schedule": case["schedule"],
              "grad_clip": case.get("grad_clip")}
    result = distill(student, train=(x, y), val=val, test=test, course=[lesson], out=tmp_path / "run",
                     callbacks=callbacks, data={"batch_size": N, "normalize": False}, baseline={"enabled": False},
                     run={"seed": 0, "selection": "last", "tensorboard": False, "cache_dir": str(tmp_path / "cache"),
                          "eval": {"latency_runs": 1, "throughput_runs": 1, "throughput_batch": 4},
                          **case.get("run", {})},
                     **teachers)
    return result.student


def assert_same(got: dict, want: dict, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    for key, value in want.items():
        assert torch.allclose(got[key].float(), value.float(), rtol=rtol, atol=atol), (
            key, (got[key].float() - value.float()).abs().max().item())


def test_dist_denominator_keeps_identical_rows_at_rho_one_where_the_official_does_not():
    """Why the engine departs from hunto/DIST_KD (documented in knowledge/dist.py): for identical rows the official
    ``|x||y| + eps`` leaves ``1 - rho = eps / (|x|^2 + eps)``, a loss that is not 0 on near-uniform softened rows."""
    from curridistill.knowledge.dist import pearson

    rows = (torch.randn(4, 10, generator=torch.Generator().manual_seed(0)) * 0.1 / 4).softmax(dim=1)
    centred_sq = (rows - rows.mean(1, keepdim=True)).pow(2).sum(1)  # |x|^2, ~1e-5 here
    torch.testing.assert_close(pearson(rows, rows), torch.ones(4), rtol=0, atol=2.5e-7)  # float32 rounding
    assert torch.equal(pearson(rows, rows), pearson_official(rows, rows, floor=True))
    torch.testing.assert_close(1 - pearson_official(rows, rows), 1e-8 / (centred_sq + 1e-8), rtol=1e-3, atol=1e-7)
    assert float((1 - pearson_official(rows, rows)).min()) > 1e-4  # the official form's floor: 1000x the rounding


@pytest.mark.parametrize("name", [*CASES, *FEATURE_CASES])
def test_training_equals_the_peer_loop(tmp_path, monkeypatch, name):
    case = CASES.get(name) or FEATURE_CASES[name]
    x, y = _data(0, N)
    if name in CASES:
        student, teacher = _student(), case.get("teacher", _teacher)()
    else:
        student, teacher = _conv(1, 8), _conv(2, case["teacher_width"])
    regressor = None
    if "regressor" in case:
        torch.manual_seed(3)
        regressor = case["regressor"]()
        start_regressor_as(monkeypatch, regressor)
    expected = peer_loop(copy.deepcopy(student), copy.deepcopy(teacher), x, y, case, copy.deepcopy(regressor))
    got = engine_student(tmp_path, student, case, teacher=teacher, teacher_trained=True)
    assert_same(got.state_dict(), expected.state_dict())
    first = next(iter(student.state_dict()))
    assert not torch.equal(expected.state_dict()[first], student.state_dict()[first])  # it trained


RAMP = 5  # GRL weight per epoch (1-based): -0.095, -0.345, -0.655, -0.905, then -1 (clamped) in epochs 5 and 6
CTKD_CASES = {
    "CTKD, one global temperature, GRL ramp over 5 of 6 epochs, + CE, SGD with weight decay": dict(
        loss={"ce": 0.1, "ctkd": {"weight": 0.9, "ramp_epochs": RAMP}}, run=ONLINE_TEACHER,
        temperature=lambda: GlobalT(), engine_names={"global_T": "ctkd.theta"},
        peer_loss=lambda s, t, y, step, aux, **_: ctkd(s, t, y, step, aux, ramp=RAMP), **_SGD),
    "CTKD, a temperature per sample from the documented module (BN statistics too), + CE, SGD": dict(
        loss={"ce": 0.1, "ctkd": {"weight": 0.9, "mode": "instance", "ramp_epochs": RAMP}}, run=ONLINE_TEACHER,
        temperature=lambda: InstanceT(temperature_mlp(10)), engine_names={"net.": "ctkd.temperature_net."},
        peer_loss=lambda s, t, y, step, aux, **_: ctkd(s, t, y, step, aux, ramp=RAMP), **_SGD),
}


@pytest.mark.parametrize("name", CTKD_CASES)
def test_ctkd_equals_the_peer_loop(tmp_path, monkeypatch, name):
    """The student, and the temperature learned beside it (the parameter, or the module with its batch-norm
    statistics), after 6 epochs of one step each: the GRL weight differs from step to step."""
    case = CTKD_CASES[name]
    x, y = _data(0, N)
    student, teacher = _student(), _confident_teacher()
    torch.manual_seed(3)
    temperature = case["temperature"]()
    if isinstance(temperature, InstanceT):
        start_temperature_net_as(monkeypatch, temperature.net)
    learned = copy.deepcopy(temperature)
    expected = peer_loop(copy.deepcopy(student), copy.deepcopy(teacher), x, y, case, learned)

    saved = LastCheckpoint(tmp_path / "run" / "student")
    got = engine_student(tmp_path, student, case, callbacks=[saved], teacher=teacher, teacher_trained=True)
    assert_same(got.state_dict(), expected.state_dict())
    ((old, new),) = case["engine_names"].items()
    want = {k.replace(old, new, 1): v for k, v in learned.state_dict().items()}
    assert sorted(want) == sorted(saved.terms)  # every parameter and statistic of the term is compared
    assert_same(saved.terms, want, rtol=1e-5, atol=1e-6)
    first = next(iter(temperature.state_dict()))  # global_T, or the first batch norm's weight
    assert not torch.equal(learned.state_dict()[first], temperature.state_dict()[first])  # it trained


class MeanOfLogits(nn.Module):
    """The loop's ensemble teacher: the plain mean of the teachers' logits, as the README's default
    ``run.teacher_aggregation: mean`` is documented (knowledge/aggregate.py: Hinton et al.'s ensemble, in logit
    space)."""

    def __init__(self, *teachers: nn.Module):
        super().__init__()
        self.teachers = nn.ModuleList(teachers)

    def forward(self, x):
        return torch.stack([t(x) for t in self.teachers]).mean(dim=0)


TWO_TEACHERS = [("cnn", {"widths": [4, 8]}), ("mlp", {"hidden": [32], "dropout": 0.5})]  # batch norm; dropout
TWO_TEACHER_CASE = dict(loss={"ce": 0.1, "kd": {"weight": 0.9, "temperature": 4.0}}, run=ONLINE_TEACHER,
                        peer_loss=lambda s, t, y, **_: hinton_kd(s, t, y, T=4.0, alpha=0.9), **_SGD)


def zoo_teacher(tmp_path, k: int, name: str, kwargs: dict) -> tuple[nn.Module, dict]:
    """A fresh zoo model with a confident head (x 10: logits of std 1-2), saved as bare weights: the engine rebuilds
    it by name (``teachers[k]``) and loads them, the loop uses the module itself."""
    torch.manual_seed(10 + k)
    model = build_model(name, 10, 1, kwargs)
    with torch.no_grad():
        model.fc.weight.mul_(10.0)
        model.fc.bias.mul_(10.0)
    path = tmp_path / f"teacher{k}.safetensors"
    save_file(model.state_dict(), str(path))
    return model, {"name": name, "kwargs": kwargs, "checkpoint": str(path)}


def test_two_teachers_equal_the_loop_on_their_mean_logits(tmp_path):
    """``distill(teachers=[...])`` (config sections: several teachers are given by name) with Hinton KD."""
    x, y = _data(0, N)
    built = [zoo_teacher(tmp_path, k, name, kwargs) for k, (name, kwargs) in enumerate(TWO_TEACHERS)]
    student = _student()
    ensemble = MeanOfLogits(*(copy.deepcopy(model) for model, _ in built))
    expected = peer_loop(copy.deepcopy(student), ensemble, x, y, TWO_TEACHER_CASE)
    got = engine_student(tmp_path, student, TWO_TEACHER_CASE, teachers=[spec for _, spec in built])
    assert_same(got.state_dict(), expected.state_dict())
