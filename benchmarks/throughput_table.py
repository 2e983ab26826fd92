"""Throughput table: images/s of every training mode for several teacher -> student pairs, one command.

    python benchmarks/throughput_table.py --root ../shared/datasets

For each pair it runs `curridistill bench throughput` (ceiling, plain, online_kd, cached_kd and the plain
PyTorch reference, interleaved in rounds inside one process, so machine noise hits every mode alike),
writes that pair's JSON to benchmarks/results/throughput_<teacher>_<student>_<device>.json and then the
combined Markdown table (throughput_<device>.md) that the README includes verbatim. Ratios are taken
inside one pair's run, never across runs. `--render` rewrites the Markdown from the JSON files already
there without measuring anything.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PAIRS = ("resnet56:resnet8", "resnet56:resnet20")
MODE_LABELS = {
    "ceiling": "`ceiling` (student fwd+bwd on resident tensors)",
    "plain": "`plain` (supervised, real pipeline)",
    "online_kd": "`online_kd` (teacher forward every batch)",
    "cached_kd": "`cached_kd` (teacher outputs from the cache)",
    "reference": "plain PyTorch reference (DataLoader + online teacher)",
}


def _pairs(text: str) -> list[tuple[str, str]]:
    from curridistill.errors import UserError

    pairs = []
    for item in text.split(","):
        teacher, sep, student = item.partition(":")
        if not sep or not teacher or not student:
            raise UserError(f"--pairs {text!r}: expected TEACHER:STUDENT[,TEACHER:STUDENT...], e.g. resnet56:resnet8")
        pairs.append((teacher, student))
    return pairs


def json_path(results: Path, teacher: str, student: str, device: str) -> Path:
    return results / f"throughput_{teacher}_{student}_{device}.json"


def markdown(records: list[dict]) -> str:
    """One column of images/s and one of ratio-to-ceiling per pair; each column comes from one run."""
    heads = [f"{r['settings']['teacher']} → {r['settings']['student']}" for r in records]
    lines = ["| images/s | " + " | ".join(f"{h} | ratio to ceiling" for h in heads) + " |",
             "|---|" + "---:|---:|" * len(records)]
    for mode, label in MODE_LABELS.items():
        if not all(mode in r["modes"] for r in records):
            continue
        cells = []
        for r in records:
            ips, ceiling = r["modes"][mode]["images_per_s"], r["modes"]["ceiling"]["images_per_s"]
            ratio = f"{ips / ceiling:.2f}"
            cells += [f"{ips:.0f}", f"**{ratio}**" if mode == "cached_kd" else ratio]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    for h, r in zip(heads, records):
        ratio = r["ratios"]
        parts = [f"cached_kd / online_kd = {ratio['cached_kd/online_kd']:.2f}x"]
        if "cached_kd/reference" in ratio:
            parts.append(f"cached_kd / plain PyTorch = {ratio['cached_kd/reference']:.2f}x")
        s = r["settings"]
        lines.append(f"- {h}: " + "; ".join(parts) + f" ({s['train_images']:,} images, batch {s['batch_size']}, "
                     f"{s['steps']} steps x {s['rounds']} rounds, torch threads {r['machine']['torch_threads']}, {r['date'][:10]})")
    commands = list(dict.fromkeys(r["command"] for r in records))
    lines += [""] + [f"Command: `{c}`" for c in commands]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", help="data directory (default $CURRIDISTILL_DATA)")
    p.add_argument("--pairs", default=",".join(PAIRS), help="TEACHER:STUDENT pairs, comma-separated")
    p.add_argument("--subset", type=int, default=10000)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--results", default=str(RESULTS), help="folder for the JSON files and the Markdown table")
    p.add_argument("--render", action="store_true", help="only rewrite the Markdown from the JSON files already there")
    args = p.parse_args(argv)
    from curridistill.errors import UserError

    try:
        return build(args, argv)
    except UserError as exc:  # missing data, an unknown model, bad numbers: one line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        return 2


def build(args: argparse.Namespace, argv: list[str] | None) -> int:
    from curridistill.bench.throughput import print_table, run_throughput
    from curridistill.errors import UserError
    from curridistill.io import write_json, write_text

    results = Path(args.results)
    device = "cuda" if args.device.startswith("cuda") else "cpu"
    command = "python benchmarks/throughput_table.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    records = []
    for teacher, student in _pairs(args.pairs):
        path = json_path(results, teacher, student, device)
        if args.render:
            if not path.is_file():
                raise UserError(f"--render: {path} does not exist; run without --render to measure it")
            records.append(json.loads(path.read_text()))
            continue
        record = run_throughput(teacher=teacher, student=student, data="cifar10", root=args.root, subset=args.subset,
                                steps=args.steps, warmup=args.warmup, rounds=args.rounds, device=args.device,
                                with_reference=True, command=command, log=lambda msg: print(msg, flush=True))
        write_json(path, record)
        print_table(record)
        records.append(record)
    write_text(results / f"throughput_{device}.md", markdown(records))
    print(f"wrote {results / f'throughput_{device}.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
