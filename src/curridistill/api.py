"""The Python API. The CLI is a thin layer over these functions.

>>> from curridistill import load_config, run
>>> cfg = load_config("configs/quickstart.yaml", ["course.0.epochs=5"])
>>> report = run(cfg, out="runs/try")
>>> report["student"]["accuracy"], report["comparison"]["student_minus_baseline_accuracy"]
"""
from __future__ import annotations

import os
import pickle
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import yaml
from pydantic import ValidationError
from torch import nn

from curridistill.compress.ship import ship
from curridistill.export import export_model
from curridistill.config import Config, EvalConfig, ModelConfig, explain, load_config, validate_config
from curridistill.data.folds import select_fold
from curridistill.data.pipeline import Pipeline, load_splits
from curridistill.errors import UserError
from curridistill.evaluate.evaluation import add_pair_metrics, compare, evaluate_model, read_report
from curridistill.evaluate.metrics import pair_metrics
from curridistill.multirun import check_parallel, children, is_multi, write_aggregate
from curridistill.io import clean_orphans, write_json, write_text
from curridistill.knowledge.aggregate import aggregate_teachers
from curridistill.locks import RUN_LOCK, is_locked, run_dir_lock
from curridistill.models.checkpoint import code_trusted
from curridistill.models.placement import cuda_speed, resolve_device, uses_amp
from curridistill.models.registry import is_out_of_memory
from curridistill.objects import Result, distill_config, evaluate_objects, load_trained, predict_objects
from curridistill.preflight import check_static, dry_build
from curridistill.serve import predict_files
from curridistill.train import distributed
from curridistill.train.callbacks import Callbacks, StopAfterEpochs, StopRequested  # noqa: F401  (re-exported)
from curridistill.train.progress import PlainProgress
from curridistill.train.course import CourseRunner
from curridistill.train.teacher_cache import cached_eval_logits
from curridistill.workers import side_by_side


APPLIED = ".config.applied.yaml"  # the config the run's training state was made with (config.yaml may be edited)


def new_run_dir(cfg: Config, out: str | Path | None) -> Path:
    """Create (or reuse) a run directory, after ``check_run_dir``."""
    run_dir = check_run_dir(cfg, out)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create run directory {run_dir} ({exc.strerror or type(exc).__name__}); "
                        f"choose a writable --out") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise UserError(f"run directory {run_dir} is not writable; choose a writable --out")
    return run_dir


def check_run_dir(cfg: Config, out: str | Path | None) -> Path:
    """The run directory ``out`` (default: a new timestamped one under run.out), refused in one line when it cannot
    be one: a file, in use by another process, holding training state, or a folder of other files. A directory
    whose earlier run failed before any training state was written is reused. Creates nothing."""
    if out is not None:
        run_dir = Path(out)
    else:
        run_dir = Path(cfg.run.out) / f"{cfg.run.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} is a file, not a directory; choose a directory path for the run")
    if run_dir.is_dir() and is_locked(run_dir):
        raise UserError(f"{run_dir} is in use by another curridistill process (run or --resume); wait for it to "
                        f"finish, or choose another --out")
    if (run_dir / "config.yaml").exists() and has_state(run_dir):
        raise UserError(f"{run_dir} already holds a run; continue it with `curridistill run --resume {run_dir}` "
                        f"or choose another --out")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not is_run_dir(run_dir):
        raise UserError(f"--out {run_dir} already holds files and is not a curridistill run directory (a run writes "
                        f"config.yaml and clears its temporary files there); choose a new or empty directory")
    return run_dir


def is_run_dir(path: Path) -> bool:
    """A directory curridistill made for a run: its config.yaml beside the applied copy or the run's lock file."""
    return (path / "config.yaml").is_file() and ((path / APPLIED).is_file() or (path / RUN_LOCK).exists())


def has_state(run_dir: str | Path) -> bool:
    """True when a run directory holds training results: a report, a checkpoint state or a finished phase."""
    run_dir = Path(run_dir)
    if (run_dir / "report.json").is_file() or (run_dir / "aggregate.json").is_file():
        return True
    return any(True for _ in run_dir.rglob("state.pt")) or any(True for _ in run_dir.rglob("done.json"))


