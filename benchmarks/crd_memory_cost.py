"""What CRD's memory costs a step: the term alone (forward + backward), memory bank against queue.

    python benchmarks/crd_memory_cost.py --json benchmarks/results/crd_memory_cost_cpu.json

Random 64-d features for student and teacher (a CIFAR ResNet's last stage, pooled), batch 64, N training samples
of 10 classes, K negatives, the paper's feat_dim 128; the median of the timed steps after a warm-up. The model's
own forward and backward are not included: this is what the term adds to a step.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from curridistill.bench.throughput import git_commit, machine
from curridistill.io import write_json
from curridistill.knowledge import KnowledgeInputs, load_all
from curridistill.knowledge.crd import CRD, CRDParams


def step_ms(memory: str, n: int, k: int, batch: int, steps: int, device: torch.device) -> float:
    labels = torch.arange(n) % 10
    term = CRD(CRDParams(student_layer="s", teacher_layer="t", num_negatives=k, memory=memory))
    term.attach_training_labels(labels)
    term.to(device)

    def inputs() -> KnowledgeInputs:
        idx = torch.randperm(n)[:batch].to(device)
        return KnowledgeInputs(student_logits=torch.zeros(batch, 10, device=device), targets=labels.to(device)[idx],
                               student_features={"s": torch.randn(batch, 64, device=device, requires_grad=True)},
                               teacher_features=[{"t": torch.randn(batch, 64, device=device)}], indices=idx)

    term.build(inputs())
    term.to(device)
    times = []
    for i in range(steps + 3):
        x = inputs()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        term(x).mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= 3:  # warm-up
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=45_000, help="training samples (default: CIFAR's 45,000-image split)")
    p.add_argument("--k", type=int, default=16384, help="negatives (the paper's)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="write the result here")
    args = p.parse_args(argv)
    load_all()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    result = {"command": "python benchmarks/crd_memory_cost.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "git": git_commit(), "machine": machine(device), "n": args.n, "k": args.k, "batch": args.batch,
              "threads": args.threads, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "ms_per_step": {memory: step_ms(memory, args.n, args.k, args.batch, args.steps, device)
                              for memory in ("bank", "queue")}}
    print(f"crd, the term alone per step on {args.device} ({args.threads} threads): "
          + ", ".join(f"{m} {ms:.1f} ms" for m, ms in result["ms_per_step"].items()))
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
