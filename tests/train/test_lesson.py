"""LessonRun (train/lesson.py): one optimizer step on a tiny real batch, and a short lesson through run().

The expected values are computed here from the models themselves (cross-entropy, Hinton KD, the self-paced
threshold), not read back from the runner.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from curridistill.errors import UserError
from curridistill.models.taps import FeatureTaps
from tests.train.tiny import blobs, clock, first_batch, lesson_run, mlp

SGD = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0}


def steps(run, n, progress=0.0, batch=16):
    """``n`` steps of ``run`` on the same batch; returns the losses (floats) and the last step's outputs."""
    x, y, idx = first_batch(run, batch)
    losses, out = [], None
    with FeatureTaps(run.model, run.student_paths, who="student") as taps:
        for i in range(n):
            out = run.step(x, y, idx, clock(progress, step=i), taps)
            losses.append(float(out[0].detach()))
    return losses, out


def params(model):
    return [p.detach().clone() for p in model.parameters()]


def test_loss_decreases_over_a_few_steps_on_one_batch():
    run = lesson_run({"epochs": 1, "loss": {"ce": 0.5, "kd": {"weight": 0.5, "temperature": 4}}, "optimizer": SGD})
    before = params(run.model)
    losses, (loss, parts, logits, sample_weight) = steps(run, 10)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.7 * losses[0], losses
    assert logits.shape == (16, 4) and sample_weight is None  # no curriculum: no sample weights
    assert any(not torch.equal(a, b) for a, b in zip(before, run.model.parameters()))
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in run.model.parameters())


def test_parts_are_reported_per_term_and_the_loss_is_their_weighted_sum():
    run = lesson_run({"epochs": 1, "loss": {"ce": 0.3, "kd": {"weight": 0.7, "temperature": 2}}, "optimizer": SGD})
    x, y, _ = first_batch(run)
    with torch.no_grad():  # the values the step must see: the model before its update
        s = run.model(x)
        t = run.ctx.teachers.models[0](x)
    ce = F.cross_entropy(s, y)
    kd = 4 * (F.softmax(t / 2, 1) * (F.log_softmax(t / 2, 1) - F.log_softmax(s / 2, 1))).sum(1).mean()  # T^2 KL(t || s)
    _, (loss, parts, _, _) = steps(run, 1)
    assert set(parts) == {"ce", "kd"}
    assert float(parts["ce"]) == pytest.approx(float(ce), rel=1e-5)
    assert float(parts["kd"]) == pytest.approx(float(kd), rel=1e-4)
    assert float(loss.detach()) == pytest.approx(0.3 * float(ce) + 0.7 * float(kd), rel=1e-5)


def test_a_zero_weight_term_adds_nothing_but_is_still_reported():
    zero_kd = {"ce": 1.0, "kd": {"weight": 0.0, "temperature": 4}}
    with_zero = lesson_run({"epochs": 1, "loss": zero_kd, "optimizer": SGD}, student=mlp(0))
    ce_only = lesson_run({"epochs": 1, "loss": {"ce": 1.0}, "optimizer": SGD}, student=mlp(0))
    a, (_, parts, _, _) = steps(with_zero, 3)
    b, _ = steps(ce_only, 3)
    assert a == b  # the same losses, step by step
    for p, q in zip(with_zero.model.parameters(), ce_only.model.parameters()):
        assert torch.equal(p, q)  # and the same model
    assert float(parts["kd"]) > 0  # the teacher disagrees: the term is measured, only not weighted in


def test_every_weight_zero_at_a_step_leaves_the_model_unchanged():
    run = lesson_run({"epochs": 1, "loss": {"ce": {"weight": {"kind": "linear", "start": 0, "end": 1}}},
                      "optimizer": SGD}, teacher=False)
    before = params(run.model)
    losses, (_, parts, _, _) = steps(run, 2, progress=0.0)  # weight 0: nothing to learn from
    assert losses == [0.0, 0.0] and float(parts["ce"]) > 0
    assert all(torch.equal(a, b) for a, b in zip(before, run.model.parameters()))
    steps(run, 1, progress=0.5)  # weight 0.5: it learns
    assert any(not torch.equal(a, b) for a, b in zip(before, run.model.parameters()))


