"""Typed configuration: YAML -> validated pydantic objects before any work starts.

Top-level sections: ``data``, ``teacher`` (or ``teachers``), ``student``, ``baseline``, ``course``
(a list of lessons) and ``run``. Unknown keys are rejected with their path and the nearest valid key.
Every default is visible with ``curridistill validate CONFIG --print``.
"""
from __future__ import annotations

import math
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from curridistill.curriculum import SCORERS, parse_pacing, parse_self_paced
from curridistill.errors import UserError
from curridistill.io import explain_invalid
from curridistill.knowledge import load_all
from curridistill.models.transfer import TransferConfig
from curridistill.schedules import ScheduleSpec, parse_schedule
from curridistill.search_space import parse_space
from curridistill.suggest import suggest


class Strict(BaseModel):
    # no config number is infinite or NaN: `lr: inf` would pass `gt=0` and fail at the first step instead
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_yes_no_for_numbers(cls, value: Any, info) -> Any:
        """``epochs: true`` is a slip, not 1: pydantic would take a YAML boolean as the number 1 (or 0)."""
        if isinstance(value, bool) and info.field_name in cls.model_fields:
            kinds = typing.get_args(cls.model_fields[info.field_name].annotation) or (
                cls.model_fields[info.field_name].annotation,)
            if bool not in kinds and any(k in (int, float) for k in kinds):
                raise ValueError(f"{str(value).lower()} is a yes/no value where a number is expected; give a number")
        return value


# a seed torch, numpy and the derived seeds (teacher_seed + i, seed-mixing hashes) all take: |seed| < 2^62
Seed = Annotated[int, Field(ge=-(2**62), lt=2**62)]


# ----------------------------------------------------------------------------------------- data
class AugmentSettings(Strict):
    crop_padding: int = Field(0, ge=0, description="random crop with this padding; 0 = off")
    padding_mode: Literal["zero", "reflect"] = "zero"
    flip: bool = False  # horizontal flip with probability 0.5
    cutout: int = Field(0, ge=0, description="side of a zeroed square; 0 = off")
    # text (token ids), Tang et al. 2019: a teacher-labelled, perturbed transfer set (data/text_augment.py)
    token_mask: float = Field(0.0, ge=0, le=1, description="per content token: replaced by the mask token; 0 = off")
    token_replace: float = Field(0.0, ge=0, le=1,
                                 description="per content token: replaced by a token drawn by training frequency")
    token_span: float = Field(0.0, ge=0, le=1, description="per sample: cut to a random run of 1..span_max tokens")
    span_max: int = Field(5, ge=1, description="longest run kept by token_span")

    IMAGE_FIELDS: ClassVar[tuple[str, ...]] = ("crop_padding", "padding_mode", "flip", "cutout")
    TOKEN_FIELDS: ClassVar[tuple[str, ...]] = ("token_mask", "token_replace", "token_span", "span_max")

    def image_active(self) -> bool:
        return bool(self.crop_padding or self.flip or self.cutout)

    def token_active(self) -> bool:
        return bool(self.token_mask or self.token_replace or self.token_span)


class CVConfig(Strict):
    """k-fold cross-validation over the training data (train + val pooled; the test set stays the test set)."""

    folds: int = Field(5, ge=2)
    seed: Seed = 0  # seed of the stratified fold assignment
    fold: int | None = None  # run only this fold (set by the tool in each RUN_DIR/fold-<i>/config.yaml)

    @model_validator(mode="after")
    def _fold_in_range(self) -> "CVConfig":
        if self.fold is not None and not 0 <= self.fold < self.folds:
            raise ValueError(f"cv.fold={self.fold} is not a fold of {self.folds}; use 0..{self.folds - 1}")
        return self


class DataConfig(Strict):
    name: str = "digits"  # registry name: digits, cifar10, cifar100, mnist, fashion-mnist, image-folder, tensors
    root: str | None = None  # directory of the files; default $CURRIDISTILL_DATA
    options: dict[str, Any] = Field(default_factory=dict)  # loader-specific options
    val_size: float = Field(0.1, gt=0)  # held out of training, stratified: a fraction (< 1) or a count (>= 1)
    split_seed: Seed = 0  # seed of the train/val split
    subset: int | None = Field(None, ge=2)  # use a stratified subset of this many training samples (quick runs)
    classes: list[str] | None = None  # keep only these classes (by name), relabeled 0..k-1 in this order
    # robustness studies: this fraction of the training labels (train and validation, never test) replaced by a
    # uniformly drawn other class, the same samples for every run with the same split_seed
    label_noise: float = Field(0.0, ge=0, lt=1)
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(512, ge=1)
    augment: AugmentSettings = Field(default_factory=AugmentSettings)
    data_seed: Seed = 0  # seed of the augmentation stream and batch order: independent of the model seed
    workers: int = Field(2, ge=0)  # DataLoader processes decoding streamed images (image-folder with stream: true)
    normalize: bool = True  # subtract the training mean, divide by the std, per channel
    cv: CVConfig | None = None  # k-fold cross-validation: `run` trains every fold into RUN_DIR/fold-<i>/

    @field_validator("val_size")
    @classmethod
    def _val_size(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"data.val_size={value}: give a fraction in (0, 1) like 0.1, or a whole count of samples like 500")
        if value >= 1 and value != int(value):
            raise ValueError(f"data.val_size={value}: give a fraction in (0, 1) like 0.1, or a whole count of samples like 500")
        return value


