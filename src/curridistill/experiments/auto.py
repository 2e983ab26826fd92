"""``curridistill auto``: find the knowledge recipe, curriculum, schedules and student size for a time budget.

From a config that names the data, the teacher and a student (its family), ``auto``:

1. builds the joint search space (``auto_space``; ``auto.space`` in the config overrides dimensions), measures every
   student choice (parameters, batch-1 CPU latency) and drops those that break ``--max-params`` /
   ``--max-latency-ms`` before any training; probes which feature terms fit the two models;
2. estimates the cost of the teacher, of one proxy trial and of one full-fidelity run from timed training steps, and
   stops with one line when the budget cannot pay for one trial plus one confirming run;
3. trains (or reuses from ``run.cache_dir``) the teacher ONCE into ``OUT/teacher/``; every trial loads that
   checkpoint, and the teacher-output cache serves its logits to all of them;
4. runs the config's own recipe once at proxy fidelity (the reference), then an Optuna study of proxy trials
   (``OUT/trials/trial-N/``: fewer epochs, for large data a subset) until the search share of the budget is
   spent. Objective ``accuracy``: the student's best validation accuracy, reported per epoch to a Hyperband
   pruner (successive halving over epochs). Objective ``pareto``: validation accuracy against latency or
   parameters with Optuna's multi-objective TPE (no pruning: Optuna prunes single-objective studies only);
5. re-runs the top candidates (``accuracy``: the best trials; ``pareto``: members spread along the front) and the
   reference at full fidelity with every seed of ``auto.seeds`` (``OUT/final/``), picks the candidate with the
   best MEAN VALIDATION accuracy, and only then reads its test accuracy (and the reference's): the output says
   how much of the search-time gain over the reference survived the re-runs;
6. writes ``best.yaml`` (a normal config: ``curridistill run best.yaml``), ``pareto.yaml``, ``trials.csv``,
   ``auto.json`` and ``auto.md`` (search history, Pareto front table and ``pareto.png``, estimated vs used budget;
   written by ``auto_report``).

The study lives in Optuna storage (``sqlite:///OUT/study.db`` by default; any RDB URL lets several workers share
it). ``--resume`` continues the same study: finished trials are kept, a trial killed mid-run is marked failed and
its parameters are queued again, finished re-runs are not repeated. The budget counts every invocation together.
"""
from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import statistics
import time
from concurrent.futures import FIRST_EXCEPTION, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable

import torch
import yaml

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from curridistill import api
from curridistill.config import AutoConfig, Config, apply_overrides, ce_only, load_config, normalize, validate_config
from curridistill.data.pipeline import Pipeline, load_splits
from curridistill.errors import UserError
from curridistill.experiments import auto_space as S
from curridistill.experiments.auto_report import (auto_markdown, describe_fidelity, fmt_seconds, mean_pm,
                                                  pareto_front_numbers, plot_front, trial_row, write_trials_csv)
from curridistill.experiments.tune import compact_course, mask_url, open_study, student_phase
from curridistill.evaluate.evaluation import read_report
from curridistill.io import read_checked, write_json, write_text
from curridistill.models import build_model
from curridistill.outputs import check_writable_dir
from curridistill.train.callbacks import StopRequested
from curridistill.train.course import CourseRunner
from curridistill.train.metrics_log import read_metrics
from curridistill.workers import side_by_side

RUN_OVERHEAD_S = 1.5  # per api.run: data, evaluation, latency timing, files (measured: ~1 s on digits)
STATE = "auto-state.json"


# ---------------------------------------------------------------------------------------------- the state
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]  # a duration: finite, not negative


