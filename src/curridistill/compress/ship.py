"""The last stages of a run: measure every stage of the compression path on the test split, quantize
the final student to int8, export it (ONNX checked with ONNX Runtime), predict a few test images
written as PNG files from the exported model, and write ``RUN_DIR/ship/compression.{md,png,json}``.

Every stage is measured here, in one process and one after the other, so latencies compare: teacher,
distilled student (before pruning), each pruning step after its recovery lesson, int8 variants of the
final student, and its exported files run by their own runtime.
"""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch import Tensor, nn

from curridistill.compress import report as compression_report
from curridistill.evaluate.measure import accuracy, interleaved_latency_ms, logits_of, state_bytes
from curridistill.compress.quantize import quantize
from curridistill.config import Config, ShipConfig
from curridistill.errors import UserError
from curridistill.evaluate.efficiency import count_params, flops_per_sample
from curridistill.export import SUFFIX, check_parity, export, exported_runner, parity_ok
from curridistill.export.onnx import opset_of
from curridistill.io import read_json, write_json
from curridistill.models.checkpoint import load_model, read_spec
from curridistill.serve import predict_files


def _test_tensors(pipeline) -> tuple[Tensor, Tensor]:
    """The whole test split as normalized CPU tensors (N, ...), (N,)."""
    n = len(pipeline.splits.test)
    xs, ys = [], []
    for i in range(0, n, 512):
        x, y = pipeline.batch("test", torch.arange(i, min(i + 512, n)))
        xs.append(x.float().cpu().contiguous())
        ys.append(y.cpu())
    return torch.cat(xs), torch.cat(ys)


def _write_samples(pipeline, out_dir: Path, n: int) -> list[tuple[Path, int]]:
    """The first ``n`` test images as PNG files (what a user would have), with their true labels."""
    test = pipeline.splits.test
    if not isinstance(test.x, Tensor) or test.x.dtype != torch.uint8 or test.x.dim() != 4 or test.x.shape[1] not in (1, 3):
        return []  # not in-memory pixels (tabular, text or streamed data): no image files to write
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(min(n, len(test))):
        img = test.x[i].permute(1, 2, 0).numpy()  # (H, W, C) uint8
        label = int(test.y[i])
        path = out_dir / f"{i:03d}_{test.classes[label]}.png"
        Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img).save(path)
        written.append((path, label))
    return written


class _Stages:
    """Rows of the compression table, each measured on the same test tensors; ``time_all`` then times every
    stage's batch-1 latency, interleaved, so the speed-ups compare stages measured under the same load."""

    def __init__(self, x: Tensor, y: Tensor, input_shape: tuple[int, ...], runs: int):
        self.x, self.y, self.shape, self.runs = x, y, tuple(input_shape), runs
        self.rows: list[dict] = []
        self.forwards: list = []

    def add(self, stage: str, forward, runtime: str, params: int, flops: int | None, size: int, **extra) -> dict:
        logits = logits_of(forward, self.x)
        row = {"stage": stage, "runtime": runtime, "accuracy": accuracy(logits, self.y), "params": params,
               "flops": flops, "size_bytes": size, "latency_ms": None, **extra}
        self.rows.append(row)
        self.forwards.append(forward)
        return row

    def time_all(self) -> None:
        latencies = interleaved_latency_ms({str(i): f for i, f in enumerate(self.forwards)}, self.x[:1], runs=self.runs)
        for i, row in enumerate(self.rows):
            row["latency_ms"] = latencies[str(i)]

    def add_model(self, stage: str, model: nn.Module, **extra) -> dict:
        model = model.cpu().eval()
        return self.add(stage, model, "pytorch", count_params(model), flops_per_sample(model, self.shape),
                        state_bytes(model), **extra)


