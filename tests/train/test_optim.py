"""Optimizers and LR control (train/optim.py): config settings reach the torch optimizer, and the learning
rate follows the schedule formulas step by step (or the plateau rule epoch by epoch)."""
import math

import pytest
import torch
from torch import nn

from curridistill.config import LessonConfig, OptimizerConfig
from curridistill.models.taps import FeatureTaps
from curridistill.train.optim import LRControl, build_optimizer, current_lr
from tests.train.tiny import clock, first_batch, lesson_run


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


@pytest.mark.parametrize("cfg, cls, expected", [
    ({"name": "sgd", "lr": 0.2, "momentum": 0.8, "nesterov": True, "weight_decay": 1e-3}, torch.optim.SGD,
     {"lr": 0.2, "momentum": 0.8, "nesterov": True, "weight_decay": 1e-3}),
    ({"name": "sgd", "lr": 0.2, "momentum": 0.0, "nesterov": True}, torch.optim.SGD,  # nesterov needs momentum
     {"momentum": 0.0, "nesterov": False}),
    ({"name": "adam", "lr": 1e-3, "betas": [0.8, 0.99], "weight_decay": 0.0}, torch.optim.Adam,
     {"lr": 1e-3, "betas": (0.8, 0.99), "weight_decay": 0.0}),
    ({"name": "adamw", "lr": 3e-4, "betas": [0.9, 0.95], "weight_decay": 0.05}, torch.optim.AdamW,
     {"lr": 3e-4, "betas": (0.9, 0.95), "weight_decay": 0.05}),
    ({"name": "adagrad", "lr": 0.01, "weight_decay": 1e-4}, torch.optim.Adagrad, {"lr": 0.01, "weight_decay": 1e-4}),
    ({"name": "lbfgs", "lr": 0.5, "history_size": 7, "max_iter": 3}, torch.optim.LBFGS,
     {"lr": 0.5, "history_size": 7, "max_iter": 3}),
])
def test_settings_reach_the_torch_optimizer(cfg, cls, expected):
    m = model()
    opt = build_optimizer(m.parameters(), OptimizerConfig(**cfg))
    assert type(opt) is cls
    group = opt.param_groups[0]
    for key, value in expected.items():
        assert group[key] == (pytest.approx(value) if isinstance(value, float) else value), key
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == sum(p.numel() for p in m.parameters())


def test_frozen_parameters_are_left_out_and_empty_groups_dropped():
    m = model()
    m[0].requires_grad_(False)
    opt = build_optimizer(m.parameters(), OptimizerConfig(name="sgd"))
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in m[2].parameters()}
    # groups (transfer learning: body / head at their own rates) keep frozen members, drop empty groups
    groups = [{"params": list(m[0].parameters()), "lr": 0.001}, {"params": []}, {"params": list(m[2].parameters())}]
    opt = build_optimizer(groups, OptimizerConfig(name="adam", lr=0.01))
    assert [g["lr"] for g in opt.param_groups] == [0.001, 0.01]


def lr_sequence(schedule, total: int = 20, base: float = 0.1) -> list[float]:
    """The learning rate before each of ``total`` steps (and after the last) under ``schedule``."""
    lesson = LessonConfig(epochs=1, optimizer={"name": "sgd", "lr": base}, lr_schedule=schedule)
    opt = build_optimizer(model().parameters(), lesson.optimizer)
    control = LRControl(opt, lesson, total)
    lrs = [current_lr(opt)]
    for _ in range(total):
        opt.step()
        control.after_step()
        lrs.append(current_lr(opt))
    return lrs


def cosine(p: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * p))