def test_self_paced_weights_keep_the_easy_samples_of_the_batch():
    # hard weighting at the batch median: only samples with a loss below it count, with weight 1
    curriculum = {"scorer": "random", "self_paced": {"weighting": "hard", "quantile": True,
                                                     "threshold": {"kind": "linear", "start": 0.5, "end": 1.0}}}
    run = lesson_run({"epochs": 1, "loss": {"ce": 1.0}, "optimizer": SGD, "curriculum": curriculum}, teacher=False)
    x, y, _ = first_batch(run)
    with torch.no_grad():
        per_sample = F.cross_entropy(run.model(x), y, reduction="none")  # (16,)
    keep = (per_sample < torch.quantile(per_sample, 0.5)).float()
    _, (loss, _, _, sample_weight) = steps(run, 1, progress=0.0)
    assert float(sample_weight) == pytest.approx(float(keep.mean())) and 0 < float(sample_weight) < 1
    assert float(loss.detach()) == pytest.approx(float((keep * per_sample).sum() / keep.sum()), rel=1e-5)
    assert float(loss.detach()) < float(per_sample.mean())  # the easy half has the lower loss

    with torch.no_grad():
        per_sample = F.cross_entropy(run.model(x), y, reduction="none")
    _, (loss, _, _, sample_weight) = steps(run, 1, progress=1.0)  # quantile 1: every sample is in
    assert float(sample_weight) == 1.0
    assert float(loss.detach()) == pytest.approx(float(per_sample.mean()), rel=1e-5)


def test_grad_clip_bounds_the_update():
    opt = {"name": "sgd", "lr": 1.0, "momentum": 0.0, "weight_decay": 0.0}
    run = lesson_run({"epochs": 1, "loss": {"ce": 1.0}, "optimizer": opt, "grad_clip": 0.01}, teacher=False)
    before = params(run.model)
    steps(run, 1)
    moved = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(run.model.parameters(), before)))
    assert 0 < float(moved) <= 0.01 + 1e-6  # SGD without momentum: update = lr * clipped gradient


def test_lbfgs_step_adds_its_weight_decay_to_the_loss():
    # LBFGS has no weight decay of its own: the runner adds 0.5 * wd * |theta|^2 to the closure's loss
    opt = {"name": "lbfgs", "lr": 0.5, "weight_decay": 0.01, "max_iter": 1}  # one closure call per step
    run = lesson_run({"epochs": 1, "loss": {"ce": 1.0}, "optimizer": opt}, teacher=False)
    x, y, _ = first_batch(run)
    with torch.no_grad():
        expected = F.cross_entropy(run.model(x), y) + 0.5 * 0.01 * sum((p * p).sum() for p in run.model.parameters())
    losses, _ = steps(run, 4)
    assert losses[0] == pytest.approx(float(expected), rel=1e-5)
    assert losses[-1] < losses[0]


def test_run_trains_the_lesson_and_logs_one_record_per_epoch():
    records = []
    run = lesson_run({"epochs": 3, "loss": {"ce": 0.5, "kd": {"weight": 0.5, "temperature": 4}}, "optimizer": SGD},
                     log=records.append)
    assert run.run() is run
    assert [r["epoch"] for r in records] == [0, 1, 2] and run.epoch == 3
    for r in records:
        assert set(r["losses"]) == {"ce", "kd"} and r["steps"] == run.steps_per_epoch == 4
        assert r["weights"] == {"ce": 0.5, "kd": 0.5} and r["temperature"] == 4.0 and r["data_fraction"] == 1.0
        assert r["train_loss"] == pytest.approx(0.5 * r["losses"]["ce"] + 0.5 * r["losses"]["kd"], rel=1e-5)
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert records[-1]["val_accuracy"] >= 0.75  # four separated blobs (chance: 0.25), despite an untrained teacher
    assert run.best.epoch >= 0 and run.best.value == max(r["val_accuracy"] for r in records)


def test_lesson_refuses_what_it_cannot_train():
    with pytest.raises(UserError, match="batch size 128 is larger than the 64 training samples"):
        lesson_run({"epochs": 1, "loss": {"ce": 1.0}}, pipeline=blobs(batch_size=128), teacher=False)
    with pytest.raises(UserError, match="term 'kd' needs a teacher"):
        lesson_run({"epochs": 1, "loss": {"kd": 1.0}}, teacher=False)
