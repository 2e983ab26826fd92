"""Everything that can be checked before training, checked before training.

``check_static(cfg)`` needs no data: every name against its registry (models, knowledge terms, schedule
and pacing kinds, data sets), imports of ``module:callable`` models (configs are code), value ranges that
pydantic cannot express (a temperature schedule must stay > 0 over the whole lesson), data options against
the loader's signature, and teacher checkpoints (spec names, model name against the config, sha256).

``dry_build(cfg, pipeline)`` builds every model the run will train or load, runs one forward pass on a
tiny batch, and constructs every lesson as it will run (knowledge terms, feature taps by dotted path,
adapters sized on a probe batch, optimizer, LR schedule, curriculum pacing, RCO routes) without taking a
step. A bad tap path or adapter shape fails here, not after the teacher and the baseline trained.

``check(cfg)`` does both (loading the data on the CPU); ``curridistill validate`` and ``run`` call them.
"""
from __future__ import annotations

import inspect
import math
from pathlib import Path

import torch
from torch import nn

from curridistill.config import Config, LessonConfig, ModelConfig, PlateauConfig, TeacherConfig, ce_only
from curridistill.data import DATASETS  # the package registers every loader
from curridistill.data.folds import select_fold
from curridistill.data.pipeline import Pipeline, load_splits
from curridistill.errors import UserError
from curridistill.knowledge import load_all
from curridistill.models.checkpoint import check_name, load_model, load_weights, read_spec, verify_checksum
from curridistill.models.registry import MODELS, build_model, import_factory, is_out_of_memory, with_defaults
from curridistill.suggest import suggest
from curridistill.schedules import build_schedule
from curridistill.train import distributed
from curridistill.train.lesson import LessonContext, LessonRun
from curridistill.train.teachers import TeacherBank

_PROBE_POINTS = [i / 100 for i in range(101)]  # where schedules are evaluated: progress 0, 0.01, ..., 1


# ----------------------------------------------------------------------------------------- static
def check_static(cfg: Config, given=None) -> None:
    """Names, imports, ranges and checkpoints: no data, no training. Raises UserError (one line).

    ``given`` (``objects.Given``): models and data the caller passed as objects, checked when they are built."""
    if given is None or given.splits is None:
        _check_data(cfg)
    roles: list[tuple[str, ModelConfig]] = [("student", cfg.student)]
    for i, tc in enumerate(cfg.all_teachers()):
        roles.append(("teacher" if cfg.teacher is not None else f"teachers.{i}", tc))
    roles += [(f"assistants.{i}", ac) for i, ac in enumerate(cfg.assistants)]
    for where, mc in roles:
        if given is not None and given.model(mc.name) is not None:
            continue
        _check_model_name(mc, where)
        if isinstance(mc, TeacherConfig) and mc.checkpoint:
            _check_teacher_checkpoint(mc, where)
    _check_course(cfg.course, "course")
    if cfg.run.compile == "step" and distributed.env_ranks().world > 1:  # torchrun, before it joins
        raise UserError("run.compile: step runs in one process; under torchrun use run.compile: true (the model "
                        "compiled, DDP's hooks around it)")
    for i, tc in enumerate(cfg.all_teachers()):
        if tc.course:
            _check_course(tc.course, "teacher.course" if cfg.teacher is not None else f"teachers.{i}.course")


def _check_model_name(mc: ModelConfig, where: str) -> None:
    if ":" in mc.name:
        try:
            factory = import_factory(mc.name)
        except UserError as exc:
            raise UserError(f"{where}.name: {exc}") from None
        except Exception as exc:  # the module raised while importing: report it, do not show its traceback
            raise UserError(f"{where}.name: importing {mc.name!r} failed ({type(exc).__name__}: "
                            f"{_first_line(exc)}); fix that module") from None
        if not callable(factory):
            raise UserError(f"{where}.name: {mc.name!r} is a {type(factory).__name__}, not a callable that builds a model")
        return
    MODELS.get(mc.name, where=f"{where}.name")


def _check_teacher_checkpoint(tc: TeacherConfig, where: str) -> None:
    path = Path(tc.checkpoint)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    if not path.is_file():
        raise UserError(f"{where}.checkpoint: checkpoint not found: {path}; check the path, or remove "
                        f"{where}.checkpoint to let the tool train the teacher")
    if not path.with_suffix(".json").is_file():  # bare weights: the config's model section builds it
        return
    spec = read_spec(path)
    check_name(spec, path, allowed=(tc.name,))
    check_spec_matches(spec, tc, path, where)
    verify_checksum(path, spec)


def check_spec_matches(spec: dict, tc: ModelConfig, path: Path, where: str) -> None:
    """A checkpoint's spec must describe the model the config names (a 'cnn' teacher is not an 'mlp')."""
    if spec["name"] != tc.name:
        raise UserError(f"{where}.checkpoint {path} holds a {spec['name']!r} model but {where}.name is {tc.name!r}; "
                        f"set {where}.name: {spec['name']} or point at a {tc.name!r} checkpoint")


