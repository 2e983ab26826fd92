"""The joint search space of ``curridistill auto``: knowledge recipe x curriculum x schedules x student size.

A candidate is a flat dict of *dimension* values (``recipe``, ``curriculum``, ``temperature``, ``lr``,
``student``, ...). Dimensions are conditional: ``feature`` is sampled only for the ``feature`` recipe, the
pacing dimensions only for the ``paced`` curriculum, and so on (``Dim.when``). ``candidate_course`` turns a
candidate into ordinary config sections (``student`` and ``course``), so every trial and the final
``best.yaml`` are normal configs that ``curridistill run`` accepts.

Recipes (the knowledge terms a lesson sums):

* ``kd``: ce + Hinton KD; ``kd_ls``: the same with logit standardization (Sun et al. 2024, base weight 9 as in
  the paper); ``dkd``: ce + DKD (beta searched); ``dist``: ce + DIST; ``ctkd``: ce + KD with a learned,
  adversarial temperature; ``feature``: ce + KD + one feature term (``fitnet``, ``at``, ``sp``, ``pkt``,
  ``rkd``, ``crd``) between the last stages of student and teacher; ``annealing_kd``: Annealing-KD's two
  lessons (``mse_logits`` against teacher logits scaled 0.1 -> 1 in stairs, then the hard labels).

Curricula: ``none``; ``paced`` (a difficulty scorer, an order and a pacing function); ``self_paced``
(per-sample weights from the batch losses, a growing quantile threshold); ``annealing`` (the knowledge
softens to sharp: temperature annealed by cosine from ``anneal_ratio * T`` down to ``T``, or, for terms
without a temperature, the knowledge weight warmed up from 0).

Numbers that would depend on the fidelity (CTKD's ramp, exponential pacing steps) are written as fractions of
the lesson, so a short proxy run and the full run follow the same schedule shape.
"""
from __future__ import annotations

import copy
import json
import re
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from curridistill.curriculum import ORDER_MODES, PACINGS, SCORERS, SELF_PACED
from curridistill.curriculum.pacing import EXPONENTIAL_KINDS
from curridistill.curriculum.scorers import ScoreInputs, score
from curridistill.errors import UserError
from curridistill.evaluate.efficiency import count_params, latency_ms
from curridistill.search_space import Param, parse_space
from curridistill.knowledge import KNOWLEDGE, Clock, KnowledgeInputs, load_all
from curridistill.models import build_model
from curridistill.models.taps import FeatureTaps
from curridistill.suggest import suggest

# ------------------------------------------------------------------------------------------- catalogue
LOGIT_RECIPES = {"kd": "kd", "kd_ls": "kd", "dkd": "dkd", "dist": "dist", "ctkd": "ctkd"}  # recipe -> main term
RECIPES = (*LOGIT_RECIPES, "feature", "annealing_kd")
TEMPERATURE_RECIPES = ("kd", "kd_ls", "dkd", "dist", "feature")
BASE_WEIGHT = {"kd": 0.9, "kd_ls": 9.0, "dkd": 1.0, "dist": 2.0, "ctkd": 0.9, "feature": 0.9, "annealing_kd": 1.0}
FEATURE_TERMS = ("fitnet", "at", "sp", "pkt", "rkd", "crd")
CURRICULA = ("none", "paced", "self_paced", "annealing")

# Every registered knowledge term is either searched or listed here with the reason (a test checks this).
TERMS_USED = {"ce": "every recipe (hard labels; its weight is searched)", "kd": "kd, kd_ls, feature",
              "dkd": "dkd", "dist": "dist", "ctkd": "ctkd", "mse_logits": "annealing_kd",
              **{t: "feature" for t in FEATURE_TERMS}}
TERMS_LEFT_OUT: dict[str, str] = {
    "hidden": "transformer hidden states (TinyBERT / PKD): needs transformer teacher and student; the built-in space "
              "searches image-model families",
    "attention_maps": "transformer self-attention relations (MiniLM): needs transformer teacher and student; the "
                      "built-in space searches image-model families",
}

