"""Command-line interface: a thin layer over the Python API. Bad input -> one line, exit code 2."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_USER_ERROR = 2


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
    r.add_argument("--quiet", action="store_true", help="no progress bars or tables")

    v = _sub(subs, "validate", "check a config without running it", "curridistill validate configs/quickstart.yaml --print")
    v.add_argument("config")
    v.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    v.add_argument("--print", dest="show", action="store_true", help="print the resolved config with every default")

    e = _sub(subs, "eval", "evaluate a saved model on the test split of its data",
             "curridistill eval runs/quickstart/student/model.safetensors")
    e.add_argument("checkpoint")
    e.add_argument("--data", help="dataset name (default: the one the model was trained on)")
    e.add_argument("--root", help="data directory")
    e.add_argument("--json", dest="json_out", help="also write the metrics to this JSON file")

    pr = _sub(subs, "predict", "predict labels and probabilities for samples in an .npy/.npz file",
              "curridistill predict runs/quickstart/student/model.safetensors samples.npy --format csv")
    pr.add_argument("checkpoint")
    pr.add_argument("input", help=".npy array or .npz with key 'x': uint8 pixels or floats in [0, 1]")
    pr.add_argument("--format", choices=["json", "csv"], default="json")
    pr.add_argument("--out", help="write here instead of standard output")

    ls = _sub(subs, "list", "list registered models, datasets, knowledge terms, schedules, pacings, scorers",
              "curridistill list models --input-size 3,32,32")
    ls.add_argument("what", choices=["models", "datasets", "knowledge", "schedules", "pacings", "scorers"])
    ls.add_argument("--input-size", default="3,32,32", help="C,H,W for the FLOPs column of `list models`")
    ls.add_argument("--num-classes", type=int, default=10)

    rp = _sub(subs, "report", "write report.md and a self-contained report.html with plots", "curridistill report runs/quickstart")
    rp.add_argument("run_dir")
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


if __name__ == "__main__":
    raise SystemExit(main())
