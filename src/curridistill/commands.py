"""What each CLI command does: call the API, then print. Kept apart from argument parsing."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from curridistill import api
from curridistill.config import load_config
from curridistill.errors import UserError
from curridistill.io import write_json, write_text
from curridistill.models.checkpoint import trusting_code
from curridistill.multirun import check_parallel
from curridistill.outputs import check_writable, refuse_overwriting, same_file

# logs, pipes and files: no terminal to fit, so never wrap (rich would wrap at 80 columns, splitting run names)
PIPE_WIDTH = 4000
console = Console() if sys.stdout.isatty() else Console(width=PIPE_WIDTH)
EXIT_STOPPED = 3  # --stop-after-epochs reached: checkpointed, resumable


def cmd_run(args: argparse.Namespace) -> int:
    from curridistill.train.progress import make_progress

    from curridistill.train import distributed

    worker = distributed.env_ranks().rank > 0  # a torchrun process other than rank 0: silent (bad values: one line)
    if args.stop_after_epochs is not None and args.stop_after_epochs < 1:
        raise UserError(f"--stop-after-epochs {args.stop_after_epochs}: give a number of epochs >= 1")
    progress = make_progress(args.quiet or worker, getattr(args, "log_format", "auto"))
    callbacks = [progress] + ([api.StopAfterEpochs(args.stop_after_epochs)] if args.stop_after_epochs is not None else [])
    if args.resume:
        if args.config or args.seeds is not None:
            raise UserError("--resume continues a run with its saved config; drop CONFIG and --seeds "
                            "(--set KEY=VALUE changes the saved config)")
        call = lambda: api.resume(args.resume, callbacks=callbacks,  # noqa: E731
                                  overrides=args.overrides)
    else:
        if not args.config:
            raise UserError("run needs a CONFIG file (or --resume RUN_DIR); try configs/quickstart.yaml")
        if args.seeds is not None:
            from curridistill.experiments import parse_seeds

            args.overrides = [*args.overrides, f"run.seeds={parse_seeds(args.seeds)}"]
        if args.parallel is not None:
            if args.parallel < 1:
                raise UserError(f"--parallel {args.parallel}: give a number of processes >= 1, e.g. --parallel 4")
            args.overrides = [*args.overrides, f"run.parallel={args.parallel}"]
        cfg = load_config(args.config, args.overrides)
        call = lambda: api.run(cfg, out=args.out, callbacks=callbacks)  # noqa: E731  (api.run: check_parallel)
    try:
        with trusting_code(getattr(args, "trust_code", False)):
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
    if "compression" in report:  # prune / quantize / export stages (ship: section or prune lessons)
        print_compression(report["compression"])
    console.print(f"next: `curridistill report {run_dir}` for plots; try a curriculum: configs/curriculum_confidence.yaml")


def print_compression(comp: dict) -> None:
    table = Table(title="compression stages (test split, batch-1 CPU latency)")
    for col in ("stage", "runtime", "accuracy", "params", "size KB", "latency ms"):
        table.add_column(col, justify="left" if col in ("stage", "runtime") else "right")
    for r in comp["rows"]:
        table.add_row(r["stage"], r["runtime"], f"{r['accuracy']:.4f}", f"{r['params']:,}", f"{r['size_bytes'] / 1024:.1f}",
                      f"{r['latency_ms']:.3f}")
    console.print(table)
    for note in comp.get("notes", []):
        console.print(f"note: {note}", highlight=False)
    if comp.get("predict", {}).get("images"):
        pr = comp["predict"]
        console.print(f"predicted {pr['images']} test images written as PNG with {pr['model']}: {pr['correct']} correct "
                      f"({pr['predictions']})", highlight=False)
    console.print(f"compression report: {comp['files']['markdown']} and {comp['files']['plot']}", highlight=False)


def cmd_validate(args: argparse.Namespace) -> int:
    from curridistill import preflight

    cfg = load_config(args.config, args.overrides)
    check_parallel(cfg)
    preflight.check(cfg, build=not getattr(args, "static", False))
    if args.show:
        from curridistill.data.registry import DATA_ENV, resolve_root

        header = ""
        if cfg.data.root in (None, "") and resolve_root(None) is not None:  # show the root the run will read
            cfg = cfg.model_copy(deep=True)
            cfg.data.root = str(resolve_root(None))
            header = f"# data.root: from ${DATA_ENV}\n"
        sys.stdout.write(header + cfg.to_yaml())
    else:
        lessons = ", ".join(f"{l.name or i}: {l.epochs} epochs, loss {'+'.join(l.loss)}" for i, l in enumerate(cfg.course))
        checked = "names, imports and ranges checked" if getattr(args, "static", False) else \
            "every model built and probed, every lesson built"
        print(f"{args.config}: valid ({len(cfg.course)} lesson(s): {lessons}; {checked})")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if args.json_out:  # before the evaluation: it would fail only at the end
        refuse_overwriting(args.json_out, "--json", [args.checkpoint])
        check_writable(args.json_out, "--json")
    with trusting_code(getattr(args, "trust_code", False)):
        metrics = api.evaluate(args.checkpoint, args.data, device=getattr(args, "device", "cpu") or "cpu", root=args.root,
                               overrides=args.overrides)
    if args.json_out:
        write_json(args.json_out, metrics)
    classes = len(metrics.get("confusion") or [])  # top-5 of 5 classes or fewer is always 1.0: not shown
    top5 = f", top5 {metrics['top5']:.4f}" if "top5" in metrics and (classes == 0 or classes > 5) else ""
    console.print(f"{args.checkpoint} on {metrics['data']} test ({metrics['samples']} samples): "
                  f"accuracy {metrics['accuracy']:.4f}{top5}, f1_macro {metrics['f1_macro']:.4f}, "
                  f"loss {metrics['loss']:.4f}, params {metrics['params']:,}, latency {metrics['latency_ms']:.3f} ms")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from curridistill.serve import predict_files, to_csv, to_json

    if args.out:  # before loading the model and reading the inputs
        refuse_overwriting(args.out, "--out", [args.checkpoint, *args.input])
        check_writable(args.out, "--out", example="predictions.json")
    with trusting_code(getattr(args, "trust_code", False)):
        rows, classes = predict_files(args.checkpoint, args.input, top_k=args.top_k, text_column=args.text_column,
                                      literal_texts=False, device=args.device)  # INPUTs are files; texts are for Python
    text = to_json(rows) if args.format == "json" else to_csv(rows, classes)
    if args.out:
        write_text(args.out, text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from curridistill.export import check_output, default_out, export_model, written_files

    if args.json_out:  # before the export: it would fail only once the model is written
        check_output(args.checkpoint, args.json_out, None, "--json")
        exported = written_files(Path(args.out or default_out(args.checkpoint, args.format)), args.format)
        if any(same_file(args.json_out, path) for path in exported):  # a safetensors export's spec too
            raise UserError(f"--json {args.json_out} is also a file the export writes; give the result JSON another path")
    with trusting_code(getattr(args, "trust_code", False)):
        result = export_model(args.checkpoint, args.format, args.out, opset=args.opset,
                              check_samples=args.check_samples, root=args.root)
    if args.json_out:
        write_json(args.json_out, result)
    console.print(f"wrote {result['path']} ({result['format']}, {result['bytes'] / 1024:.1f} KB)", highlight=False)
    if result.get("opset_note"):
        console.print(f"note: {result['opset_note']}", highlight=False)
    check = result.get("check")
    if check:
        console.print(f"check on {check['inputs']}: max |logit diff| {check['max_abs_diff']:.2e}, top-1 agreement "
                      f"{check['top1_agreement']:.2%}; batch-1 latency {check['exported_latency_ms']:.3f} ms "
                      f"(PyTorch {check['pytorch_latency_ms']:.3f} ms)", highlight=False)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from curridistill import catalog

    rows = catalog.listing(args.what, args.input_size, args.num_classes)
    table = Table(title=args.what)
    for col in rows[0]:
        table.add_column(col)
    for row in rows:
        table.add_row(*[str(v) for v in row.values()])
    Console(width=max(console.width, 200)).print(table)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from curridistill.report import write_report

    paths = write_report(Path(args.run_dir))
    for name, path in paths.items():
        console.print(f"{name}: {path}")
    return 0


RUN_FILES = ("report.json", "aggregate.json", "config.yaml", "metrics.jsonl")  # what compare reads: never its output


def _refuse_run_file(path: str, flag: str, run_dirs: list[str]) -> None:
    """An output of ``compare`` must not replace a file of the runs it reads (theirs or their seeds')."""
    try:
        target = Path(path).resolve()
        dirs = [Path(d).resolve() for d in run_dirs]
    except (OSError, RuntimeError):  # unresolvable: check_writable and compare_runs say why
        return
    if target.name in RUN_FILES and any(d in (target.parent, target.parent.parent) for d in dirs):
        raise UserError(f"{flag} {path} would overwrite {target.name} of a run that compare reads; choose another path")


def cmd_compare(args: argparse.Namespace) -> int:
    from curridistill.experiments.compare import compare_runs, markdown, print_table

    outputs = [(flag, path) for flag, path in (("--out", args.out), ("--json", args.json_out)) if path]
    for flag, path in outputs:  # before reading the runs
        refuse_overwriting(path, flag)
        _refuse_run_file(path, flag, args.run_dirs)
        check_writable(path, flag, example="compare.md" if flag == "--out" else "compare.json")
    if len(outputs) == 2 and same_file(args.out, args.json_out):
        raise UserError(f"--out and --json both name {args.out}; give the Markdown table and the JSON rows two paths")
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
                        overrides=args.overrides, progress=progress, on_trial=on_trial, parallel=args.parallel)
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


