"""One contract every registered knowledge term meets (new terms are picked up by ``load_all``).

Tiny student and teacher CNNs defined here (stages ``stage1..stage3``, ``pool``, ``fc``; different
widths and, at ``stage2``, different spatial sizes, so adapters are needed), feature taps on both,
teachers run under ``torch.no_grad()`` in eval mode as the runner does, ``build`` on a probe batch
under no_grad, then a training forward and backward.
"""
from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from curridistill.knowledge import Clock, KnowledgeInputs, KnowledgeTerm, load_all
from curridistill.knowledge.aggregate import aggregate_teachers
from curridistill.models.taps import FeatureTaps
from tests.helpers import cuda_marks

NAMES = list(load_all())
# every term with its defaults, and the options that build a different module: "name key=value ..."
VARIANTS = NAMES + ["ctkd mode=instance"]
B, C, SIZE = 6, 5, 8


def block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class TinyCNN(nn.Module):
    """stage1 keeps 8x8; ``strides`` pick stage2/stage3 sizes."""

    def __init__(self, widths: tuple[int, int, int], strides: tuple[int, int, int], num_classes: int = C):
        super().__init__()
        self.stage1 = block(3, widths[0], strides[0])
        self.stage2 = block(widths[0], widths[1], strides[1])
        self.stage3 = block(widths[1], widths[2], strides[2])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[2], num_classes)

    def forward(self, x):
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.fc(self.pool(x).flatten(1))


def student_net() -> TinyCNN:
    return TinyCNN((4, 6, 8), (1, 2, 2))  # 8x8, 4x4, 2x2


def teacher_net(wide: int = 0) -> TinyCNN:
    return TinyCNN((6 + wide, 10 + wide, 12 + wide), (1, 1, 4))  # 8x8, 8x8, 2x2


TRAINING_LABELS = torch.arange(400) % C  # 400 samples: crd's default 16384 negatives are drawn with replacement


def make_setup(name: str, teacher_index: int = 0, device: str = "cpu"):
    """``device``: where models, batch and term live, moved the way the runner moves them (``.to`` before
    and after ``build``)."""
    torch.manual_seed(0)
    name, *options = name.split()
    cls = load_all().get(name)
    term: KnowledgeTerm = cls(cls.Params(**dict(o.split("=") for o in options)), teacher_index=teacher_index)
    term.attach_training_labels(TRAINING_LABELS)  # the batch's indices are 100..105 of this training set
    term.to(device)
    student = student_net().to(device)
    teachers = [teacher_net().to(device), teacher_net(wide=2).to(device)]
    for t in teachers:
        t.eval()
    x = torch.randn(B, 3, SIZE, SIZE, device=device)
    y = (torch.arange(B) % C).to(device)
    paths = term.feature_paths()
    teacher_paths = [paths["teacher"] if i == teacher_index else [] for i in range(len(teachers))]

    def inputs_for(grad: bool) -> KnowledgeInputs:
        each, feats = [], []
        for t, tp in zip(teachers, teacher_paths):
            t.eval()
            with torch.no_grad(), FeatureTaps(t, tp, who="teacher") as taps:
                each.append(t(x))
                feats.append(dict(taps.features))
        with torch.set_grad_enabled(grad), FeatureTaps(student, paths["student"], who="student") as taps:
            logits = student(x)
            sfeats = dict(taps.features)
        return KnowledgeInputs(student_logits=logits, targets=y, teacher_logits=aggregate_teachers(each, y, "mean"),
                               teachers_logits=each, student_features=sfeats, teacher_features=feats,
                               indices=torch.arange(100, 100 + B, device=device), clock=Clock(progress=0.5, epoch=1, epochs=2, step=3))

    student.eval()
    with torch.no_grad():
        term.build(inputs_for(grad=False))
    term.to(device)
    student.train()
    return term, student, teachers, inputs_for


def temperature_of(term: KnowledgeTerm) -> float:
    return term.default_temperature if term.uses_temperature else 1.0


def permuted(inputs: KnowledgeInputs, perm: torch.Tensor) -> KnowledgeInputs:
    return KnowledgeInputs(
        student_logits=inputs.student_logits[perm], targets=inputs.targets[perm],
        teacher_logits=inputs.teacher_logits[perm], teachers_logits=[t[perm] for t in inputs.teachers_logits],
        student_features={k: v[perm] for k, v in inputs.student_features.items()},
        teacher_features=[{k: v[perm] for k, v in f.items()} for f in inputs.teacher_features],
        indices=inputs.indices[perm], clock=inputs.clock)


