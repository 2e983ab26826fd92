"""Prediction metrics from logits: accuracy, top-5, per-class P/R/F1, confusion, loss, and
student-vs-teacher agreement, KL, entropy and mutual information between predicted labels.

Conventions are scikit-learn's: ``f1_macro`` averages over the classes that occur in the labels or the
predictions (a class predicted but never true counts, with F1 0), ``f1_weighted`` weighs by true support;
a tie in the logits goes to the lower class index for top-1 and top-5 alike."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from curridistill.models.placement import bf16_autocast


@torch.inference_mode()
def predict_logits(model: nn.Module, pipeline, split: str = "test", amp: bool = False) -> Tensor:
    """Logits (N, C) of a whole split, on CPU, in float32. The batches' logits stay on the model's device
    until the end: one copy to the host per split, not one wait for the device per batch."""
    model.eval()
    outs = []
    for x, _ in pipeline.eval_batches(split):
        with bf16_autocast(x.device, amp):
            outs.append(model(x).float())
    return torch.cat(outs).cpu()


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """(C, C) counts: rows are true classes, columns predicted classes."""
    return torch.bincount(target * num_classes + pred, minlength=num_classes**2).view(num_classes, num_classes)


def class_rank(logits: Tensor, targets: Tensor) -> Tensor:
    """(B,) 0-based rank of each true class among its row's logits, ties broken toward the lower class index as
    ``argmax`` breaks them, so top-k never counts a sample wrong that top-1 counts right (``topk`` orders ties
    arbitrarily: an all-zero row could give top-1 right and top-5 wrong)."""
    true = logits.gather(1, targets.view(-1, 1))
    lower_index = torch.arange(logits.shape[1], device=logits.device) < targets.view(-1, 1)
    return ((logits > true) | ((logits == true) & lower_index)).sum(1)


def classification_metrics(logits: Tensor, targets: Tensor) -> dict:
    logits, targets = logits.float(), targets.long()
    n, c = logits.shape
    pred = logits.argmax(1)
    conf = confusion_matrix(pred, targets, c).double()
    tp = conf.diag()
    support = conf.sum(1)
    predicted = conf.sum(0)
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp_min(1), torch.zeros_like(tp))
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12),
                     torch.zeros_like(tp))
    seen = (support > 0) | (predicted > 0)  # scikit-learn's macro average: classes in the labels or the predictions
    return {
        "accuracy": float((pred == targets).double().mean()),
        "top5": float((class_rank(logits, targets) < min(5, c)).double().mean()),
        "f1_macro": float(f1[seen].mean()),
        "f1_weighted": float((f1 * support).sum() / support.sum()),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "confusion": conf.long().tolist(),
        "loss": float(F.cross_entropy(logits, targets)),
        "entropy": float(entropy(logits).mean()),
        "samples": n,
    }


def entropy(logits: Tensor) -> Tensor:
    """Per-sample entropy of softmax(logits) in nats, (B,)."""
    logp = F.log_softmax(logits.float(), dim=1)
    return -(logp.exp() * logp).sum(1)


def mutual_information(a: Tensor, b: Tensor, num_classes: int) -> float:
    """I(A; B) in nats between two label vectors, from their empirical joint distribution."""
    joint = confusion_matrix(a.long(), b.long(), num_classes).double()
    joint /= joint.sum()
    pa, pb = joint.sum(1, keepdim=True), joint.sum(0, keepdim=True)
    mask = joint > 0
    return float((joint[mask] * (joint[mask] / (pa @ pb)[mask]).log()).sum())


def pair_metrics(student_logits: Tensor, teacher_logits: Tensor) -> dict:
    """How closely the student follows the teacher on the same inputs."""
    s, t = student_logits.float(), teacher_logits.float()
    ps, pt = s.argmax(1), t.argmax(1)
    kl = (F.softmax(t, 1) * (F.log_softmax(t, 1) - F.log_softmax(s, 1))).sum(1)
    return {
        "agreement": float((ps == pt).double().mean()),
        "kl_teacher_student": float(kl.mean()),
        "teacher_entropy": float(entropy(t).mean()),
        "mutual_information": mutual_information(pt, ps, s.shape[1]),
        "max_mutual_information": math.log(s.shape[1]),
    }
