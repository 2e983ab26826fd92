"""int8 ONNX with 8-bit or 7-bit weights: test accuracy of each checkpoint under ONNX Runtime in fp32, in int8
with all 8 bits of the weights, and in int8 with 7 (ONNX Runtime's ``reduce_range``, what `export --format
onnx-int8` writes).

    python benchmarks/onnx_int8_weight_bits.py runs/ship-scale-resnet20-pruned-s{0,1,2}/student/model.safetensors \
        --root ../shared/datasets --json benchmarks/results/onnx_int8_weight_bits.json

Why it matters: on x86 CPUs without VNNI (AVX2 only) ONNX Runtime multiplies uint8 activations by int8 weights
with an instruction whose int16 pair sums saturate when the weights use all 8 bits. The JSON says whether this
CPU has VNNI. Calibration as in the ship stages: the first 16 un-augmented training batches; accuracy on the
whole test split of the data each checkpoint was trained on.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from curridistill.bench.throughput import cpu_flags, save_result
from curridistill.compress.ship import calibration_batches
from curridistill.errors import UserError
from curridistill.evaluate.measure import accuracy, logits_of
from curridistill.export import spec_pipeline
from curridistill.export.onnx import OnnxModel, export_onnx, quantize_onnx
from curridistill.models.checkpoint import load_model

CALIBRATION_BATCHES = 16  # what the CIFAR ship configs set (ship.calibration_batches; its default is 8)


def measure(checkpoint: Path, root: str | None) -> dict:
    model, spec = load_model(checkpoint)
    if not spec.get("data"):
        raise UserError(f"{checkpoint} does not say which data trained it (model.json has no data section)")
    pipeline = spec_pipeline(spec, root)
    calibration = calibration_batches(pipeline, CALIBRATION_BATCHES)
    test = pipeline.split("test")
    x, y = pipeline.batch("test", torch.arange(len(test)))
    row = {"checkpoint": str(checkpoint), "test_samples": len(test)}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model.eval(), spec, Path(tmp) / "fp32.onnx")
        row["fp32"] = accuracy(logits_of(OnnxModel(fp32), x.float()), y)
        for bits, seven in ((8, False), (7, True)):
            path = quantize_onnx(fp32, Path(tmp) / f"int8-{bits}.onnx", calibration, seven_bit_weights=seven)
            row[f"int8_{bits}bit_weights"] = accuracy(logits_of(OnnxModel(path), x.float()), y)
    return row


def markdown(rows: list[dict], vnni: bool) -> str:
    lines = [f"ONNX Runtime test accuracy; this CPU {'has' if vnni else 'has no'} VNNI.", "",
             "| checkpoint | fp32 | int8, 8-bit weights | int8, 7-bit weights |", "|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['checkpoint']} | {r['fp32']:.4f} | {r['int8_8bit_weights']:.4f} "
                     f"({r['int8_8bit_weights'] - r['fp32']:+.4f}) | {r['int8_7bit_weights']:.4f} "
                     f"({r['int8_7bit_weights'] - r['fp32']:+.4f}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", type=Path, help="native checkpoints (NAME.safetensors beside NAME.json)")
    ap.add_argument("--root", help="data root, when the checkpoints were trained on files elsewhere")
    ap.add_argument("--json", required=True, help="result JSON; the Markdown table goes beside it (.md)")
    args = ap.parse_args(argv)
    try:
        missing = [str(c) for c in args.checkpoints if not c.is_file()]
        if missing:
            raise UserError(f"no checkpoint at {', '.join(missing)}; pass NAME.safetensors files of finished runs")
        rows = [measure(c, args.root) for c in args.checkpoints]
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    vnni = bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})
    save_result(args.json, {"rows": rows, "cpu_vnni": vnni, "threads": torch.get_num_threads()}, markdown(rows, vnni))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
