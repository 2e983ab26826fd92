"""What run.micro_batches buys and costs: the memory a training step grows by, and its time, per number of parts.

Each setting runs in its own process (a peak cannot be un-reached): the product's training step
(``LessonRun.step``: student forward, CE + KD against an online teacher, backward, SGD) on one batch of the
real data, a few times. On CUDA the memory is the allocator's peak above what was allocated before the steps;
on the CPU it is the growth of the process's peak resident set (``ru_maxrss``), which includes allocator
slack, so read the CPU numbers as a ratio, not as bytes of activations (and a step too small to pass the peak
that loading the data set reached reads as 0).

    python benchmarks/micro_batch_memory.py --student resnet56 --teacher resnet8 --root ../shared/datasets \
        --subset 1024 --batch-size 256 --micro 1,2,4,8 --threads 2 --json benchmarks/results/micro_batch_memory_cpu.json
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from curridistill.bench.throughput import save_result
from curridistill.config import load_config
from curridistill.data.pipeline import Pipeline, load_splits
from curridistill.errors import UserError
from curridistill.knowledge import Clock
from curridistill.models import build_model
from curridistill.models.placement import resolve_device, synchronize
from curridistill.models.taps import FeatureTaps
from curridistill.train.lesson import LessonContext, LessonRun
from curridistill.train.teachers import TeacherBank


def measure(args: argparse.Namespace, micro: int) -> dict:
    """One setting, in this process: peak memory growth and median seconds of a step."""
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device, "--device")
    raw = {"data": {"name": args.data, "root": args.root, "subset": args.subset, "batch_size": args.batch_size,
                    "val_size": 0.1},
           "teacher": {"name": args.teacher}, "student": {"name": args.student},
           "course": [{"epochs": 1, "loss": {"ce": 0.1, "kd": {"weight": 0.9, "temperature": 4}},
                       "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}}],
           "run": {"device": args.device, "micro_batches": micro}}
    cfg = load_config(raw)
    pipeline = Pipeline(load_splits(cfg.data), cfg.data, device)
    shape = pipeline.splits.input_shape
    torch.manual_seed(0)
    teacher = build_model(args.teacher, pipeline.splits.num_classes, shape[0]).to(device).eval()
    student = build_model(args.student, pipeline.splits.num_classes, shape[0]).to(device)
    ctx = LessonContext(phase="student", lesson_index=0, pipeline=pipeline, device=device, seed=0,
                        teachers=TeacherBank([teacher], [1.0], amp=device.type == "cuda"), amp=device.type == "cuda",
                        micro_batches=micro)
    run = LessonRun(student, cfg.course[0], ctx)
    idx = torch.arange(args.batch_size)
    x, y = pipeline.batch("train", idx, epoch=0)
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    seconds = []
    with FeatureTaps(student, run.student_paths, who="student") as taps:
        for k in range(args.steps):
            t0 = time.perf_counter()
            run.step(x, y, idx.to(device), Clock(progress=0.0, epoch=0, epochs=1, step=k), taps)
            synchronize(device)
            seconds.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    timed = sorted(seconds[1:] or seconds)  # the first step warms up
    return {"micro_batches": micro, "peak_growth_mb": round((peak - before) / 2**20, 1),
            "step_seconds": round(timed[len(timed) // 2], 4), "device": str(device)}


def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    base = rows[0]
    lines = [f"run.micro_batches, {args.teacher} -> {args.student}, batch {args.batch_size}, {rows[0]['device']}, "
             f"{args.threads} thread(s): memory a training step grows by, and its time", "",
             "| micro_batches | memory growth MB | vs 1 part | seconds per step | vs 1 part |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['micro_batches']} | {r['peak_growth_mb']:.0f} | {_ratio(r['peak_growth_mb'], base['peak_growth_mb'])} "
                     f"| {r['step_seconds']:.3f} | {_ratio(r['step_seconds'], base['step_seconds'])} |")
    return "\n".join(lines)


def _ratio(value: float, base: float) -> str:
    # a CPU step of a small model may not raise the process's lifetime peak at all (the data loading did more)
    return f"{value / base:.2f}x" if base > 0 else "n/a"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="resnet8")
    ap.add_argument("--student", default="resnet56")
    ap.add_argument("--data", default="cifar10")
    ap.add_argument("--root", default=None)
    ap.add_argument("--subset", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--micro", default="1,2,4,8", help="comma-separated numbers of parts; the first is the baseline")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", required=True)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)  # one setting, printed as JSON (internal)
    args = ap.parse_args(argv)
    if args.child is not None:
        try:
            print(json.dumps(measure(args, args.child)))
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    rows = []
    for micro in (int(m) for m in args.micro.split(",")):
        child = [a for a in (argv if argv is not None else sys.argv[1:])] + ["--child", str(micro)]
        out = subprocess.run([sys.executable, __file__, *child], capture_output=True, text=True)
        if out.returncode != 0:
            last = (out.stderr.strip().splitlines() or ["no output"])[-1].removeprefix("error: ")
            print(f"error: micro_batches={micro}: {last}", file=sys.stderr)
            return 2
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"micro_batches={micro}: {rows[-1]}", file=sys.stderr)
    save_result(args.json, {"benchmark": "micro_batch_memory", "settings": vars(args) | {"child": None}, "rows": rows},
                markdown(rows, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
