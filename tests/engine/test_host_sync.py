"""A training step never makes the host wait for the device (issue 13).

On a GPU, reading a value back (``.item()``, ``float(t)``, ``bool(t)``) or an op whose output size depends on
the data (boolean-mask indexing, ``nonzero``, ``unique``) stalls the host until the GPU has caught up, every
step, and breaks a captured (CUDA-graph) step. A CPU cannot time that, but it can see the ops: a dispatch
mode records every such op during the epochs, and an epoch of twice the steps must read the host exactly as
often (the per-epoch reads: the epoch's metrics, a curriculum rescore, a teacher-cache build). The runs use
the single-GPU policy (``_check_every_step`` off: the epoch's loss sum is checked instead of each step's).
"""
from __future__ import annotations

import collections
import traceback

import pytest
from torch.utils._python_dispatch import TorchDispatchMode

from curridistill import api
from curridistill.config import load_config
from curridistill.knowledge import load_all
from curridistill.train.lesson import LessonRun
from tests.helpers import tiny_config

HOST_READS = frozenset({"_local_scalar_dense", "nonzero", "masked_select", "_unique2", "unique_dim",
                        "unique_consecutive", "is_nonzero", "equal"})


class HostReads(TorchDispatchMode):
    """Counts host-reading ops by the innermost line of this project that asked for them. Reads inside
    ``torch.optim`` are left out: PyTorch keeps Adam's step count on the host (unless ``capturable``), so
    reading it never waits for the device."""

    def __init__(self):
        super().__init__()
        self.where: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in HOST_READS:
            stack = traceback.extract_stack()
            ours = [i for i, f in enumerate(stack) if "/curridistill/" in f.filename]
            inner = stack[ours[-1] + 1:] if ours else stack
            if not any("/torch/optim/" in f.filename for f in inner):
                where = f"{stack[ours[-1]].filename.rsplit('/src/', 1)[-1]}:{stack[ours[-1]].lineno}" if ours else "?"
                self.where[f"{name} at {where}"] += 1
        return func(*args, **(kwargs or {}))


def watch_host_reads(monkeypatch) -> HostReads:
    """Every training epoch from now on runs under a ``HostReads`` watch, with the single-GPU policy."""
    reads = HostReads()
    train_epoch = LessonRun._train_epoch

    def watched(self, *args, **kwargs):
        self._check_every_step = False  # the single-GPU policy, whatever this machine is
        with reads:
            return train_epoch(self, *args, **kwargs)

    monkeypatch.setattr(LessonRun, "_train_epoch", watched)
    return reads


@pytest.fixture
def host_reads(monkeypatch):
    return watch_host_reads(monkeypatch)


def every_term() -> dict:
    feature = {"student_layer": "stage3", "teacher_layer": "stage3"}
    loss = {name: {"weight": 0.1} for name in sorted(load_all())}
    for name in ("fitnet", "rkd", "pkt", "sp"):
        loss[name].update(feature)
    loss["crd"].update(feature, num_negatives=64)
    loss["at"].update(weight=10, student_layers=["stage2", "stage3"], teacher_layers=["stage2", "stage3"])
    loss["ctkd@instance"] = {"weight": 0.1, "mode": "instance"}  # a second CTKD: its per-sample temperature module
    return loss


CASES = {
    "every term, augmented (teacher online)": {"augment": True},
    "teacher cache + paced curriculum": {"augment": False, "curriculum": {
        "scorer": "teacher_confidence", "pacing": {"kind": "linear", "start": 0.3}}},
    "self-paced quantile weights": {"augment": True, "curriculum": {
        "self_paced": {"weighting": "linear", "quantile": True, "threshold": {"kind": "linear", "start": 0.3, "end": 1.0}}}},
    "self-paced hard + pacing": {"augment": False, "curriculum": {
        "scorer": "teacher_loss", "pacing": {"kind": "step", "start": 0.5},
        "self_paced": {"weighting": "hard", "threshold": {"kind": "linear", "start": 0.5, "end": 5.0}}}},
    "two teachers, weighted": {"augment": True, "teachers": "weighted"},
    "two teachers, per-sample best": {"augment": False, "teachers": "best"},
}


def every_term_config(tmp_path, cifar_shaped, case: dict, batch_size: int, name: str) -> dict:
    """A run of ``case`` (one of ``CASES``): resnet14 teacher(s), resnet8 student with every knowledge term."""
    raw = tiny_config(tmp_path, epochs=1)
    raw["data"] = {"name": "tensors", "options": {"path": str(cifar_shaped)}, "val_size": 0.1, "batch_size": batch_size,
                   **({"augment": {"crop_padding": 4, "flip": True}} if case["augment"] else {})}
    teacher = {"name": "resnet14", "course": [{"epochs": 1, "optimizer": {"lr": 0.05}}]}
    if "teachers" in case:
        raw.pop("teacher")
        raw["teachers"] = [teacher, {**teacher, "name": "resnet8", "weight": 2.0}]
        raw["run"]["teacher_aggregation"] = case["teachers"]
    else:
        raw["teacher"] = teacher
    raw["student"] = {"name": "resnet8"}
    raw["baseline"] = {"enabled": False}
    raw["course"][0]["loss"] = every_term()
    if "curriculum" in case:
        raw["course"][0]["curriculum"] = case["curriculum"]
    raw["run"]["cache_dir"] = str(tmp_path / f"cache-{name}")
    return raw


def _run(tmp_path, cifar_shaped, case: dict, batch_size: int, name: str) -> None:
    api.run(load_config(every_term_config(tmp_path, cifar_shaped, case, batch_size, name)), out=tmp_path / name)


@pytest.mark.parametrize("case", list(CASES))
def test_host_reads_per_epoch_do_not_grow_with_steps(tmp_path, cifar_shaped, host_reads, case):
    _run(tmp_path, cifar_shaped, CASES[case], batch_size=36, name="few")  # 180 training images: 5 steps an epoch
    few = collections.Counter(host_reads.where)
    host_reads.where.clear()
    _run(tmp_path, cifar_shaped, CASES[case], batch_size=18, name="many")  # 10 steps an epoch
    grown = {where: (few[where], n) for where, n in host_reads.where.items() if n > few[where]}
    assert not grown, f"host reads that grow with the steps (5 steps, 10 steps): {grown}"
    assert few, "the watch saw nothing: the epoch's metrics are read once, so it must"