def cmd_auto(args: argparse.Namespace) -> int:
    from curridistill.experiments.auto import auto
    from curridistill.experiments.auto_report import mean_pm

    log = (lambda msg: None) if args.quiet else (lambda msg: console.print(msg, highlight=False))

    def on_trial(row: dict) -> None:
        if not args.quiet:
            value = "–" if row["value"] is None else f"{row['value']:.4f}"
            note = f" ({row['rejected']})" if row["rejected"] else ""
            console.print(f"trial {row['number']}: {row['state'].lower()}{note} {value}  {row['recipe']}", highlight=False)

    try:
        result = auto(args.config, args.budget, out=args.out, objective=args.objective, cost=args.cost,
                      max_latency_ms=args.max_latency_ms, max_params=args.max_params, resume=args.resume,
                      storage=args.storage, trials_parallel=args.trials_parallel, overrides=args.overrides, log=log,
                      on_trial=on_trial)
    except KeyboardInterrupt:
        sys.stderr.write(f"interrupted; continue with `curridistill auto {args.config} --budget {args.budget} "
                         f"--out {args.out or 'OUT'} --resume`\n")
        return 130
    if args.quiet:
        print(result["out"])
        return 0
    ch, g = result["chosen"], result["gains"]
    console.print(f"chosen: {ch['recipe']} (trial {ch['trial']}), full-fidelity val {mean_pm(ch['val'])}, "
                  f"test {mean_pm(ch['test'])}", highlight=False)
    if g:
        console.print(f"gain over the config's recipe: search {g['search_val_gain']:+.4f} val, full {g['full_val_gain']:+.4f} "
                      f"val, test {g['test_gain']:+.4f}", highlight=False)
    console.print(f"used {result['used_s']:.0f} s of {result['budget_s']:.0f} s; {result['n_trials']} trials")
    console.print(f"search directory: {result['out']}  (best.yaml, pareto.yaml, auto.md, trials.csv, study.db)")
    console.print(f"next: `curridistill run {result['best_yaml']}`")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from curridistill.bench.throughput import command_line, print_table, run_throughput

    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads {args.threads}: give a number of CPU threads >= 1, or leave it out for torch's "
                            f"choice (OMP_NUM_THREADS)")
        torch.set_num_threads(args.threads)
    if args.out:  # before the benchmark: minutes of measurements must not be lost to a path that cannot be written
        refuse_overwriting(args.out, "--out")
        check_writable(args.out, "--out", example="throughput.json")
    log = (lambda msg: None) if args.quiet else (lambda msg: console.print(msg, highlight=False))
    result = run_throughput(teacher=args.teacher, student=args.student, data=args.data, root=args.root,
                            batch_size=args.batch_size, steps=args.steps, warmup=args.warmup, rounds=args.rounds,
                            subset=args.subset, device=args.device, with_reference=args.with_reference,
                            workers=args.workers, channels_last=args.channels_last, cache_dir=args.cache_dir,
                            command=command_line(), log=log, data_options={"verify": False} if args.no_verify else None,
                            captured=args.captured)
    if args.out:
        write_json(args.out, result)
    if not args.quiet:
        print_table(result, console)
        if args.out:
            console.print(f"wrote {args.out}")
    return 0
