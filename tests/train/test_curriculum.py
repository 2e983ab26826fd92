"""A lesson's curriculum state (train/curriculum.py, with curriculum/pacing.py and sampler.py): a paced sampler
serves the easiest fraction of the data first, as ranked by the real teacher, and grows to all of it; re-scoring
happens when the scorer calls for it; the state survives a save/load."""
import math

import pytest
import torch

from curridistill.config import CurriculumConfig
from curridistill.train.curriculum import LessonCurriculum
from curridistill.curriculum.sampler import PacedBatches, RandomBatches
from curridistill.errors import UserError
from tests.train.tiny import bank, blobs, lesson_run, mlp

N, BATCH, STEPS, EPOCHS = 64, 8, 8, 4  # 8 steps per epoch, 32 steps in the lesson


def paced(pacing: dict, scorer: str = "teacher_confidence") -> LessonCurriculum:
    return LessonCurriculum(CurriculumConfig(scorer=scorer, pacing=pacing), EPOCHS, where="course.0.curriculum")


def easiest_first(pipeline, teachers) -> torch.Tensor:
    """Training indices by the teacher's probability of the true class, most confident first."""
    x, y = pipeline.batch("train", torch.arange(N))
    with torch.no_grad():
        p = teachers.models[0](x).softmax(1).gather(1, y.view(-1, 1)).squeeze(1)  # (N,)
    return torch.argsort(p, descending=True)


def test_paced_sampler_serves_the_easiest_fraction_first_and_grows_to_all_data():
    pipeline, teachers = blobs(n_train=N), bank()
    cur = paced({"kind": "linear", "start": 0.25, "end_at": 0.5})  # a quarter of the data, all of it at half the lesson
    sampler = cur.make_sampler(N, BATCH, STEPS, seed=0, drop_last=False)
    assert isinstance(sampler, PacedBatches)
    scores = cur.rescore(0, mlp(), pipeline, teachers, sampler)
    assert scores.shape == (N,)
    ranking = easiest_first(pipeline, teachers)
    assert torch.equal(sampler.order, ranking)  # easy first, by the teacher's confidence

    first_quarter = set(ranking[:16].tolist())
    epoch0 = list(sampler.epoch_batches(0))
    assert len(epoch0) == STEPS and all(len(b) == BATCH for b in epoch0)
    assert set(epoch0[0].tolist()) <= first_quarter  # step 0: only the easiest 25 %
    # the available prefix grows with the steps: ceil((0.25 + 0.75 * i / (31 * 0.5)) * 64) samples at step i
    # (31: the lesson's last step)
    for step in range(EPOCHS * STEPS):
        expected = min(N, math.ceil((0.25 + 0.75 * min(1.0, step / 15.5)) * N - 1e-9))
        assert sampler.prefix_size(step) == max(BATCH, expected), step
        assert sampler.fraction(step) == sampler.prefix_size(step) / N
    for k, batch in enumerate(epoch0):
        assert set(batch.tolist()) <= set(ranking[:sampler.prefix_size(k)].tolist())
    assert sampler.fraction(16) == 1.0  # all data from half the lesson on
    late = torch.cat([torch.cat(list(sampler.epoch_batches(e))) for e in (2, 3)])
    assert set(late.tolist()) & set(ranking[48:].tolist())  # the hardest quarter is served in the end


def test_a_paced_lesson_logs_its_data_fraction_growing_to_one():
    records = []
    curriculum = {"scorer": "teacher_confidence", "pacing": {"kind": "linear", "start": 0.25, "end_at": 0.5}}
    run = lesson_run({"epochs": EPOCHS, "loss": {"ce": 1.0}, "curriculum": curriculum,
                      "optimizer": {"name": "sgd", "lr": 0.1}}, pipeline=blobs(n_train=N, batch_size=BATCH),
                     log=records.append)
    run.run()
    fractions = [r["data_fraction"] for r in records]
    # at the first step of epoch e: 0.25 + 0.75 * min(1, 8e / 15.5), as a whole number of samples of 64
    assert fractions == [pytest.approx(f) for f in (0.25, 41 / 64, 1.0, 1.0)]
    assert isinstance(run.sampler, PacedBatches) and run.curriculum.last_scored_epoch == 0


