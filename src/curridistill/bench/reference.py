"""The plain-PyTorch reference: knowledge distillation as a user writes it from the PyTorch KD tutorial.

* a ``torch.utils.data.Dataset`` over the uint8 image arrays (N, H, W, C) that augments one sample at
  a time in Python: random crop with zero padding 4, horizontal flip with probability 0.5, normalize
  (torch ops per sample; torchvision is not used, its transforms would do the same work);
* a ``DataLoader`` (shuffle, ``num_workers`` worker processes, pinned memory when training on CUDA);
* the teacher's forward under ``torch.no_grad()`` on every batch;
* the usual loss: ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``;
* SGD with momentum and weight decay.

``ReferenceTrainer.step()`` runs one training step and returns the number of images it consumed, so
``curridistill bench throughput --with-reference`` can interleave it with the other modes;
``measure_reference`` times it on its own (``benchmarks/plain_pytorch_kd.py`` is its command line).
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset


class ArrayImageDataset(Dataset):
    """CIFAR-style uint8 images (N, H, W, C) with per-sample crop + flip + normalize in ``__getitem__``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean, std, padding: int = 4, flip: bool = True):
        self.images, self.labels = images, labels
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.padding, self.flip = padding, flip

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        img = torch.from_numpy(self.images[i]).permute(2, 0, 1).float().div(255.0)  # (C, H, W) in [0, 1]
        _, h, w = img.shape
        p = self.padding
        if p:
            img = F.pad(img, (p, p, p, p))
            top, left = torch.randint(0, 2 * p + 1, (2,)).tolist()
            img = img[:, top:top + h, left:left + w]
        if self.flip and torch.rand(1).item() < 0.5:
            img = img.flip(2)
        img = (img - self.mean) / self.std
        return img, int(self.labels[i])


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float = 4.0,
            alpha: float = 0.9) -> Tensor:
    """Hinton KD as in the PyTorch tutorial: soft-target KL scaled by T^2, plus the hard-label CE."""
    soft_targets = F.softmax(teacher_logits / temperature, dim=-1)
    soft_prob = F.log_softmax(student_logits / temperature, dim=-1)
    soft = torch.sum(soft_targets * (soft_targets.log() - soft_prob)) / soft_prob.size(0) * temperature ** 2
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(student_logits, labels)


class ReferenceTrainer:
    """One DataLoader-fed KD training loop; ``step()`` trains on the next batch."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean, std, teacher: nn.Module, student: nn.Module,
                 device: torch.device, batch_size: int = 64, num_workers: int = 2, temperature: float = 4.0,
                 alpha: float = 0.9, lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 5e-4, seed: int = 0):
        self.device = torch.device(device)
        self.teacher, self.student = teacher.to(self.device).eval(), student.to(self.device).train()
        self.temperature, self.alpha = temperature, alpha
        self.optimizer = torch.optim.SGD(self.student.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        g = torch.Generator().manual_seed(seed)
        dataset = ArrayImageDataset(images, labels, mean, std)
        self.loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=len(dataset) > batch_size,
                                 num_workers=num_workers, pin_memory=self.device.type == "cuda",
                                 persistent_workers=num_workers > 0, generator=g)
        self._it = None

    def _next(self) -> tuple[Tensor, Tensor]:
        if self._it is None:
            self._it = iter(self.loader)
        try:
            return next(self._it)
        except StopIteration:  # next epoch
            self._it = iter(self.loader)
            return next(self._it)

    def step(self) -> int:
        inputs, labels = self._next()
        inputs = inputs.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        student_logits = self.student(inputs)
        loss = kd_loss(student_logits, teacher_logits, labels, self.temperature, self.alpha)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return len(labels)

    def close(self) -> None:
        """Stop the worker processes."""
        it, self._it = self._it, None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        self.loader = None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_reference(images: np.ndarray, labels: np.ndarray, mean, std, teacher: nn.Module, student: nn.Module,
                      device: torch.device | str = "cpu", batch_size: int = 64, steps: int = 30, warmup: int = 5,
                      num_workers: int = 2, **kwargs) -> dict:
    """Images per second of ``steps`` timed steps after ``warmup`` steps (worker start-up is in the warm-up)."""
    device = torch.device(device)
    trainer = ReferenceTrainer(images, labels, mean, std, teacher, student, device, batch_size=batch_size,
                               num_workers=num_workers, **kwargs)
    try:
        for _ in range(warmup):
            trainer.step()
        _sync(device)
        t0 = time.perf_counter()
        seen = sum(trainer.step() for _ in range(steps))
        _sync(device)
        seconds = time.perf_counter() - t0
    finally:
        trainer.close()
    return {"images_per_s": seen / seconds, "seconds": seconds, "images": seen, "steps": steps, "warmup": warmup,
            "batch_size": batch_size, "num_workers": num_workers}


def to_hwc_numpy(x: Tensor) -> np.ndarray:
    """(N, C, H, W) uint8 tensor -> (N, H, W, C) uint8 array, the layout of the CIFAR files."""
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())