class _State(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class _Cost(_State):
    model_config = ConfigDict(extra="forbid", strict=True)  # read back as auto_space.StudentCost(**cost)

    params: int = Field(ge=0)
    latency_ms: Seconds
    stage: str | None


class _ReferenceProxy(_State):
    val_accuracy: float | None = Field(ge=0, le=1, allow_inf_nan=False)
    seconds: Seconds


class _Plan(_State):
    top_k: int = Field(ge=1)
    seeds: list[int] = Field(min_length=1)
    reference: bool
    finals_estimate_s: Seconds
    search_s: Seconds
    full_run_estimate_s: Seconds
    trial_estimate_s: Seconds


class AutoState(_State):
    """``OUT/auto-state.json``, what ``--resume`` continues from (written by ``AutoJob.save_state``): the time used so
    far, the measured costs, the teacher, the reference, the plan and the finished re-runs, type-checked (finite,
    non-negative durations) before anything is read from it; other keys pass unchecked."""

    used_s: Seconds = 0.0
    budget_s: float | None = Field(None, gt=0, allow_inf_nan=False)
    config: str | None = None
    config_raw: dict | None = None
    costs: dict[str, _Cost] | None = None
    estimate_at_start: dict[str, Seconds] | None = None
    invocations: int = Field(0, ge=0)
    phases: dict[str, Seconds] | None = None
    teacher_paths: list[str] | None = None
    teacher_reused_from: list[str | None] | None = None
    reference_proxy: _ReferenceProxy | None = None
    plan: _Plan | None = None
    finals_started: bool = False
    finals_done: list[str] = Field(default_factory=list)


def read_state(path: Path) -> dict:
    """The checked state of the search in ``path.parent``; one line naming the file and the key otherwise."""
    return read_checked(path, AutoState, "the state of an auto search",
                        f"the search state is damaged: restore {path.name} from a backup, or start the search again "
                        f"with another --out")


# ---------------------------------------------------------------------------------------------- budget
def parse_budget(text: str | float | int) -> float:
    """``2h``, ``30m``, ``300s``, ``1h30m`` or a number of seconds -> seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        s = str(text).strip().lower()
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms]?)", s)
        if not s or not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([hms]?)", "", s).strip():
            raise UserError(f"--budget {text!r}: give a duration like 2h, 30m, 300s or 1h30m")
        seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1, "": 1}[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise UserError(f"--budget {text!r}: give a positive duration like 30m")
    return seconds


@dataclass
class Fidelity:
    epochs: int
    subset: int | None  # data.subset (training samples before the validation hold-out), None: all
    val_size: float | int  # data.val_size: proxies hold out as many samples as the full runs

    def describe(self) -> str:
        return describe_fidelity(vars(self))


@dataclass
class Clock:
    """Time of this invocation plus what earlier invocations (killed, resumed) used."""

    budget: float
    used_before: float = 0.0
    t0: float = field(default_factory=time.monotonic)

    def used(self) -> float:
        return self.used_before + time.monotonic() - self.t0

    def left(self) -> float:
        return self.budget - self.used()


# ------------------------------------------------------------------------------------------- the search
@dataclass
class Search:
    """Everything a trial needs, as plain data (it is sent to worker processes with ``--trials-parallel``)."""

    out: str
    dims: list
    trial_base: dict  # config of every trial before the candidate's student/course: checkpoint teacher, proxy data
    template: dict  # the config's first lesson (optimizer, LR schedule, batch size)
    fidelity: Fidelity
    costs: dict  # student choice key -> StudentCost
    teacher_stage: str | None
    objective: str
    cost: str
    max_latency_ms: float | None
    max_params: int | None
    storage: str
    study_name: str
    n_train: int | None = None  # training samples of the full runs (sizes CRD's negative queue)

    def candidate_raw(self, values: dict, base: dict, epochs: int) -> dict:
        raw = copy.deepcopy(base)
        student = values["student"]
        raw["student"] = {**copy.deepcopy(student), "kwargs": copy.deepcopy(student.get("kwargs") or {})}
        cost = self.costs.get(S.choice_key(student))
        raw["course"] = S.candidate_course(values, self.template, epochs, cost.stage if cost else None, self.teacher_stage,
                                           self.n_train)
        return raw

    def reject(self, values: dict) -> str | None:
        cost = self.costs.get(S.choice_key(values["student"]))
        if cost is None:
            return None
        if self.max_params is not None and cost.params > self.max_params:
            return f"{cost.params:,} parameters > --max-params {self.max_params:,}"
        if self.max_latency_ms is not None and cost.latency_ms > self.max_latency_ms:
            return f"latency {cost.latency_ms:.3f} ms > --max-latency-ms {self.max_latency_ms:g}"
        return None

    def objective_fn(self, trial):
        import optuna

        values = S.sample(self.dims, trial)
        trial.set_user_attr("values", json.loads(json.dumps(values)))
        trial.set_user_attr("recipe", S.describe(values))
        cost = self.costs.get(S.choice_key(values["student"]))
        if cost is not None:
            trial.set_user_attr("params", cost.params)
            trial.set_user_attr("latency_ms", cost.latency_ms)
        why = self.reject(values)
        if why:  # constraints: rejected before any training
            trial.set_user_attr("rejected", why)
            raise optuna.TrialPruned(f"rejected before training: {why}")
        trial_dir = Path(self.out) / "trials" / f"trial-{trial.number}"
        trial.set_user_attr("run_dir", str(trial_dir))
        trial.set_user_attr("pid", os.getpid())  # which process ran it (--trials-parallel: one of the workers)
        seen: list[float] = []
        single = self.objective == "accuracy"

        def on_record(record: dict) -> None:
            if not student_phase(str(record.get("model", ""))):
                return
            value = record.get("val_accuracy")
            if not isinstance(value, (int, float)):
                return
            seen.append(float(value))
            if single:
                trial.report(max(seen), len(seen))
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after {len(seen)} epochs (val_accuracy {max(seen):.4f})")

        t0 = time.monotonic()
        try:
            cfg = validate_config(self.candidate_raw(values, self.trial_base, self.fidelity.epochs),
                                  f"auto trial {trial.number}")
            api.run(cfg, out=trial_dir, callbacks=[on_record])
        except (UserError, RuntimeError, ValueError) as exc:  # a failed trial: keep why (trials.csv, auto.md)
            trial.set_user_attr("error", (str(exc).splitlines() or [type(exc).__name__])[0][:300])
            raise
        finally:
            trial.set_user_attr("seconds", time.monotonic() - t0)
            trial.set_user_attr("epochs", len(seen))
            _drop_weights(trial_dir)
        if not seen:
            raise UserError(f"trial {trial.number} logged no student epochs")
        best = max(seen)
        if single:
            return best
        return best, (cost.latency_ms if self.cost == "latency" else float(cost.params)) if cost else 0.0


def _drop_weights(run_dir: Path) -> None:
    """A proxy trial's metrics and report are kept; its weights are not needed (finals re-train)."""
    for p in run_dir.rglob("*.safetensors"):
        p.unlink(missing_ok=True)
    for p in run_dir.rglob("state.pt"):
        p.unlink(missing_ok=True)


def _make_study(search: Search, seed: int, load: bool, n_epochs: int):
    import optuna

    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=8)
    if search.objective == "accuracy":
        pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(n_epochs, 1), reduction_factor=3)
        directions = ["maximize"]
    else:
        pruner = optuna.pruners.NopPruner()
        directions = ["maximize", "minimize"]
    return open_study(search.study_name, search.storage, sampler, pruner, directions, load=load,
                      again="choose another --out / --storage")


def _worker(search: Search, seed: int, deadline: float, n_trials: int | None, n_epochs: int) -> None:
    """One process of ``--trials-parallel``: the same study from the shared storage, starting trials until the
    deadline (wall-clock ``time.time()``, so the processes' start-up counts against the search's share). The parent
    alone writes trials.csv and the state file (one writer), from the storage."""
    timeout = deadline - time.time()
    if timeout <= 0:
        return
    study = _make_study(search, seed, True, n_epochs)
    study.optimize(search.objective_fn, n_trials=n_trials, timeout=timeout, catch=(UserError, RuntimeError, ValueError),
                   gc_after_trial=True)


# ---------------------------------------------------------------------------------------------- helpers
def _load_raw(config: str | Path | dict, overrides: list[str] | None) -> tuple[dict, str]:
    if isinstance(config, dict):
        return apply_overrides(normalize(config), overrides or []), "config"
    path = Path(config)
    load_config(path, overrides)  # the usual checks and one-line messages (file, YAML, keys)
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return apply_overrides(normalize(raw), overrides or []), str(path)