# ---------------------------------------------------------------------------------------- models
class ModelConfig(Strict):
    name: str  # zoo name (curridistill list models) or "package.module:factory"
    kwargs: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str | None = None  # load weights from this .safetensors instead of training
    init: str | None = None  # transfer learning: start from weights trained on other data (head replaced to fit)
    transfer: TransferConfig | None = None  # head, freeze, gradual unfreeze, body_lr (see models.transfer)

    @model_validator(mode="before")
    @classmethod
    def _hf_shorthand(cls, raw: Any) -> Any:
        """``{hf: DIR}`` is ``{name: hf, kwargs: {path: DIR}}``: a local Hugging Face directory (or ``minilm``)."""
        if isinstance(raw, dict) and "hf" in raw:
            raw = dict(raw)
            raw["kwargs"] = {"path": raw.pop("hf"), **(raw.get("kwargs") or {})}
            raw.setdefault("name", "hf")
        return raw


# ---------------------------------------------------------------------------------------- lesson
class TermConfig(Strict):
    """One knowledge term. Keys other than these go to the term's own options (see list knowledge)."""

    kind: str
    weight: ScheduleSpec
    temperature: ScheduleSpec | None = None
    teacher: int = 0  # which teacher a feature term pairs with
    params: dict[str, Any] = Field(default_factory=dict)


class OptimizerConfig(Strict):
    name: Literal["sgd", "adam", "adamw", "adagrad", "lbfgs"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd
    nesterov: bool = False  # sgd
    weight_decay: float = Field(5e-4, ge=0)
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)  # adam(w)
    history_size: int = Field(10, ge=1)  # lbfgs
    max_iter: int = Field(5, ge=1)  # lbfgs: inner iterations per batch


class PlateauConfig(Strict):
    kind: Literal["plateau"] = "plateau"
    metric: str = "val_accuracy"
    mode: Literal["max", "min"] = "max"
    factor: float = Field(0.1, gt=0, lt=1)  # the learning rate is multiplied by this on a plateau
    patience: int = Field(5, ge=0)
    min_lr: float = Field(0.0, ge=0)
    cooldown: int = 0


class EarlyStopConfig(Strict):
    patience: int = 0  # epochs without improvement before the lesson stops; 0 = off
    metric: str = "val_accuracy"
    mode: Literal["max", "min"] = "max"
    min_delta: float = 0.0


class CurriculumConfig(Strict):
    """A data curriculum: a difficulty scorer, an ordering, and pacing and/or self-paced weights."""

    scorer: str = "teacher_confidence"  # curridistill list scorers
    order: Literal["easy_first", "hard_first", "class_balanced"] = "easy_first"
    pacing: Any = None  # {kind: fixed_exponential, start: 0.04, inc: 1.9, step_length: 50}; curridistill list pacings
    self_paced: Any = None  # {weighting: linear, threshold: {kind: linear, start: 0.3, end: 1.0}, quantile: true}
    rescore_every: int = Field(1, ge=1)  # epochs between re-scoring when the scorer depends on the student
    seed: Seed = 0  # tie-breaking and the random scorer

    @model_validator(mode="after")
    def _check(self) -> "CurriculumConfig":
        try:
            SCORERS.get(self.scorer)
        except UserError as exc:
            raise ValueError(str(exc)) from None
        if self.pacing is None and self.self_paced is None:
            raise ValueError("a curriculum needs 'pacing' (which data is available) and/or 'self_paced' (per-sample weights)")
        try:
            if self.pacing is not None:
                object.__setattr__(self, "pacing", parse_pacing(self.pacing).model_dump())
            if self.self_paced is not None:
                object.__setattr__(self, "self_paced", parse_self_paced(self.self_paced).model_dump(mode="json"))
        except UserError as exc:
            raise ValueError(str(exc)) from None
        return self


