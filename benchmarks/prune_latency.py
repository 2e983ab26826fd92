"""What channel pruning buys in cost alone (no training: weights do not change latency): parameters,
FLOPs, weight bytes and batch-1 CPU latency of a zoo model against its pruned copies, plus static int8
of each (and with --onnx each exported to ONNX and run by ONNX Runtime), timed in turn over rounds (per model,
the median of its rounds' medians). "speed-up" is against the unpruned model in PyTorch; "in runtime" against
the unpruned model in the same runtime, which is what pruning buys where the model is deployed.

    python benchmarks/prune_latency.py --model resnet8 --amounts 0.3,0.5,0.7 --threads 1 \
        --json benchmarks/results/prune_latency_resnet8.json
    python benchmarks/prune_latency.py --model resnet20 --amounts 0.3,0.4,0.5 --round-to 0,8 --threads 1 --onnx \
        --json benchmarks/results/prune_latency_resnet20.json

Accuracy after pruning needs training: see configs/ship_cifar10_resnet8.yaml.
"""
from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import torch

from curridistill.bench.throughput import save_result
from curridistill.evaluate.measure import interleaved_latency_ms, state_bytes
from curridistill.compress.prune import prune
from curridistill.compress.quantize import quantize
from curridistill.evaluate.efficiency import count_params, flops_per_sample
from curridistill.export.onnx import OnnxModel, export_onnx
from curridistill.models import build_model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet8")
    ap.add_argument("--input-size", default="3,32,32")
    ap.add_argument("--amounts", default="0.3,0.5,0.7")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=200, help="timed forwards per model and round")
    ap.add_argument("--round-to", default="0", help="comma-separated: pruned layers keep a multiple of this many "
                    "channels (0: no rounding); each amount is pruned once per value")
    ap.add_argument("--onnx", action="store_true", help="also time each model exported to ONNX (ONNX Runtime)")
    ap.add_argument("--json", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = tuple(int(v) for v in args.input_size.split(","))
    reference = build_model(args.model, 10, shape[0]).eval()
    models = {"unpruned": reference}
    for amount in (float(a) for a in args.amounts.split(",")):
        for multiple in (int(r) for r in args.round_to.split(",")):
            pruned = copy.deepcopy(reference)
            prune(pruned, amount, torch.randn(1, *shape), 10, reference=reference, round_to=multiple or None)
            models[f"{amount:.0%} channels" + (f" (x{multiple})" if multiple else "")] = pruned.eval()
    calibration = [torch.randn(32, *shape) for _ in range(4)]
    variants = {}  # name -> (forward, source model, runtime, bytes)
    spec = {"name": args.model, "num_classes": 10, "in_channels": shape[0], "input_shape": list(shape)}  # for export
    with tempfile.TemporaryDirectory() as tmp:
        for name, m in models.items():
            q = quantize(m, "static", calibration)
            variants[name] = (m, m, "pytorch", state_bytes(m))
            variants[f"{name} int8 static"] = (q, m, "pytorch int8", state_bytes(q))
            if args.onnx:
                path = export_onnx(m, spec, Path(tmp) / f"{len(variants)}.onnx")
                variants[f"{name} onnx"] = (OnnxModel(path, threads=args.threads), m, "onnxruntime", path.stat().st_size)
        latency = interleaved_latency_ms({name: v[0] for name, v in variants.items()}, torch.randn(1, *shape),
                                         runs=args.runs, rounds=args.rounds)
    unpruned = {runtime: latency[name] for name, (_, src, runtime, _) in variants.items() if src is reference}
    rows = []
    for name, (_, src, runtime, size) in variants.items():
        lat = latency[name]
        rows.append({"model": name, "runtime": runtime, "params": count_params(src), "flops": flops_per_sample(src, shape),
                     "bytes": size, "latency_ms": lat, "speedup": latency["unpruned"] / lat,
                     "speedup_in_runtime": unpruned[runtime] / lat})
    md = ["| model | runtime | params | MFLOPs | weights KB | latency ms | speed-up | in runtime |",
          "|---|---|---:|---:|---:|---:|---:|---:|"]
    md += [f"| {args.model} {r['model']} | {r['runtime']} | {r['params']:,} | {r['flops'] / 1e6:.2f} | "
           f"{r['bytes'] / 1024:.1f} | {r['latency_ms']:.3f} | {r['speedup']:.2f}x | {r['speedup_in_runtime']:.2f}x |"
           for r in rows]
    save_result(args.json, {"threads": args.threads, "rounds": args.rounds, "runs": args.runs, "rows": rows}, "\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