def _fidelity_proxy(cfg: Config, n_train_full: int, settings: AutoConfig) -> tuple[Fidelity, Fidelity]:
    """(proxy, full): the proxy keeps the full runs' number of validation samples."""
    total = sum(lesson.epochs for lesson in cfg.course)
    full = Fidelity(total, cfg.data.subset, cfg.data.val_size)
    n = min(cfg.data.subset or n_train_full, n_train_full)
    holdout = int(round(cfg.data.val_size * n)) if cfg.data.val_size < 1 else int(cfg.data.val_size)
    frac = settings.proxy.data
    if frac is None:
        frac = 1.0 if n <= 4000 else max(4000 / n, 0.25)
    subset = int(round(frac * n))
    if subset >= n or subset - holdout < 10 * 2:
        subset = None
    epochs = max(settings.proxy.min_epochs, int(round(settings.proxy.epochs * total)))
    proxy = Fidelity(min(epochs, total), subset if subset is not None else cfg.data.subset, holdout)
    return proxy, full


def _with_fidelity(raw: dict, fid: Fidelity) -> dict:
    raw = copy.deepcopy(raw)
    data = raw.setdefault("data", {})
    if fid.subset is not None:
        data["subset"] = int(fid.subset)
    data["val_size"] = fid.val_size
    return raw


def _steps_per_epoch(n_train: int, batch: int) -> int:
    return max(1, math.ceil(n_train / batch))


def _base_raw(raw: dict) -> dict:
    base = copy.deepcopy(raw)
    for key in ("auto", "tune", "ship"):
        base.pop(key, None)
    base.pop("repeat", None)
    base.pop("assistants", None)
    base.setdefault("run", {})["seeds"] = None
    base["run"]["parallel"] = 1  # one run (a trial, best.yaml); the full-fidelity seeds take run.parallel back
    return base


def _pinned_teacher_raw(raw: dict, cfg: Config) -> dict:
    """The config with every tool-trained teacher's course written out (the original lessons with loss ce), so
    the teacher is the same in the search and in ``curridistill run best.yaml`` (reused from run.cache_dir)."""
    out = copy.deepcopy(raw)
    pinned = [lesson.model_dump(mode="json") for lesson in ce_only(cfg.course)]
    teachers = [out["teacher"]] if isinstance(out.get("teacher"), dict) else list(out.get("teachers") or [])
    for t in teachers:
        if isinstance(t, dict) and not t.get("course") and not t.get("checkpoint"):
            t["course"] = compact_course(raw, pinned)
    return out


def _checkpoint_teachers(raw: dict, paths: list[str]) -> dict:
    out = copy.deepcopy(raw)
    if isinstance(out.get("teacher"), dict):
        t = out["teacher"]
        out["teacher"] = {"name": t["name"], "kwargs": t.get("kwargs") or {}, "checkpoint": paths[0]}
    else:
        out["teachers"] = [{"name": t["name"], "kwargs": t.get("kwargs") or {}, "checkpoint": p,
                            "weight": t.get("weight", 1.0)} for t, p in zip(out.get("teachers") or [], paths)]
    return out


def _trial_settings(raw: dict) -> dict:
    """Trials: no baseline, no TensorBoard, a short latency timing (the student's cost is measured beforehand)."""
    out = copy.deepcopy(raw)
    out["baseline"] = {**(out.get("baseline") or {}), "enabled": False}
    run = out.setdefault("run", {})
    run["tensorboard"] = False
    run["eval"] = {**(run.get("eval") or {}), "latency_runs": 5, "throughput_runs": 1, "throughput_batch": 32}
    return out


def _best_val(run_dir: Path) -> float | None:
    vals = [r.get("val_accuracy") for r in read_metrics(run_dir / "metrics.jsonl")
            if student_phase(str(r.get("model", ""))) and isinstance(r.get("val_accuracy"), (int, float))]
    return max(vals) if vals else None


def _seed_results(parent: Path, seeds: list[int]) -> dict:
    """Per seed: the selected checkpoint's validation accuracy (used to choose) and test accuracy (read later)."""
    val, test = [], []
    for s in seeds:
        path = parent / f"seed-{s}" / "report.json"
        rep = read_report(path, f"delete it and {parent / 'aggregate.json'}, then resume the search (the seed's "
                                f"trained models are evaluated again)")
        val.append(float((rep["student"].get("selected") or {}).get("val_accuracy") or float("nan")))
        test.append(float(rep["student"]["accuracy"]))
    return {"val": val, "test": test}


# ------------------------------------------------------------------------------------------------ auto
def auto(config: str | Path | dict, budget: str | float, out: str | Path | None = None, objective: str | None = None,
         cost: str | None = None, max_latency_ms: float | None = None, max_params: int | None = None, resume: bool = False,
         storage: str | None = None, trials_parallel: int = 1, overrides: list[str] | None = None,
         log: Callable[[str], None] | None = None, on_trial: Callable[[dict], None] | None = None,
         stop_after_trials: int | None = None) -> dict:
    """Search recipe, curriculum and student within ``budget``; write OUT (see the module docstring).

    Returns the content of ``auto.json`` plus ``out`` and ``best_yaml``. ``stop_after_trials`` stops the search after
    that many trials of this call and raises ``StopRequested`` (a simulated kill; continue with ``resume=True``).
    Everything that can be checked (config, options, space, constraints, budget) is checked before any training.
    """
    if trials_parallel < 1:
        raise UserError(f"--trials-parallel {trials_parallel}: give at least 1")
    if stop_after_trials is not None and trials_parallel > 1:
        raise UserError("stop_after_trials stops a search of one process; use it with trials_parallel=1")
    options = {"objective": objective, "cost": cost, "max_latency_ms": max_latency_ms, "max_params": max_params}
    job = AutoJob(config, parse_budget(budget), out, options, resume, storage, overrides, log or (lambda msg: None))
    job.estimate()
    job.train_teacher()
    job.reference_proxy()
    job.plan()
    trials, front = job.search(trials_parallel, on_trial, stop_after_trials)
    finals = job.finals(_candidates([t for t in trials if t.state.name == "COMPLETE"], front, job.settings.objective,
                                    job.state["plan"]["top_k"]))
    return job.write_outputs(trials, front, finals)