def ship(cfg: Config, run_dir: str | Path, pipeline, teacher: nn.Module | None, student: nn.Module) -> dict:
    """Measure, quantize, export and predict as ``cfg.ship`` says (without it: measure the stages only)."""
    if getattr(pipeline, "tokens", False):
        raise UserError("ship: and prune lessons support image and tabular models; this run's data are token ids "
                        "(text): drop the ship section and export the student with `curridistill export CHECKPOINT "
                        "--format onnx` (or onnx-int8, torchscript)")
    run_dir = Path(run_dir)
    sc = cfg.ship
    out = run_dir / "ship"
    spec = read_spec(run_dir / "student" / "model.safetensors")
    x, y = _test_tensors(pipeline)
    stages = _Stages(x, y, pipeline.splits.input_shape, cfg.run.eval.latency_runs)
    notes: list[str] = []
    steps = read_json(run_dir / "student" / "prune.json") if (run_dir / "student" / "prune.json").is_file() else []

    before = None  # the distilled student before the first cut
    if teacher is not None:
        stages.add_model("teacher", teacher)
    if steps:
        before, _ = load_model(run_dir / "student" / f"prune-{steps[0]['lesson']}-before.safetensors")
        stages.add_model("student", before)
        for s in steps[:-1]:
            recovered, _ = load_model(run_dir / "student" / f"prune-{s['lesson']}.safetensors")
            stages.add_model(f"pruned {s['achieved']:.0%} + recovery", recovered, lesson=s["lesson"])
        last = steps[-1]
        stages.add_model(f"pruned {last['achieved']:.0%} + recovery", student, lesson=last["lesson"])
    else:
        stages.add_model("student", student)
    final_name = stages.rows[-1]["stage"]
    student = student.cpu().eval()
    result: dict = {"prune_steps": steps}

    if sc is not None:
        calibration = calibration_batches(pipeline, sc.calibration_batches)  # PyTorch int8 and onnx-int8 alike
        _quantize(sc, stages, student, calibration, notes)
        unpruned = []
        if before is not None and "onnx" in sc.export:  # its row sits just above the pruned file's
            unpruned = [_export_unpruned(sc, stages, before, spec, out, x, notes)]
        result["exports"] = _export(sc, stages, student, spec, out, x, calibration, final_name, notes)
        result["reference_exports"] = unpruned
        onnx_path = next((Path(e["path"]) for e in result["exports"] if e["format"] == "onnx"), None)
        if onnx_path is not None and sc.predict_samples > 0:
            result["predict"] = _predict(pipeline, onnx_path, out, sc.predict_samples)
    stages.time_all()
    _step_latencies(steps, stages.rows)
    _onnx_pruning_note(stages.rows, notes)
    result["rows"] = stages.rows
    result["notes"] = notes
    paths = compression_report.write(out, stages.rows, steps, notes)
    write_json(out / "compression.json", result)
    result["files"] = {k: str(v) for k, v in paths.items()}
    return result


def _step_latencies(steps: list[dict], rows: list[dict]) -> None:
    """Give each pruning step its latency before -> after from the interleaved stage timings
    (``latency_interleaved_ms``). The timings prune.json took during training were one model at a time,
    under whatever else ran then. A model's latency depends on its widths, not its weights, so the
    just-pruned model times as its recovered row; "before" is the previous stage's row."""
    after = {r["lesson"]: r["latency_ms"] for r in rows if "lesson" in r}
    previous = next((r["latency_ms"] for r in rows if r["stage"] == "student"), None)
    for s in steps:
        current = after.get(s["lesson"])
        if previous is not None and current is not None:
            s["latency_interleaved_ms"] = [previous, current]
        previous = current


