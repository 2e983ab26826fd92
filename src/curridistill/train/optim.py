"""Optimizers and LR schedules from a lesson's config."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from curridistill.config import LessonConfig, OptimizerConfig, PlateauConfig
from curridistill.schedules import build_schedule


def build_optimizer(params: Iterable[nn.Parameter] | list[dict], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    params = list(params)
    if params and isinstance(params[0], dict):  # groups (transfer: body / head) keep frozen parameters, so
        params = [g for g in params if g["params"]]  # unfreezing them later trains them; grad None is skipped
    else:
        params = [p for p in params if p.requires_grad]
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.name == "adagrad":
        return torch.optim.Adagrad(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # lbfgs has no weight decay of its own; the runner adds an L2 term to the closure's loss
    return torch.optim.LBFGS(params, lr=cfg.lr, history_size=cfg.history_size, max_iter=cfg.max_iter)


class LRControl:
    """Either a per-step multiplier schedule of progress (LambdaLR) or plateau on a validation metric."""

    def __init__(self, optimizer: torch.optim.Optimizer, lesson: LessonConfig, total_steps: int):
        self.plateau = isinstance(lesson.lr_schedule, PlateauConfig)
        if self.plateau:
            c: PlateauConfig = lesson.lr_schedule
            self.metric = c.metric
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode=c.mode, factor=c.factor, patience=c.patience, min_lr=c.min_lr, cooldown=c.cooldown)
        else:
            fn = build_schedule(lesson.lr_schedule, lesson.epochs, where="lr_schedule")
            total = max(total_steps, 1)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: fn(step / total))

    def after_step(self) -> None:
        if not self.plateau:
            self.scheduler.step()

    def after_epoch(self, metrics: dict[str, float]) -> None:
        if self.plateau:
            self.scheduler.step(metrics[self.metric])

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])