# Student sizes within a family: the config's own student is always added to these.
_RESNETS = ("resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110")
STUDENT_FAMILIES: dict[str, list[dict]] = {
    "mlp": [{"hidden": h} for h in ([16], [32], [64], [128], [32, 32], [64, 64])],
    "cnn": [{"widths": w} for w in ([8, 16], [16, 32], [32, 64], [16, 32, 64])],
}
RESNET_CHOICES = ("resnet8", "resnet14", "resnet20")
WRN_CHOICES = ("wrn_16_1", "wrn_16_2", "wrn_40_1")
VGG_CHOICES = ("vgg8", "vgg11", "vgg13")


@dataclass
class Dim:
    """One dimension: its distribution (a tune ``Param`` keyed by the dimension name), when it is active, or a
    fixed value (``auto.space.NAME: value``)."""

    name: str
    param: Param | None
    when: dict[str, tuple] = field(default_factory=dict)  # active when every named dimension has one of these values
    fixed: Any = None
    help: str = ""

    def active(self, values: dict) -> bool:
        return all(values.get(k) in allowed for k, allowed in self.when.items())

    def describe(self) -> Any:
        if self.param is None:
            return {"fixed": self.fixed}
        p = self.param
        if p.kind == "categorical":
            return {"categorical": p.choices}
        return {p.kind: [p.low, p.high], **({"log": True} if p.log else {})}


def _cat(name: str, choices, when=None, help_text: str = "") -> Dim:
    return Dim(name, parse_space({name: {"categorical": list(choices)}})[name], when or {}, help=help_text)


def _num(name: str, kind: str, low: float, high: float, log: bool = False, when=None, help_text: str = "") -> Dim:
    spec = {kind: [low, high], **({"log": True} if log else {})}
    return Dim(name, parse_space({name: spec})[name], when or {}, help=help_text)


def student_choices(student: dict) -> list[dict]:
    """``{name, kwargs}`` choices of the config student's family; the config's own student first."""
    name, kwargs = student["name"], dict(student.get("kwargs") or {})
    own = {"name": name, "kwargs": kwargs}
    out = [own]
    if name in STUDENT_FAMILIES:
        key = next(iter(STUDENT_FAMILIES[name][0]))
        out += [{"name": name, "kwargs": {**kwargs, key: c[key]}} for c in STUDENT_FAMILIES[name]]
    elif name in _RESNETS:
        out += [{"name": n, "kwargs": kwargs} for n in RESNET_CHOICES]
    elif name.startswith("wrn_"):
        out += [{"name": n, "kwargs": kwargs} for n in WRN_CHOICES]
    elif re.fullmatch(r"vgg\d+", name):
        out += [{"name": n, "kwargs": kwargs} for n in VGG_CHOICES]
    unique: list[dict] = []
    for c in out:
        if c not in unique:
            unique.append(c)
    return unique


