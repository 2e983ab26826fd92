"""Training through curridistill equals a plain PyTorch loop written from the papers, step for step.

The peer loop is what a user would write by hand (Hinton et al. 2015: ``(1 - a) CE + a T^2 KL(p_t^T || p_s^T)``
with the batch-mean KL; Zhao et al. 2022 for DKD; PyTorch's own optimizers and schedulers) and shares nothing with
the engine but the starting weights and the data. Whole-batch steps make the data order irrelevant, so after N
steps the student's weights must agree with the loop's to float rounding: the loss composition, the temperature
scaling, the teacher's mode, the optimizer settings, the learning rate of every step and the batch-norm statistics
are all checked at once.
"""
from __future__ import annotations

import copy

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


CASES = {
    "Hinton KD, SGD nesterov + weight decay, constant lr": dict(
        loss={"ce": 0.1, "kd": {"weight": 0.9, "temperature": 4.0}},
        optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
        schedule={"kind": "constant"},
        peer_loss=lambda s, t, y: hinton_kd(s, t, y, T=4.0, alpha=0.9),
        peer_optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
        peer_schedule=None),
    "Hinton KD, AdamW, linear decay per step": dict(
        loss={"ce": 0.5, "kd": {"weight": 0.5, "temperature": 2.0}},
        optimizer={"name": "adamw", "lr": 0.01, "weight_decay": 0.01},  # decoupled decay
        schedule={"kind": "linear", "start": 1.0, "end": 0.0},
        peer_loss=lambda s, t, y: hinton_kd(s, t, y, T=2.0, alpha=0.5),
        peer_optimizer=lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.01),
        # PyTorch's LinearLR: factor 1 - k / STEPS at step k, as the schedule at progress step / total steps
        peer_schedule=lambda o: torch.optim.lr_scheduler.LinearLR(o, 1.0, 0.0, total_iters=STEPS)),
    "Hinton KD, SGD, cosine decay per step, gradient norm clipped at 0.5": dict(
        loss={"ce": 0.1, "kd": {"weight": 0.9, "temperature": 4.0}},
        optimizer={"name": "sgd", "lr": 0.2, "momentum": 0.9, "weight_decay": 5e-4},
        schedule={"kind": "cosine", "start": 1.0, "end": 0.0}, grad_clip=0.5,
        peer_loss=lambda s, t, y: hinton_kd(s, t, y, T=4.0, alpha=0.9),
        peer_optimizer=lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.9, weight_decay=5e-4),
        peer_schedule=lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=STEPS)),
    "DKD (alpha 1, beta 8, T 4) + CE, SGD": dict(
        loss={"ce": 1.0, "dkd": {"weight": 1.0, "alpha": 1.0, "beta": 8.0, "temperature": 4.0}},
        optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
        schedule={"kind": "constant"},
        peer_loss=lambda s, t, y: dkd(s, t, y, alpha=1.0, beta=8.0, T=4.0),
        peer_optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4),
        peer_schedule=None),
    "CE alone (the baseline), Adam": dict(
        loss={"ce": 1.0},
        optimizer={"name": "adam", "lr": 0.01, "weight_decay": 5e-4},  # L2 added to the gradient
        schedule={"kind": "constant"},
        peer_loss=lambda s, t, y: F.cross_entropy(s, y),
        peer_optimizer=lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=5e-4),
        peer_schedule=None),
}


def peer_loop(student: nn.Module, teacher: nn.Module, x, y, case: dict) -> nn.Module:
    teacher.eval()
    with torch.no_grad():
        t = teacher(x)
    opt = case["peer_optimizer"](student.parameters())
    sched = case["peer_schedule"](opt) if case["peer_schedule"] else None
    student.train()
    for _ in range(STEPS):
        loss = case["peer_loss"](student(x), t, y)
        opt.zero_grad()
        loss.backward()
        if case.get("grad_clip"):
            torch.nn.utils.clip_grad_norm_(student.parameters(), case["grad_clip"])
        opt.step()
        if sched is not None:
            sched.step()
    return student


@pytest.mark.parametrize("name", list(CASES))
def test_training_equals_the_peer_loop(tmp_path, name):
    case = CASES[name]
    (x, y), val, test = _data(0, N), _data(1, 20), _data(2, 20)
    student, teacher = _student(), _teacher()
    expected = peer_loop(copy.deepcopy(student), copy.deepcopy(teacher), x, y, case)

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
    assert not torch.equal(expected.state_dict()["1.weight"], student.state_dict()["1.weight"])  # it trained