class AutoJob:
    """One invocation of ``auto``: the checked inputs, the state file (``OUT/auto-state.json``) that lets a killed
    search resume, and one method per phase."""

    def __init__(self, config, budget_s: float, out, options: dict, resume: bool, storage: str | None,
                 overrides: list[str] | None, log: Callable[[str], None]):
        self.log, self.budget_s, self.resume = log, budget_s, resume
        self.raw, self.where = _load_raw(config, overrides)
        cfg = self.cfg = validate_config(self.raw, self.where)
        base = (cfg.auto or AutoConfig()).model_dump()
        try:
            self.settings = AutoConfig(**{**base, **{k: v for k, v in options.items() if v is not None}})
        except ValidationError as exc:  # a bad option value
            raise UserError(f"auto option {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from None
        if not cfg.all_teachers():
            raise UserError(f"{self.where}: auto distills from a teacher; add a 'teacher' section (it is trained once, "
                            f"or loaded from teacher.checkpoint)")
        if cfg.data.cv is not None:
            raise UserError(f"{self.where}: auto does not combine with data.cv; drop data.cv (cross-validate best.yaml "
                            f"afterwards)")
        if not self.settings.seeds or len(set(self.settings.seeds)) != len(self.settings.seeds):
            raise UserError(f"auto.seeds must be a non-empty list of distinct integers, got {self.settings.seeds}")
        if out is None:
            if resume:
                raise UserError("--resume needs --out DIR: the directory of the search to continue")
            out = Path(cfg.run.out) / f"auto-{cfg.run.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        self.out = check_writable_dir(out, "--out", "the search")  # before the data, the cost model and any training
        self.state_path = self.out / STATE
        if not resume and (self.state_path.exists() or (self.out / "study.db").exists()):
            raise UserError(f"{self.out} already holds an auto search; continue it with --resume or choose another --out")
        if resume and not self.state_path.is_file():
            raise UserError(f"{self.out} holds no auto search to resume ({STATE} is missing); start one without --resume")
        self.state = read_state(self.state_path) if resume else {}
        if resume and self.state.get("config_raw") != json.loads(json.dumps(self.raw)):
            raise UserError(f"{self.out} was searched with another config; resume it with the same CONFIG and --set values")
        self.clock = Clock(budget_s, float(self.state.get("used_s", 0.0)))
        self.storage = storage or f"sqlite:///{(self.out / 'study.db').resolve()}"

        # data, space and student costs: no training yet
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        self.splits = load_splits(cfg.data)
        n_full = self.splits.info["train"] + self.splits.info["val"]
        self.proxy, self.full = _fidelity_proxy(cfg, n_full, self.settings)
        self.space = build_space(cfg, self.splits, self.settings, costs=self.state.get("costs"))
        self.teacher_cfg = validate_config(_trial_settings(_pinned_teacher_raw(_base_raw(self.raw), cfg)), self.where)
        self.search_ctx: Search | None = None

    # ------------------------------------------------------------------------------------------ bookkeeping
    def save_state(self) -> None:
        self.state["used_s"] = self.clock.used()
        write_json(self.state_path, self.state)

    def add_phase(self, name: str, seconds: float) -> None:
        phases = self.state.setdefault("phases", {})
        phases[name] = phases.get(name, 0.0) + seconds

    # ------------------------------------------------------------------------------------------ 1. cost model
    def estimate(self) -> None:
        """Timed training steps -> seconds of the teacher, one proxy trial and one full run; a budget that cannot
        pay for the teacher, one trial and one confirming run stops here, before anything is written."""
        splits, cfg, proxy, full = self.splits, self.cfg, self.proxy, self.full
        input_shape = tuple(splits.input_shape)
        in_ch = input_shape[0] if len(input_shape) == 3 else 1
        bs, n_full = cfg.data.batch_size, splits.info["train"] + splits.info["val"]
        n_proxy = (proxy.subset or n_full) - (proxy.val_size if isinstance(proxy.val_size, int) else
                                              int(round(proxy.val_size * (proxy.subset or n_full))))
        self.spe_full, self.spe_proxy = _steps_per_epoch(splits.info["train"], bs), _steps_per_epoch(n_proxy, bs)
        costs = self.space.costs
        biggest = max(self.space.student_choices, key=lambda c: costs[S.choice_key(c)].params)
        device = api.resolve_device(cfg.run.device)  # timed where the trials will train
        step_s = S.step_seconds(build_model(biggest["name"], splits.num_classes, in_ch, biggest.get("kwargs")),
                                input_shape, bs, splits.num_classes, device=device)
        step_s += S.step_seconds(self.space.teacher, input_shape, bs, splits.num_classes, backward=False, device=device)
        per_epoch = 1.2  # the validation pass and bookkeeping of each epoch
        self.trial_est = RUN_OVERHEAD_S + step_s * self.spe_proxy * proxy.epochs * per_epoch
        self.full_est = RUN_OVERHEAD_S + step_s * self.spe_full * full.epochs * per_epoch
        teacher_est = 0.0
        if not self.state.get("teacher_paths"):
            tcfg = self.teacher_cfg
            runner = CourseRunner(tcfg, self.out / "teacher", Pipeline(splits, tcfg.data, torch.device("cpu")),
                                  torch.device("cpu"))
            for i, tc in enumerate(tcfg.all_teachers()):
                if tc.checkpoint:
                    continue
                key = runner.teacher_key(tc, tc.course, i)
                if tc.reuse and (Path(tcfg.run.cache_dir) / "teachers" / key / "model.safetensors").is_file():
                    continue  # trained earlier with identical settings: reused, nearly free
                t_step = S.step_seconds(build_model(tc.name, splits.num_classes, in_ch, tc.kwargs), input_shape, bs,
                                        splits.num_classes, device=device)
                teacher_est += RUN_OVERHEAD_S + t_step * self.spe_full * sum(l.epochs for l in tc.course) * per_epoch
        minimum = teacher_est + self.trial_est + self.full_est
        clock = self.clock
        if clock.left() < minimum:
            spent = f" ({fmt_seconds(clock.used_before)} already used)" if clock.used_before else ""
            teacher_text = f"the teacher needs ~{fmt_seconds(teacher_est)}, " if teacher_est else ""
            raise UserError(f"--budget {fmt_seconds(self.budget_s)} is too small{spent}: {teacher_text}one proxy trial "
                            f"~{fmt_seconds(self.trial_est)} and confirming the winner at full fidelity ~{fmt_seconds(self.full_est)} "
                            f"here; give at least --budget {math.ceil(minimum * 1.25 + clock.used())}s")
        estimate = {"teacher_s": teacher_est, "trial_s": self.trial_est, "full_run_s": self.full_est, "step_s": step_s}
        self.out.mkdir(parents=True, exist_ok=True)
        self.state.update({"budget_s": self.budget_s, "config": self.where,
                           "config_raw": json.loads(json.dumps(self.raw)),
                           "costs": {k: vars(v) for k, v in costs.items()},
                           "estimate_at_start": self.state.get("estimate_at_start", estimate),
                           "invocations": self.state.get("invocations", 0) + 1})
        self.state.setdefault("phases", {})
        self.save_state()
        self.log(f"auto: budget {fmt_seconds(self.budget_s)}, {fmt_seconds(clock.left())} left; proxy {proxy.describe()}, full "
                 f"{full.describe()}; estimated teacher {fmt_seconds(teacher_est)}, trial {fmt_seconds(self.trial_est)}, full run "
                 f"{fmt_seconds(self.full_est)}")

    # ------------------------------------------------------------------------------------------ 2. the teacher, once
    def train_teacher(self) -> None:
        if not self.state.get("teacher_paths"):
            t0 = time.monotonic()
            self.log("auto: training (or reusing) the teacher once for every trial")
            tcfg = self.teacher_cfg
            pipeline, device = api.prepare(tcfg)
            results = CourseRunner(tcfg, self.out / "teacher", pipeline, device).teachers()
            self.state["teacher_paths"] = [
                str(Path(tc.checkpoint).resolve()) if tc.checkpoint else
                str((self.out / "teacher" / res.name / "model.safetensors").resolve())
                for tc, res in zip(tcfg.all_teachers(), results)]
            self.state["teacher_reused_from"] = [r.reused_from for r in results]
            self.add_phase("teacher", time.monotonic() - t0)
            self.save_state()
        self.ckpt_raw = _trial_settings(_checkpoint_teachers(_base_raw(self.raw), self.state["teacher_paths"]))
        s = self.settings
        self.search_ctx = Search(
            out=str(self.out), dims=self.space.dims, trial_base=_with_fidelity(self.ckpt_raw, self.proxy),
            template=self.raw["course"][0], fidelity=self.proxy, costs=self.space.costs,
            teacher_stage=(S.stage_names(self.space.teacher) or [None])[-1], objective=s.objective, cost=s.cost,
            max_latency_ms=s.max_latency_ms, max_params=s.max_params, storage=self.storage,
            study_name=f"curridistill-auto-{self.cfg.run.name}", n_train=self.splits.info["train"])

    # ------------------------------------------------------------------------------------------ 3. the reference
    def reference_proxy(self) -> None:
        """The config's own recipe at proxy fidelity: the search's yardstick, and a measured trial for the cost model."""
        ref = self.state.get("reference_proxy")
        if self.settings.reference and ref is None:
            t0 = time.monotonic()
            ref_dir = self.out / "reference-proxy"
            ref_raw = copy.deepcopy(self.search_ctx.trial_base)
            ref_raw["student"] = copy.deepcopy(self.raw["student"])
            ref_raw["course"] = _compact_epochs(self.raw["course"], self.proxy.epochs)
            if ref_dir.exists():  # a kill during the reference run: start it again
                shutil.rmtree(ref_dir)
            api.run(validate_config(ref_raw, "reference (proxy)"), out=ref_dir)
            ref = {"val_accuracy": _best_val(ref_dir), "seconds": time.monotonic() - t0}
            _drop_weights(ref_dir)
            self.state["reference_proxy"] = ref
            self.add_phase("search", ref["seconds"])
            self.save_state()
        if ref:  # calibrate: a measured proxy run scaled to full fidelity (overheads scaled too: conservative)
            ratio = (self.spe_full * self.full.epochs) / max(1, self.spe_proxy * self.proxy.epochs)
            self.full_est = max(ref["seconds"] * ratio * 0.8, ref["seconds"])
            self.trial_est = ref["seconds"]

    # ------------------------------------------------------------------------------------------ 4. the plan
    def plan(self) -> None:
        """Reserve the re-runs (fewer candidates, then seeds, then no reference, while they would take more than 60%
        of what is left); the search gets the rest. A resumed search that has started its re-runs keeps its plan."""
        if self.state.get("finals_started"):
            return
        s, left = self.settings, self.clock.left()
        top_k, n_seeds, with_ref = s.top_k, len(s.seeds), s.reference

        def cost(k: int, seeds: int, ref: bool) -> float:
            return (k + (1 if ref else 0)) * seeds * self.full_est

        while cost(top_k, n_seeds, with_ref) > 0.6 * left and (top_k > 1 or n_seeds > 1 or with_ref):
            if top_k > 1:
                top_k -= 1
            elif n_seeds > 2:
                n_seeds -= 1
            elif with_ref:
                with_ref = False
            else:
                n_seeds -= 1
        finals_est = cost(top_k, n_seeds, with_ref)
        search_s = max(0.0, left - finals_est - max(2.0, 0.03 * self.budget_s))
        self.state["plan"] = {"top_k": top_k, "seeds": list(s.seeds[:n_seeds]), "reference": with_ref,
                              "finals_estimate_s": finals_est, "search_s": search_s, "full_run_estimate_s": self.full_est,
                              "trial_estimate_s": self.trial_est}
        self.save_state()
        self.log(f"auto: searching for {fmt_seconds(search_s)}, then {top_k} candidate(s)"
                 f"{' + the reference' if with_ref else ''} x {n_seeds} seed(s) at full fidelity (~{fmt_seconds(finals_est)})")

    # ------------------------------------------------------------------------------------------ 5. the study
    def search(self, trials_parallel: int, on_trial, stop_after_trials: int | None) -> tuple[list, list]:
        import optuna

        ctx, s = self.search_ctx, self.settings
        study = _make_study(ctx, s.seed, self.resume, self.proxy.epochs)
        signature = json.loads(json.dumps({"space": S.space_signature(ctx.dims), "objective": s.objective,
                                           "cost": s.cost, "fidelity": vars(self.proxy)}))
        stored = study.user_attrs.get("curridistill_auto")
        if stored is None and not study.trials:
            study.set_user_attr("curridistill_auto", signature)
        elif stored is not None and stored != signature:
            raise UserError("the stored study was made with another search space, objective or fidelity; keep them, "
                            "or start a new search with another --out / --storage")
        _requeue_interrupted(study)
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
        this_call: list[int] = []

        def after_trial(study_, frozen) -> None:
            this_call.append(frozen.number)
            write_trials_csv(self.out / "trials.csv", study_.trials)
            self.save_state()
            if on_trial is not None:
                on_trial(trial_row(frozen))
            if stop_after_trials is not None and len(this_call) >= stop_after_trials:
                study_.stop()

        reported = {t.number for t in study.trials if t.state in finished}

        def poll() -> None:  # --trials-parallel: trials the workers finished, read back from the storage
            for t in study.get_trials(deepcopy=False, states=finished):
                if t.number not in reported:
                    reported.add(t.number)
                    after_trial(study, t)

        n_done = sum(1 for t in study.trials if t.state in finished)
        n_trials = None if s.max_trials is None else max(0, s.max_trials - n_done)
        search_s = 0.0 if self.state.get("finals_started") else self.state["plan"]["search_s"]
        t0 = time.monotonic()
        if search_s >= min(self.trial_est, 1.0) and n_trials != 0:
            if trials_parallel == 1:
                study.optimize(ctx.objective_fn, n_trials=n_trials, timeout=search_s, gc_after_trial=True,
                               catch=(UserError, RuntimeError, ValueError), callbacks=[after_trial])
            else:
                _optimize_parallel(ctx, s.seed, search_s, n_trials, trials_parallel, self.proxy.epochs, poll)
        self.add_phase("search", time.monotonic() - t0)
        self.save_state()
        trials = study.trials
        write_trials_csv(self.out / "trials.csv", trials)
        secs = [t.user_attrs["seconds"] for t in trials if t.state == optuna.trial.TrialState.COMPLETE
                and "seconds" in t.user_attrs]
        if secs:  # recalibrate the re-runs' cost on what the complete proxy trials took on this machine, now
            ratio = (self.spe_full * self.full.epochs) / max(1, self.spe_proxy * self.proxy.epochs)
            self.full_est = max(self.full_est, statistics.median(secs) * ratio * 0.8)
        if stop_after_trials is not None and len(this_call) >= stop_after_trials:
            raise StopRequested(f"stopped after {len(this_call)} trial(s) as requested; continue with --resume")
        if not any(t.state == optuna.trial.TrialState.COMPLETE for t in trials):
            counts = {st.name.lower(): sum(1 for t in trials if t.state == st) for st in optuna.trial.TrialState}
            raise UserError(f"no trial completed within the budget ({counts}); give a larger --budget or see "
                            f"{self.out / 'trials.csv'}")
        return trials, (study.best_trials if s.objective == "pareto" else [])

    # ------------------------------------------------------------------------------------------ 6. re-runs
    def finals(self, cands: list) -> list[dict]:
        """The reference and the candidates at full fidelity with every planned seed (``OUT/final/NAME/seed-S/``)."""
        plan, ref_proxy = self.state["plan"], self.state.get("reference_proxy") or {}
        seeds = plan["seeds"]
        self.state["finals_started"] = True
        done = set(self.state.get("finals_done", []))
        full_base = copy.deepcopy(self.ckpt_raw)
        full_base["run"]["seeds"] = seeds
        full_base["run"]["parallel"] = self.cfg.run.parallel  # the seeds of each re-run side by side, if asked
        jobs = ([("reference", None)] if plan["reference"] else []) + [(f"trial-{t.number}", t) for t in cands]
        t0 = time.monotonic()
        finals: list[dict] = []
        for i, (name, t) in enumerate(jobs):
            must = i <= (1 if plan["reference"] else 0)  # the reference and the best candidate always run
            if name not in done and not must and self.clock.left() < self.full_est * len(seeds) * 0.8:
                self.log(f"auto: skipping {name} and {len(jobs) - i - 1} more: the budget is spent")
                break
            values = None if t is None else t.user_attrs["values"]
            if t is None:
                fraw = copy.deepcopy(full_base)
                fraw["student"], fraw["course"] = copy.deepcopy(self.raw["student"]), copy.deepcopy(self.raw["course"])
            else:
                fraw = self.search_ctx.candidate_raw(values, full_base, self.full.epochs)
            fdir = self.out / "final" / name
            self.log(f"auto: full fidelity x {len(seeds)} seed(s): {name} "
                     f"{S.describe(values) if values else '(the config as given)'}")
            if not (fdir / "aggregate.json").is_file():
                planned = validate_config(fraw, f"final {name}")
                if (fdir / "config.yaml").is_file():  # its models are those this search plans, from the user's config
                    api.resume(fdir, allowed=api.model_names(planned))
                else:
                    api.run(planned, out=fdir)
            res = _seed_results(fdir, seeds)
            finals.append({"name": name, "trial": None if t is None else t.number, "values": values,
                           "recipe": S.describe(values) if values else "the config as given",
                           "proxy_val": ref_proxy.get("val_accuracy") if t is None else t.values[0],
                           "val": res["val"], "test": res["test"], "dir": str(fdir),
                           "params": None if t is None else t.user_attrs.get("params"),
                           "latency_ms": None if t is None else t.user_attrs.get("latency_ms")})
            done.add(name)
            self.state["finals_done"] = sorted(done)
            self.save_state()
        self.add_phase("final", time.monotonic() - t0)
        self.save_state()
        return finals

    # ------------------------------------------------------------------------------------------ 7. outputs
    def write_outputs(self, trials: list, front: list, finals: list[dict]) -> dict:
        """Choose on mean validation accuracy, then read test; write best.yaml, pareto.yaml/png, auto.json/md."""
        out, seeds = self.out, self.state["plan"]["seeds"]
        chosen = max((f for f in finals if f["trial"] is not None), key=lambda f: statistics.fmean(f["val"]))
        reference = next((f for f in finals if f["trial"] is None), None)
        best_raw = _pinned_teacher_raw(_base_raw(self.raw), self.cfg)
        best_raw["run"].pop("seeds", None)
        best_raw = self.search_ctx.candidate_raw(chosen["values"], best_raw, self.full.epochs)
        best_raw["student"] = _student_section(chosen["values"]["student"])
        validate_config(best_raw, "best.yaml")
        summary = _summary(self, trials, front, finals, chosen, reference)
        header = (f"# made by `curridistill auto` from {self.where} (budget {fmt_seconds(self.budget_s)}): {chosen['recipe']}\n"
                  f"# search trial {chosen['trial']}: proxy val_accuracy {chosen['proxy_val']:.4f}; full fidelity over "
                  f"seeds {seeds}: val {mean_pm(chosen['val'])}, test {mean_pm(chosen['test'])}\n"
                  f"# the teacher's course is written out: `curridistill run` reuses that teacher from run.cache_dir\n")
        write_text(out / "best.yaml", header + yaml.safe_dump(best_raw, sort_keys=False))
        write_text(out / "pareto.yaml", _pareto_yaml(summary, self.search_ctx, best_raw, self.full.epochs, trials))
        plot = plot_front(out / "pareto.png", trials, front, self.settings.cost)
        summary["plot"] = str(plot) if plot else None
        summary["used_s"] = self.clock.used()
        write_json(out / "auto.json", summary)
        write_text(out / "auto.md", auto_markdown(summary))
        self.save_state()
        return {**summary, "out": str(out), "best_yaml": str(out / "best.yaml")}


@dataclass
class Space:
    dims: list
    notes: list[str]
    left_out: dict[str, dict[str, str]]  # registry -> {name: why it is not searched here}
    costs: dict  # student choice key -> StudentCost
    student_choices: list[dict]
    teacher: Any  # an untrained teacher of the config's architecture (shapes, stage names)


def build_space(cfg: Config, splits, settings: AutoConfig, costs: dict | None = None) -> Space:
    """The built-in space for this config and data, with ``auto.space`` applied, feature terms and scorers that do not
    fit left out (with the reason), and students that break the constraints removed, all before any training."""
    input_shape = tuple(splits.input_shape)
    in_ch = input_shape[0] if len(input_shape) == 3 else 1
    student_raw = {"name": cfg.student.name, "kwargs": dict(cfg.student.kwargs)}
    tc0 = cfg.all_teachers()[0]
    teacher = build_model(tc0.name, splits.num_classes, in_ch, tc0.kwargs, where="teacher")
    student = build_model(cfg.student.name, splits.num_classes, in_ch, cfg.student.kwargs, where="student")
    features, features_out = S.probe_feature_terms(student, teacher, input_shape)
    scorers, scorers_out = S.probe_scorers(splits.num_classes, getattr(splits.train, "lengths", None))
    dims = S.builtin_dims(cfg.course[0].optimizer.lr, S.student_choices(student_raw), features or S.FEATURE_TERMS,
                          scorers or None)
    dims = S.override_dims(dims, settings.space)
    dims, notes = _fit_space(dims, features, features_out)
    notes += [f"scorer {k} left out: {why}" for k, why in scorers_out.items()]
    student_dim = next(d for d in dims if d.name == "student")
    choices = [student_dim.fixed] if student_dim.param is None else student_dim.param.choices
    known = {k: (v if isinstance(v, S.StudentCost) else S.StudentCost(**v)) for k, v in (costs or {}).items()}
    missing = [c for c in choices if S.choice_key(c) not in known]
    if missing:
        known.update(S.student_costs(missing, splits.num_classes, input_shape))
    fits = [c for c in choices if _rejects(known[S.choice_key(c)], settings) is None]
    if not fits:
        smallest = min(choices, key=lambda c: known[S.choice_key(c)].params)
        sc = known[S.choice_key(smallest)]
        raise UserError(f"no student of the space fits the constraints (the smallest, {smallest['name']} "
                        f"{smallest.get('kwargs') or ''}, has {sc.params:,} parameters and {sc.latency_ms:.3f} ms latency); "
                        f"relax --max-params / --max-latency-ms or offer smaller students in auto.space.student")
    if student_dim.param is not None and len(fits) < len(choices):
        dims = S.override_dims(dims, {"student": fits if len(fits) > 1 else fits[0]})
        notes.append(f"{len(choices) - len(fits)} student choice(s) rejected by the constraints before training")
    left_out = {"knowledge": {**S.TERMS_LEFT_OUT, **features_out}, "scorers": scorers_out, "pacings": {},
                "self_paced": {}}
    return Space(dims, notes, left_out, known, fits, teacher)


def _compact_epochs(course: list[dict], epochs: int) -> list[dict]:
    """The config's own course at proxy length: epochs shared out in proportion, at least one per lesson."""
    course = copy.deepcopy(course)
    total = sum(int(lesson.get("epochs", 10)) for lesson in course)
    for lesson in course:
        lesson["epochs"] = max(1, round(int(lesson.get("epochs", 10)) * epochs / max(total, 1)))
    return course


def _student_section(choice: dict) -> dict:
    out = {"name": choice["name"]}
    if choice.get("kwargs"):
        out["kwargs"] = copy.deepcopy(choice["kwargs"])
    return out


def _rejects(cost: S.StudentCost, settings: AutoConfig) -> str | None:
    if settings.max_params is not None and cost.params > settings.max_params:
        return "params"
    if settings.max_latency_ms is not None and cost.latency_ms > settings.max_latency_ms:
        return "latency"
    return None


def _fit_space(dims: list, features: tuple[str, ...], features_out: dict[str, str]) -> tuple[list, list[str]]:
    """Drop feature terms that do not fit the two models (and the feature recipe if none does)."""
    notes = [f"feature term {k} left out: {why}" for k, why in features_out.items()]
    by = {d.name: d for d in dims}
    feat = by["feature"]
    if feat.param is None:
        if feat.fixed not in features:
            raise UserError(f"auto.space.feature: {feat.fixed!r} {features_out.get(feat.fixed, 'is not usable here')}")
        return dims, notes
    usable = [c for c in feat.param.choices if c in features]
    recipe = by["recipe"]
    if not usable:
        if recipe.param is None and recipe.fixed == "feature":
            raise UserError("auto.space.recipe: feature, but no feature term fits these models (" + "; ".join(notes) + ")")
        if recipe.param is not None and "feature" in recipe.param.choices:
            rest = [r for r in recipe.param.choices if r != "feature"]
            notes.append("recipe feature left out: no feature term fits these models")
            dims = S.override_dims(dims, {"recipe": rest if len(rest) > 1 else rest[0]})
        return dims, notes
    if len(usable) < len(feat.param.choices):
        dims = S.override_dims(dims, {"feature": usable if len(usable) > 1 else usable[0]})
    return dims, notes


def _requeue_interrupted(study) -> None:
    """A trial left RUNNING by a killed process is marked failed and its parameters are queued again."""
    import optuna

    for t in study.trials:
        if t.state != optuna.trial.TrialState.RUNNING:
            continue
        study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)  # noqa: SLF001
        study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)  # noqa: SLF001
        if t.params:
            study.enqueue_trial(t.params, user_attrs={"requeued_from": t.number}, skip_if_exists=False)