def builtin_dims(lr: float, students: list[dict], features: tuple[str, ...] = FEATURE_TERMS,
                 scorers: tuple[str, ...] | None = None) -> list[Dim]:
    """The built-in space, in sampling order (a dimension's conditions name earlier dimensions only)."""
    paced = {"curriculum": ("paced",)}
    continuous = tuple(k for k in PACINGS if k not in EXPONENTIAL_KINDS)
    dims = [
        _cat("recipe", RECIPES, help_text="knowledge terms of the lesson"),
        _cat("feature", features, {"recipe": ("feature",)}, "feature term added to ce + kd"),
        _cat("curriculum", CURRICULA, help_text="none | paced | self_paced | annealing"),
        _cat("scorer", list(scorers or SCORERS), paced),
        _cat("order", ORDER_MODES, paced),
        _cat("pacing", list(PACINGS), paced),
        _num("pacing_start", "float", 0.05, 0.5, when=paced, help_text="data fraction at the first step"),
        _num("pacing_end_at", "float", 0.2, 0.9, when={**paced, "pacing": continuous},
             help_text="lesson fraction at which all data is in"),
        _num("pacing_inc", "float", 1.5, 3.0, when={**paced, "pacing": EXPONENTIAL_KINDS}),
        _num("pacing_step", "float", 0.05, 0.3, when={**paced, "pacing": EXPONENTIAL_KINDS},
             help_text="lesson fraction between increases"),
        _cat("self_paced", list(SELF_PACED), {"curriculum": ("self_paced",)}, "self-paced weighting"),
        _num("self_paced_start", "float", 0.3, 0.9, when={"curriculum": ("self_paced",)},
             help_text="loss quantile of the threshold at the start (it grows to 1.2)"),
        _num("anneal_ratio", "float", 1.5, 4.0, when={"curriculum": ("annealing",), "recipe": TEMPERATURE_RECIPES},
             help_text="start temperature / final temperature"),
        _num("anneal_warmup", "float", 0.1, 0.5,
             when={"curriculum": ("annealing",), "recipe": tuple(r for r in RECIPES if r not in TEMPERATURE_RECIPES)},
             help_text="lesson fraction over which the knowledge weight grows from 0"),
        _num("temperature", "float", 1.0, 8.0, when={"recipe": TEMPERATURE_RECIPES}),
        _num("ce_weight", "float", 0.05, 1.0, log=True, when={"recipe": tuple(r for r in RECIPES if r != "annealing_kd")}),
        _num("kd_weight_scale", "float", 0.25, 4.0, log=True, help_text="multiplier of the recipe's base weight"),
        _num("dkd_beta", "float", 1.0, 8.0, when={"recipe": ("dkd",)}),
        _num("feature_weight_scale", "float", 0.1, 10.0, log=True, when={"recipe": ("feature",)},
             help_text="multiplier of the feature term's default weight"),
        _num("lr", "float", lr / 4, lr * 4, log=True),
        _cat("student", students, help_text="student model within the family of the config's student"),
    ]
    return dims


def override_dims(dims: list[Dim], overrides: dict[str, Any], where: str = "auto.space") -> list[Dim]:
    """``auto.space``: NAME: [choices] restricts, NAME: {float|int|categorical: ...} replaces, NAME: value fixes."""
    by_name = {d.name: d for d in dims}
    out = {d.name: d for d in dims}
    for name, spec in (overrides or {}).items():
        if name not in by_name:
            hint = suggest(name, by_name, fallback=f"dimensions: {', '.join(by_name)}")
            raise UserError(f"{where}: unknown dimension {name!r}; {hint}")
        base = by_name[name]
        if isinstance(spec, list) and not spec:
            raise UserError(f"{where}.{name}: give at least one choice")
        if isinstance(spec, list) or (isinstance(spec, dict) and set(spec) & {"float", "int", "categorical"}):
            try:
                param = parse_space({name: spec})[name]
            except ValueError as exc:
                raise UserError(f"{where}: {exc}".replace("tune.space", "auto.space")) from None
            if param.kind == "categorical" and base.param is not None and base.param.kind == "categorical":
                _check_choices(base, param.choices, where)
            out[name] = Dim(name, param, base.when, help=base.help)
        else:  # a fixed value
            if base.param is not None and base.param.kind == "categorical":
                _check_choices(base, [spec], where)
            out[name] = Dim(name, None, base.when, fixed=copy.deepcopy(spec), help=base.help)
    return [out[d.name] for d in dims]


_OPEN_CHOICES = {"student"}  # any model spec may be offered


def _check_choices(base: Dim, choices: list, where: str) -> None:
    if base.name in _OPEN_CHOICES:
        for c in choices:
            if not isinstance(c, dict) or "name" not in c or set(c) - {"name", "kwargs"}:
                raise UserError(f"{where}.student: each choice must be a mapping {{name: MODEL, kwargs: {{...}}}}, got {c!r}")
        return
    valid = base.param.choices
    for c in choices:
        if c not in valid:
            hint = suggest(c, valid, fallback=f"valid: {', '.join(map(str, valid))}")
            raise UserError(f"{where}.{base.name}: {c!r} is not a choice; {hint}")