class TeacherRoute(Strict):
    """RCO: follow the teacher's training trajectory, anchor by anchor (``epoch_30``, ..., ``final``)."""

    route: list[str] = Field(min_length=1)
    switch_at: list[float] | None = None  # lesson progress at which to move to the next anchor; default: equal parts


class PruneConfig(Strict):
    """Prune the student at the start of the lesson; the lesson's epochs then recover by distillation."""

    amount: float = Field(gt=0, lt=1)  # target fraction removed, relative to the unpruned model (0.3, then 0.5, ...)
    kind: Literal["channels", "unstructured"] = "channels"  # channels: physically removed (Torch-Pruning)
    importance: Literal["l1", "l2", "taylor", "random"] = "l1"  # how channels are ranked (taylor: |w * grad|)
    teacher: Literal["teacher", "unpruned"] = "teacher"  # recover from the course's teacher or the model before this step
    taylor_batches: int = Field(4, ge=1)  # training batches whose gradients rank channels (importance: taylor)
    scope: Literal["layer", "global"] = "layer"  # layer: every layer loses `amount`; global: channels ranked across layers
    # training batches that re-estimate BatchNorm's running statistics right after the step (adaptive BN); 0 keeps them
    recalibrate_bn: int = Field(32, ge=0)
    # channels: each pruned layer keeps a multiple of this many channels (rounded down). 8 suits CPU kernels: a
    # resnet20 cut to 11-22-44 channels ran 1.19x faster under ONNX Runtime, cut to 8-16-40 2.00x
    # (benchmarks/results/prune_latency_resnet20.json)
    round_to: int | None = Field(None, ge=2)

    @model_validator(mode="after")
    def _round_channels_only(self) -> "PruneConfig":
        if self.round_to is not None and self.kind != "channels":
            raise ValueError("round_to rounds channel counts; unstructured pruning keeps every channel: drop round_to")
        return self


class QuantAwareConfig(Strict):
    """Quantization-aware lesson: conv/linear weights are fake-quantized (per channel, symmetric) in every
    forward, gradients pass straight through; the student learns weights that survive int8."""

    bits: int = Field(8, ge=2, le=8)