@pytest.mark.parametrize("name", NAMES)
def test_declares_itself(name):
    cls = load_all().get(name)
    assert issubclass(cls, KnowledgeTerm)
    assert cls.paper and cls.summary, "give the paper and a one-line summary"
    assert cls.Params.model_config.get("extra") == "forbid"
    cls.Params()  # the paper's defaults need no arguments
    assert math.isfinite(cls.default_weight) and math.isfinite(cls.default_temperature)
    paths = cls(cls.Params()).feature_paths()
    assert set(paths) == {"student", "teacher"}


@pytest.mark.parametrize("name", VARIANTS)
def test_forward_backward(name):
    term, student, teachers, inputs_for = make_setup(name)
    term.train()
    inputs = inputs_for(grad=True)
    loss = term(inputs, temperature_of(term))
    assert loss.shape == (B,), f"{name} must return a per-sample loss (B,), got {tuple(loss.shape)}"
    assert torch.isfinite(loss).all()
    mean = loss.mean()
    assert mean.dim() == 0 and torch.isfinite(mean)
    mean.backward()
    student_grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert student_grads, f"{name}: no gradient reached the student"
    assert all(torch.isfinite(g).all() for g in student_grads)
    assert sum(float(g.abs().sum()) for g in student_grads) > 0
    for p in term.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()
    for t in teachers:
        assert all(p.grad is None for p in t.parameters()), f"{name}: a gradient reached a teacher"
        assert not t.training, f"{name} put a teacher in training mode"


@pytest.mark.parametrize("device", ["meta", pytest.param("cuda", marks=cuda_marks())])
@pytest.mark.parametrize("name", VARIANTS)
def test_runs_where_its_inputs_live(name, device):
    """Issue 13's class of bugs, seen without a GPU: on the ``meta`` device (shapes, no data) a tensor a term
    creates on the CPU fails on first use, as it would on CUDA; so do ops whose output size depends on
    the data (boolean-mask indexing) and ``.item()``, which would make the host wait for the GPU every step.
    On a GPU machine the same runs on CUDA, with values: finite losses and gradients there."""
    term, student, teachers, inputs_for = make_setup(name, device=device)
    term.train()
    loss = term(inputs_for(grad=True), temperature_of(term))
    assert loss.shape == (B,) and loss.device.type == device
    loss.mean().backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and all(g.device.type == device for g in grads)
    placed = list(term.parameters()) + list(term.buffers())
    assert all(t.device.type == device for t in placed), f"{name} keeps state off the inputs' device"
    if device != "meta":
        assert torch.isfinite(loss).all() and all(torch.isfinite(g).all() for g in grads)


def _held_tensors(term: KnowledgeTerm) -> dict[str, int]:
    """The storage of every buffer and tensor-valued plain attribute of a term."""
    held = {f"buffer {k}": v.untyped_storage().data_ptr() for k, v in term.named_buffers()}
    held.update({f"attribute {k}": v.untyped_storage().data_ptr() for k, v in vars(term).items() if isinstance(v, torch.Tensor)})
    return held


@pytest.mark.parametrize("name", VARIANTS)
def test_declares_state_it_carries_across_steps(name):
    """A captured CUDA-graph step overwrites its outputs on the next replay, so a term whose forward puts a new
    tensor in its state for the next step (CRD's queue, CTKD's running sum) must say so (``carries_state``) and
    its lessons compile without CUDA graphs. Updates in place (a BatchNorm adapter's running stats) keep their
    own storage and are safe."""
    term, _, _, inputs_for = make_setup(name)
    term.train()
    before = _held_tensors(term)
    term(inputs_for(grad=True), temperature_of(term))
    after = _held_tensors(term)
    replaced = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert bool(replaced) == type(term).carries_state, (
        f"{name}: forward replaced {replaced}, carries_state is {type(term).carries_state}")


class ClockTrap:
    """A clock that fails when read."""

    def __getattr__(self, name):
        raise AssertionError(f"forward read clock.{name} after before_step")


@pytest.mark.parametrize("name", VARIANTS)
def test_forward_leaves_the_clock_to_before_step(name):
    """A compiled step would bake a value read from the clock into its graph and recompile every step: what
    follows the clock is computed in ``before_step`` on the host, and the forward after it never reads it."""
    term, _, _, inputs_for = make_setup(name)
    term.train()
    term.before_step(Clock(progress=0.5, epoch=1, epochs=2, step=3))
    inputs = inputs_for(grad=True)
    inputs.clock = ClockTrap()
    assert term(inputs, temperature_of(term)).shape == (B,)