def _split_trials(n_trials: int | None, workers: int) -> list[int | None]:
    """Trials per worker process: ``n_trials`` shared out exactly (no more trials than one process would run, and
    no idle process when there are fewer trials than workers); None: until the deadline."""
    if n_trials is None:
        return [None] * workers
    return [n_trials // workers + (1 if i < n_trials % workers else 0) for i in range(min(workers, n_trials))]


def _optimize_parallel(search: Search, seed: int, timeout: float, n_trials: int | None, workers: int, n_epochs: int,
                       poll: Callable[[], None] | None = None, poll_s: float = 1.0) -> None:
    """``workers`` spawned processes share the study through its storage; ``poll()`` runs here every ``poll_s``
    while they work (and once at the end) to report their finished trials."""
    shares = _split_trials(n_trials, workers)
    pool = side_by_side(len(shares), search.trial_base.get("run", {}).get("device", "auto"), threads=1)
    deadline = time.time() + timeout
    futures = [pool.submit(_worker, search, seed + i, deadline, per, n_epochs) for i, per in enumerate(shares)]
    try:
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=poll_s, return_when=FIRST_EXCEPTION)
            if poll is not None:
                poll()
            for f in done:
                f.result()  # a worker's error (e.g. UserError opening the storage) ends the search here
    except BrokenProcessPool:
        raise UserError(f"a --trials-parallel worker process died (out of memory, or killed); the finished trials "
                        f"are kept in {mask_url(search.storage)}: continue with --resume, or use fewer "
                        f"--trials-parallel") from None
    finally:
        # the trials are in the storage: do not wait for the workers' interpreter teardown (measured ~20 s with torch
        # loaded on a busy 2-core machine); they are joined in the background, and at exit at the latest
        pool.shutdown(wait=False, cancel_futures=True)


