"""Hyper-parameter search with Optuna over a search space declared in the config's ``tune:`` section.

.. code-block:: yaml

    tune:
      space:
        course.0.loss.kd.temperature: {float: [1, 8]}
        course.0.optimizer.lr: {float: [0.01, 0.2], log: true}
        student.kwargs.hidden: {categorical: [[16], [32]]}
        course.0.epochs: {int: [5, 20]}
      metric: val_accuracy        # validation only: test data never chooses hyper-parameters
      direction: maximize
      sampler: tpe                # tpe | random | grid (grid: categorical and int entries only)
      pruner: median              # stop a trial whose per-epoch metric is below the median of earlier trials

Each trial is the config with the sampled values applied as ``--set`` overrides (``config.apply_overrides``), run
with ``api.run`` into ``OUT/trial-<n>/``. Its objective is the best ``tune.metric`` over the student's epochs (the
value that selects the student's checkpoint), reported epoch by epoch to the pruner. The teacher is trained once:
trials pin the teacher's course to the one the original config implies, so its cache key (``run.cache_dir``) is the
same for every trial (values that change the teacher's data, such as ``data.batch_size``, retrain it once per
value). The baseline is not trained in trials unless ``tune.baseline: true``.

Outputs in OUT: ``study.db`` (the default storage ``sqlite:///OUT/study.db``; any Optuna storage URL works, e.g.
PostgreSQL to share a study between machines), ``trials.csv``, ``best_params.json`` and ``best.yaml`` (the
original config with the best values and without ``tune``: run it with ``curridistill run``).
"""
from __future__ import annotations

import copy
import csv
import functools
import hashlib
import io
import json
import math
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from curridistill import api
from curridistill.config import LessonConfig, apply_overrides, ce_only, load_config, read_yaml, validate_config
from curridistill.errors import NonFiniteLoss, UserError
from curridistill.io import write_json, write_text
from curridistill.locks import is_locked
from curridistill.multirun import check_parallel
from curridistill.outputs import check_writable_dir
from curridistill.preflight import check_static
from curridistill.search_space import Param, parse_space
from curridistill.suggest import suggest
from curridistill.workers import side_by_side