@pytest.mark.parametrize("name", VARIANTS)
def test_permuting_the_batch_permutes_the_loss(name):
    """Per-sample losses belong to their samples, relational terms included; and mean == batch loss
    whatever the order."""
    term, student, teachers, inputs_for = make_setup(name)
    term.eval()  # no state updates (e.g. CRD's queue) between the two calls
    inputs = inputs_for(grad=False)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    with torch.no_grad():
        loss = term(inputs, temperature_of(term))
        loss_p = term(permuted(inputs, perm), temperature_of(term))
    torch.testing.assert_close(loss_p, loss[perm], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(loss_p.mean(), loss.mean(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", [n for n in NAMES if load_all().get(n).uses_temperature])
def test_learned_temperature_tensor(name):
    """CTKD passes a learned 0-dim tensor: the loss must stay differentiable in it (no ``.item()``)."""
    term, student, teachers, inputs_for = make_setup(name)
    temp = torch.tensor(float(term.default_temperature), requires_grad=True)
    loss = term(inputs_for(grad=True), temp)
    assert loss.shape == (B,)
    loss.mean().backward()
    assert temp.grad is not None and torch.isfinite(temp.grad)


@pytest.mark.parametrize("name", VARIANTS)
def test_state_dict_round_trip(name):
    """What build creates is in the state dict and loads into a freshly built term (checkpoints)."""
    term, student, teachers, inputs_for = make_setup(name)
    term.train()
    term(inputs_for(grad=True), temperature_of(term)).mean().backward()
    state = {k: v.clone() for k, v in term.state_dict().items()}
    fresh, *_ = make_setup(name)
    fresh.load_state_dict(state, strict=True)
    term.eval(), fresh.eval()
    inputs = inputs_for(grad=False)
    with torch.no_grad():
        torch.testing.assert_close(fresh(inputs, temperature_of(term)), term(inputs, temperature_of(term)))


@pytest.mark.parametrize("name", [n for n in NAMES if load_all().get(n)(load_all().get(n).Params()).feature_paths()["teacher"]])
def test_uses_its_own_teacher(name):
    """With ``teacher_index=1`` a feature term reads the second (wider) teacher's features."""
    term, student, teachers, inputs_for = make_setup(name, teacher_index=1)
    inputs = inputs_for(grad=True)
    assert inputs.teacher_features[0] == {}
    loss = term(inputs, temperature_of(term))
    assert loss.shape == (B,) and torch.isfinite(loss).all()


def test_scheduled_teacher_scale_is_set_before_the_step():
    """Annealing-KD's factor from a schedule: before_step writes it, the forward reads only the buffer."""
    from curridistill.knowledge.mse_logits import MSELogits, MSELogitsParams

    term = MSELogits(MSELogitsParams(teacher_scale={"kind": "linear", "start": 0.0, "end": 1.0}))
    s, t = torch.zeros(2, 3), torch.ones(2, 3)
    term.before_step(Clock(progress=0.5, epoch=1, epochs=2))
    trapped = KnowledgeInputs(student_logits=s, targets=torch.zeros(2, dtype=torch.long), teacher_logits=t,
                              clock=ClockTrap())
    assert torch.allclose(term(trapped), torch.full((2,), 0.25))  # (0 - 0.5 * 1)^2
    direct = MSELogits(MSELogitsParams(teacher_scale={"kind": "linear", "start": 0.0, "end": 1.0}))
    assert torch.allclose(direct(KnowledgeInputs(student_logits=s, targets=torch.zeros(2, dtype=torch.long),
                                                 teacher_logits=t, clock=Clock(progress=0.5, epoch=1, epochs=2))),
                          torch.full((2,), 0.25))  # called directly: from the inputs' clock, the same value


@pytest.mark.parametrize("name", ["kd", "dkd", "dist", "ctkd", "mse_logits"])
@pytest.mark.parametrize("teacher_shape", [(1, C), (B, C + 2)], ids=["a teacher batch of one", "more classes"])
def test_teacher_logits_of_another_shape_are_refused(name, teacher_shape):
    """A teacher batch of one would broadcast against the student's silently; another class count would fail deep
    inside the maths. Either is one clear error naming both shapes."""
    term, _, _, inputs_for = make_setup(name)
    inputs = inputs_for(grad=False)
    odd = KnowledgeInputs(student_logits=inputs.student_logits, targets=inputs.targets,
                          teacher_logits=torch.randn(teacher_shape), teachers_logits=inputs.teachers_logits,
                          indices=inputs.indices, clock=inputs.clock)
    with pytest.raises(ValueError, match=rf"teacher logits {re.escape(str(teacher_shape))} do not match"):
        term(odd, temperature_of(term))