def _check_data(cfg: Config) -> None:
    loader = DATASETS.get(cfg.data.name, where="data.name")
    params = inspect.signature(loader).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = [n for n, p in params.items() if n != "root" and p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for key in cfg.data.options:
        if key not in valid:
            hint = suggest(key, valid, fallback=f"valid options: {', '.join(valid)}" if valid else "it takes no options")
            raise UserError(f"unknown option 'data.options.{key}' for data set {cfg.data.name!r}; {hint}")


def _check_course(course: list[LessonConfig], where: str) -> None:
    knowledge = load_all()
    for li, lesson in enumerate(course):
        at = f"{where}.{li}"
        for name, term in lesson.loss.items():
            knowledge.get(term.kind, where=f"{at}.loss.{name}")
            weight = build_schedule(term.weight, lesson.epochs, where=f"{at}.loss.{name}.weight")
            _check_values(weight, f"{at}.loss.{name}.weight", low=0.0, strict=False)
            if term.temperature is not None:
                temp = build_schedule(term.temperature, lesson.epochs, where=f"{at}.loss.{name}.temperature")
                _check_values(temp, f"{at}.loss.{name}.temperature", low=0.0, strict=True)
        if not isinstance(lesson.lr_schedule, PlateauConfig):
            lr = build_schedule(lesson.lr_schedule, lesson.epochs, where=f"{at}.lr_schedule")
            _check_values(lr, f"{at}.lr_schedule", low=0.0, strict=False)
        if lesson.grad_clip is not None and not lesson.grad_clip > 0:
            raise UserError(f"{at}.grad_clip={lesson.grad_clip}: give a positive gradient norm, or remove it")


def _check_values(fn, where: str, low: float, strict: bool) -> None:
    for p in _PROBE_POINTS:
        v = fn(p)
        bad = not math.isfinite(v) or (v <= low if strict else v < low)
        if bad:
            need = f"> {low:g}" if strict else f">= {low:g}"
            raise UserError(f"{where} is {v:g} at progress {p:g}; it must stay {need} over the whole lesson")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -------------------------------------------------------------------------------------- dry build
def dry_build(cfg: Config, pipeline, given=None) -> None:
    """Build every model and lesson as the run will, on ``pipeline`` (CPU is fine), without training.

    The random streams are restored afterwards, so a run's results do not depend on the check.
    ``given`` (``objects.Given``): models the caller passed as objects, built from those objects."""
    with torch.random.fork_rng(devices=[pipeline.device] if pipeline.device.type == "cuda" else []):
        _dry_build(cfg, pipeline, given)


def _dry_build(cfg: Config, pipeline, given=None) -> None:
    splits = pipeline.splits
    if splits.num_classes < 2:
        raise UserError(f"data {cfg.data.name!r} has {splits.num_classes} class; classification needs at least 2")
    for li, lesson in enumerate(cfg.course):
        bs = lesson.batch_size or cfg.data.batch_size
        if bs > len(splits.train):
            raise UserError(f"course.{li}: batch size {bs} is larger than the {len(splits.train)} training samples; "
                            f"lower data.batch_size")
    teachers: list[nn.Module] = []
    anchors = None
    for i, tc in enumerate(cfg.all_teachers()):
        where = "teacher" if cfg.teacher is not None else f"teachers.{i}"
        if tc.checkpoint:
            model = _load_teacher(tc, pipeline, where)
        else:
            model = _build(tc, pipeline, where, given)
            _dry_lessons(model, cfg.teacher_course(tc), pipeline, [], [], f"{where}.course" if tc.course else where)
            anchors = {f"epoch_{e}": {} for e in tc.keep_epochs} | {"final": {}}
        teachers.append(model.eval())
    weights = [tc.weight for tc in cfg.all_teachers()]
    source, source_weights = teachers, weights
    for i, ac in enumerate(cfg.assistants):
        model = _build(ac, pipeline, f"assistants.{i}", given)
        _dry_lessons(model, cfg.course, pipeline, source, source_weights, "course", cfg.run.teacher_aggregation,
                     anchors if i == 0 else None)
        source, source_weights = [model.eval()], [1.0]
    student = _build(cfg.student, pipeline, "student", given)
    if cfg.baseline.enabled:
        _dry_lessons(student, ce_only(cfg.course), pipeline, [], [], "course")
    if teachers or not cfg.baseline.enabled:
        _dry_lessons(student, cfg.course, pipeline, source, source_weights, "course", cfg.run.teacher_aggregation,
                     anchors if not cfg.assistants else None)


def _build(mc: ModelConfig, pipeline, where: str, given=None) -> nn.Module:
    splits = pipeline.splits
    shape = splits.input_shape
    in_channels = shape[0] if len(shape) == 3 else 1
    user = given.build(mc.name) if given is not None else None
    if user is not None:  # the caller's module (a fresh copy)
        _probe(user, pipeline, where)
        return user.to(pipeline.device)
    try:
        kwargs = with_defaults(mc.name, mc.kwargs, (getattr(splits.train, "meta", None) or {}).get("model_defaults"))
        model = build_model(mc.name, splits.num_classes, in_channels, kwargs, where=where)
    except UserError:
        raise
    except Exception as exc:  # the factory raised: say where, in one line
        if is_out_of_memory(exc):
            raise UserError(f"{where}: model {mc.name!r} does not fit in memory; pick a smaller model") from None
        raise UserError(f"{where}: building model {mc.name!r} with kwargs {mc.kwargs} failed ({type(exc).__name__}: "
                        f"{_first_line(exc)}); fix {where}.kwargs") from None
    _probe(model, pipeline, where)
    return model.to(pipeline.device)


def _probe(model: nn.Module, pipeline, where: str) -> None:
    """One forward pass on two training samples: the model must take the data and output (B, classes)."""
    splits = pipeline.splits
    x, _ = pipeline.batch("train", torch.arange(min(2, len(splits.train))))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x.to(next(model.parameters(), torch.zeros(())).device))
    except Exception as exc:
        if is_out_of_memory(exc):
            raise UserError(f"{where}: a forward pass of {type(model).__name__} on 2 samples ran out of memory; "
                            f"pick a smaller model") from None
        raise UserError(f"{where}: the model cannot take inputs of shape {tuple(x.shape[1:])} ({type(exc).__name__}: "
                        f"{_first_line(exc)}); pick a model for this data or adjust its kwargs") from None
    model.train(was)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != splits.num_classes:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"{where}: the model outputs {got} but the data has {splits.num_classes} classes; "
                        f"it must return logits of shape (batch, {splits.num_classes})")


