"""What channel pruning buys in cost alone (no training: weights do not change latency): parameters,
FLOPs, weight bytes and batch-1 CPU latency of a zoo model against its pruned copies, plus static int8
of each, timed in turn over rounds (per model, the median of its rounds' medians).

    python benchmarks/prune_latency.py --model resnet8 --amounts 0.3,0.5,0.7 --threads 1 \
        --json benchmarks/results/prune_latency_resnet8.json

Accuracy after pruning needs training: see configs/ship_cifar10_resnet8.yaml.
"""
from __future__ import annotations

import argparse
import copy

import torch

from curridistill.bench.throughput import save_result
from curridistill.evaluate.measure import interleaved_latency_ms, state_bytes
from curridistill.compress.prune import prune
from curridistill.compress.quantize import quantize
from curridistill.evaluate.efficiency import count_params, flops_per_sample
from curridistill.models import build_model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet8")
    ap.add_argument("--input-size", default="3,32,32")
    ap.add_argument("--amounts", default="0.3,0.5,0.7")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=200, help="timed forwards per model and round")
    ap.add_argument("--json", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = tuple(int(v) for v in args.input_size.split(","))
    reference = build_model(args.model, 10, shape[0]).eval()
    models = {"unpruned": reference}
    for amount in (float(a) for a in args.amounts.split(",")):
        pruned = copy.deepcopy(reference)
        prune(pruned, amount, torch.randn(1, *shape), 10, reference=reference)
        models[f"{amount:.0%} channels"] = pruned.eval()
    calibration = [torch.randn(32, *shape) for _ in range(4)]
    variants = {}
    for name, m in models.items():
        variants[name] = m
        variants[f"{name} int8 static"] = quantize(m, "static", calibration)
    x = torch.randn(1, *shape)
    latency = interleaved_latency_ms(variants, x, runs=args.runs, rounds=args.rounds)
    base = latency["unpruned"]
    rows = []
    for name, m in variants.items():
        src = models[name.removesuffix(" int8 static")]
        lat = latency[name]
        rows.append({"model": name, "params": count_params(src), "flops": flops_per_sample(src, shape),
                     "bytes": state_bytes(m), "latency_ms": lat, "speedup": base / lat})
    md = ["| model | params | MFLOPs | weights KB | latency ms | speed-up |", "|---|---:|---:|---:|---:|---:|"]
    md += [f"| {args.model} {r['model']} | {r['params']:,} | {r['flops'] / 1e6:.2f} | {r['bytes'] / 1024:.1f} | "
           f"{r['latency_ms']:.3f} | {r['speedup']:.2f}x |" for r in rows]
    save_result(args.json, {"threads": args.threads, "rounds": args.rounds, "runs": args.runs, "rows": rows}, "\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