def _write_config(run_dir: Path, cfg: Config) -> None:
    text = cfg.to_yaml()
    write_text(run_dir / "config.yaml", text)
    write_text(run_dir / APPLIED, text)


def config_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts, as ``key: old -> new``. Keys absent from
    ``old`` (fields a newer version added, at their defaults) are not changes."""
    changes = []
    for key in old:
        path = f"{prefix}{key}"
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            changes += config_changes(a, b, path + ".")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            changes += config_changes(dict(enumerate(a)), dict(enumerate(b)), path + ".")
        elif a != b:
            changes.append(f"{path}: {a!r} -> {b!r}")
    return changes


def _phase(label: str, fn, *args, **kwargs):
    """Run one phase; an out-of-memory error becomes one line naming the phase and what to lower."""
    try:
        return fn(*args, **kwargs)
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        raise UserError(f"out of memory while {label}; lower data.batch_size and data.eval_batch_size, or pick a "
                        f"smaller model (the last checkpoint is kept: continue with --resume RUN_DIR --set ...)") from None


def prepare(cfg: Config, given=None) -> tuple[Pipeline, torch.device]:
    """Seed, device and data for a config (and the process group under torchrun). ``given``
    (``objects.Given``): the caller's in-memory splits, used instead of loading ``cfg.data``."""
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    dist = distributed.init_from_env(cfg.run.device)
    device = resolve_device(cfg.run.device)
    if dist.active and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    torch.manual_seed(cfg.run.seed)
    splits = given.splits if given is not None and given.splits is not None else load_splits(cfg.data)
    splits = select_fold(splits, cfg.data.cv)  # one fold of a cross-validation
    pipeline = Pipeline(splits, cfg.data, device)
    autotune = cfg.run.cudnn_benchmark if cfg.run.cudnn_benchmark is not None else not pipeline.tokens
    cuda_speed(device, cfg.run.tf32, autotune)
    return pipeline, device


def run(cfg: Config | str | Path, out: str | Path | None = None, overrides: list[str] | None = None,
        callbacks: Iterable = ()) -> dict:
    """Train teacher(s), baseline and student as the config says; write the run directory; return report.json.

    With ``run.seeds`` or ``data.cv`` the plan runs once per seed / fold into ``RUN_DIR/seed-<s>/`` or
    ``RUN_DIR/fold-<i>/`` and the result is ``aggregate.json`` (see ``curridistill.experiments``).
    ``callbacks``: hooks called as training goes (``train.callbacks``: a function gets every epoch record
    of metrics.jsonl and may raise to stop; ``StopAfterEpochs(n)`` stops as if killed).
    """
    if not isinstance(cfg, Config):
        cfg = load_config(cfg, overrides)
    if is_multi(cfg):
        return run_multi(cfg, out, callbacks=callbacks)
    check_parallel(cfg)
    check_static(cfg)  # names, imports, ranges, checkpoints: before any directory or data
    distributed.init_from_env(cfg.run.device)
    out = check_run_dir(cfg, out)  # what --out cannot be is said before any work (every rank sees the same files)
    prepared = _prepared(cfg)  # the data and a dry build: a bad data file leaves no run directory behind
    run_dir, problem = None, None
    with ExitStack() as stack:
        if distributed.info().is_main:  # rank 0 creates and locks the directory; the others learn its name
            try:
                run_dir = new_run_dir(cfg, out)  # again: another run may have taken it while the data loaded
                stack.enter_context(run_dir_lock(run_dir))
                clean_orphans(run_dir, recursive=True)
                _write_config(run_dir, cfg)
            except UserError as exc:
                problem = str(exc)
        run_dir, problem = distributed.broadcast((run_dir, problem))
        if problem:
            raise UserError(problem)
        return _execute(cfg, Path(run_dir), callbacks, prepared=prepared)


