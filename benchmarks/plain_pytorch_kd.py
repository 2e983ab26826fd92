"""Plain-PyTorch knowledge distillation, as written from the PyTorch KD tutorial: the reference that
`curridistill bench throughput --with-reference` compares against (the loop lives in
`curridistill.bench.reference`; this script is its command line).

A Dataset over the CIFAR-10 uint8 arrays augments each sample in Python (pad 4 + random crop, flip,
normalize), a DataLoader with worker processes batches them, the teacher runs under no_grad on every
batch, and the student trains with KD (KL * T^2, alpha 0.9) + CE and SGD. Same zoo models as the
bench, so the compute per image is identical; the teacher's weights are random (speed does not
depend on them).

    OMP_NUM_THREADS=1 python benchmarks/plain_pytorch_kd.py --root ../shared/datasets \
        --teacher resnet56 --student resnet8 --steps 30 --out benchmarks/results/reference.json
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys

import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=os.environ.get("CURRIDISTILL_DATA"), help="directory with the CIFAR-10 files")
    p.add_argument("--teacher", default="resnet56")
    p.add_argument("--student", default="resnet20")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default 2)")
    p.add_argument("--subset", type=int, help="use only the first N training images")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="torch threads of the main process")
    p.add_argument("--out", help="also write the result as JSON here")
    args = p.parse_args(argv)

    from curridistill.bench.reference import measure_reference
    from curridistill.bench.throughput import git_commit, machine
    from curridistill.data.cifar import load_cifar10  # noqa: F401  (registers the loader)
    from curridistill.data.registry import DATASETS
    from curridistill.models import build_model

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    train, _ = DATASETS.get("cifar10")(args.root)
    x, y = train.x, train.y
    if args.subset:
        x, y = x[: args.subset], y[: args.subset]
    images = x.permute(0, 2, 3, 1).contiguous().numpy()  # (N, 32, 32, 3) uint8, as in the CIFAR files
    mean = (images.reshape(-1, 3).mean(0) / 255.0).tolist()
    std = (images.reshape(-1, 3).std(0) / 255.0).tolist()
    torch.manual_seed(1000)
    teacher = build_model(args.teacher, 10, 3, {})
    torch.manual_seed(0)
    student = build_model(args.student, 10, 3, {})
    result = measure_reference(images, y.numpy(), mean, std, teacher, student, device, batch_size=args.batch_size,
                               steps=args.steps, warmup=args.warmup, num_workers=args.workers)
    result = {"benchmark": "plain_pytorch_kd", "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
              "git": git_commit(), "torch": torch.__version__,
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(device),
              "teacher": args.teacher, "student": args.student, "train_images": len(images), **result}
    print(f"{args.teacher} -> {args.student}: {result['images_per_s']:.1f} images/s "
          f"({result['steps']} steps of {result['batch_size']}, {result['num_workers']} workers)")
    if args.out:
        from curridistill.io import write_json

        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
