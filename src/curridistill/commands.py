"""What each CLI command does: call the API, then print. Kept apart from argument parsing."""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from curridistill import api
from curridistill.config import DataConfig, load_config
from curridistill.errors import UserError
from curridistill.io import write_json, write_text

console = Console() if sys.stdout.isatty() else Console(width=120)  # logs and pipes: no truncated columns
EXIT_STOPPED = 3  # --stop-after-epochs reached: checkpointed, resumable


def cmd_run(args: argparse.Namespace) -> int:
    from curridistill.train.progress import make_progress

    from curridistill.train import distributed

    worker = int(os.environ.get("RANK", "0")) > 0  # a torchrun process other than rank 0: silent
    progress = make_progress(args.quiet or worker)
    if args.resume:
        if args.config or args.overrides or args.seeds:
            raise UserError("--resume continues a run with its saved config; drop CONFIG, --set and --seeds")
        call = lambda: api.resume(args.resume, progress=progress, stop_after_epochs=args.stop_after_epochs)  # noqa: E731
    else:
        if not args.config:
            raise UserError("run needs a CONFIG file (or --resume RUN_DIR); try configs/quickstart.yaml")
        if args.seeds:
            from curridistill.experiments import parse_seeds

            args.overrides = [*args.overrides, f"run.seeds={parse_seeds(args.seeds)}"]
        if args.parallel is not None:
            if args.parallel < 1:
                raise UserError(f"--parallel {args.parallel}: give a number of processes >= 1, e.g. --parallel 4")
            args.overrides = [*args.overrides, f"run.parallel={args.parallel}"]
        cfg = load_config(args.config, args.overrides)
        call = lambda: api.run(cfg, out=args.out, progress=progress, stop_after_epochs=args.stop_after_epochs)  # noqa: E731
    try:
        if progress:
            with progress:
                report = call()
        else:
            report = call()
    except api.StopRequested as stop:  # no process-group teardown here: DDP still holds it; exiting releases it
        if not worker:
            sys.stderr.write(f"{stop}; the checkpoint is saved: continue with `curridistill run --resume RUN_DIR`\n")
        return EXIT_STOPPED
    distributed.shutdown()
    if worker:
        return 0
    if args.quiet:
        print(report["run_dir"])
    elif "per_seed" in report:  # several seeds or folds: the aggregate
        from curridistill.experiments import print_aggregate

        print_aggregate(report, console)
    else:
        print_summary(report)
    return 0


