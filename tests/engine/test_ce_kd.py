import numpy as np
import pytest
import torch

from curridistill.knowledge import KnowledgeInputs, load_all
from curridistill.knowledge.kd import kd_loss

K = load_all()


def _inputs(s, t=None, y=None):
    y = torch.zeros(len(s), dtype=torch.long) if y is None else y
    return KnowledgeInputs(student_logits=s, targets=y, teacher_logits=t)


def test_kd_is_zero_for_identical_logits():
    z = torch.randn(8, 10)
    assert torch.allclose(K.get("kd")()(_inputs(z, z.clone()), 4.0), torch.zeros(8), atol=1e-6)


def test_kd_matches_hand_computation_with_t_squared():
    s = torch.tensor([[1.0, 2.0, 0.5]])
    t = torch.tensor([[2.0, 0.0, 1.0]])
    T = 2.0

    def softmax(v):
        e = np.exp(v - v.max())
        return e / e.sum()

    ps, pt = softmax(s.numpy()[0] / T), softmax(t.numpy()[0] / T)
    expected = T * T * float((pt * np.log(pt / ps)).sum())
    got = K.get("kd")()(_inputs(s, t), T)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # the T^2 factor: doubling nothing else, the loss at T equals T^2 times the plain softened KL
    assert kd_loss(s, t, T).item() / (T * T) == pytest.approx(expected / (T * T), rel=1e-5)


def test_kd_batch_mean_equals_torch_batchmean_kl():
    s, t = torch.randn(16, 5), torch.randn(16, 5)
    T = 3.0
    ref = torch.nn.functional.kl_div(torch.log_softmax(s / T, 1), torch.log_softmax(t / T, 1), reduction="batchmean",
                                     log_target=True) * T * T
    assert kd_loss(s, t, T).mean().item() == pytest.approx(ref.item(), rel=1e-5)


def test_ce_known_value_and_label_smoothing():
    s = torch.tensor([[0.0, 0.0]])
    y = torch.tensor([0])
    assert K.get("ce")()(_inputs(s, y=y)).item() == pytest.approx(np.log(2))
    s = torch.tensor([[2.0, 0.0, 0.0]])
    logp = torch.log_softmax(s, 1)[0]
    eps = 0.3
    expected = -((1 - eps) * logp[0] + eps / 3 * logp.sum())
    term = K.get("ce")(K.get("ce").Params(label_smoothing=eps))
    assert term(_inputs(s, y=y)).item() == pytest.approx(expected.item(), rel=1e-6)


def test_kd_gradient_reaches_student_not_teacher():
    s = torch.randn(4, 6, requires_grad=True)
    t = torch.randn(4, 6, requires_grad=True)
    K.get("kd")()(_inputs(s, t.detach()), 4.0).mean().backward()
    assert s.grad is not None and t.grad is None