def value_text(value: Any) -> str:
    """A value as the YAML text of a ``--set KEY=VALUE`` override that loads back to exactly ``value``."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30, sort_keys=False)
    return text.removesuffix("\n...\n").strip()


def apply_values(raw: dict, values: dict[str, Any]) -> dict:
    return apply_overrides(raw, [f"{k}={value_text(v)}" for k, v in values.items()])


# -------------------------------------------------------------------------------------- key-path checks
def _paths(node: Any, prefix: str = "") -> set[str]:
    out: set[str] = set()
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return out
    for k, v in items:
        path = f"{prefix}{k}"
        out.add(path)
        out |= _paths(v, f"{path}.")
    return out


def _term_param_paths(resolved: dict) -> set[str]:
    """``course.N.loss.T.X`` for every term option X (the YAML shorthand writes options beside weight)."""
    out = set()
    for i, lesson in enumerate(resolved.get("course") or []):
        for t, term in (lesson.get("loss") or {}).items():
            for x in (term.get("params") or {}):
                out.add(f"course.{i}.loss.{t}.{x}")
    return out


def check_space(raw: dict, params: dict[str, Param], where: str) -> None:
    """Every key must be a path of the config (as written, or with its defaults) and accept its values."""

    resolved = validate_config(raw, where).model_dump(mode="json")
    known = _paths(raw) | _paths(resolved) | _term_param_paths(resolved)
    for key, param in params.items():
        if key.split(".")[0] == "tune":
            raise UserError(f"{where}: tune.space key {key!r} points into the tune section itself; tune other sections")
        if key not in known:
            hint = suggest(key, sorted(known), cutoff=0.6,
                           fallback="free-form options (model kwargs, data options) must be written in the config first")
            raise UserError(f"{where}: tune.space key {key!r} is not a path of this config; {hint}")
        for value in param.probes():
            try:  # the values and the names (models, terms, kinds) a trial would meet: before any trial runs
                check_static(validate_config(apply_values(raw, {key: value}), where))
            except UserError as exc:
                msg = str(exc).replace(f"{where}: ", "", 1).replace("--set ", "", 1)
                raise UserError(f"{where}: tune.space key {key!r} with value {value!r}: {msg}") from None


# ---------------------------------------------------------------------------------------------- the study
def mask_url(url: str) -> str:
    """A storage URL with its password hidden, for messages."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def open_study(name: str, storage_url: str, sampler, pruner, directions: list[str], load: bool, again: str):
    """Create (or with ``load``, continue) an Optuna study; bad storage or a name clash is one line.
    ``again``: how to avoid the clash, e.g. "choose another --study-name"."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        from sqlalchemy.exc import SQLAlchemyError
    except ImportError:  # pragma: no cover  (optuna's RDB storage needs it; a journal URL does not)
        SQLAlchemyError = RuntimeError  # noqa: N806
    try:
        return optuna.create_study(study_name=name, storage=storage_of(storage_url), sampler=sampler, pruner=pruner,
                                   directions=directions, load_if_exists=load)
    except optuna.exceptions.DuplicatedStudyError:
        raise UserError(f"study {name!r} already exists in {mask_url(storage_url)}; continue it with --resume "
                        f"or {again}") from None
    except (ImportError, ValueError, RuntimeError, OSError, SQLAlchemyError) as exc:
        raise UserError(f"--storage {mask_url(storage_url)}: cannot open it ({str(exc).splitlines()[0]}); give an Optuna "
                        f"storage URL such as sqlite:///study.db, journal:study.log or postgresql://user:pass@host/db") from None


JOURNAL = "journal:"


def storage_of(url: str):
    """The Optuna storage a URL names. ``journal:PATH`` is Optuna's append-only journal file: no database
    and no SQLAlchemy, safe for several processes on one file system (workers, NFS). ``sqlite:`` waits for
    the file's lock instead of failing when parallel workers write at once. Others go to Optuna as they are."""
    import optuna

    if url.startswith(JOURNAL):
        path = url[len(JOURNAL):]
        if not path:
            raise ValueError("journal: needs a file path, e.g. journal:out/study.log")
        try:
            from optuna.storages.journal import JournalFileBackend
        except ImportError:  # Optuna 3.x names it JournalFileStorage
            from optuna.storages import JournalFileStorage as JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(path))
    if url.startswith("sqlite:"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    return url


def _make_sampler(name: str, params: dict[str, Param], tc):
    import optuna

    if name == "tpe":
        return _per_trial_seed()(optuna.samplers.TPESampler(seed=tc.seed, n_startup_trials=tc.n_startup_trials), tc.seed)
    if name == "random":
        return _per_trial_seed()(optuna.samplers.RandomSampler(seed=tc.seed), tc.seed)
    if name == "grid":
        return optuna.samplers.GridSampler({k: p.grid() for k, p in params.items()}, seed=tc.seed)
    raise UserError(f"--sampler {name!r} is not a sampler; use tpe, random or grid")


def trial_seed(seed: int, number: int) -> int:
    """The sampler seed of trial ``number``: a resumed study or a second worker never repeats a trial's draw."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{number}".encode()).digest()[:4], "little")


@functools.lru_cache(maxsize=1)
def _per_trial_seed():
    """A sampler wrapper that reseeds the wrapped sampler's random state from (seed, trial number) before each
    trial. Optuna seeds a sampler once per process, so a resumed study (or two workers on one study) would
    otherwise draw trial 0's parameters again. Defined lazily: optuna is imported only by `tune`."""
    import optuna

    class PerTrialSeed(optuna.samplers.BaseSampler):
        def __init__(self, inner, seed: int):
            self.inner, self.seed = inner, seed

        def _reseed(self, number: int) -> None:
            value = trial_seed(self.seed, number)
            for sampler in (self.inner, getattr(self.inner, "_random_sampler", None)):
                rng = getattr(sampler, "_rng", None)
                if rng is not None and hasattr(rng, "rng"):
                    rng.rng.seed(value)

        def infer_relative_search_space(self, study, trial):
            return self.inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self.inner.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self.inner.sample_independent(study, trial, param_name, param_distribution)

        def before_trial(self, study, trial) -> None:
            self._reseed(trial.number)
            self.inner.before_trial(study, trial)

        def after_trial(self, study, trial, state, values) -> None:
            self.inner.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:
            self.inner.reseed_rng()

    return PerTrialSeed


def recover_interrupted(study, out: Path) -> list[int]:
    """Mark RUNNING trials whose process is gone (their run directory is not locked) FAIL and enqueue their
    parameters again; returns their numbers. A trial of a live worker holds its directory's lock."""
    import optuna


    recovered = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        trial_dir = Path(t.user_attrs.get("run_dir") or out / f"trial-{t.number}")
        if is_locked(trial_dir):
            continue
        study.tell(t.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        if t.params:
            study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number})
        recovered.append(t.number)
    return recovered