def calibration_batches(pipeline, count: int) -> list[Tensor]:
    """The first ``count`` training batches of the pipeline's batch size (un-augmented, normalized, on the CPU):
    what int8 calibrates activation ranges on, in the ship stages and in benchmarks that redo them."""
    n = len(pipeline.splits.train)
    bs = pipeline.cfg.batch_size
    return [pipeline.batch("train", torch.arange(i * bs, min((i + 1) * bs, n)))[0].float().cpu()
            for i in range(min(count, -(-n // bs)))]


def _quantize(sc: ShipConfig, stages: _Stages, student: nn.Module, calibration: list[Tensor], notes: list[str]) -> None:
    flops = stages.rows[-1]["flops"] if stages.rows else None
    for mode in sc.quantize:
        try:
            q = quantize(student, mode, calibration)
        except UserError as exc:
            notes.append(f"int8 {mode}: skipped ({exc})")
            continue
        stages.add(f"int8 {mode}", q, "pytorch int8", count_params(student), flops, state_bytes(q))
        if mode == "dynamic" and not any(isinstance(m, nn.Linear) for m in student.modules()):
            notes.append("int8 dynamic quantizes linear layers only; this model has none")
    if sc.quantize:
        notes.append("int8 with torch.ao.quantization (x86/fbgemm kernels); see README 'Shipping a model' for why "
                     "not torchao on this CPU")


def _export(sc: ShipConfig, stages: _Stages, student: nn.Module, spec: dict, out: Path, x: Tensor,
            calibration: list[Tensor], final_name: str, notes: list[str]) -> list[dict]:
    flops = next(r["flops"] for r in stages.rows if r["stage"] == final_name)
    return [_export_checked(sc, stages, student, spec, fmt, out / f"model{SUFFIX[fmt]}", f"exported {fmt}", flops, x,
                            calibration, notes) for fmt in sc.export]


def _export_checked(sc: ShipConfig, stages: _Stages, model: nn.Module, spec: dict, fmt: str, path: Path, stage: str,
                    flops: int | None, x: Tensor, calibration: list[Tensor], notes: list[str]) -> dict:
    """Export ``model`` as ``fmt``, check it against PyTorch on test samples, and add its stage row (formats
    that another runtime runs); returns the export's entry for compression.json."""
    path = export(model, spec, fmt, path, sc.opset, calibration)
    entry = {"format": fmt, "path": str(path), "bytes": path.stat().st_size}
    if fmt.startswith("onnx") and opset_of(path) != sc.opset:  # the exporter keeps 18 when it cannot convert down
        entry["opset"] = opset_of(path)
        notes.append(f"{fmt}: ship.opset {sc.opset} was asked; the exporter could not convert this model down and "
                     f"kept opset {entry['opset']}")
    runner = exported_runner(fmt, path)
    if runner is None:
        return entry
    check = check_parity(model, runner, x[:sc.check_samples], runs=stages.runs)
    check["ok"] = parity_ok(fmt, check)
    entry["check"] = check
    if not check["ok"] and fmt == "onnx-int8":  # int8 may be worse; the report says by how much
        notes.append(f"onnx-int8 agrees with the fp32 model on {check['top1_agreement']:.1%} of "
                     f"{check['samples']} test samples only")
    elif not check["ok"]:
        raise UserError(f"{path}: the exported model differs from PyTorch on {check['samples']} test samples "
                        f"(max |logit diff| {check['max_abs_diff']:.2e}, top-1 agreement "
                        f"{check['top1_agreement']:.4f}); try another ship.opset, or drop {fmt}")
    runtime = {"onnx": "onnxruntime", "onnx-int8": "onnxruntime int8"}.get(fmt, "torchscript")
    stages.add(stage, runner, runtime, count_params(model), flops, entry["bytes"],
               max_abs_diff=check["max_abs_diff"], top1_agreement=check["top1_agreement"])
    return entry


UNPRUNED_ONNX = "student exported onnx (unpruned)"


def _export_unpruned(sc: ShipConfig, stages: _Stages, before: nn.Module, spec: dict, out: Path, x: Tensor,
                     notes: list[str]) -> dict:
    """The student before pruning, exported to ONNX and checked like the shipped file: what pruning buys where
    the model is deployed is the pruned file's latency against this one's, both under ONNX Runtime (PyTorch's
    per-layer overhead hides part of the gain at batch 1). The export drops the spec's pruned layer table."""
    before = before.cpu().eval()
    return _export_checked(sc, stages, before, spec, "onnx", out / "student-unpruned.onnx", UNPRUNED_ONNX,
                           flops_per_sample(before, stages.shape), x, [], notes)


def _onnx_pruning_note(rows: list[dict], notes: list[str]) -> None:
    by_stage = {r["stage"]: r for r in rows}
    unpruned, pruned = by_stage.get(UNPRUNED_ONNX), by_stage.get("exported onnx")
    if unpruned and pruned and pruned["latency_ms"]:
        notes.append(f"pruning under ONNX Runtime: {unpruned['latency_ms']:.3f} -> {pruned['latency_ms']:.3f} ms at batch 1 "
                     f"({unpruned['latency_ms'] / pruned['latency_ms']:.2f}x faster; both files fp32)")


def _predict(pipeline, model_path: Path, out: Path, n: int) -> dict:
    """Predict test images written as PNG files from the exported model, as a user would."""
    samples = _write_samples(pipeline, out / "samples", n)
    if not samples:
        return {"skipped": "the test data are not in-memory images"}
    rows, _ = predict_files(model_path, [out / "samples"], top_k=3)
    truth = {str(p): label for p, label in samples}
    correct = sum(r["label"] == truth[r["input"]] for r in rows)
    write_json(out / "predictions.json", rows)
    return {"model": str(model_path), "images": len(rows), "correct": correct,
            "accuracy": correct / max(len(rows), 1), "predictions": str(out / "predictions.json")}
