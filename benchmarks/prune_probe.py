"""Where does a channel-pruned model start its recovery? A trained checkpoint is pruned once per setting
(importance x scope x amount, no training) and each copy is measured: validation accuracy right after the
step, the same after re-estimating BatchNorm statistics on a few training batches (adaptive BN), parameters
and FLOPs (latency: benchmarks/prune_latency.py, which times the models interleaved). Cheap (seconds per setting), so it chooses the settings of a prune course
before its hour of recovery epochs:

    python benchmarks/prune_probe.py configs/ship_cifar10_resnet20.yaml \
        --checkpoint teachers/resnet20_cifar10_cpu_full.safetensors --amounts 0.3,0.5 \
        --json benchmarks/results/prune_probe_resnet20.json --set data.root=../shared/datasets
"""
from __future__ import annotations

import argparse
import copy
import itertools

import torch
from torch import nn

from curridistill.api import prepare
from curridistill.bench.throughput import save_result
from curridistill.compress.prune import prune, recalibrate_batchnorm
from curridistill.config import load_config
from curridistill.evaluate.efficiency import count_params, flops_per_sample
from curridistill.models.checkpoint import load_model
from curridistill.train.pruning import train_batches, val_accuracy


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", help="a config naming the data (its split decides the validation samples)")
    ap.add_argument("--checkpoint", required=True, help="the trained model to prune")
    ap.add_argument("--amounts", default="0.3,0.5")
    ap.add_argument("--importances", default="l1,l2,taylor")
    ap.add_argument("--scopes", default="layer,global")
    ap.add_argument("--bn-batches", type=int, default=32, help="training batches of the BatchNorm re-estimation")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", required=True)
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.set)
    pipeline, _ = prepare(cfg)
    original, spec = load_model(args.checkpoint)
    shape = tuple(pipeline.splits.input_shape)
    bs = cfg.data.batch_size
    bn_batches = [x for x, _ in train_batches(pipeline, bs, args.bn_batches)]

    def gradients(model: nn.Module) -> None:  # Taylor importance, as a prune lesson computes it
        for x, y in train_batches(pipeline, bs, 4):
            nn.functional.cross_entropy(model(x), y).backward()

    x1 = torch.zeros(1, *shape)
    rows = [{"amount": 0.0, "importance": "-", "scope": "-", "val_raw": val_accuracy(original, pipeline, amp=False), "val_bn": None,
             "params": count_params(original), "flops": flops_per_sample(original, shape)}]
    for amount, importance, scope in itertools.product([float(a) for a in args.amounts.split(",")],
                                                       args.importances.split(","), args.scopes.split(",")):
        model = copy.deepcopy(original)
        reference = copy.deepcopy(original)
        prune(model, amount, x1, spec["num_classes"], importance=importance, reference=reference, scope=scope,
              gradients=gradients)
        raw = val_accuracy(model, pipeline, amp=False)
        recalibrate_batchnorm(model, bn_batches)
        rows.append({"amount": amount, "importance": importance, "scope": scope, "val_raw": raw,
                     "val_bn": val_accuracy(model, pipeline, amp=False), "params": count_params(model),
                     "flops": flops_per_sample(model, shape)})
        print(rows[-1], flush=True)
    md = ["| amount | importance | scope | val just pruned | val after BN re-estimation | params | MFLOPs |",
          "|---:|---|---|---:|---:|---:|---:|"]
    md += [f"| {r['amount']:.2f} | {r['importance']} | {r['scope']} | {r['val_raw']:.4f} | "
           f"{'-' if r['val_bn'] is None else format(r['val_bn'], '.4f')} | {r['params']:,} | {r['flops'] / 1e6:.1f} |"
           for r in rows]
    save_result(args.json, {"threads": torch.get_num_threads(), "bn_batches": args.bn_batches, "rows": rows}, "\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