def _candidates(complete: list, front: list, objective: str, k: int) -> list:
    """Distinct candidates to confirm: the best ``k`` by proxy accuracy, or ``k`` members spread along the front."""
    def key(t) -> str:
        return json.dumps(t.user_attrs.get("values"), sort_keys=True)

    pool = sorted(front, key=lambda t: t.values[1]) if objective == "pareto" else \
        sorted(complete, key=lambda t: (-t.values[0], t.number))
    unique, seen = [], set()
    for t in pool:
        if key(t) not in seen:
            seen.add(key(t))
            unique.append(t)
    if objective != "pareto" or len(unique) <= k:
        return sorted(unique[:k], key=lambda t: -t.values[0])
    best = max(unique, key=lambda t: t.values[0])  # the most accurate member always; the rest evenly spread
    idx = {round(i * (len(unique) - 1) / max(k - 1, 1)) for i in range(k)}
    picked = [unique[i] for i in sorted(idx)]
    if best not in picked:
        picked[-1] = best
    return sorted(picked[:k], key=lambda t: -t.values[0])  # the most accurate is confirmed first


# ------------------------------------------------------------------------------------------------ outputs
def _summary(job: "AutoJob", trials: list, front: list, finals: list[dict], chosen: dict, reference: dict | None) -> dict:
    settings, state, ref_proxy = job.settings, job.state, job.state.get("reference_proxy")
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    gains: dict[str, Any] = {}
    if reference is not None and ref_proxy and ref_proxy.get("val_accuracy") is not None:
        search_gain = chosen["proxy_val"] - ref_proxy["val_accuracy"]
        test_gain = statistics.fmean(chosen["test"]) - statistics.fmean(reference["test"])
        gains = {"search_val_gain": search_gain,
                 "full_val_gain": statistics.fmean(chosen["val"]) - statistics.fmean(reference["val"]),
                 "test_gain": test_gain, "survived": (test_gain / search_gain) if search_gain > 0 else None}
    return {
        "config": job.where, "objective": settings.objective, "cost": settings.cost,
        "study_name": job.search_ctx.study_name, "storage": mask_url(job.storage),
        "constraints": {"max_params": settings.max_params, "max_latency_ms": settings.max_latency_ms},
        "budget_s": job.budget_s, "used_s": job.clock.used(), "phases_s": state.get("phases", {}),
        "estimate_at_start": state.get("estimate_at_start"), "plan": state["plan"],
        "invocations": state.get("invocations", 1),
        "fidelity": {"proxy": vars(job.proxy), "full": vars(job.full)}, "counts": counts,
        "rejected_before_training": sum(1 for t in trials if t.user_attrs.get("rejected")),
        "n_trials": len(trials), "best_proxy_val": max((t.values[0] for t in trials if t.values), default=None),
        "space": S.space_signature(job.space.dims), "space_notes": job.space.notes, "left_out": job.space.left_out,
        "teacher_paths": state.get("teacher_paths"), "reference_proxy": ref_proxy,
        "trials": [trial_row(t) for t in trials], "pareto_front": [t.number for t in front],
        "finals": finals, "chosen": dict(chosen), "reference": reference, "gains": gains, "seeds": state["plan"]["seeds"],
    }