def resume(run_dir: str | Path, callbacks: Iterable = (), overrides: list[str] | None = None,
           allowed: Iterable[str] = ()) -> dict:
    """Continue a killed (or failed) run from its last checkpoint; the result equals an uninterrupted run (CPU).

    ``overrides`` (``--set``) change the saved config deliberately, e.g. a lower learning rate after a
    failure: they are applied, recorded in config.yaml and reported on stderr once the run accepts them
    (``_PendingChanges``); a value it refuses leaves the directory as it was. A config.yaml edited by hand
    under a training state is refused, listing what changed. ``allowed``: ``module:callable`` model names the caller
    vouches for (a child of a parent config whose own config names them); others need ``--trust-code``.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml); pass the directory `run` created")
    distributed.init_from_env(load_config(run_dir / "config.yaml").run.device)  # rank 0 alone locks and writes
    with ExitStack() as stack:
        if distributed.info().is_main:
            stack.enter_context(run_dir_lock(run_dir))
            clean_orphans(run_dir, recursive=True)
        cfg, changes = _resumed_config(run_dir, overrides or [], set(allowed))
        if is_multi(cfg):  # a multi-seed / cross-validation parent: finish every unfinished child
            if overrides:
                raise UserError(f"{run_dir} holds several seeds or folds; --set with --resume works on one run "
                                f"directory: resume a child (RUN_DIR/seed-<s>) with --set")
            stack.close()  # each child locks its own directory
            return resume_multi(cfg, run_dir, callbacks=callbacks)
        check_static(cfg)
        pending = _PendingChanges(run_dir, cfg, changes)
        return _execute(cfg, run_dir, [pending, *callbacks], accepted=pending.apply)


# ------------------------------------------------------------------------------- several seeds or folds
def run_multi(cfg: Config, out: str | Path | None = None, callbacks: Iterable = ()) -> dict:
    """Run every seed / fold of ``cfg`` into its own child directory; return (and write) the aggregate."""
    kind, kids = children(cfg)  # checks before any directory is made
    for _, child in kids:
        check_static(child)
    run_dir = new_run_dir(cfg, out)
    with run_dir_lock(run_dir):  # one writer per parent directory (each child locks its own too)
        write_text(run_dir / "config.yaml", cfg.to_yaml())
        return _run_children(cfg, run_dir, kind, kids, callbacks)


def resume_multi(cfg: Config, run_dir: str | Path, callbacks: Iterable = ()) -> dict:
    """Finish a multi-seed / cross-validation parent: skip finished children, resume or start the others."""
    kind, kids = children(cfg)
    with run_dir_lock(run_dir):
        return _run_children(cfg, Path(run_dir), kind, kids, callbacks)


def _run_children(cfg: Config, run_dir: Path, kind: str, kids: list[tuple[str, Config]],
                  callbacks: Iterable) -> dict:
    callbacks = list(callbacks)
    for name, _ in kids:  # every finished child's report is sound before anything trains or is aggregated
        if (run_dir / name / "report.json").is_file():
            _child_report(run_dir, name)
    if cfg.run.parallel > 1 and len(kids) > 1:
        reports = run_side_by_side(kids, run_dir, cfg.run.parallel, callbacks)
        return write_aggregate(run_dir, cfg, reports, kind, [n for n, _ in kids])
    reports = []
    for name, child in kids:
        Callbacks(callbacks).on_note(f"[bold]{name}[/] ({run_dir})")
        reports.append(_run_child(child, run_dir / name, callbacks))
    return write_aggregate(run_dir, cfg, reports, kind, [n for n, _ in kids])


def _child_report(run_dir: Path, name: str) -> dict:
    """The checked report.json of the finished child ``run_dir/name``."""
    path = run_dir / name / "report.json"
    return read_report(path, f"delete it and resume {run_dir} again to evaluate {name}'s trained models anew "
                             f"(or delete {run_dir / name} to train {name} again)")


def _run_child(child: Config, child_dir: Path, callbacks: Iterable) -> dict:
    """One child: finished -> its report; started -> resumed; else run."""
    if (child_dir / "report.json").is_file():
        return _child_report(child_dir.parent, child_dir.name)
    if (child_dir / "config.yaml").is_file():
        # its models are the parent's: named by the user's config, or by a parent directory already checked
        return resume(child_dir, callbacks=callbacks, allowed=model_names(child))
    return run(child, out=child_dir, callbacks=callbacks)


def run_side_by_side(kids: list[tuple[str, Config]], run_dir: Path, parallel: int,
                     callbacks: Iterable = ()) -> list[dict]:
    """Children in ``parallel`` spawned processes at once (one GPU, or the CPU cores split between them).

    Each child is the same config as in a sequential run and writes its own directory, so the results
    equal running them one by one (on the CPU, bit for bit when ``run.threads`` is set: the thread count
    is the only thing that could change float reductions). Without ``run.threads`` each process gets
    cores // parallel threads. Children sharing a teacher wait for the one that trains it (cache lock).
    Each process gets its own copy of ``callbacks`` (they must be picklable); a progress display stays in
    this process and shows which children run (the children's epochs are in their metrics.jsonl).
    """
    if distributed.info().active:
        raise UserError("run.parallel > 1 cannot be combined with torchrun; use one or the other")
    here = Callbacks(callbacks)
    callbacks = [c for c in callbacks if not isinstance(c, PlainProgress)]  # a display (and its console) stays here
    try:
        pickle.dumps(callbacks)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise UserError(f"run.parallel > 1 runs children in other processes, but a callback cannot be sent there "
                        f"({exc}); use module-level functions or classes, or run.parallel: 1") from None
    workers = min(parallel, len(kids))
    here.on_note(f"[bold]{len(kids)} runs, {workers} side by side[/] ({run_dir})")
    jobs = [(child.model_dump(mode="json"), str(run_dir / name), callbacks) for name, child in kids]
    with side_by_side(workers, kids[0][1].run.device) as pool:
        return list(pool.map(_child_job, *zip(*jobs)))


def _child_job(raw: dict, child_dir: str, callbacks: list) -> dict:
    """One child in its own process (module level: a spawned process imports it by name)."""
    return _run_child(validate_config(raw, "child config"), Path(child_dir), callbacks)


def _models_by_role(cfg: Config) -> list[tuple[str, ModelConfig]]:
    teachers = [("teacher", cfg.teacher)] if cfg.teacher is not None else [
        (f"teachers.{i}", t) for i, t in enumerate(cfg.teachers)]
    return [("student", cfg.student), *teachers, *((f"assistants.{i}", a) for i, a in enumerate(cfg.assistants))]


def model_names(cfg: Config) -> set[str]:
    """The model names a config uses (student, teachers, assistants)."""
    return {model.name for _, model in _models_by_role(cfg)}


def refuse_code_named_by(cfg: Config, path: Path, allowed: set[str] = frozenset()) -> None:
    """A run directory is data: its config may name models to import (``module:callable``) only under
    ``--trust-code`` or when the caller vouches for the name (``allowed``), as a checkpoint's spec may. A config file
    the user passes to ``run`` is their own code."""
    if code_trusted():
        return
    for role, model in _models_by_role(cfg):
        if ":" in model.name and model.name not in allowed:
            raise UserError(f"{path} names model {model.name!r} at {role}.name, which would import and run code from a "
                            f"run directory; pass --trust-code if you trust who made {path.parent}")


def _resumed_config(run_dir: Path, overrides: list[str], allowed: set[str] = frozenset()) -> tuple[Config, list[str]]:
    """The saved config (+ ``overrides``) and what the overrides change (``key: old -> new``), refused when
    config.yaml was edited by hand under a training state. Nothing is written here: see ``_PendingChanges``."""
    cfg = load_config(run_dir / "config.yaml")
    refuse_code_named_by(cfg, run_dir / "config.yaml", allowed)
    applied_path = run_dir / APPLIED
    if not applied_path.is_file() and not is_multi(cfg) and has_state(run_dir):  # a parent's children hold theirs
        raise UserError(f"{applied_path} is missing (a copy without hidden files?), so edits to {run_dir}/config.yaml "
                        f"since training started cannot be found; restore it from the original run directory, or copy "
                        f"config.yaml onto it if you know the config is unchanged")
    if applied_path.is_file() and has_state(run_dir):
        try:
            applied = yaml.safe_load(applied_path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError):
            applied = None
        if isinstance(applied, dict):
            changes = config_changes(applied, cfg.model_dump(mode="json"))
            if changes:
                shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
                raise UserError(f"{run_dir}/config.yaml was edited after training started ({shown}); restore it, or "
                                f"pass the change as --resume {run_dir} --set KEY=VALUE to apply it knowingly")
    if not overrides:
        return cfg, []
    new = load_config(run_dir / "config.yaml", overrides)
    return new, config_changes(cfg.model_dump(mode="json"), new.model_dump(mode="json"))


class _PendingChanges:
    """The ``--set`` changes of a resume, written into config.yaml (and noted on stderr) only once the run has
    accepted them: when a lesson starts training (the models built, the data loaded, the checkpoint loaded into
    the changed model, the lesson's saved state into the changed lesson) or, with nothing left to train, before the
    evaluation. A value the run refuses (a model
    that cannot be built, weights that do not fit it) leaves the directory as it was: a plain ``--resume``
    still continues it. A callback (``on_phase``), so it runs at the start of the first lesson trained."""

    def __init__(self, run_dir: Path, cfg: Config, changes: list[str]):
        self.run_dir, self.cfg, self.changes = run_dir, cfg, changes

    def on_phase(self, label: str) -> None:
        self.apply()

    def apply(self) -> None:
        if not self.changes:
            return
        changes, self.changes = self.changes, []
        if distributed.info().is_main:
            _write_config(self.run_dir, self.cfg)
            sys.stderr.write(f"note: resuming {self.run_dir} with {'; '.join(changes)}\n")


def _prepared(cfg: Config, given=None) -> tuple[Pipeline, torch.device]:
    """``prepare`` and the dry build of every model and lesson: what can fail on the data before training."""
    pipeline, device = prepare(cfg, given)
    _phase("building the models and lessons (dry run on a probe batch)", dry_build, cfg, pipeline, given)
    return pipeline, device


def _execute(cfg: Config, run_dir: Path, callbacks: Iterable = (), given=None, accepted=None,
             prepared: tuple[Pipeline, torch.device] | None = None) -> dict:
    """Train what is left, evaluate, write report.json. ``accepted``: called once every model is trained (or
    loaded), before the evaluation (a resume records its ``--set`` changes then, at the latest). ``prepared``:
    what ``_prepared`` gave, when the caller checked the data before making the run directory."""
    pipeline, device = prepared or _prepared(cfg, given)
    runner = CourseRunner(cfg, run_dir, pipeline, device, callbacks=callbacks, given=given)
    teachers = _phase("training or loading the teacher(s)", runner.teachers)
    baseline = _phase("training the baseline student", runner.baseline)
    links = _phase("training the assistant(s)", runner.chain, teachers)
    if teachers:
        student, rounds = _phase("training the student", runner.rounds, links[-1:] or teachers, from_assistant=bool(links))
    else:  # no teacher: the course trains the student alone (e.g. a self-paced curriculum on labels)
        student, rounds = _phase("training the student", runner.train_phase, "student", cfg.student, cfg.course, None,
                                 cfg.run.seed), []
    if accepted is not None:
        accepted()
    if not distributed.info().is_main:  # rank 0 evaluates and reports; the others are done
        distributed.barrier()
        return {"run_dir": str(run_dir), "rank": distributed.info().rank}
    report = _phase("evaluating on the test split", build_report, cfg, pipeline, teachers, baseline, student, links, rounds)
    report["run_dir"] = str(run_dir)
    if cfg.ship is not None or any(lesson.prune is not None for lesson in cfg.course):  # RUN_DIR/ship/compression.*
        report["compression"] = _phase("measuring the compression stages (quantize, export, predict)", ship, cfg, run_dir,
                                       pipeline, teachers[0].model if teachers else None, student.model)
    if distributed.info().active:
        report["distributed"] = {"world_size": distributed.info().world, "global_batch": cfg.data.batch_size}
    write_json(run_dir / "report.json", report)
    distributed.barrier()
    return report


def build_report(cfg: Config, pipeline: Pipeline, teachers, baseline, student, links=(), rounds=()) -> dict:
    ev, amp = cfg.run.eval, uses_amp(pipeline.device, cfg.run.amp)
    report: dict = {"selection": "best_val" if cfg.run.selection == "best_val" else "last",
                    "selection_note": ("each model is the checkpoint with the best validation accuracy, evaluated once on test"
                                       if cfg.run.selection == "best_val" else "each model is its last-epoch checkpoint"),
                    "data": {"name": cfg.data.name, **pipeline.splits.info}, "classes": pipeline.splits.train.classes,
                    "seed": cfg.run.seed, "device": str(pipeline.device)}
    if pipeline.device.type == "cuda":  # the process-wide math settings (run.tf32, run.cudnn_benchmark) it trained with
        report["cuda_math"] = {"tf32": torch.get_float32_matmul_precision() != "highest",
                               "cudnn_benchmark": bool(torch.backends.cudnn.benchmark)}
    t_metrics, t_logits = [], []
    for i, t in enumerate(teachers):
        cached = (cached_eval_logits(t.model, pipeline, "test", cfg.run.cache_dir, amp=amp, who=f"teacher {i}")
                  if cfg.run.teacher_cache else None)  # a fixed teacher is evaluated once across seeds and methods
        m, logits = evaluate_model(t.model, pipeline, ev, t.train_seconds, amp=amp, logits=cached)
        m["reused_from"] = t.reused_from
        t_metrics.append(m)
        t_logits.append(logits)
    teacher_logits = t_logits[0] if t_logits else None
    if len(teachers) > 1:  # the student learned from the aggregate: compare it against that
        teacher_logits = aggregate_teachers(t_logits, pipeline.splits.test.y, cfg.run.teacher_aggregation,
                                            [tc.weight for tc in cfg.all_teachers()])
        report["teachers"] = t_metrics
    if t_metrics:
        report["teacher"] = t_metrics[0]
    if baseline is not None:
        b, b_logits = evaluate_model(baseline.model, pipeline, ev, baseline.train_seconds, amp=amp)
        report["baseline"] = add_pair_metrics(b, b_logits, teacher_logits)
        report["baseline"]["selected"] = baseline.selected_epoch
    previous = teacher_logits
    for link in links:  # TAKD: each assistant against the model it learned from
        a, a_logits = evaluate_model(link.model, pipeline, ev, link.train_seconds, amp=amp)
        a["name"], a["selected"] = link.name, link.selected_epoch
        report.setdefault("assistants", []).append(add_pair_metrics(a, a_logits, previous))
        previous = a_logits
    if len(rounds) > 1 or cfg.repeat is not None:
        report["rounds"] = list(rounds)
    s, s_logits = evaluate_model(student.model, pipeline, ev, student.train_seconds, amp=amp)
    report["student"] = add_pair_metrics(s, s_logits, teacher_logits)
    if links:
        report["student"]["vs_last_assistant"] = pair_metrics(s_logits, previous)
    report["student"]["selected"] = student.selected_epoch
    report["comparison"] = compare(report.get("teacher"), report.get("baseline"), report["student"])
    return report


def export(checkpoint: str | Path, fmt: str = "onnx", out: str | Path | None = None, opset: int = 18,
           check_samples: int = 256, root: str | None = None) -> dict:
    """Export a checkpoint as ONNX (checked with ONNX Runtime), TorchScript or safetensors; see ``curridistill.export``."""
    return export_model(checkpoint, fmt, out, opset=opset, check_samples=check_samples, root=root)


def predict(model: str | Path | nn.Module, inputs, top_k: int = 5, text_column: str | None = None,
            device: str | None = None) -> list[dict]:
    """Top-k predictions, a row per sample (index, input, label, class, probability, top_k, probabilities).

    ``model``: a checkpoint, an .onnx file or an ``nn.Module``; ``inputs``: image files, folders and .npy/.npz
    arrays, or samples in memory (a tensor or NumPy array, (N, ...) or one sample). A module takes tensors as
    given (uint8 scaled to [0, 1]); a checkpoint normalizes them with its own mean/std as in training. A text
    checkpoint takes strings, or .txt (a text per line) / .csv / .tsv files (``text_column`` names the column),
    tokenized with the vocabulary or tokenizer its spec saved. ``device`` (cpu, cuda, cuda:N, auto): where the
    model runs; None: where a module lives (it is neither moved nor left in eval mode), the CPU for a checkpoint."""
    if isinstance(model, nn.Module) or isinstance(inputs, (torch.Tensor, np.ndarray)):
        where = None if device is None else resolve_device(device, "--device")
        return predict_objects(model, inputs, top_k=top_k, device=where)
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    return predict_files(model, items, top_k=top_k, text_column=text_column, device=device or "cpu")[0]


def evaluate(model: str | Path | nn.Module, data=None, batch_size: int | None = None, device: str | None = None,
             root: str | None = None, eval: EvalConfig | dict | None = None, overrides: list[str] | None = None) -> dict:
    """Metrics of a module or checkpoint on test data: accuracy, top5, f1_macro, confusion, loss, params, FLOPs,
    latency_ms, throughput, ... (as report.json has them per model) and ``data``, what was evaluated.

    ``data``: ``(x, y)`` tensors or arrays, a torch Dataset, a data set name (its test split), or None (a
    checkpoint's own data). In-memory samples reach a module as given (uint8 scaled to [0, 1]); a checkpoint
    normalizes them with its own mean/std. ``eval``: the latency/throughput settings (``run.eval``).
    ``overrides``: ``data.KEY=VALUE`` changes to the data evaluated on, e.g. ``data.options.path=new_folder``.
    ``device`` (cpu, cuda, cuda:N, auto): where the test split is predicted; None: where a module lives (it is
    neither moved nor left in eval mode), the CPU for a checkpoint."""
    try:
        eval_cfg = eval if isinstance(eval, EvalConfig) or eval is None else EvalConfig.model_validate(eval)
    except ValidationError as exc:
        raise UserError(f"eval: {explain(exc, EvalConfig)}") from None
    where = None if device is None else resolve_device(device, "--device")
    return evaluate_objects(model, data, where, root=root, batch_size=batch_size,
                            eval_cfg=eval_cfg, overrides=overrides)


def distill(student, teacher=None, train=None, val=None, test=None, course: list[dict] | None = None, *,
            teacher_trained: bool = False, out: str | Path | None = None, callbacks: Iterable = (),
            **options) -> Result:
    """Distill the caller's own objects: the same config, engine, run directory and report as ``run``.

    ``student`` / ``teacher``: ``nn.Module`` objects, zero-argument factories, or model names ('mlp', {name, kwargs}).
    Every model trained is a fresh copy (a factory is called once per model): the caller's module is never
    trained in place, and the baseline and the student start from equal weights as two objects. The teacher
    is trained by the course with ``ce`` first, unless ``teacher_trained=True`` (then used as it is).
    ``train`` / ``val`` / ``test``: torch Datasets of (x, label), ``(x, y)`` tensor or array pairs, or a data set
    name for ``train`` alone; without ``val`` a stratified ``data.val_size`` of ``train`` is held out.
    ``course``: lessons as in YAML (default: the quickstart's KD lesson, CE without a teacher). ``callbacks``:
    as in ``run``. ``options``:
    other config sections, e.g. ``run={"out": "runs", "seed": 0}``, ``data={"batch_size": 64}``.

    >>> result = distill(MyNet(16), teacher=MyNet(256), train=(x, y), test=(x_test, y_test), run={"out": "runs"})
    >>> result.report["student"]["accuracy"], result.student  # the trained student module (CPU, eval mode)
    """
    cfg, given = distill_config(student, teacher, train, val, test, course, teacher_trained, options)
    check_static(cfg, given)
    with ExitStack() as stack:
        run_dir = new_run_dir(cfg, out)
        stack.enter_context(run_dir_lock(run_dir))
        clean_orphans(run_dir, recursive=True)
        _write_config(run_dir, cfg)
        report = _execute(cfg, run_dir, callbacks, given=given)
    phase = (report.get("rounds") or [{}])[-1].get("phase", "student")
    return Result(report, load_trained(run_dir, phase, cfg.student.name, given),
                  teacher=load_trained(run_dir, "teacher", cfg.teacher.name, given) if cfg.teacher is not None else None,
                  baseline=load_trained(run_dir, "baseline", cfg.student.name, given), run_dir=run_dir)
