"""CRD. The default ``memory: bank`` against RepDistiller's code (``crd/memory.py`` ContrastMemory,
``crd/criterion.py`` ContrastLoss and CRDLoss, ``dataset/cifar100.py`` CIFAR100InstanceSample), written out again
here: with the same contrast indices, two training steps give the same loss, gradients, normaliser Z and memory.
``memory: queue``: InfoNCE against a bounded queue. Both learn."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from curridistill.errors import UserError
from curridistill.knowledge import KnowledgeInputs, load_all
from curridistill.knowledge.contrast_memory import NegativeSampler
from curridistill.knowledge.crd import CRD, CRDParams, info_nce
from tests.helpers import load_benchmark

load_all()
N, K, D, DS, DT, B = 40, 12, 8, 6, 10, 5
LABELS = torch.arange(N) % 4  # ten per class: every anchor has 30 others, so K = 12 draws without replacement


class RepDistillerCRD:
    """ContrastMemory + ContrastLoss x 2 of the reference code, with the contrast indices given."""

    def __init__(self, memory_v1, memory_v2, T=0.07, momentum=0.5):
        self.memory_v1, self.memory_v2 = memory_v1.clone(), memory_v2.clone()  # student, teacher
        self.T, self.momentum, self.Z_v1, self.Z_v2 = T, momentum, -1.0, -1.0

    def contrast(self, v1, v2, y, idx):
        batch, k1 = idx.shape
        weight_v1 = torch.index_select(self.memory_v1, 0, idx.view(-1)).detach().view(batch, k1, -1)
        out_v2 = torch.exp(torch.div(torch.bmm(weight_v1, v2.view(batch, -1, 1)), self.T))
        weight_v2 = torch.index_select(self.memory_v2, 0, idx.view(-1)).detach().view(batch, k1, -1)
        out_v1 = torch.exp(torch.div(torch.bmm(weight_v2, v1.view(batch, -1, 1)), self.T))
        n_data = self.memory_v1.size(0)
        if self.Z_v1 < 0:
            self.Z_v1 = (out_v1.mean() * n_data).item()
        if self.Z_v2 < 0:
            self.Z_v2 = (out_v2.mean() * n_data).item()
        out_v1, out_v2 = torch.div(out_v1, self.Z_v1).contiguous(), torch.div(out_v2, self.Z_v2).contiguous()
        with torch.no_grad():
            for memory, v in ((self.memory_v1, v1), (self.memory_v2, v2)):
                l_pos = torch.index_select(memory, 0, y.view(-1))
                l_pos.mul_(self.momentum)
                l_pos.add_(torch.mul(v, 1 - self.momentum))
                memory.index_copy_(0, y, l_pos.div(l_pos.pow(2).sum(1, keepdim=True).pow(0.5)))
        return out_v1, out_v2

    @staticmethod
    def contrast_loss(x, n_data, eps=1e-7):
        bsz, m = x.shape[0], x.size(1) - 1
        pn = 1.0 / float(n_data)
        p_pos = x.select(1, 0)
        log_d1 = torch.div(p_pos, p_pos.add(m * pn + eps)).log_()
        p_neg = x.narrow(1, 1, m)
        log_d0 = torch.div(p_neg.clone().fill_(m * pn), p_neg.add(m * pn + eps)).log_()
        return -(log_d1.sum(0) + log_d0.view(-1, 1).sum(0)) / bsz

    def loss(self, v_s, v_t, idx, contrast_idx):
        out_s, out_t = self.contrast(v_s, v_t, idx, contrast_idx)
        n_data = self.memory_v1.size(0)
        return self.contrast_loss(out_s, n_data) + self.contrast_loss(out_t, n_data)


def _term(**params) -> CRD:
    term = CRD(CRDParams(student_layer="s", teacher_layer="t", feat_dim=D, num_negatives=K, **params))
    term.attach_training_labels(LABELS)
    return term


def _inputs(fs, ft, idx) -> KnowledgeInputs:
    return KnowledgeInputs(student_logits=torch.zeros(len(fs), 4), targets=LABELS[idx],
                           student_features={"s": fs}, teacher_features=[{"t": ft}], indices=idx)


def test_two_steps_equal_repdistillers_loss_gradients_normaliser_and_memory(monkeypatch):
    g = torch.Generator().manual_seed(0)
    term = _term()
    ref = RepDistillerCRD(term.memory_s, term.memory_t)
    fs, ft = torch.randn(B, DS, generator=g), torch.randn(B, DT, generator=g)
    term.build(_inputs(fs, ft, torch.arange(B)))
    embed_s, embed_t = [type(e)(e.linear.in_features, D) for e in (term.embed_s, term.embed_t)]
    embed_s.load_state_dict(term.embed_s.state_dict()), embed_t.load_state_dict(term.embed_t.state_dict())
    draws = []  # the negatives the term drew, handed to the reference as its contrast indices
    original_draw = NegativeSampler.draw

    def recorded_draw(self, *args, **kwargs):
        draws.append(original_draw(self, *args, **kwargs))
        return draws[-1]

    monkeypatch.setattr(NegativeSampler, "draw", recorded_draw)
    for step, idx in enumerate([torch.tensor([3, 17, 22, 8, 30]), torch.tensor([17, 5, 39, 3, 11])]):
        fs, ft = torch.randn(B, DS, generator=g), torch.randn(B, DT, generator=g)
        ours = term(_inputs(fs, ft, idx))
        contrast = torch.cat([idx.view(-1, 1), draws[-1]], dim=1)
        theirs = ref.loss(embed_s(fs), embed_t(ft), idx, contrast)
        torch.testing.assert_close(ours.mean(), theirs.squeeze(), rtol=1e-5, atol=1e-6)
        ours.mean().backward(), theirs.sum().backward()
        for a, b in ((term.embed_s, embed_s), (term.embed_t, embed_t)):
            torch.testing.assert_close(a.linear.weight.grad, b.linear.weight.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(term.z, torch.tensor([ref.Z_v1, ref.Z_v2]), rtol=1e-5, atol=0)
        torch.testing.assert_close(term.memory_s, ref.memory_v1)
        torch.testing.assert_close(term.memory_t, ref.memory_v2)
    assert not torch.equal(term.memory_s, _term().memory_s)  # the rows of the batches moved


def test_memory_starts_as_repdistillers_and_is_checkpointed():
    term = _term()
    stdv = 1.0 / math.sqrt(D / 3)
    for memory in (term.memory_s, term.memory_t):
        assert memory.shape == (N, D) and memory.abs().max() <= stdv and memory.min() < -stdv / 2 < stdv / 2 < memory.max()
    assert {"memory_s", "memory_t", "z"} <= set(term.state_dict())
    assert not any(k.startswith("sampler.") for k in term.state_dict())  # derived from the data, rebuilt on attach


@pytest.mark.parametrize("k, with_replacement", [(12, False), (30, False), (31, True), (200, True)])
def test_negatives_are_of_other_classes_and_drawn_without_replacement_when_they_can_be(k, with_replacement):
    sampler = NegativeSampler(LABELS, k)
    assert sampler.with_replacement is with_replacement
    idx = torch.tensor([0, 13, 26, 39])
    torch.manual_seed(0)
    neg = sampler.draw(idx)
    assert neg.shape == (4, k)
    assert (LABELS[neg] != LABELS[idx].view(-1, 1)).all()
    if not with_replacement:
        assert all(len(set(row.tolist())) == k for row in neg)
    if k == 200:  # drawn over all 30 samples of the other classes (seeded: each turns up in 200 draws)
        assert all(len(set(row.tolist())) == 30 for row in neg)


def test_a_samples_negatives_do_not_depend_on_its_place_in_the_batch():
    sampler = NegativeSampler(LABELS, K)
    idx = torch.tensor([7, 2, 33, 18])
    perm = torch.tensor([2, 0, 3, 1])
    a = sampler.draw(idx, torch.Generator().manual_seed(5))
    b = sampler.draw(idx[perm], torch.Generator().manual_seed(5))
    assert torch.equal(b, a[perm])


def test_eval_mode_changes_nothing_and_the_queue_stays_available():
    term = _term()
    g = torch.Generator().manual_seed(1)
    fs, ft = torch.randn(B, DS, generator=g), torch.randn(B, DT, generator=g)
    term.build(_inputs(fs, ft, torch.arange(B)))
    term.eval()
    before = {k: v.clone() for k, v in term.state_dict().items()}
    first = term(_inputs(fs, ft, torch.arange(B)))
    assert torch.equal(first, term(_inputs(fs, ft, torch.arange(B))))  # a fixed draw in eval mode
    assert all(torch.equal(v, term.state_dict()[k]) for k, v in before.items())
    queue = CRD(CRDParams(memory="queue", num_negatives=K, feat_dim=D))
    assert "queue_s" in queue.state_dict() and "memory_s" not in queue.state_dict()


def test_one_class_data_and_a_missing_attach_are_refused():
    with pytest.raises(UserError, match="same label"):
        CRD(CRDParams(num_negatives=K)).attach_training_labels(torch.zeros(10, dtype=torch.long))
    term = CRD(CRDParams(student_layer="s", teacher_layer="t", feat_dim=D, num_negatives=K))
    term.build(_inputs(torch.randn(B, DS), torch.randn(B, DT), torch.arange(B)))
    with pytest.raises(RuntimeError, match="attach_training_labels"):
        term(_inputs(torch.randn(B, DS), torch.randn(B, DT), torch.arange(B)))


def _train(term: CRD, epochs: int, lr: float) -> tuple[list[float], torch.nn.Module, torch.Tensor]:
    """A linear student learns a fixed teacher's features under the term alone; the loss summed per epoch."""
    g = torch.Generator().manual_seed(0)
    data_t = torch.randn(N, DT, generator=g)
    student = torch.nn.Linear(DT, DS)
    term.build(_inputs(student(data_t[:B]), data_t[:B], torch.arange(B)))
    opt = torch.optim.SGD(list(student.parameters()) + list(term.parameters()), lr=lr, momentum=0.9)
    totals = []
    for _ in range(epochs):
        total = 0.0
        for start in range(0, N, 8):
            idx = torch.arange(start, start + 8)
            loss = term(_inputs(student(data_t[idx]), data_t[idx], idx)).mean()
            assert torch.isfinite(loss)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        totals.append(total)
    return totals, student, data_t