def _pareto_yaml(summary: dict, search: Search, best_raw: dict, epochs: int, trials: list) -> str:
    """Non-dominated trials (validation accuracy up, latency and parameters down), each with its config sections."""
    rows = [t for t in trials if t.values and t.state.name == "COMPLETE"]
    front = set(summary["pareto_front"]) if summary["objective"] == "pareto" else set(pareto_front_numbers(rows, summary["cost"]))
    members = []
    for t in sorted((t for t in rows if t.number in front), key=lambda t: t.user_attrs.get(
            "latency_ms" if summary["cost"] == "latency" else "params") or 0):
        values = t.user_attrs["values"]
        cand = search.candidate_raw(values, best_raw, epochs)
        members.append({"trial": t.number, "recipe": t.user_attrs.get("recipe"), "val_accuracy_proxy": round(t.values[0], 6),
                        "params": t.user_attrs.get("params"), "latency_ms": round(t.user_attrs.get("latency_ms") or 0, 5),
                        "student": _student_section(values["student"]), "course": cand["course"]})
    head = (f"# Pareto front of `curridistill auto` ({summary['config']}): validation accuracy (proxy fidelity) against "
            f"{'batch-1 CPU latency' if summary['cost'] == 'latency' else 'parameters'}; no member is dominated by any "
            f"completed trial.\n# Put a member's student and course into best.yaml to run it.\n")
    return head + yaml.safe_dump({"objective": summary["objective"], "cost": summary["cost"], "front": members},
                                 sort_keys=False)