def _load_teacher(tc: TeacherConfig, pipeline, where: str) -> nn.Module:
    path = Path(tc.checkpoint)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    if not path.with_suffix(".json").is_file():
        model = _build(tc, pipeline, where)
        return load_weights(model, path, where=f"{where}.checkpoint")
    spec = read_spec(path)
    if spec["num_classes"] != pipeline.splits.num_classes:
        raise UserError(f"{where}.checkpoint {path} predicts {spec['num_classes']} classes but data "
                        f"{pipeline.splits.name!r} has {pipeline.splits.num_classes}; use a teacher trained on this data")
    model, _ = load_model(path, "cpu", allowed=(tc.name,))
    _probe(model, pipeline, f"{where}.checkpoint")
    return model.to(pipeline.device)


def _dry_lessons(model: nn.Module, course: list[LessonConfig], pipeline, teachers: list[nn.Module],
                 weights: list[float], where: str, aggregation: str = "mean", anchors: dict | None = None) -> None:
    """Construct each lesson as the runner will (terms, taps, adapters, optimizer, pacing) and discard it."""
    if distributed.info().active:  # a lesson wraps the model in DDP (a collective): the run itself checks there
        return
    state = {k: v.clone() for k, v in model.state_dict().items()}
    bank = TeacherBank(teachers, weights, aggregation) if teachers else None
    if anchors is not None and teachers:
        anchors = {name: teachers[0].state_dict() for name in anchors}
    try:
        for li, lesson in enumerate(course):
            ctx = LessonContext(phase=where, lesson_index=li, pipeline=pipeline, device=pipeline.device, seed=0,
                                teachers=bank, anchors=anchors)
            try:
                LessonRun(model, lesson, ctx)
            except UserError as exc:
                raise UserError(f"{where}.{li}: {exc}") from None
            except Exception as exc:  # a term's build() or a tap failed on the probe batch
                if is_out_of_memory(exc):
                    raise UserError(f"{where}.{li}: building the lesson on a probe batch ran out of memory; "
                                    f"lower data.batch_size") from None
                raise UserError(f"{where}.{li}: the lesson cannot be built ({type(exc).__name__}: {_first_line(exc)}); "
                                f"check its loss terms' feature paths and options") from None
    finally:
        if bank is not None:
            bank.close()
        model.load_state_dict(state)
        for t in teachers:
            t.eval()


# ------------------------------------------------------------------------------------------- both
def check(cfg: Config, build: bool = True) -> None:
    """``check_static`` then, when ``build``, load the data on the CPU and ``dry_build``."""
    check_static(cfg)
    if not build:
        return
    splits = select_fold(load_splits(cfg.data), cfg.data.cv)
    dry_build(cfg, Pipeline(splits, cfg.data, torch.device("cpu")))