def _make_pruner(tc):
    import optuna

    if tc.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=tc.n_startup_trials, n_warmup_steps=tc.n_warmup_steps)
    return optuna.pruners.NopPruner()


def student_phase(model: str) -> bool:
    """Records of the distilled student (and its later rounds) are the ones the objective watches."""
    return model == "student" or model.startswith("student-round")


def trial_base(raw: dict, cfg) -> dict:
    """The config every trial starts from: no tune section, one seed, baseline as tune.baseline says, and the
    teacher's course pinned to the one the original config implies (so the cached teacher serves every trial)."""

    base = copy.deepcopy(raw)
    base.pop("tune", None)
    if cfg.data.cv is not None:
        raise UserError("tune does not combine with data.cv; drop data.cv from the config to tune it "
                        "(cross-validate the best.yaml afterwards)")
    if cfg.run.seeds:
        base.setdefault("run", {})["seeds"] = None
    if not cfg.tune.baseline:
        base["baseline"] = {**(base.get("baseline") or {}), "enabled": False}
    pinned = [l.model_dump(mode="json") for l in ce_only(cfg.course)]
    if isinstance(base.get("teacher"), dict) and not base["teacher"].get("course") and not base["teacher"].get("checkpoint"):
        base["teacher"]["course"] = pinned
    for t in base.get("teachers") or []:
        if isinstance(t, dict) and not t.get("course") and not t.get("checkpoint"):
            t["course"] = copy.deepcopy(pinned)
    return base


def _pin_teacher_course(best_raw: dict, base: dict, params: dict[str, Param], raw: dict) -> bool:
    """When tuned values change the course, keep best.yaml's teacher the one the trials learned from."""
    if not any(k.split(".")[0] == "course" for k in params):
        return False
    pinned = False
    if isinstance(best_raw.get("teacher"), dict) and isinstance(base.get("teacher"), dict):
        if not best_raw["teacher"].get("course") and base["teacher"].get("course"):
            best_raw["teacher"]["course"] = compact_course(raw, base["teacher"]["course"])
            pinned = True
    for mine, theirs in zip(best_raw.get("teachers") or [], base.get("teachers") or []):
        if isinstance(mine, dict) and not mine.get("course") and isinstance(theirs, dict) and theirs.get("course"):
            mine["course"] = compact_course(raw, theirs["course"])
            pinned = True
    return pinned


def compact_course(raw: dict, pinned: list[dict]) -> list[dict]:
    """The original lessons as written, with loss {ce: 1} and no curriculum or route, when that parses to exactly
    the pinned teacher course (same cache key); else the pinned course in full."""

    lessons = raw.get("course")
    if not isinstance(lessons, list) or len(lessons) != len(pinned):
        return copy.deepcopy(pinned)
    for ce in (1.0, {"weight": 1.0, "label_smoothing": 0.0}):
        compact = []
        for lesson in lessons:
            lesson = {k: copy.deepcopy(v) for k, v in lesson.items() if k not in ("curriculum", "teacher")}
            compact.append({**lesson, "loss": {"ce": copy.deepcopy(ce)}})
        try:
            same = all(LessonConfig(**c).model_dump(mode="json") == p for c, p in zip(compact, pinned))
        except Exception:  # noqa: BLE001  (any parse problem: keep the exact form)
            same = False
        if same:
            return compact
    return copy.deepcopy(pinned)