def sample(dims: list[Dim], trial) -> dict:
    """Values of the active dimensions for an Optuna trial (define-by-run)."""
    values: dict[str, Any] = {}
    for d in dims:
        if not d.active(values):
            continue
        values[d.name] = copy.deepcopy(d.fixed) if d.param is None else d.param.suggest(trial)
    return values


def decode_params(dims: list[Dim], params: dict) -> dict:
    """A stored trial's ``params`` (plus fixed dimensions) back to candidate values."""
    values: dict[str, Any] = {}
    for d in dims:
        if not d.active(values):
            continue
        if d.param is None:
            values[d.name] = copy.deepcopy(d.fixed)
        elif d.name in params:
            values[d.name] = d.param.decode(params[d.name])
    return values


def space_signature(dims: list[Dim]) -> dict:
    return json.loads(json.dumps({d.name: {**d.describe(), "when": {k: list(v) for k, v in d.when.items()}}
                                  for d in dims}, sort_keys=True))


# -------------------------------------------------------------------------------------- candidate -> config
def stage_names(model: nn.Module) -> list[str]:
    names = [n for n, _ in model.named_children() if re.fullmatch(r"stage\d+", n)]
    return sorted(names, key=lambda n: int(n[5:]))


CRD_MAX_NEGATIVES = 16384  # the paper's K (CIFAR, 50k samples)


def _feature_term(kind: str, student_layer: str, teacher_layer: str, weight: float, n_train: int | None = None) -> dict:
    if kind == "at":
        return {"weight": weight, "student_layers": [student_layer], "teacher_layers": [teacher_layer]}
    term = {"weight": weight, "student_layer": student_layer, "teacher_layer": teacher_layer}
    if kind == "crd" and n_train:  # more negatives than samples repeats samples and costs time for nothing
        term["num_negatives"] = int(min(CRD_MAX_NEGATIVES, max(256, n_train)))
    return term


def candidate_course(values: dict, template: dict, epochs: int, student_stage: str | None,
                     teacher_stage: str | None, n_train: int | None = None) -> list[dict]:
    """The course of a candidate: one lesson (two for annealing_kd) of ``epochs`` epochs in total, with the
    optimizer, LR schedule and other settings of the config's first lesson (``template``) and the searched lr."""
    recipe = values["recipe"]
    lesson = {k: copy.deepcopy(v) for k, v in template.items() if k not in ("loss", "curriculum", "teacher", "epochs", "name")}
    lesson["optimizer"] = {**(lesson.get("optimizer") or {}), "lr": float(values["lr"])}
    weight = BASE_WEIGHT[recipe] * float(values["kd_weight_scale"])
    curriculum = values.get("curriculum", "none")
    temp = values.get("temperature")
    temperature: Any = temp
    if curriculum == "annealing" and temp is not None:
        temperature = {"kind": "cosine", "start": float(temp) * float(values["anneal_ratio"]), "end": float(temp)}
    weight_spec: Any = weight
    if curriculum == "annealing" and temp is None:
        # from a small weight, not 0: a lesson whose only term weighs 0 has no gradient at its first step
        weight_spec = {"kind": "constant", "value": weight, "warmup": float(values["anneal_warmup"]),
                       "warmup_start": round(0.05 * weight, 6)}

    loss: dict[str, Any] = {}
    if recipe != "annealing_kd":
        loss["ce"] = float(values["ce_weight"])
    if recipe in ("kd", "kd_ls", "feature"):
        loss["kd"] = {"weight": weight_spec, "temperature": temperature, **({"ls": True} if recipe == "kd_ls" else {})}
    elif recipe == "dkd":
        loss["dkd"] = {"weight": weight_spec, "temperature": temperature, "beta": float(values["dkd_beta"])}
    elif recipe == "dist":
        loss["dist"] = {"weight": weight_spec, "temperature": temperature}
    elif recipe == "ctkd":
        loss["ctkd"] = {"weight": weight_spec, "ramp_epochs": max(1.0, round(epochs / 3, 2))}
    elif recipe == "annealing_kd":
        loss["mse_logits"] = {"weight": weight_spec,
                              "teacher_scale": {"kind": "staircase", "start": 0.1, "end": 1.0, "steps": 10}}
    if recipe == "feature":
        kind = values["feature"]
        default = KNOWLEDGE.get(kind).default_weight
        loss[kind] = _feature_term(kind, student_stage or "stage1", teacher_stage or "stage1",
                                   default * float(values["feature_weight_scale"]), n_train)

    first_epochs = epochs if recipe != "annealing_kd" else max(1, round(epochs * 2 / 3))
    first = {"name": recipe.replace("_", "-"), "epochs": first_epochs, **lesson, "loss": loss}
    cur = _curriculum(values, first_epochs)
    if cur is not None:
        first["curriculum"] = cur
    course = [first]
    if recipe == "annealing_kd" and epochs - first_epochs >= 1:
        second = {"name": "hard-labels", "epochs": epochs - first_epochs, **copy.deepcopy(lesson), "loss": {"ce": 1.0}}
        second["optimizer"] = {**second["optimizer"], "lr": float(values["lr"]) * 0.2}
        course.append(second)
    return course