def test_teacher_scores_once_student_scores_every_rescore_every_epochs():
    pipeline, teachers, student = blobs(n_train=N), bank(), mlp()
    fixed = paced("linear")
    sampler = fixed.make_sampler(N, BATCH, STEPS, seed=0, drop_last=False)
    assert fixed.needs_rescore(0)
    fixed.rescore(0, student, pipeline, teachers, sampler)
    assert [fixed.needs_rescore(e) for e in (1, 2, 3)] == [False, False, False]  # the teacher does not change

    cfg = CurriculumConfig(scorer="student_loss", pacing="linear", rescore_every=2)
    moving = LessonCurriculum(cfg, EPOCHS, where="c")
    sampler = moving.make_sampler(N, BATCH, STEPS, seed=0, drop_last=False)
    student.train()
    scores = moving.rescore(0, student, pipeline, None, sampler)  # no teacher needed
    assert student.training  # scoring put the student in eval mode and back
    x, y = pipeline.batch("train", torch.arange(N))
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(student(x), y, reduction="none")
    assert torch.allclose(scores, expected.double(), atol=1e-5)
    assert [moving.needs_rescore(e) for e in (1, 2, 3, 4)] == [False, True, False, True]


def test_teacher_scorer_without_a_teacher_is_a_user_error():
    cur = paced("linear")
    sampler = cur.make_sampler(N, BATCH, STEPS, seed=0, drop_last=False)
    with pytest.raises(UserError, match="'teacher_confidence' needs a teacher"):
        cur.rescore(0, mlp(), blobs(n_train=N), None, sampler)


def test_self_paced_only_keeps_random_batches_and_gives_weights():
    cur = LessonCurriculum(CurriculumConfig(scorer="random", self_paced={"weighting": "linear", "threshold": 2.0}),
                           EPOCHS, where="c")
    assert not cur.paced and isinstance(cur.make_sampler(N, BATCH, STEPS, seed=0, drop_last=False), RandomBatches)
    losses = torch.tensor([0.0, 1.0, 2.0, 3.0], requires_grad=True)
    w = cur.sample_weights(losses, cur.self_paced_level(0.0))
    assert torch.allclose(w, torch.tensor([1.0, 0.5, 0.0, 0.0])) and not w.requires_grad  # max(0, 1 - l / 2)
    # a captured step hands the level in as a 0-d device tensor: the same weights
    assert torch.equal(cur.sample_weights(losses, torch.tensor(cur.self_paced_level(0.0))), w)
    assert paced("linear").self_paced_level(0.0) is None and paced("linear").sample_weights(losses, None) is None


def test_state_round_trip_resumes_the_same_order_and_scoring():
    pipeline, teachers = blobs(n_train=N), bank()
    cur = paced({"kind": "root", "start": 0.2})
    sampler = cur.make_sampler(N, BATCH, STEPS, seed=3, drop_last=False)
    cur.rescore(0, mlp(), pipeline, teachers, sampler)
    saved_cur, saved_sampler = cur.state_dict(), sampler.state_dict()

    fresh = paced({"kind": "root", "start": 0.2})
    fresh_sampler = fresh.make_sampler(N, BATCH, STEPS, seed=3, drop_last=False)
    assert fresh.needs_rescore(1)  # never scored
    fresh.load_state_dict(saved_cur)
    fresh_sampler.load_state_dict(saved_sampler)
    assert not fresh.needs_rescore(1) and fresh.last_scored_epoch == 0
    for e in (1, 2):
        for a, b in zip(sampler.epoch_batches(e), fresh_sampler.epoch_batches(e)):
            assert torch.equal(a, b)
    # a state saved before any scoring resumes as "never scored"
    blank = paced("linear")
    blank.load_state_dict(paced("linear").state_dict())
    assert blank.last_scored_epoch is None and blank.needs_rescore(5)