def _load_raw(config: str | Path | dict, overrides: list[str] | None) -> tuple[dict, str]:
    if isinstance(config, dict):
        return apply_overrides(config, overrides or []), "config"
    path = Path(config)

    load_config(path, overrides)  # the usual checks and messages (file, YAML, keys)
    raw = read_yaml(path.read_text(encoding="utf-8")) or {}
    return apply_overrides(raw, overrides or []), str(path)


def tune(config: str | Path | dict, trials: int, out: str | Path | None = None, sampler: str | None = None,
         storage: str | None = None, study_name: str | None = None, resume: bool = False, timeout: float | None = None,
         overrides: list[str] | None = None, progress=None, on_trial: Callable[[dict], None] | None = None,
         parallel: int = 1, _worker: bool = False) -> dict:
    """Run (or continue) an Optuna study over ``tune.space``; write trials.csv, best_params.json, best.yaml.

    ``trials`` is the study's total number of finished trials: a resumed (or shared) study runs only the rest.
    ``parallel`` > 1 runs that many worker processes on the same study side by side (each one is this
    function on the stored study, so they share the count of finished trials and never repeat parameters:
    the sampler is seeded per trial).
    Returns the content of best_params.json plus ``out`` and ``trials`` (one dict per trial).
    """

    if trials < 1:
        raise UserError(f"--trials {trials}: give at least 1 trial")
    if parallel < 1:
        raise UserError(f"--parallel {parallel}: give a number of worker processes >= 1")
    if timeout is not None and not (timeout > 0 and math.isfinite(timeout)):  # nan passes "<= 0"
        raise UserError(f"--timeout {timeout}: give a positive number of seconds")
    if study_name is not None and not study_name.strip():
        raise UserError(f"--study-name {study_name!r} is empty; give a name, e.g. --study-name lr-search, or leave it "
                        f"out for curridistill-<run.name>")
    raw, where = _load_raw(config, overrides)
    cfg = validate_config(raw, where)
    check_parallel(cfg)  # each trial is this config's run (its seeds side by side, or one run)
    if cfg.tune is None:
        raise UserError(f"{where} has no tune section; add one, e.g. tune: {{space: {{course.0.optimizer.lr: "
                        f"{{float: [0.01, 0.2], log: true}}}}}} (see configs/tune_quickstart.yaml)")
    tc = cfg.tune
    try:
        params = parse_space(tc.space)
    except ValueError as exc:
        raise UserError(f"{where}: {exc}") from None
    sampler_name = sampler or tc.sampler
    base = trial_base(raw, cfg)
    check_space(base, params, where)
    import optuna

    optuna_sampler = _make_sampler(sampler_name, params, tc)  # grid: checks discreteness before any work
    if out is None:
        if resume:
            raise UserError("--resume needs --out DIR: the directory of the study to continue")
        out = Path(cfg.run.out) / f"tune-{cfg.run.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = check_writable_dir(out, "--out", "the study")
    if not resume and not _worker and ((out / "study.db").exists() or (out / "trials.csv").exists()):
        raise UserError(f"{out} already holds a study; continue it with --resume or choose another --out")
    storage_url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    name = study_name or f"curridistill-{cfg.run.name}"
    if resume and not _worker:
        _check_resumable(out, storage, storage_url, name)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        study = open_study(name, storage_url, optuna_sampler, _make_pruner(tc), [tc.direction], load=resume or _worker,
                           again="choose another --study-name")
    except UserError:
        if created:  # a storage that cannot be opened leaves no empty study directory behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    _check_same_study(study, tc, sampler_name)
    if resume and not _worker:  # a worker must not fail the trials its siblings are running
        interrupted = recover_interrupted(study, out)
        if interrupted:
            sys.stderr.write(f"note: trial(s) {', '.join(map(str, interrupted))} were interrupted: marked failed, "
                             f"their parameters queued again\n")

    def objective(trial) -> float:
        values = {k: p.suggest(trial) for k, p in params.items()}
        trial_raw = apply_values(base, values)
        trial_cfg = validate_config(trial_raw, f"{where} (trial {trial.number})")
        trial_dir = out / f"trial-{trial.number}"
        trial.set_user_attr("run_dir", str(trial_dir))
        trial.set_user_attr("values", json.loads(json.dumps(values)))
        seen: list[float] = []

        def on_record(record: dict) -> None:
            if not student_phase(str(record.get("model", ""))):
                return
            value = record.get(tc.metric)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise UserError(f"tune.metric {tc.metric!r} is not in the student's epoch records; use one of "
                                f"{sorted(k for k in record if k.startswith('val_'))}")
            seen.append(float(value))
            best = max(seen) if tc.direction == "maximize" else min(seen)
            trial.report(best, len(seen) - 1)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after {len(seen)} epochs ({tc.metric} {best:.4f})")


        api.run(trial_cfg, out=trial_dir, callbacks=[progress, on_record])
        if not seen:
            raise UserError(f"trial {trial.number} logged no student epochs; the course must train the student")
        return max(seen) if tc.direction == "maximize" else min(seen)

    def after_trial(study_, frozen) -> None:
        if on_trial is not None:
            on_trial(_trial_row(frozen, params))
        write_trials_csv(out / "trials.csv", study_.trials, params)

    finished = {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL}
    def counted(trials_: list) -> int:  # finished trials, not counting interrupted ones that were queued again
        retried = {t.user_attrs.get("retry_of") for t in trials_}
        return sum(1 for t in trials_ if t.state in finished and t.number not in retried)

    def enough(study_, frozen) -> None:
        if counted(study_.get_trials(deepcopy=False)) >= trials:
            study_.stop()

    remaining = max(0, trials - counted(study.trials))
    if remaining and parallel > 1:
        _run_workers(parallel, config, trials, out, sampler, storage_url, name, timeout, overrides, cfg.run.device)
    elif remaining:
        study.optimize(objective, n_trials=remaining, timeout=timeout, catch=(NonFiniteLoss,), gc_after_trial=True,
                       callbacks=[after_trial, enough])
    all_trials = study.trials
    write_trials_csv(out / "trials.csv", all_trials, params)
    complete = [t for t in all_trials if t.state == optuna.trial.TrialState.COMPLETE]
    counts = {s.name.lower(): sum(1 for t in all_trials if t.state == s) for s in optuna.trial.TrialState}
    if not complete:
        raise UserError(f"no trial of study {name!r} completed ({counts}); see {out / 'trials.csv'} and the trial "
                        f"directories; relax the pruner (tune.pruner: none) or fix the failing trials")
    best = study.best_trial
    best_values = {k: params[k].decode(v) for k, v in best.params.items() if k in params}
    best_raw = apply_values(raw, best_values)
    best_raw.pop("tune", None)
    pinned = _pin_teacher_course(best_raw, base, params, raw)
    validate_config(best_raw, "best.yaml")
    header = (f"# best trial {best.number} of study {name!r}: {tc.metric} = {best.value:.6g} "
              f"(best epoch, validation data)\n# made by `curridistill tune` from {where}; run it with "
              f"`curridistill run best.yaml`\n")
    if pinned:
        header += ("# teacher.course is written out: it is the course the teacher of every trial was trained with "
                   "(the original lessons, loss ce), so this run reuses that teacher from run.cache_dir\n")

    write_text(out / "best.yaml", header + yaml.safe_dump(best_raw, sort_keys=False))
    result = {"metric": tc.metric, "direction": tc.direction, "value": best.value, "trial": best.number,
              "params": best_values, "run_dir": best.user_attrs.get("run_dir"), "study_name": name,
              "storage": mask_url(storage_url), "sampler": sampler_name, "pruner": tc.pruner, "counts": counts,
              "n_trials": len(all_trials), "config": where, "best_yaml": str(out / "best.yaml")}
    write_json(out / "best_params.json", result)
    return {**result, "out": str(out), "trials": [_trial_row(t, params) for t in all_trials]}