def print_summary(report: dict) -> None:
    table = Table(title=f"test split ({report['selection']} checkpoint)")
    for col in ("model", "accuracy", "f1_macro", "params", "MFLOPs", "latency ms", "train s", "agreement"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for name in ("teacher", "baseline", "student"):
        m = report.get(name)
        if m is None:
            continue
        secs = m.get("train_seconds")
        table.add_row(name, f"{m['accuracy']:.4f}", f"{m['f1_macro']:.4f}", f"{m['params']:,}", f"{m['flops'] / 1e6:.3g}",
                      f"{m['latency_ms']:.3f}", "reused" if secs is None else f"{secs:.1f}",
                      f"{m['agreement']:.3f}" if "agreement" in m else "-")
    console.print(table)
    c = report["comparison"]
    if "student_minus_baseline_accuracy" in c:
        console.print(f"distillation gain over the baseline: {c['student_minus_baseline_accuracy']:+.4f} accuracy")
    if "teacher_student_param_ratio" in c:
        console.print(f"student: {c['teacher_student_param_ratio']:.1f}x fewer parameters, "
                      f"{c['student_speedup_over_teacher']:.2f}x faster (batch-1 latency) than the teacher")
    run_dir = report["run_dir"]
    console.print(f"run directory: {run_dir}  (report.json, metrics.jsonl, checkpoints)")
    console.print(f"next: `curridistill report {run_dir}` for plots; try a curriculum: configs/curriculum_confidence.yaml")


def cmd_validate(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    if args.show:
        sys.stdout.write(cfg.to_yaml())
    else:
        lessons = ", ".join(f"{l.name or i}: {l.epochs} epochs, loss {'+'.join(l.loss)}" for i, l in enumerate(cfg.course))
        print(f"{args.config}: valid ({len(cfg.course)} lesson(s): {lessons})")
    return 0


def _eval_pipeline(spec: dict, data: str | None, root: str | None, device: torch.device = torch.device("cpu")):
    from curridistill.data.pipeline import Pipeline, load_splits

    raw = dict(spec.get("data") or {"name": "digits"})
    if data:
        raw = {"name": data}
    if root:
        raw["root"] = root
    cfg = DataConfig(**raw)
    splits = load_splits(cfg)
    if splits.num_classes != spec["num_classes"]:
        raise UserError(f"the model predicts {spec['num_classes']} classes but data {cfg.name!r} has "
                        f"{splits.num_classes}; evaluate it on the data it was trained for")
    return Pipeline(splits, cfg, device)


def cmd_eval(args: argparse.Namespace) -> int:
    from curridistill.config import EvalConfig
    from curridistill.evaluate.evaluation import evaluate_model
    from curridistill.models.checkpoint import load_model

    model, spec = load_model(args.checkpoint)
    device = api.resolve_device(getattr(args, "device", "cpu") or "cpu")
    pipeline = _eval_pipeline(spec, args.data, args.root, device)
    model = model.to(device)
    metrics, _ = evaluate_model(model, pipeline, EvalConfig(), None)
    metrics.pop("train_seconds")
    if args.json_out:
        write_json(args.json_out, metrics)
    console.print(f"{args.checkpoint} on {pipeline.cfg.name} test ({metrics['samples']} samples): "
                  f"accuracy {metrics['accuracy']:.4f}, top5 {metrics['top5']:.4f}, f1_macro {metrics['f1_macro']:.4f}, "
                  f"loss {metrics['loss']:.4f}, params {metrics['params']:,}, latency {metrics['latency_ms']:.3f} ms")
    return 0


def _read_samples(path: str, spec: dict) -> torch.Tensor:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"input file not found: {p}")
    try:
        loaded = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise UserError(f"cannot read {p} as .npy/.npz ({exc}); save samples with numpy.save") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        key = "x" if "x" in loaded.files else loaded.files[0]
        loaded = loaded[key]
    x = torch.from_numpy(np.asarray(loaded))
    shape = tuple(spec["input_shape"])
    if tuple(x.shape[1:]) == shape:
        pass
    elif len(shape) == 3 and tuple(x.shape[1:]) == (shape[1], shape[2], shape[0]):
        x = x.permute(0, 3, 1, 2)
    elif len(shape) == 3 and shape[0] == 1 and tuple(x.shape[1:]) == shape[1:]:
        x = x.unsqueeze(1)
    elif tuple(x.shape) == shape:
        x = x.unsqueeze(0)
    else:
        raise UserError(f"{p}: samples of shape {tuple(x.shape[1:])} do not fit the model's input {shape} "
                        f"(N x C x H x W or N x H x W x C expected)")
    x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
    if spec.get("normalize", True):
        view = (1, -1, 1, 1) if x.dim() == 4 else (1, -1)
        x = (x - torch.tensor(spec["mean"]).view(view)) / torch.tensor(spec["std"]).view(view)
    return x


def cmd_predict(args: argparse.Namespace) -> int:
    from curridistill.models.checkpoint import load_model

    model, spec = load_model(args.checkpoint)
    x = _read_samples(args.input, spec)
    with torch.inference_mode():
        probs = torch.cat([torch.softmax(model(x[i:i + 512]), 1) for i in range(0, len(x), 512)])
    labels = probs.argmax(1).tolist()
    classes = spec.get("classes") or [str(i) for i in range(probs.shape[1])]
    if args.format == "json":
        text = json.dumps([{"index": i, "label": l, "class": classes[l], "probabilities": [round(v, 6) for v in p]}
                           for i, (l, p) in enumerate(zip(labels, probs.tolist()))], indent=1) + "\n"
    else:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["index", "label", "class"] + [f"p_{c}" for c in classes])
        for i, (l, p) in enumerate(zip(labels, probs.tolist())):
            w.writerow([i, l, classes[l]] + [f"{v:.6f}" for v in p])
        text = buf.getvalue()
    if args.out:
        write_text(args.out, text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from curridistill import catalog

    rows = catalog.listing(args.what, args.input_size, args.num_classes)
    table = Table(title=args.what)
    for col in rows[0]:
        table.add_column(col)
    for row in rows:
        table.add_row(*[str(v) for v in row.values()])
    Console(width=200).print(table)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from curridistill.report import write_report

    paths = write_report(Path(args.run_dir))
    for name, path in paths.items():
        console.print(f"{name}: {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from curridistill.experiments.compare import compare_runs, markdown, print_table

    result = compare_runs(args.run_dirs)
    if args.out:
        write_text(args.out, markdown(result))
    if args.json_out:
        write_json(args.json_out, result)
    print_table(result, Console(width=max(console.width, 160)))
    for path in (args.out, args.json_out):
        if path:
            console.print(f"wrote {path}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from curridistill.experiments.tune import short_params, tune
    from curridistill.train.progress import make_progress

    progress = make_progress(args.quiet)

    def on_trial(row: dict) -> None:
        if not args.quiet:
            value = "–" if row["value"] is None else f"{row['value']:.4f}"
            secs = "" if row["seconds"] is None else f" {row['seconds']:.1f}s"
            console.print(f"trial {row['number']}: {row['state'].lower()} {value}{secs}  {short_params(row['params'])}")

    call = lambda: tune(args.config, args.trials, out=args.out, sampler=args.sampler, storage=args.storage,  # noqa: E731
                        study_name=args.study_name, resume=args.resume, timeout=args.timeout,
                        overrides=args.overrides, progress=progress, on_trial=on_trial)
    if progress:
        with progress:
            result = call()
    else:
        result = call()
    if args.quiet:
        print(result["out"])
        return 0
    table = Table(title=f"{result['study_name']}: {result['n_trials']} trials ({result['counts'].get('complete', 0)} complete, "
                        f"{result['counts'].get('pruned', 0)} pruned), {result['metric']} ({result['direction']})")
    for col in ("trial", "state", result["metric"], "seconds", "params"):
        table.add_column(col, justify="left" if col in ("state", "params") else "right")
    for row in result["trials"]:
        table.add_row(str(row["number"]), row["state"].lower(), "–" if row["value"] is None else f"{row['value']:.4f}",
                      "–" if row["seconds"] is None else f"{row['seconds']:.1f}", short_params(row["params"]))
    Console(width=max(console.width, 160)).print(table)
    console.print(f"best: trial {result['trial']} {result['metric']} {result['value']:.4f} {short_params(result['params'])}")
    console.print(f"study directory: {result['out']}  (study.db, trials.csv, best_params.json, best.yaml)")
    console.print(f"next: `curridistill run {result['best_yaml']} --seeds 0,1,2` to measure the best config on test")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from curridistill.bench.throughput import command_line, print_table, run_throughput

    if args.threads:
        torch.set_num_threads(args.threads)
    log = (lambda msg: None) if args.quiet else (lambda msg: console.print(msg, highlight=False))
    result = run_throughput(teacher=args.teacher, student=args.student, data=args.data, root=args.root,
                            batch_size=args.batch_size, steps=args.steps, warmup=args.warmup, rounds=args.rounds,
                            subset=args.subset, device=args.device, with_reference=args.with_reference,
                            workers=args.workers, channels_last=args.channels_last, cache_dir=args.cache_dir,
                            command=command_line(), log=log, data_options={"verify": False} if args.no_verify else None)
    if args.out:
        write_json(args.out, result)
    if not args.quiet:
        print_table(result, console)
        if args.out:
            console.print(f"wrote {args.out}")
    return 0