class LessonConfig(Strict):
    name: str = ""
    epochs: int = Field(10, ge=1)
    loss: dict[str, TermConfig] = Field(default_factory=lambda: {"ce": TermConfig(kind="ce", weight=ScheduleSpec(value=1.0))})
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    # multiplier of optimizer.lr as a schedule of progress, or {kind: plateau, ...} on a validation metric
    lr_schedule: ScheduleSpec | PlateauConfig = Field(default_factory=ScheduleSpec)
    grad_clip: float | None = None  # clip the gradient norm to this value
    early_stop: EarlyStopConfig = Field(default_factory=EarlyStopConfig)
    keep_optimizer: bool = False  # carry optimizer state over from the previous lesson
    batch_size: int | None = Field(None, ge=1)  # overrides data.batch_size for this lesson
    curriculum: CurriculumConfig | None = None  # data curriculum: scorer + pacing / self-paced weights
    teacher: TeacherRoute | None = None  # RCO route through the teacher's saved epochs
    prune: PruneConfig | None = None  # prune at the start of this lesson, then recover (see docs: Shipping a model)
    quantize_aware: QuantAwareConfig | None = None  # train this lesson with fake-quantized weights (QAT)
    augment: bool = True  # false: this lesson trains on un-augmented data (e.g. a teacher fine-tuned on clean text)

    @field_validator("loss", mode="before")
    @classmethod
    def _parse_loss(cls, raw: Any) -> Any:
        if not isinstance(raw, dict) or not raw:
            raise ValueError("loss must be a non-empty mapping of term name -> weight or options, e.g. {ce: 0.1, kd: 0.9}")
        return {name: _parse_term(name, spec) for name, spec in raw.items()}

    @field_validator("lr_schedule", mode="before")
    @classmethod
    def _parse_lr(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and raw.get("kind") == "plateau":
            return PlateauConfig(**raw)
        return raw if isinstance(raw, (ScheduleSpec, PlateauConfig)) else parse_schedule(raw, "lr_schedule")


def without_prune(course: list[LessonConfig]) -> list[LessonConfig]:
    """The course minus its prune lessons, in float: how a teacher is trained by default (a teacher is
    neither pruned nor trained for int8)."""
    kept = [lesson for lesson in course if lesson.prune is None] or course[:1]
    return [lesson.model_copy(update={"prune": None, "quantize_aware": None}) for lesson in kept]


def ce_only(course: list[LessonConfig]) -> list[LessonConfig]:
    """The same lesson plan (epochs, optimizer, LR) with the hard-label loss only and no curriculum: how a
    baseline, and a teacher without a course of its own, train."""
    ce = {"ce": TermConfig(kind="ce", weight=ScheduleSpec(value=1.0), params={"label_smoothing": 0.0})}
    return [lesson.model_copy(update={"loss": ce, "curriculum": None, "teacher": None}) for lesson in course]


_TERM_KEYS = {"kind", "weight", "temperature", "teacher"}


def _refuse_non_finite(options: dict, whose: str, prefix: str = "") -> None:
    """Every number in a term's options is finite (``beta: .inf`` would stop the run at its first step)."""
    for key, value in options.items():
        if isinstance(value, dict):
            _refuse_non_finite(value, whose, f"{prefix}{key}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"option {prefix + key!r} {whose} is {value}; give a finite number")


def _parse_term(name: str, spec: Any) -> Any:
    """``kd: 0.9`` or ``kd: {weight: 0.9, temperature: 4, ls: true}`` -> TermConfig."""
    if isinstance(spec, TermConfig):
        return spec
    if spec is None:
        spec = {}
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        spec = {"weight": spec}
    if not isinstance(spec, dict):
        raise ValueError(f"term {name!r} must be a weight or a mapping of options, got {spec!r}")
    knowledge = load_all()
    kind = spec.get("kind", name.split("@")[0])
    try:
        term_cls = knowledge.get(kind)
    except UserError as exc:
        raise ValueError(str(exc)) from None
    params = {k: v for k, v in spec.items() if k not in _TERM_KEYS}
    if "params" in spec:
        params = {**spec["params"], **{k: v for k, v in params.items() if k != "params"}}
    try:
        validated = term_cls.Params(**params)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            valid = sorted(_TERM_KEYS | set(term_cls.Params.model_fields))
            raise ValueError(f"unknown option {key!r} for term {kind!r}; {_nearest(key, valid)}") from None
        raise ValueError(f"option {key!r} of term {kind!r}: {err['msg']}") from None
    _refuse_non_finite(validated.model_dump(), f"of term {kind!r}")
    weight = spec.get("weight", term_cls.default_weight)
    temperature = spec.get("temperature", term_cls.default_temperature if term_cls.uses_temperature else None)
    return TermConfig(kind=kind, weight=parse_schedule(weight, f"loss.{name}.weight"),
                      temperature=None if temperature is None else parse_schedule(temperature, f"loss.{name}.temperature"),
                      teacher=spec.get("teacher", 0), params=validated.model_dump())


# -------------------------------------------------------------------------------- roles and run
class TeacherConfig(ModelConfig):
    course: list[LessonConfig] | None = None  # how the tool trains it; default: the course with loss {ce: 1}
    reuse: bool = True  # reuse a teacher trained earlier with identical settings (from run.cache_dir)
    weight: float = 1.0  # weight among several teachers
    keep_epochs: list[int] = Field(default_factory=list)  # save the trained teacher after these epochs (RCO anchors)


class RepeatUntil(Strict):
    metric: str = "val_accuracy"
    at_least: float


class RepeatConfig(Strict):
    """Rounds: repeat the course until the student reaches a target or the round budget is spent."""

    until: RepeatUntil | None = None
    max_rounds: int = Field(3, ge=1)
    student_becomes_teacher: bool = False  # born-again: a fresh student learns from the previous round's


class BaselineConfig(Strict):
    enabled: bool = True  # train the student alone (ce only) with the same course budget, for comparison


class EvalConfig(Strict):
    latency_runs: int = Field(50, ge=1)  # batch-1 forwards timed for latency_ms (median)
    throughput_batch: int = Field(256, ge=1)
    throughput_runs: int = Field(5, ge=1)


class RunConfig(Strict):
    name: str = "run"  # the run directory is RUN_OUT/<name>-<time>: a plain name, no path
    seed: Seed = 0  # student seed: initialization, dropout (baseline and student share it)
    teacher_seed: Seed = 1000  # teacher i trains with teacher_seed + i: fixed across student seeds, so reused
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    out: str = "runs"  # run directories are created below this
    amp: bool = True  # bfloat16 autocast on CUDA (ignored on CPU)
    selection: Literal["best_val", "last"] = "best_val"  # which checkpoint is evaluated on test
    cache_dir: str = ".curridistill-cache"  # trained teachers and teacher outputs, shared across runs
    teacher_cache: bool = True  # teacher logits computed once per augmentation epoch into cache_dir, then looked up
    cache_features: bool = False  # also cache teacher features (float16; large); off: feature terms run the teacher online
    channels_last: bool = False  # models and 4-D inputs in channels_last memory format
    tf32: bool = True  # CUDA: float32 matmuls on TensorFloat-32 tensor cores (PyTorch's "high" precision)
    # CUDA: cuDNN picks the fastest convolution algorithm per input shape; null: on for images (one shape),
    # off for token data (the batch width varies, each new width would be re-tuned)
    cudnn_benchmark: bool | None = None
    # true: torch.compile the student in place; step: compile each training step's loss (forward + terms) and its
    # optimizer update, as CUDA graphs on a GPU. The first steps are slow while it compiles.
    compile: bool | Literal["step"] = False
    # split each step's batch into up to this many micro-batches of >= 2 samples (forward + backward each, the
    # gradients summed, one optimizer step): the same samples, steps and learning rate with less activation memory
    micro_batches: int = Field(1, ge=1)
    threads: int | None = Field(None, ge=1)  # torch CPU threads; default: torch's choice
    teacher_aggregation: Literal["mean", "weighted", "confidence", "best"] = "mean"
    eval: EvalConfig = Field(default_factory=EvalConfig)
    seeds: list[Seed] | None = None  # several student seeds: RUN_DIR/seed-<s>/ each, plus aggregate.json
    parallel: int = Field(1, ge=1)  # seeds / folds run side by side in this many processes (one GPU or the CPU cores)
    tensorboard: bool = True  # write TensorBoard events to RUN_DIR/tensorboard/ when the package is installed

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not value or value in (".", "..") or any(c in value for c in "/\\\0"):
            raise ValueError(f"run.name {value!r} must be a plain name (no '/', '\\', '..'), e.g. kd-resnet8; "
                             f"choose where run directories go with run.out")
        return value

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or len(set(value)) != len(value)):
            raise ValueError(f"run.seeds must be a non-empty list of distinct integers, got {value}")
        return value


class TuneConfig(Strict):
    """`curridistill tune`: dotted config paths -> search ranges, e.g. {course.0.optimizer.lr: {float: [0.01, 0.2], log: true}}."""

    space: dict[str, Any] = Field(min_length=1)  # {float: [lo, hi]} | {int: [lo, hi]} (+ log, step) | {categorical: [...]}
    metric: str = "val_accuracy"  # a validation metric of the student's epochs; the best epoch's value is the objective
    direction: Literal["maximize", "minimize"] = "maximize"
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: Literal["median", "none"] = "median"  # stop unpromising trials early on the per-epoch metric
    n_startup_trials: int = Field(5, ge=0)  # trials before TPE models the space and before pruning starts
    n_warmup_steps: int = Field(2, ge=0)  # epochs of a trial before it can be pruned
    seed: Seed = 0  # sampler seed
    baseline: bool = False  # also train the baseline in every trial (slower; the objective does not need it)

    @field_validator("space")
    @classmethod
    def _space(cls, value: dict) -> dict:
        parse_space(value)  # raises ValueError with the key
        return value

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        if not value.startswith("val_"):
            raise ValueError(f"tune.metric {value!r} must be a validation metric (val_accuracy, val_loss): "
                             f"test data is never used to choose hyper-parameters")
        return value


class AutoProxyConfig(Strict):
    """Fidelity of the search trials (`curridistill auto`): shorter runs on part of the data."""

    epochs: float = Field(0.34, gt=0, le=1)  # fraction of the course's epochs (at least min_epochs)
    min_epochs: int = Field(3, ge=1)
    data: float | None = Field(None, gt=0, le=1)  # fraction of the training data; None: all up to 4000 samples, else less


class AutoConfig(Strict):
    """`curridistill auto`: the built-in joint search space with overrides, and the search settings (ignored by `run`)."""

    space: dict[str, Any] = Field(default_factory=dict)  # dimension -> [choices] | {float: [lo, hi]} | fixed value
    objective: Literal["accuracy", "pareto"] = "accuracy"  # pareto: validation accuracy against `cost`
    cost: Literal["latency", "params"] = "latency"  # second objective of pareto: CPU batch-1 latency or parameters
    max_latency_ms: float | None = Field(None, gt=0)  # reject students slower than this before training
    max_params: int | None = Field(None, ge=1)  # reject students with more parameters before training
    top_k: int = Field(3, ge=1)  # candidates re-run at full fidelity with every seed
    seeds: list[Seed] = Field(default_factory=lambda: [0, 1, 2])  # seeds of the full-fidelity re-runs
    reference: bool = True  # also re-run the config's own recipe, to measure how much of the gain survives
    proxy: AutoProxyConfig = Field(default_factory=AutoProxyConfig)
    seed: Seed = 0  # sampler seed
    max_trials: int | None = Field(None, ge=1)  # stop the search after this many finished trials (else: the budget)


class ShipConfig(Strict):
    """After the course: quantize, export and check the student; writes compression.md/.png (a row per stage)."""

    quantize: list[Literal["dynamic", "static"]] = Field(default_factory=lambda: ["dynamic", "static"])  # int8 variants
    calibration_batches: int = Field(8, ge=1)  # training batches that calibrate static int8 activations
    # onnx-int8: the ONNX file quantized by ONNX Runtime (static, calibrated like ``static``)
    export: list[Literal["onnx", "onnx-int8", "torchscript", "safetensors"]] = Field(default_factory=lambda: ["onnx"])
    opset: int = Field(18, ge=7)  # ONNX opset
    check_samples: int = Field(256, ge=1)  # held-out samples on which ONNX Runtime must match PyTorch
    predict_samples: int = Field(8, ge=0)  # test samples written as PNG files and predicted from the exported model


class Config(Strict):
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig | None = None
    teachers: list[TeacherConfig] = Field(default_factory=list)
    student: ModelConfig
    assistants: list[ModelConfig] = Field(default_factory=list)  # TAKD chain: teacher -> assistants -> student
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    course: list[LessonConfig] = Field(min_length=1)
    repeat: RepeatConfig | None = None  # rounds of the course until a target (also accepted as course.repeat)
    run: RunConfig = Field(default_factory=RunConfig)
    tune: TuneConfig | None = None  # search space of `curridistill tune` (ignored by `run`)
    auto: AutoConfig | None = None  # search space and settings of `curridistill auto` (ignored by `run`)
    ship: ShipConfig | None = None  # quantize + export + check after the course (RUN_DIR/ship/)

    @model_validator(mode="before")
    @classmethod
    def _course_mapping(cls, raw: Any) -> Any:
        return normalize(raw)

    @model_validator(mode="after")
    def _one_teacher_form(self) -> "Config":
        if self.teacher is not None and self.teachers:
            raise ValueError("give either 'teacher' or 'teachers', not both")
        if self.assistants and not self.all_teachers():
            raise ValueError("assistants need a teacher to learn from; add a 'teacher' section")
        for i, lesson in enumerate(self.course):
            if lesson.teacher is not None and len(self.all_teachers()) != 1:
                raise ValueError(f"course.{i}.teacher (a route) needs exactly one teacher")
            if lesson.prune is not None and lesson.keep_optimizer:
                raise ValueError(f"course.{i}: a prune lesson changes the parameters; drop keep_optimizer there")
            if lesson.prune is not None and self.run.compile is True:  # "step" compiles the step after the cut: fine
                raise ValueError(f"course.{i}.prune needs an eager model (the pruner traces it); set run.compile=step "
                                 f"(compiles each step of the pruned model) or false")
            if lesson.optimizer.name == "lbfgs" and self.run.compile == "step":
                raise ValueError(f"course.{i}: lbfgs re-evaluates the loss in a closure, which run.compile=step does not "
                                 f"capture; use run.compile=true or another optimizer")
            if lesson.prune is not None and (self.repeat is not None or self.assistants):
                raise ValueError(f"course.{i}.prune works in a single-round course without assistants; drop 'repeat'/'assistants'")
        self._check_micro_batches()
        self._check_keep_epochs()
        return self

    def _check_keep_epochs(self) -> None:
        """RCO anchors are saved while the tool trains a teacher: their epochs lie within the teacher's course."""
        for k, t in enumerate(self.all_teachers()):
            where = "teacher" if self.teacher is not None else f"teachers.{k}"
            if t.keep_epochs and t.checkpoint:
                raise ValueError(f"{where}.keep_epochs saves anchors while the tool trains the teacher, and "
                                 f"{where}.checkpoint loads it trained; drop one of them")
            total = sum(lesson.epochs for lesson in self.teacher_course(t))
            outside = sorted(e for e in t.keep_epochs if not 1 <= e <= total)
            if outside:
                raise ValueError(f"{where}.keep_epochs {outside} lie outside the teacher's {total} epoch(s) of training; "
                                 f"give epochs from 1 to {total}, or lengthen {where}.course")
        for i, lesson in enumerate(self.course):
            if lesson.teacher is None:  # a route needs exactly one teacher (checked above)
                continue
            saved = ["final", *(f"epoch_{e}" for e in sorted(self.all_teachers()[0].keep_epochs))]
            missing = [a for a in lesson.teacher.route if a not in saved]
            if missing:
                raise ValueError(f"course.{i}.teacher.route names anchors {missing} the teacher does not save (it saves "
                                 f"{saved}); list their epochs in teacher.keep_epochs")

    def _check_micro_batches(self) -> None:
        """Micro-batches hold at least 2 samples (BatchNorm), and a captured step is one forward."""
        n = self.run.micro_batches
        if n == 1:
            return
        if self.run.compile == "step":
            raise ValueError(f"run.micro_batches={n} runs several forwards per optimizer step, which run.compile=step "
                             f"does not capture; use run.compile=true or false, or run.micro_batches=1")
        lbfgs = [f"{where}.{i}" for where, lessons in self._courses() for i, lesson in enumerate(lessons)
                 if lesson.optimizer.name == "lbfgs"]
        if lbfgs:
            raise ValueError(f"{lbfgs[0]}: lbfgs re-evaluates the whole batch's loss in its line search; use "
                             f"run.micro_batches=1 with it")
        if self.data.batch_size < 2 * n:  # the batch of every lesson that does not set its own
            raise ValueError(f"run.micro_batches={n} splits batches into micro-batches of at least 2 samples, but "
                             f"data.batch_size is {self.data.batch_size}; use run.micro_batches <= "
                             f"{self.data.batch_size // 2} or a larger batch_size")
        for where, lessons in self._courses():
            for i, lesson in enumerate(lessons):
                batch = lesson.batch_size or self.data.batch_size
                if batch < 2 * n:
                    raise ValueError(f"run.micro_batches={n} splits {where}.{i}'s batches of {batch} into micro-batches of "
                                     f"at least 2 samples; use run.micro_batches <= {batch // 2} or a larger batch_size")

    def _courses(self) -> list[tuple[str, list[LessonConfig]]]:
        """(where, lessons) of the student's course and of every teacher's own course."""
        return [("course", self.course)] + [(f"{'teacher' if self.teacher is not None else f'teachers.{k}'}.course",
                                             t.course or []) for k, t in enumerate(self.all_teachers())]

    def teacher_course(self, teacher: TeacherConfig) -> list[LessonConfig]:
        """The lessons the tool trains ``teacher`` with: its own course, else the student's with CE only, unpruned."""
        return teacher.course or ce_only(without_prune(self.course))

    def all_teachers(self) -> list[TeacherConfig]:
        return [self.teacher] if self.teacher is not None else list(self.teachers)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def normalize(raw: Any) -> Any:
    """Accept ``course: {lessons: [...], repeat: {...}}`` and assistants given by name; return the
    canonical form (course a list, ``repeat`` top-level) so overrides like ``course.0.epochs`` work."""
    if not isinstance(raw, dict):
        return raw
    raw = dict(raw)
    if isinstance(raw.get("course"), dict):
        course = dict(raw["course"])
        unknown = set(course) - {"lessons", "repeat"}
        if unknown:
            raise UserError(f"course accepts 'lessons' and 'repeat', not {sorted(unknown)}")
        raw["course"] = course.get("lessons", [])
        if "repeat" in course:
            raw["repeat"] = course["repeat"]
    if isinstance(raw.get("assistants"), list):
        raw["assistants"] = [{"name": a} if isinstance(a, str) else a for a in raw["assistants"]]
    return raw


# ------------------------------------------------------------------------------ loading + errors
def load_config(source: str | Path | dict, overrides: list[str] | None = None) -> Config:
    """Read YAML (a path or a dict), apply ``a.b.c=value`` overrides, validate. Raises UserError."""
    if isinstance(source, dict):
        raw, where = source, "config"
    else:
        path = Path(source)
        if path.is_dir():
            raise UserError(f"{path} is a directory; give a config file (YAML), e.g. configs/quickstart.yaml")
        if not path.is_file():
            raise UserError(f"config file not found: {path}; check the path (examples live in configs/)")
        try:
            raw = read_yaml(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as exc:
            raise UserError(f"{path}: not a UTF-8 text file (byte {exc.start}); a config is YAML text, save it as UTF-8") from None
        except OSError as exc:
            raise UserError(f"cannot read config {path} ({exc.strerror or type(exc).__name__}); check its permissions") from None
        except RecursionError:
            raise UserError(f"{path}: nesting too deep to read; a config is a few levels of YAML sections") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f" line {mark.line + 1}" if mark else ""
            problem = " ".join(str(getattr(exc, "problem", None) or exc).split())  # one line
            raise UserError(f"{path}:{line} is not valid YAML ({problem}); fix the syntax") from None
        where = str(path)
    if not isinstance(raw, dict):
        raise UserError(f"{where}: the config must be a YAML mapping with sections data, teacher, student, course, run")
    _check_keys(raw, where)
    try:
        raw = normalize(raw)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    raw = apply_overrides(raw, overrides or [])
    return validate_config(raw, where)


MAX_YAML_NODES = 100_000  # a config is hundreds of values; anchors expanding past this are a mistake or an attack


class _ConfigLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (the last one would silently win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[str, yaml.Node] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key_node.value!r} appears twice in one section (also on line "
                        f"{seen[key_node.value].start_mark.line + 1}); keep one", key_node.start_mark)
                seen[key_node.value] = key_node
        return super().construct_mapping(node, deep=deep)


def read_yaml(text: str) -> Any:
    """YAML text -> Python values, safely: no tags that build objects, no repeated keys, and anchors (``&a`` /
    ``*a``) may not expand to more than MAX_YAML_NODES values (a "billion laughs" file would hang every reader)."""
    loader = _ConfigLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {})
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values ``node`` stands for once every alias is expanded (each shared node counted once per use)."""
    if id(node) in sizes:
        if sizes[id(node)] < 0:
            raise yaml.composer.ComposerError(None, None, "an anchor refers to itself", node.start_mark)
        return sizes[id(node)]
    sizes[id(node)] = -1  # being counted: meeting it again below means a cycle
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    total = 1 + sum(_expanded_size(child, sizes) for child in children)
    if total > MAX_YAML_NODES:
        raise yaml.composer.ComposerError(None, None, f"anchors and aliases expand to more than {MAX_YAML_NODES:,} "
                                          f"values; write the config without them", node.start_mark)
    sizes[id(node)] = total
    return total


def _check_keys(node: Any, where: str, path: str = "") -> None:
    """Every mapping key of a config is a name: ``1:``, ``null:`` or ``[a, b]:`` as a key is a typo."""
    if isinstance(node, dict):
        for key, value in node.items():
            at = f"{path}.{key}" if path else str(key)
            if not isinstance(key, str):
                raise UserError(f"{where}: key {key!r} at {path or 'top level'} is not a name; config keys are words "
                                f"like 'epochs' (quote it if it must be a number)")
            _check_keys(value, where, at)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_keys(value, where, f"{path}.{i}" if path else str(i))


def validate_config(raw: dict, where: str = "config") -> Config:
    try:
        return Config.model_validate(raw)  # not Config(**raw): YAML keys may be numbers or null
    except ValidationError as exc:
        raise UserError(f"{where}: {explain(exc)}") from None
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


def explain(exc: ValidationError, model: type[BaseModel] = Config) -> str:
    err = exc.errors()[0]
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    path = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        valid = _fields_at(model, loc[:-1])
        return f"unknown key {path!r}; {_nearest(str(loc[-1]), valid)}"
    if err["type"] == "missing":
        given = err.get("input")
        hint = suggest(loc[-1], given, cutoff=0.6, fallback="") if isinstance(given, dict) else ""
        if hint:
            return f"missing required key {path!r} — {hint} rename it to {str(loc[-1])!r}"
        return f"missing required key {path!r}; add it (see `curridistill validate --print` on an example in configs/)"
    return f"invalid value at {explain_invalid(exc) if path else 'top level: ' + explain_invalid(exc)}"


def _nearest(key: str, valid: list[str]) -> str:
    return suggest(key, valid, fallback=f"valid keys: {', '.join(valid)}")


def _fields_at(model: Any, loc: list) -> list[str]:
    """The valid keys of the model found by walking ``loc`` through the Config annotations."""
    current: Any = model
    for part in loc:
        current = _unwrap(current, part)
        if current is None:
            return []
    current = _unwrap(current, None)
    return sorted(current.model_fields) if isinstance(current, type) and issubclass(current, BaseModel) else []


def _unwrap(tp: Any, part: Any) -> Any:
    """Step from a type into ``part`` (a field name, list index or dict key); ``None`` part unwraps unions."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        if part is None:
            return tp
        field = tp.model_fields.get(str(part))
        return field.annotation if field else None
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if origin in (list, tuple) and args:
        return args[0] if part is not None else tp
    if origin is dict and len(args) == 2:
        return args[1] if part is not None else tp
    if args:  # Union / Optional: the first BaseModel alternative
        for arg in args:
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return _unwrap(arg, part)
            inner = _unwrap(arg, part) if typing.get_origin(arg) in (list, dict) else None
            if inner is not None:
                return inner
    return None


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """``course.0.loss.kd.temperature=2`` -> set that field (value parsed as YAML). Returns a copy."""
    import copy

    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set course.0.epochs=5")
        try:
            value = read_yaml(text)
        except yaml.YAMLError:
            value = text
        node: Any = raw
        parts = key.split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise UserError(f"--set {key}: {'.'.join(parts[:i]) or 'top'} is a list of {len(node)}; "
                                    f"use an index 0..{len(node) - 1}")
                idx = int(part)
                if last:
                    node[idx] = value
                else:
                    node = node[idx]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    node = node[part]
            else:
                raise UserError(f"--set {key}: {'.'.join(parts[:i])} is a value, not a section")
    return raw