def _check_resumable(out: Path, storage: str | None, storage_url: str, name: str) -> None:
    """``--resume`` continues a study that exists; it never starts a new one (as ``auto --resume``)."""
    import optuna

    if storage is None and not (out / "study.db").is_file():
        raise UserError(f"{out} holds no study to resume (study.db is missing); start one without --resume")
    for scheme in (JOURNAL, "sqlite:///"):  # opening a missing file would create it
        if storage_url.startswith(scheme) and not Path(storage_url[len(scheme):]).is_file():
            raise UserError(f"--storage {mask_url(storage_url)}: the file is missing, so there is no study to resume; "
                            f"check the path, or start one without --resume")
    try:
        names = optuna.get_all_study_names(storage=storage_of(storage_url))
    except Exception:  # noqa: BLE001  (a storage that cannot be opened: open_study says why, in one line)
        return
    if name not in names:
        there = f" (it holds {', '.join(repr(n) for n in names)})" if names else " (it holds none)"
        raise UserError(f"{mask_url(storage_url)} holds no study {name!r} to resume{there}; give its --study-name, "
                        f"or start one without --resume")


def _run_workers(parallel: int, config, trials: int, out: Path, sampler: str | None, storage_url: str, name: str,
                 timeout: float | None, overrides: list[str] | None, device: str) -> None:
    """``parallel`` spawned processes optimizing the one stored study until it has ``trials`` finished trials
    (their trials train on the GPUs in turn when there are several; see ``workers``)."""
    config = str(Path(config).resolve()) if isinstance(config, (str, Path)) else config
    args = (config, trials, str(out), sampler, storage_url, name, timeout, overrides)
    with side_by_side(parallel, device) as pool:
        for future in [pool.submit(_tune_worker, *args) for _ in range(parallel)]:
            future.result()  # a worker's UserError reaches the caller as one line