@pytest.mark.parametrize("schedule, formula", [
    (0.5, lambda p: 0.5),  # a number: a constant multiplier
    ({"kind": "cosine", "end": 0}, cosine),
    ({"kind": "cosine", "end": 0.1}, lambda p: 0.1 + 0.9 * cosine(p)),
    # linear warm-up from 0 over the first 20 % of the steps, then the cosine value at that step
    ({"kind": "cosine", "end": 0, "warmup": 0.2}, lambda p: cosine(p) * (p / 0.2 if p < 0.2 else 1.0)),
    ({"kind": "step", "gamma": 0.5, "step_size": 0.25}, lambda p: 0.5 ** math.floor(p / 0.25 + 1e-9)),
    ({"kind": "multistep", "gamma": 0.1, "milestones": [0.5, 0.75]},
     lambda p: 0.1 ** sum(p >= m for m in (0.5, 0.75))),
    ({"kind": "linear", "start": 1, "end": 0}, lambda p: 1 - p),
])
def test_lr_follows_the_schedule_of_progress_step_by_step(schedule, formula):
    total = 20
    lrs = lr_sequence(schedule, total)
    expected = [0.1 * formula(k / total) for k in range(total + 1)]
    assert lrs == pytest.approx(expected, abs=1e-12)


def test_plateau_lowers_the_lr_after_patience_epochs_without_improvement():
    lesson = LessonConfig(epochs=10, optimizer={"name": "sgd", "lr": 0.1},
                          lr_schedule={"kind": "plateau", "patience": 1, "factor": 0.5, "min_lr": 0.03})
    opt = build_optimizer(model().parameters(), lesson.optimizer)
    control = LRControl(opt, lesson, total_steps=100)
    for _ in range(5):
        control.after_step()  # steps do not move a plateau schedule
    assert current_lr(opt) == 0.1
    seen = []
    for acc in (0.5, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7, 0.7, 0.7):
        control.after_epoch({"val_accuracy": acc, "val_loss": 1.0})
        seen.append(current_lr(opt))
    # improvements at 0.5, 0.6, 0.7; the second epoch in a row without one halves the LR
    # (0.05 * 0.5 is floored at min_lr 0.03, which then stays)
    assert seen == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.03, 0.03, 0.03])


def test_plateau_on_a_loss_watches_for_a_decrease():
    lesson = LessonConfig(epochs=5, optimizer={"name": "sgd", "lr": 0.1},
                          lr_schedule={"kind": "plateau", "metric": "val_loss", "mode": "min", "patience": 0,
                                       "factor": 0.1})
    opt = build_optimizer(model().parameters(), lesson.optimizer)
    control = LRControl(opt, lesson, total_steps=10)
    for loss in (1.0, 0.9, 0.95):
        control.after_epoch({"val_accuracy": 0.0, "val_loss": loss})
    assert current_lr(opt) == pytest.approx(0.01)  # 0.95 is no decrease from 0.9


def test_lr_state_round_trip_continues_the_schedule():
    lesson = LessonConfig(epochs=1, optimizer={"name": "sgd", "lr": 0.1}, lr_schedule={"kind": "cosine", "end": 0})
    opt = build_optimizer(model().parameters(), lesson.optimizer)
    control = LRControl(opt, lesson, 10)
    for _ in range(4):
        opt.step()
        control.after_step()
    state, opt_state = control.state_dict(), opt.state_dict()
    opt2 = build_optimizer(model().parameters(), lesson.optimizer)
    control2 = LRControl(opt2, lesson, 10)
    opt2.load_state_dict(opt_state)
    control2.load_state_dict(state)
    for c, o in ((control, opt), (control2, opt2)):
        o.step()
        c.after_step()
    assert current_lr(opt2) == pytest.approx(current_lr(opt)) == pytest.approx(0.1 * cosine(5 / 10))


def test_a_lesson_step_moves_the_lr_along_its_schedule():
    run = lesson_run({"epochs": 2, "loss": {"ce": 1.0}, "optimizer": {"name": "sgd", "lr": 0.2},
                      "lr_schedule": {"kind": "cosine", "end": 0}}, teacher=False)
    total = run.total_steps
    assert total == 8  # 64 samples, batches of 16, 2 epochs
    x, y, idx = first_batch(run)
    with FeatureTaps(run.model, run.student_paths, who="student") as taps:
        for k in range(3):
            assert current_lr(run.optimizer) == pytest.approx(0.2 * cosine(k / total))
            run.step(x, y, idx, clock(k / total, step=k), taps)
