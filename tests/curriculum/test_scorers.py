"""Difficulty scorers: known values, easy samples ranked first, missing inputs."""
import math

import pytest
import torch
import torch.nn.functional as F

from curridistill.curriculum.ordering import order_by_difficulty
from curridistill.curriculum.scorers import SCORERS, ScoreInputs, score
from curridistill.errors import UserError


def _prototypes():
    """12 samples of 3 classes: 0..5 clean duplicated prototypes (teacher sure and right), 6..11 hard
    (teacher unsure: flat logits or favouring a wrong class)."""
    gen = torch.Generator().manual_seed(0)
    targets = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])
    teacher = torch.empty(12, 3)
    for i in range(6):
        teacher[i] = -4.0
        teacher[i, targets[i]] = 8.0 + 0.01 * i  # easy: the true class by a wide margin
    teacher[6:] = torch.randn(6, 3, generator=gen) * 0.3  # hard: near-uniform
    teacher[9:, 0] += 2.0  # 9..11 lean to class 0 (wrong for 10, 11)
    return targets, teacher


@pytest.mark.parametrize("name", ["teacher_confidence", "teacher_loss", "teacher_entropy"])
def test_easy_prototypes_first(name):
    targets, teacher = _prototypes()
    s = score(name, ScoreInputs(targets, teacher_logits=teacher))
    assert s.shape == (12,) and s.dtype == torch.float64
    easy = set(range(6))
    assert set(order_by_difficulty(s, targets, "easy_first", seed=1)[:6].tolist()) == easy
    assert set(order_by_difficulty(s, targets, "hard_first", seed=1)[-6:].tolist()) == easy
    assert set(order_by_difficulty(s, targets, "class_balanced", seed=1)[:6].tolist()) == easy


def test_known_values():
    targets = torch.tensor([0, 1])
    teacher = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])  # p = (0.75, 0.25) and (0.5, 0.5)
    student = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]])
    inp = ScoreInputs(targets, teacher_logits=teacher, student_logits=student, seed=3)
    assert score("teacher_confidence", inp).tolist() == pytest.approx([0.25, 0.5])
    assert score("teacher_loss", inp).tolist() == pytest.approx([-math.log(0.75), math.log(2)])
    h0 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert score("teacher_entropy", inp).tolist() == pytest.approx([h0, math.log(2)])
    kl0 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    kl1 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert score("teacher_student_kl", inp).tolist() == pytest.approx([kl0, kl1], abs=1e-6)
    assert score("student_loss", inp).tolist() == pytest.approx([math.log(2), -math.log(0.75)])
    assert torch.allclose(score("student_loss", inp), F.cross_entropy(student.double(), targets, reduction="none"))


def test_kl_zero_when_student_matches():
    targets = torch.tensor([0, 1, 2])
    logits = torch.randn(3, 3, generator=torch.Generator().manual_seed(0))
    s = score("teacher_student_kl", ScoreInputs(targets, teacher_logits=logits, student_logits=logits.clone()))
    assert s.abs().max() < 1e-6


def test_random_is_seeded():
    targets = torch.zeros(50, dtype=torch.long)
    a = score("random", ScoreInputs(targets, seed=5))
    assert torch.equal(a, score("random", ScoreInputs(targets, seed=5)))
    assert not torch.equal(a, score("random", ScoreInputs(targets, seed=6)))
    assert a.shape == (50,) and 0 <= a.min() and a.max() < 1


def test_needs_metadata():
    assert SCORERS.get("teacher_confidence").needs_teacher and not SCORERS.get("teacher_confidence").needs_student
    assert SCORERS.get("student_loss").needs_student and not SCORERS.get("student_loss").needs_teacher
    kl = SCORERS.get("teacher_student_kl")
    assert kl.needs_teacher and kl.needs_student
    r = SCORERS.get("random")
    assert not r.needs_teacher and not r.needs_student
    assert all(s.help for _, s in SCORERS.items())


def test_missing_or_bad_inputs():
    targets = torch.tensor([0, 1])
    with pytest.raises(UserError, match="needs the teacher's logits"):
        score("teacher_loss", ScoreInputs(targets))
    with pytest.raises(UserError, match="needs the student's logits"):
        score("teacher_student_kl", ScoreInputs(targets, teacher_logits=torch.zeros(2, 2)))
    with pytest.raises(UserError, match="shape"):
        score("teacher_loss", ScoreInputs(targets, teacher_logits=torch.zeros(3, 2)))
    with pytest.raises(UserError, match="class indices"):
        score("teacher_loss", ScoreInputs(torch.tensor([0, 5]), teacher_logits=torch.zeros(2, 2)))
    with pytest.raises(UserError, match="did you mean"):
        score("teacher_los", ScoreInputs(targets))
