"""Command-line interface: a thin layer over the Python API. Bad input -> one line, exit code 2."""
from __future__ import annotations

import argparse
import sys

EXIT_USER_ERROR = 2
# run directories are timestamped unless --out names one: examples name RUN_DIR, or make the folder they use
RUN_DIR_NOTE = ("RUN_DIR: the folder `run` printed (run.out/run.name-YYYYmmdd-HHMMSS, e.g. "
                "runs/quickstart-20250101-120000, or its --out)")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 2, like every other bad input
        sys.stderr.write(f"error: {message}; see `{self.prog} --help`\n")
        raise SystemExit(EXIT_USER_ERROR)


def _sub(subs, name: str, help_text: str, example: str) -> argparse.ArgumentParser:
    return subs.add_parser(name, help=help_text, description=help_text, epilog=f"example:\n  {example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="curridistill", description="Knowledge distillation with curriculum learning.",
                epilog="example:\n  curridistill run configs/quickstart.yaml\n  curridistill validate configs/quickstart.yaml --print",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    subs = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = _sub(subs, "run", "train teacher(s), the baseline student and the distilled student",
             "curridistill run configs/quickstart.yaml --set course.0.epochs=5 --out runs/try")
    r.add_argument("config", nargs="?", help="YAML config (omit with --resume)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. course.0.loss.kd.temperature=2 (repeatable)")
    r.add_argument("--out", help="run directory (default: run.out/run.name-TIMESTAMP)")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run from its last checkpoint")
    r.add_argument("--seeds", metavar="S,S,...", help="run once per student seed into RUN_DIR/seed-<s>/ and aggregate "
                   "(mean ± std, 95%% CI, p-value vs baseline), e.g. --seeds 0,1,2")
    r.add_argument("--parallel", type=int, metavar="N", help="with --seeds: run N seeds side by side in separate "
                   "processes (several runs share one GPU or split the CPU cores); same results as one by one")
    r.add_argument("--quiet", action="store_true", help="no progress bars or tables")
    r.add_argument("--trust-code", action="store_true",
                   help="let checkpoints named by this run (teacher.checkpoint, model.json) import 'module:callable' "
                        "models: this runs code chosen by whoever made the file; use only for files you trust")
    r.add_argument("--log-format", choices=["auto", "plain", "rich"], default="auto",
                   help="progress: rich bars, or one flushed line per epoch on stdout (plain; the default when the output "
                        "is not a terminal, e.g. a batch job's log)")
    r.add_argument("--stop-after-epochs", type=int, metavar="N",
                   help="train at most N epochs in this call, checkpoint, and exit with code 3 (time-boxed or "
                        "preemptible jobs); continue with --resume RUN_DIR")

    v = _sub(subs, "validate", "check a config without running it", "curridistill validate configs/quickstart.yaml --print")
    v.add_argument("config")
    v.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    v.add_argument("--print", dest="show", action="store_true", help="print the resolved config with every default")
    v.add_argument("--static", action="store_true",
                   help="check names, imports and ranges only: no data loading and no dry build of the models")

    e = _sub(subs, "eval", "evaluate a saved model on the test split of its data",
             f"curridistill eval RUN_DIR/student/model.safetensors\n  {RUN_DIR_NOTE}")
    e.add_argument("checkpoint")
    e.add_argument("--data", help="dataset name (default: the one the model was trained on)")
    e.add_argument("--root", help="data directory")
    e.add_argument("--json", dest="json_out", help="also write the metrics to this JSON file")
    e.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change the data evaluated on, e.g. --set data.options.path=new_folder (test/<class>/ alone "
                        "is enough) or data.options.image_size=64")
    e.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto: where the test split is predicted "
                   "(latency is always measured on a CPU copy; default cpu)")
    e.add_argument("--trust-code", action="store_true",
                   help="allow a model.json naming 'module:callable' (imports and runs that code; trusted files only)")

    pr = _sub(subs, "predict", "predict top-k classes with probabilities for images, folders of images or .npy/.npz "
              "samples, with a native checkpoint or an exported .onnx model; for a model trained on text: .txt files "
              "(one text per line) or .csv/.tsv files with a text column",
              "curridistill predict RUN_DIR/ship/model.onnx digit.png photos/ --top-k 3 --format csv   "
              "# RUN_DIR of `run configs/ship_quickstart.yaml`\n"
              "  curridistill run configs/text_trec.yaml --out runs/trec\n"
              "  curridistill predict runs/trec/seed-0/student/model.safetensors questions.txt --top-k 2\n"
              f"  {RUN_DIR_NOTE}")
    pr.add_argument("checkpoint", metavar="MODEL", help="NAME.safetensors (with NAME.json beside it) or an .onnx file "
                    "from `curridistill export`")
    pr.add_argument("input", nargs="+", metavar="INPUT", help="image files (PNG, JPEG, ...; resized and normalized as in "
                    "training), folders of them, .npy arrays or .npz with key 'x' (uint8 pixels or floats in [0, 1]); "
                    "text models: .txt (one text per line), .csv/.tsv (header row), tokenized as in training")
    pr.add_argument("--text-column", help="text models: the .csv/.tsv column holding the texts (default: the training "
                    "data's text_column, 'text', or the only column)")
    pr.add_argument("--top-k", type=int, default=5, help="classes listed per sample, best first (default 5)")
    pr.add_argument("--format", choices=["json", "csv"], default="json")
    pr.add_argument("--out", help="write here instead of standard output")
    pr.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto: where a checkpoint runs (an .onnx "
                    "file runs on the CPU with ONNX Runtime; default cpu)")
    pr.add_argument("--trust-code", action="store_true",
                    help="allow a model.json naming 'module:callable' (imports and runs that code; trusted files only)")

    ex = _sub(subs, "export", "export a checkpoint for serving: ONNX (checked against PyTorch with ONNX Runtime on "
              "held-out samples, latency of both), TorchScript, or a plain safetensors pair",
              f"curridistill export RUN_DIR/student/model.safetensors --format onnx --out student.onnx\n  {RUN_DIR_NOTE}")
    ex.add_argument("checkpoint", help="NAME.safetensors with NAME.json beside it")
    ex.add_argument("--format", choices=["onnx", "onnx-int8", "torchscript", "safetensors"], default="onnx",
                    help="onnx (fp32, default); onnx-int8 (ONNX Runtime static int8, calibrated on training samples); "
                         "torchscript; safetensors (a native checkpoint pair)")
    ex.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    ex.add_argument("--out", help="output file (default: beside the checkpoint, NAME.onnx / NAME.pt / NAME-export.safetensors)")
    ex.add_argument("--check-samples", type=int, default=256, help="held-out test samples of the check (default 256)")
    ex.add_argument("--root", help="data directory of the check's samples (default: the one the model was trained on)")
    ex.add_argument("--json", dest="json_out", help="also write the result (sizes, check, latencies) to this JSON file")
    ex.add_argument("--trust-code", action="store_true",
                    help="allow a model.json naming 'module:callable' (imports and runs that code; trusted files only)")

    ls = _sub(subs, "list", "list registered models, datasets, knowledge terms, schedules, pacings, scorers",
              "curridistill list models --input-size 3,32,32")
    ls.add_argument("what", choices=["models", "datasets", "knowledge", "schedules", "pacings", "scorers"])
    ls.add_argument("--input-size", default="3,32,32", help="C,H,W for the FLOPs column of `list models`")
    ls.add_argument("--num-classes", type=int, default=10)

    rp = _sub(subs, "report", "write report.md and a self-contained report.html with plots",
              "curridistill run configs/quickstart.yaml --out runs/qs\n  curridistill report runs/qs\n"
              f"  curridistill report RUN_DIR   # {RUN_DIR_NOTE}")
    rp.add_argument("run_dir")

    cp = _sub(subs, "compare", "one table across run directories (single runs or multi-seed parents): accuracy mean ± std, "
              "params, FLOPs, latency, gain over the baseline, Welch p-value vs the first run's student",
              "curridistill run configs/quickstart.yaml --seeds 0,1,2 --out runs/kd-seeds\n"
              "  curridistill run configs/quickstart.yaml --seeds 0,1,2 --set course.0.loss.kd.temperature=2 "
              "--out runs/kd-t2-seeds\n"
              "  curridistill compare runs/kd-seeds runs/kd-t2-seeds --out compare.md")
    cp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    cp.add_argument("--out", help="also write the table as Markdown to this file")
    cp.add_argument("--json", dest="json_out", help="also write the rows as JSON to this file")

    tu = _sub(subs, "tune", "search hyper-parameters with Optuna over the config's tune.space (objective: the student's "
              "best validation metric)", "curridistill tune configs/tune_quickstart.yaml --trials 20 --out runs/tune")
    tu.add_argument("config", help="YAML config with a tune: {space: {...}} section")
    tu.add_argument("--trials", type=int, default=20, help="total finished trials of the study (default 20)")
    tu.add_argument("--parallel", type=int, default=1, metavar="N",
                    help="N worker processes on the same study side by side (one GPU, or the CPU cores split)")
    tu.add_argument("--sampler", choices=["tpe", "random", "grid"], help="default: tune.sampler (tpe)")
    tu.add_argument("--storage", help="Optuna storage URL (default sqlite:///OUT/study.db; journal:PATH needs no database; "
                    "PostgreSQL/MySQL to share)")
    tu.add_argument("--study-name", help="default: curridistill-<run.name>")
    tu.add_argument("--out", help="directory of the study (default: run.out/tune-<run.name>-TIMESTAMP)")
    tu.add_argument("--resume", action="store_true", help="continue the study in --out / --storage")
    tu.add_argument("--timeout", type=float, metavar="S", help="stop starting trials after S seconds")
    tu.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    tu.add_argument("--quiet", action="store_true", help="no progress bars or tables")

    au = _sub(subs, "auto", "find the knowledge recipe, curriculum, schedules and student size for a time budget: proxy "
              "trials with Hyperband pruning, then the top candidates re-run at full fidelity with several seeds",
              "curridistill auto configs/quickstart.yaml --budget 5m --out runs/auto")
    au.add_argument("config", help="YAML config naming data, teacher and student (its family); optional auto: section")
    au.add_argument("--budget", required=True, help="wall time for everything, e.g. 2h, 30m, 300s (counts resumed runs together)")
    au.add_argument("--objective", choices=["accuracy", "pareto"], help="default: auto.objective (accuracy); pareto: "
                    "validation accuracy against --cost")
    au.add_argument("--cost", choices=["latency", "params"], help="second objective of pareto (default latency: CPU batch-1)")
    au.add_argument("--max-latency-ms", type=float, metavar="X", help="reject students slower than X ms (batch 1, CPU) before training")
    au.add_argument("--max-params", type=int, metavar="N", help="reject students with more than N parameters before training")
    au.add_argument("--out", help="directory of the search (default: run.out/auto-<run.name>-TIMESTAMP)")
    au.add_argument("--resume", action="store_true", help="continue the search in --out (same study, same budget)")
    au.add_argument("--storage", help="Optuna storage URL (default sqlite:///OUT/study.db; journal:PATH needs no database; "
                    "PostgreSQL/MySQL for several workers)")
    au.add_argument("--trials-parallel", type=int, default=1, metavar="N", help="trials side by side in N processes")
    au.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    au.add_argument("--quiet", action="store_true", help="print only the output directory")

    bp = _sub(subs, "bench", "measure training throughput (images/s) of distillation modes against a ceiling, "
              "interleaved in rounds, as JSON + a table",
              "curridistill bench throughput --teacher resnet56 --student resnet20 --data cifar10 --root ../shared/datasets "
              "--steps 30 --out benchmarks/results/throughput.json")
    bp.add_argument("what", choices=["throughput"])
    bp.add_argument("--teacher", default="resnet56", help="zoo model of the teacher (default resnet56)")
    bp.add_argument("--student", default="resnet20", help="zoo model of the student (default resnet20)")
    bp.add_argument("--data", default="cifar10", help="dataset name (image data; default cifar10)")
    bp.add_argument("--root", help="data directory (default: $CURRIDISTILL_DATA)")
    bp.add_argument("--batch-size", type=int, default=64)
    bp.add_argument("--steps", type=int, default=30, help="timed steps per mode and round (default 30)")
    bp.add_argument("--warmup", type=int, default=5, help="untimed steps before each timing (default 5)")
    bp.add_argument("--rounds", type=int, default=3, help="rounds of all modes, interleaved; the median is reported")
    bp.add_argument("--subset", type=int, help="use a stratified subset of this many training images")
    bp.add_argument("--no-verify", action="store_true", help="skip the md5 check of the data files (your own subset copies)")
    bp.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    bp.add_argument("--with-reference", action="store_true",
                    help="also time the plain-PyTorch DataLoader KD loop (benchmarks/plain_pytorch_kd.py)")
    bp.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference (default 2)")
    bp.add_argument("--channels-last", action="store_true", help="models and inputs in channels_last memory format")
    bp.add_argument("--captured", action="store_true",
                    help="also time the ceiling and cached_kd with the step compiled (run.compile=step; CUDA graphs on a "
                         "GPU); compiling takes the warm-up steps (minutes on a CPU)")
    bp.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice / OMP_NUM_THREADS)")
    bp.add_argument("--cache-dir", help="teacher-output cache directory (default: a temporary one, so the build is timed)")
    bp.add_argument("--out", help="write the result JSON here, e.g. benchmarks/results/NAME.json")
    bp.add_argument("--quiet", action="store_true", help="no per-round lines or table")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from curridistill.errors import UserError

    try:
        from curridistill import commands

        return getattr(commands, f"cmd_{args.command}")(args) or 0
    except UserError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; continue with `curridistill run --resume RUN_DIR`\n")
        return 130
    except OSError as exc:  # a path the user gave that cannot be read or written; anything else is a bug: traceback
        from curridistill.outputs import os_error_line

        line = os_error_line(exc, vars(args))
        if line is None:
            raise
        sys.stderr.write(f"error: {line}\n")
        return EXIT_USER_ERROR
    except (MemoryError, RuntimeError) as exc:
        from curridistill.models.registry import is_out_of_memory

        if not is_out_of_memory(exc):
            raise
        sys.stderr.write(f"error: out of memory in `{args.command}`; lower data.batch_size / data.eval_batch_size "
                         f"or use a smaller model\n")
        return EXIT_USER_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