def test_bank_loss_falls_as_the_student_learns():
    torch.manual_seed(0)
    term = _term()
    epochs, _, _ = _train(term, 15, lr=0.05)
    assert epochs[-1] < 0.9 * epochs[1]  # the first epoch fills the memory; learning shows after it
    torch.testing.assert_close(term.memory_s.norm(dim=1), torch.ones(N))  # every row visited and renormalised
    # the student's memory of a sample now points where the teacher's memory of it points, more than elsewhere
    agreement = term.memory_s @ term.memory_t.t()  # cosines: both memories' rows are unit vectors
    assert agreement.diagonal().mean() > agreement.mean() + 0.1


# ------------------------------------------------------------------------------------------ memory: queue
def test_info_nce_aligned_is_lower():
    g = torch.Generator().manual_seed(0)
    v = F.normalize(torch.randn(8, 16, generator=g), dim=1)
    neg = F.normalize(torch.randn(32, 16, generator=g), dim=1)
    aligned = info_nce(v, v, neg, 0.07)
    random = info_nce(v, F.normalize(torch.randn(8, 16, generator=g), dim=1), neg, 0.07)
    assert torch.isfinite(aligned).all() and (aligned < random).all()
    # hand value for one anchor: -log(e^{1/tau} / (e^{1/tau} + sum_k e^{<v, n_k>/tau}))
    hand = -(1 / 0.07) + torch.logsumexp(torch.cat([torch.tensor([1 / 0.07]), neg @ v[0] / 0.07]), 0)
    torch.testing.assert_close(aligned[0], hand, rtol=1e-5, atol=1e-5)


