"""CRD's memory bank and NCE objective, as in the authors' code (RepDistiller's ``ContrastMemory``,
``ContrastLoss`` and ``CIFAR100InstanceSample``), for ``crd: {memory: bank}``.

One embedding per training sample and per side (student ``memory_s``, teacher ``memory_t``, N x D each),
initialised uniformly in ``[-1/sqrt(D/3), 1/sqrt(D/3)]`` and updated after each training forward with momentum m
(0.5): ``memory[i] <- normalize(m * memory[i] + (1 - m) * v_i)``.

For anchor i (dataset index, label c) the contrast set is its own memory entry (the positive) and K negatives
drawn from the samples of the other classes, without replacement when the smallest such pool has K samples, with
replacement otherwise (the authors' ``mode: exact`` and ``replace`` rule). Each side's anchor is scored against the
other side's memory: ``P = exp(<v, memory_j> / tau) / Z``, with ``Z = mean(exp(<v, memory_j> / tau)) * N`` fixed at
the first training batch. NCE with the uniform noise prior Pn = 1 / N, per sample::

    L_i = -( log P_i0 / (P_i0 + K Pn + eps)  +  sum_k log K Pn / (P_ik + K Pn + eps) )        eps = 1e-7

so ``L.mean()`` is ContrastLoss's batch value; the term adds the two directions.

Where this differs: the scores come from one (B, N) product ``v @ memory.T`` gathered at the contrast indices,
the same numbers as the authors' (B, K+1, D) gather with less memory traffic when K is large; negatives are
drawn on the training device from torch's generator (saved with the run, so a resume continues the draws) in
the order of the batch's dataset indices, so a sample's negatives do not depend on its place in the batch; in
eval mode (not used by training) nothing is updated and the draws come from a fixed seed. Under torchrun every
process applies the memory update of the whole global batch (its rows gathered from all processes) and Z is the
processes' mean, so the memories stay identical across processes (RepDistiller runs in one process).
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor, nn

NCE_EPS = 1e-7


def initial_memory(n: int, dim: int, seed: int) -> Tensor:
    """(n, dim) uniform in [-stdv, stdv], stdv = 1 / sqrt(dim / 3): rows of about unit norm, as RepDistiller."""
    stdv = 1.0 / math.sqrt(dim / 3)
    gen = torch.Generator().manual_seed(seed)  # does not consume the run's random stream
    return torch.rand(n, dim, generator=gen) * (2 * stdv) - stdv


class NegativeSampler(nn.Module):
    """K dataset indices per anchor, all of classes other than the anchor's. Its class tables are buffers derived
    from the labels (they move with the term, and are not checkpointed)."""

    def __init__(self, labels: Tensor, k: int):
        super().__init__()
        labels = labels.detach().cpu().long()
        counts = torch.bincount(labels)
        self.k, self.n = int(k), len(labels)
        smallest_pool = self.n - int(counts.max())
        if smallest_pool < 1:
            raise ValueError("crd memory bank: every sample has the same label, so no sample has a negative")
        self.with_replacement = self.k > smallest_pool
        self.register_buffer("labels", labels, persistent=False)
        self.register_buffer("by_class", torch.argsort(labels, stable=True), persistent=False)
        self.register_buffer("class_start", torch.cumsum(counts, 0) - counts, persistent=False)
        self.register_buffer("class_count", counts, persistent=False)

    def draw(self, indices: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """(B,) dataset indices -> (B, K) negatives. Rows are drawn for the anchors in increasing index order, so
        a sample's draw does not depend on its position in the batch. ``generator``: a CPU generator (eval
        mode); None: torch's, on the device."""
        device = indices.device
        rank = torch.argsort(torch.argsort(indices))
        anchor_class = self.labels[indices]
        shape = (len(indices), self.k if self.with_replacement else self.n)  # a key per draw, or per sample
        u = (torch.rand(shape, generator=generator).to(device) if generator is not None
             else torch.rand(shape, device=device))[rank]
        if not self.with_replacement:  # the K smallest random keys among the other classes' samples
            same = self.labels.view(1, -1) == anchor_class.view(-1, 1)
            return u.masked_fill(same, 2.0).topk(self.k, dim=1, largest=False, sorted=False).indices
        count = self.class_count[anchor_class].view(-1, 1)
        start = self.class_start[anchor_class].view(-1, 1)
        pick = (u * (self.n - count)).long().clamp_max(self.n - count - 1)  # a position among the others
        pick = pick + (pick >= start).long() * count  # skip the anchor's class block
        return self.by_class[pick]


def contrast_scores(anchor: Tensor, memory: Tensor, contrast: Tensor, tau: float) -> Tensor:
    """exp(<anchor_i, memory_j> / tau) for j in ``contrast[i]``: (B, D), (N, D), (B, K+1) -> (B, K+1)."""
    return torch.exp((anchor @ memory.t()).gather(1, contrast) / tau)


def nce_per_sample(p: Tensor, n_data: int, eps: float = NCE_EPS) -> Tensor:
    """(B, K+1) normalised scores, positive first -> (B,) NCE loss; the mean is RepDistiller's ContrastLoss."""
    noise = (p.shape[1] - 1) / n_data  # K * Pn
    positive = torch.log(p[:, 0] / (p[:, 0] + noise + eps))
    negatives = torch.log(noise / (p[:, 1:] + noise + eps)).sum(dim=1)
    return -(positive + negatives)


def momentum_update(memory: Tensor, indices: Tensor, v: Tensor, momentum: float) -> Tensor:
    """A new memory with rows ``indices`` moved towards ``v`` and renormalised (out of place: this step's graph
    may hold the old one)."""
    rows = memory.index_select(0, indices) * momentum + v.detach().to(memory.dtype) * (1 - momentum)
    return memory.index_copy(0, indices, rows / rows.norm(dim=1, keepdim=True))


def _several_processes() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gathered(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Every process's rows of ``tensors`` (which share their first dimension), concatenated in rank order,
    under torch.distributed; the tensors themselves in one process. Shards of a global batch may differ by a
    row, so each is padded to the largest before the gather and cut back after."""
    if not _several_processes():
        return tensors
    world = dist.get_world_size()
    rows = torch.tensor([tensors[0].shape[0]], device=tensors[0].device)
    sizes = [torch.zeros_like(rows) for _ in range(world)]
    dist.all_gather(sizes, rows)
    sizes = [int(size) for size in sizes]  # a host read: torchrun steps already wait on one (the finiteness check)
    out = []
    for t in tensors:
        padded = t.new_zeros((max(sizes), *t.shape[1:]))
        padded[:len(t)] = t
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
        out.append(torch.cat([part[:size] for part, size in zip(parts, sizes)]))
    return tuple(out)


def process_mean(t: Tensor) -> Tensor:
    """The mean of ``t`` over the processes under torch.distributed; ``t`` in one process."""
    if not _several_processes():
        return t
    total = t.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / dist.get_world_size()