def _tune_worker(config, trials: int, out: str, sampler: str | None, storage_url: str, name: str,
                 timeout: float | None, overrides: list[str] | None) -> None:
    tune(config, trials, out=out, sampler=sampler, storage=storage_url, study_name=name, timeout=timeout,
         overrides=overrides, _worker=True)


def _check_same_study(study, tc, sampler_name: str) -> None:
    """A resumed study must search the same space; record it on a new study."""
    stored = study.user_attrs.get("curridistill_space")
    space = json.loads(json.dumps(tc.space))
    if stored is None:
        if not study.trials:
            study.set_user_attr("curridistill_space", space)
            study.set_user_attr("curridistill_direction", tc.direction)
        return
    if stored != space:
        raise UserError("the stored study was made with another tune.space; keep the space of the study "
                        "or start a new one with another --study-name / --out")


def _trial_row(t, params: dict[str, Param]) -> dict:
    seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
    values = {k: params[k].decode(v) if k in params else v for k, v in t.params.items()}
    return {"number": t.number, "state": t.state.name, "value": t.value, "params": values, "seconds": seconds,
            "run_dir": t.user_attrs.get("run_dir")}


def write_trials_csv(path: Path, trials: list, params: dict[str, Param]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["number", "state", "value", "params", "seconds", "run_dir"])
    for t in trials:
        row = _trial_row(t, params)
        w.writerow([row["number"], row["state"], "" if row["value"] is None else f"{row['value']:.6g}",
                    json.dumps(row["params"], sort_keys=True),
                    "" if row["seconds"] is None else f"{row['seconds']:.1f}", row["run_dir"] or ""])
    write_text(path, buf.getvalue())


def short_params(values: dict) -> str:
    """``temperature=4.84 lr=0.0608 hidden=[64]``: the last part of each key (more when two would clash)."""
    keys = list(values)
    names = {}
    for k in keys:
        parts = k.split(".")
        n = 1
        while n < len(parts) and sum(1 for o in keys if o.split(".")[-n:] == parts[-n:]) > 1:
            n += 1
        names[k] = ".".join(parts[-n:])

    def fmt(v) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return json.dumps(v, separators=(",", ":")) if isinstance(v, (list, dict)) else str(v)

    return " ".join(f"{names[k]}={fmt(v)}" for k, v in values.items())