def test_queue_loss_falls_and_the_queue_stays_bounded():
    torch.manual_seed(0)
    k = 48
    term = CRD(CRDParams(student_layer="s", teacher_layer="t", feat_dim=D, num_negatives=k, memory="queue"))
    epochs, student, data_t = _train(term, 12, lr=0.5)
    assert epochs[-1] < 0.8 * epochs[0]
    assert term.queue_s.shape == (k, D) and term.queue_index.shape == (k,)  # bounded: O(K), whatever N is
    torch.testing.assert_close(term.queue_s.norm(dim=1), torch.ones(k))
    # eval mode leaves the queue alone; training mode advances it
    term.eval()
    before = term.queue_ptr.clone(), term.queue_s.clone()
    term(_inputs(student(data_t[:8]), data_t[:8], torch.arange(8)))
    assert torch.equal(term.queue_ptr, before[0]) and torch.equal(term.queue_s, before[1])
    term.train()
    term(_inputs(student(data_t[:8]), data_t[:8], torch.arange(8)))
    assert int(term.queue_ptr) == (int(before[0]) + 8) % k
    assert {"queue_s", "queue_t", "queue_index", "queue_ptr"} <= set(term.state_dict())


def test_queue_masks_the_anchors_own_index():
    v = F.normalize(torch.randn(2, 4), dim=1)
    queue = torch.cat([v, F.normalize(torch.randn(3, 4), dim=1)])
    mask = torch.tensor([[True, False, False, False, False], [False, True, False, False, False]])
    masked = info_nce(v, v, queue, 0.1, mask)
    unmasked_without = info_nce(v, v, queue[2:], 0.1)
    torch.testing.assert_close(masked, unmasked_without)


def test_the_cost_benchmark_times_both_memories(tmp_path):
    out = tmp_path / "cost.json"
    assert load_benchmark("crd_memory_cost").main(["--n", "200", "--k", "32", "--steps", "1", "--threads", "1",
                                                   "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert set(record["ms_per_step"]) == {"bank", "queue"} and min(record["ms_per_step"].values()) > 0
    assert record["command"].startswith("python benchmarks/crd_memory_cost.py") and record["git"]["commit"]