def _curriculum(values: dict, epochs: int) -> dict | None:
    kind = values.get("curriculum", "none")
    if kind == "paced":
        pacing = values["pacing"]
        spec: dict[str, Any] = {"kind": pacing, "start": round(float(values["pacing_start"]), 4)}
        if pacing in EXPONENTIAL_KINDS:
            step = max(1, round(float(values["pacing_step"]) * epochs))
            spec.update(inc=round(float(values["pacing_inc"]), 4), unit="epoch")
            if pacing == "fixed_exponential":
                spec["step_length"] = step
            else:  # the first increase comes sooner, the later ones at the searched spacing
                spec["step_lengths"] = [max(1, step // 2), step]
        else:
            spec["end_at"] = round(float(values["pacing_end_at"]), 4)
        return {"scorer": values["scorer"], "order": values["order"], "pacing": spec}
    if kind == "self_paced":
        return {"scorer": "student_loss", "self_paced": {
            "weighting": values["self_paced"], "quantile": True,
            "threshold": {"kind": "linear", "start": round(float(values["self_paced_start"]), 4), "end": 1.2}}}
    return None


def describe(values: dict) -> str:
    """``dkd T=3.1 + paced(teacher_loss, easy_first, root); mlp[hidden=[64]]``: a one-line name of a candidate."""
    recipe = values.get("recipe", "?")
    if recipe == "feature":
        recipe = f"kd+{values.get('feature')}"
    if "temperature" in values:
        recipe += f" T={float(values['temperature']):.2g}"
    cur = values.get("curriculum", "none")
    if cur == "paced":
        cur = f"paced({values.get('scorer')}, {values.get('order')}, {values.get('pacing')})"
    elif cur == "self_paced":
        cur = f"self_paced({values.get('self_paced')})"
    student = values.get("student") or {}
    size = ",".join(f"{k}={v}" for k, v in (student.get("kwargs") or {}).items() if k not in ("image_size",))
    return f"{recipe} + {cur}; {student.get('name', '?')}{f'[{size}]' if size else ''}"


# -------------------------------------------------------------------------------------------- measuring
@dataclass
class StudentCost:
    params: int
    latency_ms: float
    stage: str | None  # last stage, the one feature terms tap


def student_costs(choices: list[dict], num_classes: int, input_shape: tuple[int, ...], runs: int = 20) -> dict[str, StudentCost]:
    """Parameters and batch-1 CPU latency of every student choice, measured before any training."""
    in_channels = input_shape[0] if len(input_shape) == 3 else 1
    out: dict[str, StudentCost] = {}
    for c in choices:
        model = build_model(c["name"], num_classes, in_channels, c.get("kwargs"), where="auto.space.student")
        stages = stage_names(model)
        out[choice_key(c)] = StudentCost(count_params(model), latency_ms(model, input_shape, runs=runs, warmup=3),
                                         stages[-1] if stages else None)
    return out


def choice_key(choice: dict) -> str:
    return json.dumps(choice, sort_keys=True)


def probe_feature_terms(student: nn.Module, teacher: nn.Module, input_shape: tuple[int, ...],
                        terms: tuple[str, ...] = FEATURE_TERMS) -> tuple[tuple[str, ...], dict[str, str]]:
    """Which feature terms work between the last stages of these two models: (usable, {left out: why})."""
    knowledge = load_all()
    s_stage, t_stage = (stage_names(student) or [None])[-1], (stage_names(teacher) or [None])[-1]
    if s_stage is None or t_stage is None:
        why = "the student or the teacher has no stageN modules to tap"
        return (), {t: why for t in terms}
    x = torch.randn(8, *input_shape)
    y = torch.arange(8) % 2
    usable, left_out = [], {}
    student, teacher = student.eval(), teacher.eval()
    with torch.no_grad(), FeatureTaps(student, [s_stage], who="student") as st, \
            FeatureTaps(teacher, [t_stage], who="teacher") as tt:
        s_logits, t_logits = student(x), teacher(x)
        inputs = KnowledgeInputs(student_logits=s_logits, targets=y, teacher_logits=t_logits,
                                 teachers_logits=[t_logits], student_features=dict(st.features),
                                 teacher_features=[dict(tt.features)], indices=torch.arange(8), clock=Clock())
        for kind in terms:
            cls = knowledge.get(kind)
            try:
                params = cls.Params(**{k: v for k, v in _feature_term(kind, s_stage, t_stage, 1.0).items() if k != "weight"})
                term = cls(params)
                term.build(inputs)
                loss = term(inputs)
                if loss.shape != (8,) or not bool(torch.isfinite(loss).all()):
                    raise RuntimeError(f"loss of shape {tuple(loss.shape)}")
                usable.append(kind)
            except Exception as exc:  # noqa: BLE001  (any failure: the term does not fit these models)
                left_out[kind] = f"does not fit {s_stage} of the student and {t_stage} of the teacher: " \
                                 f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    return tuple(usable), left_out


def probe_scorers(num_classes: int, lengths: torch.Tensor | None = None) -> tuple[tuple[str, ...], dict[str, str]]:
    """Which registered scorers can score this data (e.g. ``length`` needs token counts): (usable, {left out: why})."""
    import dataclasses

    n = 16 if lengths is None else len(lengths)
    targets = torch.arange(n) % num_classes
    logits = torch.randn(n, num_classes, generator=torch.Generator().manual_seed(0))
    extra = {"lengths": lengths} if lengths is not None and "lengths" in {f.name for f in dataclasses.fields(ScoreInputs)} else {}
    usable, left_out = [], {}
    for name in SCORERS:
        try:
            score(name, ScoreInputs(targets=targets, teacher_logits=logits, student_logits=logits.flip(0), **extra))
            usable.append(name)
        except UserError as exc:
            left_out[name] = str(exc).split("; ")[0].split(": ", 1)[-1]
    return tuple(usable), left_out


def step_seconds(model: nn.Module, input_shape: tuple[int, ...], batch: int, num_classes: int, steps: int = 4,
                 backward: bool = True, device: torch.device | str = "cpu") -> float:
    """Median seconds of one training step (forward, backward, SGD) or one forward on ``device`` (where the
    runs will train): the cost model's unit. The model is timed on a copy, so it stays where it was."""
    model = copy.deepcopy(model).to(device)
    model = model.train() if backward else model.eval()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3) if backward else None
    x = torch.randn(batch, *input_shape, device=device)
    y = torch.randint(0, num_classes, (batch,), device=device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        if backward:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        else:
            with torch.no_grad():
                model(x)
        sync()  # CUDA kernels run asynchronously: wait for them before reading the clock
        if i:  # the first step warms up
            times.append(time.perf_counter() - t0)
    return statistics.median(times)
