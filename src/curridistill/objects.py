"""The caller's own objects turned into what the engine runs (``curridistill.distill``, ``evaluate``, ``predict``).

Models may be ``nn.Module`` objects or zero-argument factories; data may be torch ``Dataset``s, ``(x, y)``
tensor pairs or NumPy array pairs. ``distill_config`` builds the same ``Config`` as the YAML path: an object
model is named ``object/<role>`` (``object/student``, ``object/teacher``) and in-memory data ``in-memory``;
the objects themselves travel beside the config in a ``Given``, handed to the engine (``prepare``,
``check_static``, ``dry_build``, ``CourseRunner``). Nothing is registered on the global registries.

Rules (also in the README):
- every model the run trains is a fresh ``copy.deepcopy`` of the module passed (or of what the factory
  returned; a factory is called once per model), so the caller's module is never trained in place and the
  baseline and the student are two objects with equal initial weights;
- a teacher module is trained by the course with ``ce`` first, as the YAML path does, unless
  ``teacher_trained=True``: then a copy is used as it is;
- in-memory data is fed as given: floats unchanged, uint8 scaled to [0, 1], and ``data.normalize`` defaults
  to false, so the returned student takes the caller's tensors directly;
- a checkpoint of an object model records its class under ``"object"`` for information only: loading it by
  name fails with one line unless that class is registered (``MODELS.add(name, TheClass)``); otherwise load
  the weights into a module with ``load_weights(module, path)``.
"""
from __future__ import annotations

import copy
import hashlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from curridistill.config import Config, DataConfig, EvalConfig, validate_config
from curridistill.data.base import ArrayData, Splits, channel_stats, split_validation
from curridistill.data.labels import check_labels, with_noisy_splits
from curridistill.data.pipeline import Pipeline, eval_data_config, load_test_split
from curridistill.data.text import is_text_spec
from curridistill.errors import UserError
from curridistill.evaluate.evaluation import evaluate_model
from curridistill.models.checkpoint import load_model, load_weights, read_spec
from curridistill.models.placement import model_device, same_device
from curridistill.models.structure import apply_structure
from curridistill.serve import forward_on, normalize, predict_ids, predict_tensor, top_k_rows

IN_MEMORY = "in-memory"  # data.name of data passed as objects
OBJECT_PREFIX = "object/"  # model name of a module passed as an object: object/student, object/teacher

# The quickstart's lessons (configs/quickstart.yaml): Hinton KD with a teacher, hard labels alone without one.
_OPTIMIZER = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5.0e-4}
KD_COURSE = [{"name": "distill", "epochs": 30, "loss": {"ce": 0.1, "kd": {"weight": 0.9, "temperature": 4}},
              "optimizer": _OPTIMIZER, "lr_schedule": {"kind": "cosine", "start": 1.0, "end": 0.0}}]
CE_COURSE = [{"name": "train", "epochs": 30, "loss": {"ce": 1.0}, "optimizer": _OPTIMIZER,
              "lr_schedule": {"kind": "cosine", "start": 1.0, "end": 0.0}}]


# ------------------------------------------------------------------------------------------- models
@dataclass
class UserModel:
    """A model the caller passed: a module (deep-copied per build) or a factory (called once per build)."""

    role: str
    source: Any  # the nn.Module or the factory
    trained: bool = False  # a teacher used as it is (teacher_trained=True)
    cls: str = ""  # "package.module.Class" of the module, for information (checkpoint spec "object")

    def build(self) -> nn.Module:
        """A fresh module: never the caller's object, never one handed out before."""
        if isinstance(self.source, nn.Module):
            return copy.deepcopy(self.source)
        try:
            model = self.source()
        except TypeError as exc:
            raise UserError(f"{self.role}: the factory {_describe(self.source)} cannot be called without arguments "
                            f"({exc}); pass a zero-argument callable, e.g. lambda: MyNet(64)") from None
        if not isinstance(model, nn.Module):
            raise UserError(f"{self.role}: the factory {_describe(self.source)} returned {type(model).__name__}, "
                            f"not a torch.nn.Module")
        # a copy even of what a factory returns: a factory handing out one shared object must not make the
        # baseline and the student the same model, nor train the caller's object in place
        return copy.deepcopy(model)


def as_model(obj: Any, role: str, trained: bool = False) -> UserModel | None:
    """A ``UserModel`` for a module or factory; ``None`` for a name or a model section (str / dict)."""
    if obj is None or isinstance(obj, (str, dict)):
        return None
    if isinstance(obj, nn.Module):
        return UserModel(role, obj, trained, _class_path(type(obj)))
    if callable(obj):  # a factory, or a module class whose constructor needs no arguments
        return UserModel(role, obj, trained)
    raise UserError(f"{role}: got {type(obj).__name__}; pass a torch.nn.Module, a zero-argument factory returning one, "
                    f"or a model name such as 'mlp'")


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _describe(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def _model_section(obj: Any, role: str) -> dict:
    if isinstance(obj, str):
        return {"name": obj}
    if isinstance(obj, dict):
        return dict(obj)
    return {"name": OBJECT_PREFIX + role}


@dataclass
class Given:
    """The caller's objects the engine uses instead of names: models by config name, and ready splits."""

    models: dict[str, UserModel] = field(default_factory=dict)
    splits: Splits | None = None

    def model(self, name: str) -> UserModel | None:
        return self.models.get(name)

    def build(self, name: str) -> nn.Module | None:
        """A fresh module for config name ``name`` when the caller passed it as an object, else ``None``."""
        user = self.models.get(name)
        if user is None:
            return None
        model = user.build()
        if not user.cls:
            user.cls = _class_path(type(model))
        return model


# --------------------------------------------------------------------------------------------- data
def _tensor(value: Any, what: str, where: str) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise UserError(f"{where}: {what} holds {value.dtype} values; pass numeric arrays")
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, (list, tuple)):
        try:
            return torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError, RuntimeError):
            pass
    raise UserError(f"{where}: {what} is a {type(value).__name__}; pass a torch tensor or a NumPy array")


def _from_dataset(ds: Dataset, where: str) -> tuple[Tensor, Tensor]:
    if isinstance(ds, TensorDataset):
        if len(ds.tensors) != 2:
            raise UserError(f"{where}: a TensorDataset of {len(ds.tensors)} tensors; pass TensorDataset(x, y)")
        return ds.tensors[0], ds.tensors[1]
    try:
        n = len(ds)
    except TypeError:
        raise UserError(f"{where}: the Dataset has no length; pass a map-style Dataset (with __len__) or (x, y) tensors") from None
    if n == 0:
        raise UserError(f"{where}: the Dataset is empty")
    xs, ys = [], []
    for i in range(n):  # once, to hold the split in memory (the hot loop then gathers batches by index)
        item = ds[i]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise UserError(f"{where}: item {i} of the Dataset is a {type(item).__name__}; each item must be (x, label)")
        xs.append(torch.as_tensor(item[0]))
        ys.append(torch.as_tensor(item[1]))
    try:
        return torch.stack(xs), torch.stack(ys)
    except RuntimeError:
        raise UserError(f"{where}: the Dataset's samples differ in shape; every x must have the same shape") from None


def as_xy(data: Any, where: str) -> tuple[Tensor, Tensor]:
    """(x, y) CPU tensors of a Dataset, an ``(x, y)`` pair of tensors / arrays, or an ``ArrayData``, checked:
    N >= 1 samples with equal counts, numeric finite x, integer labels >= 0."""
    if isinstance(data, ArrayData):
        return data.x, data.y
    if isinstance(data, Dataset):
        x, y = _from_dataset(data, where)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = _tensor(data[0], "x", where), _tensor(data[1], "y", where)
    else:
        raise UserError(f"{where}: got {type(data).__name__}; pass a torch Dataset of (x, label) items, an (x, y) pair "
                        f"of tensors or NumPy arrays, or a data set name such as 'digits'")
    if x.dim() < 2 or len(x) == 0:
        raise UserError(f"{where}: x has shape {tuple(x.shape)}; expected (N, ...) with N >= 1 samples of at least one value")
    y = y.reshape(-1) if y.dim() == 2 and y.shape[1] == 1 else y
    if y.dim() != 1 or len(y) != len(x):
        raise UserError(f"{where}: x has {len(x)} samples but y has shape {tuple(y.shape)}; give one label per sample")
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise UserError(f"{where}: labels are {str(y.dtype).removeprefix('torch.')}; give integer class indices 0..K-1 "
                        f"(e.g. y.long() when they are whole numbers)")
    if int(y.min()) < 0:
        raise UserError(f"{where}: label {int(y.min())} is negative; give class indices 0..K-1")
    if x.dtype == torch.bool or (not x.is_floating_point() and x.dtype != torch.uint8):
        x = x.float()  # integer features: as numbers
    elif x.is_floating_point():
        x = x.float()
        if not torch.isfinite(x).all():
            raise UserError(f"{where}: x holds NaN or infinite values; clean the data")
    return x, y.long()


def data_name(train: Any) -> str | None:
    """The data set name when ``train`` names one (the YAML path), else ``None`` (in-memory data)."""
    return train if isinstance(train, str) else None


def make_splits(train: Any, val: Any, test: Any, cfg: DataConfig) -> Splits:
    """train / val / test as the engine holds them; without ``val`` a stratified ``data.val_size`` of train."""
    if test is None:
        raise UserError("distill: give test data (test=(x, y) or a Dataset): every model is measured on it once, "
                        "after training")
    for key in ("subset", "classes", "cv"):
        if getattr(cfg, key) is not None:
            raise UserError(f"data.{key} applies to named data sets; select the samples of your tensors before distill()")
    if cfg.options or cfg.root:
        raise UserError("data.options and data.root apply to named data sets; in-memory data needs neither")
    tx, ty = as_xy(train, "train")
    parts = {"test": as_xy(test, "test")}
    if val is not None:
        parts["val"] = as_xy(val, "val")
    for name, (x, _) in parts.items():
        if tuple(x.shape[1:]) != tuple(tx.shape[1:]):
            raise UserError(f"{name}: samples of shape {tuple(x.shape[1:])} but train's are {tuple(tx.shape[1:])}; "
                            f"every split must hold samples of one shape")
    k = 1 + max(int(ty.max()), *(int(y.max()) for _, y in parts.values()))
    classes = [str(i) for i in range(k)]
    train_full = ArrayData(tx, ty, classes)
    check_labels(train_full, "train")
    if val is None:
        train_data, val_data = split_validation(train_full, cfg.val_size, cfg.split_seed, hint=", or pass val=(x, y)")
    else:
        train_data, val_data = train_full, ArrayData(*parts["val"], classes)
    train_data, val_data = with_noisy_splits(train_data, val_data, cfg.label_noise, cfg.split_seed)
    test_data = ArrayData(*parts["test"], classes)
    if cfg.normalize and train_data.x.dim() not in (2, 4):
        raise UserError(f"data.normalize=true needs (N, features) or (N, C, H, W) samples, not {tuple(train_data.x.shape)}; "
                        f"leave data.normalize false (the default for in-memory data) and normalize in your module")
    mean, std = channel_stats(train_data.x)
    info = {"train": len(train_data), "val": len(val_data), "test": len(test_data), "classes": k,
            "sha256": _content_hash(train_data, val_data, test_data)}  # in data_fingerprint: cache keys see every value
    if cfg.label_noise:  # as load_splits records it: the report says the labels were corrupted on purpose
        info["label_noise"] = cfg.label_noise
    return Splits(train_data, val_data, test_data, mean, std, name=IN_MEMORY, info=info)


def _content_hash(*splits: ArrayData) -> str:
    """sha256 of every split's x and y bytes: the teacher-output cache must never serve logits of other data."""
    h = hashlib.sha256()
    for split in splits:
        for t in (split.x, split.y):
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------- config
def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) else value
    return out


def distill_config(student: Any, teacher: Any, train: Any, val: Any, test: Any, course: list | None,
                   teacher_trained: bool, options: dict) -> tuple[Config, Given]:
    """The Config the YAML path would hold for these objects, and the objects themselves (``Given``)."""
    if train is None:
        raise UserError("distill: give training data: train=(x, y), a torch Dataset, or a data set name such as 'digits'")
    if student is None:
        raise UserError("distill: give a student: a torch.nn.Module, a zero-argument factory, or a model name")
    given = Given()
    raw: dict = {"student": _model_section(student, "student")}
    user = as_model(student, "student")
    if user is not None:
        given.models[raw["student"]["name"]] = user
    if teacher is not None:
        raw["teacher"] = _model_section(teacher, "teacher")
        user = as_model(teacher, "teacher", trained=teacher_trained)
        if user is not None:
            raw["teacher"]["reuse"] = False  # the teacher cache is keyed by model names: not for objects
            given.models[raw["teacher"]["name"]] = user
        elif teacher_trained:
            raise UserError("teacher_trained=True applies to a teacher module; for a saved teacher give "
                            "teacher={'name': ..., 'checkpoint': 'PATH.safetensors'}")
    elif teacher_trained:
        raise UserError("teacher_trained=True but no teacher was given; pass teacher=your_module")
    raw["course"] = course if course is not None else (KD_COURSE if teacher is not None else CE_COURSE)
    in_memory = data_name(train) is None
    data = {"name": data_name(train)} if not in_memory else {"name": IN_MEMORY, "normalize": False}
    if not in_memory and (val is not None or test is not None):
        raise UserError(f"distill: train={train!r} names a data set, which brings its own splits; drop val and test")
    raw["data"] = data
    raw["run"] = {"name": "distill"}
    unknown = set(options) - set(Config.model_fields) - {"teacher", "student", "course"}
    if unknown:
        raise UserError(f"distill: unknown option(s) {sorted(unknown)}; options are config sections: "
                        f"{', '.join(sorted(k for k in Config.model_fields if k not in ('student', 'teacher', 'course')))}")
    if "teachers" in options and teacher is not None:
        raise UserError("distill: give either teacher=... or teachers=[...], not both")
    raw = _merge(raw, options)
    cfg = validate_config(raw, "distill()")
    if cfg.run.seeds is not None or cfg.data.cv is not None:
        raise UserError("distill() runs one seed on one split; call it in a loop over seeds, or use run() with a config "
                        "for run.seeds / data.cv")
    if given.models and any(lesson.prune is not None for lesson in cfg.course):
        raise UserError("prune lessons rebuild models by name; distill a module without them, or register the model "
                        "and use run() with a config")
    if in_memory:
        given.splits = make_splits(train, val, test, cfg.data)
    return cfg, given


# ------------------------------------------------------------------------------------------- result
@dataclass
class Result:
    """What ``distill`` returns: the report (as ``report.json``) and the trained modules (CPU, eval mode)."""

    report: dict
    student: nn.Module
    teacher: nn.Module | None = None
    baseline: nn.Module | None = None
    run_dir: Path | None = None

    def __getitem__(self, key: str) -> Any:  # result["student"]["accuracy"] reads the report, as run() returns it
        return self.report[key]


def load_trained(run_dir: Path, phase: str, name: str, given: Given | None) -> nn.Module | None:
    """The selected checkpoint of ``phase`` in ``run_dir``: into a fresh copy of the caller's module, or by name."""
    path = Path(run_dir) / phase / "model.safetensors"
    if not path.is_file():
        return None
    model = given.build(name) if given is not None else None
    if model is None:
        return load_model(path, "cpu", allowed=(name,))[0]
    apply_structure(model, read_spec(path).get("structure"), where=str(path))
    return load_weights(model.cpu(), path, where=phase).eval()


# ------------------------------------------------------------------------------ evaluate and predict
def _as_float(x: Tensor) -> Tensor:
    return x.float().div(255.0) if x.dtype == torch.uint8 else x.float()


@contextmanager
def _opened(model: Any, device: torch.device | None):
    """(module in eval mode, its checkpoint spec or None) for a module or a checkpoint path, on ``device``; None:
    where a module lives, the CPU for a checkpoint. The caller's module is left as it was: not moved (a module on
    another device is copied there) and back in its own train/eval mode afterwards."""
    if isinstance(model, (str, Path)):
        yield load_model(model, device or torch.device("cpu"))
        return
    if not isinstance(model, nn.Module):
        raise UserError(f"expected a torch.nn.Module or a checkpoint path (NAME.safetensors), got {type(model).__name__}")
    here = model if device is None or same_device(model_device(model), device) else copy.deepcopy(model).to(device)
    was_training = model.training
    try:
        yield here.eval(), None
    finally:
        model.train(was_training)


def eval_pipeline(spec: dict | None, data: Any, device: torch.device, root: str | None = None,
                  batch_size: int | None = None, overrides: list[str] | None = None) -> Pipeline:
    """A pipeline whose ``test`` split is ``data``: a data set name (its test split), the checkpoint's own data
    (``data=None``), or in-memory data, prepared as the model saw it in training (the spec's normalization).
    ``overrides``: ``data.KEY=VALUE`` changes to the data evaluated on (e.g. another folder)."""
    eval_bs = {"eval_batch_size": batch_size} if batch_size else {}
    if data is None or isinstance(data, str):
        if data is None and spec is None:
            raise UserError("evaluate: give data to evaluate a module on: (x, y) tensors, a Dataset or a data set name")
        own = spec or {}
        cfg = eval_data_config(data or None, own.get("data"), root, overrides, own.get("input_shape"), **eval_bs)
        if cfg.name == IN_MEMORY:
            raise UserError("this checkpoint was trained on in-memory data; pass the test data: evaluate(model, (x, y))")
        stats = (own["mean"], own["std"]) if "mean" in own and "std" in own else None
        splits = load_test_split(cfg, classes=own.get("classes"), stats=stats)
        if spec is not None and splits.num_classes != spec["num_classes"]:
            raise UserError(f"the model predicts {spec['num_classes']} classes but data {cfg.name!r} has "
                            f"{splits.num_classes}; evaluate it on the data it was trained for")
        return Pipeline(splits, cfg, device)
    x, y = as_xy(data, "data")
    num_classes = spec["num_classes"] if spec else int(y.max()) + 1
    classes = (spec or {}).get("classes") or [str(i) for i in range(num_classes)]
    if int(y.max()) >= len(classes):
        raise UserError(f"data: label {int(y.max())} but the model predicts {len(classes)} classes")
    test = ArrayData(x, y, list(classes))
    normalize = bool(spec and spec.get("normalize", True) and "mean" in spec)
    mean, std = (tuple(spec["mean"]), tuple(spec["std"])) if normalize else ((0.0,), (1.0,))
    cfg = DataConfig(name=IN_MEMORY, normalize=normalize, **eval_bs)
    return Pipeline(Splits(test, test, test, mean, std, name=IN_MEMORY, info={"test": len(test)}), cfg, device)


def evaluate_objects(model: Any, data: Any = None, device: torch.device | None = None, root: str | None = None,
                     batch_size: int | None = None, eval_cfg: EvalConfig | None = None,
                     overrides: list[str] | None = None) -> dict:
    """Metrics of a module or checkpoint on a test split (``evaluate_model``'s, without ``train_seconds``),
    plus ``data``: the name of what was evaluated. ``device`` None: where a module lives, the CPU for a checkpoint."""
    with _opened(model, device) as (module, spec):
        pipeline = eval_pipeline(spec, data, model_device(module), root, batch_size, overrides)
        metrics, _ = evaluate_model(module, pipeline, eval_cfg or EvalConfig(), None)
    metrics.pop("train_seconds", None)
    metrics["data"] = pipeline.cfg.name
    return metrics


def predict_objects(model: Any, x: Any, top_k: int = 5, batch_size: int = 512,
                    device: torch.device | None = None) -> list[dict]:
    """Top-k rows (as ``predict_files``'s) for samples ``x`` (tensor or array, (N, ...) or one sample).
    A module takes ``x`` as given (uint8 scaled to [0, 1]); a checkpoint's spec normalizes it as in training.
    ``device`` None: where a module lives, the CPU for a checkpoint."""
    if top_k < 1:
        raise UserError(f"top_k must be at least 1, got {top_k}")
    with _opened(model, device) as (module, spec):
        return _predict_rows(forward_on(module, model_device(module)), spec, x, top_k, batch_size)


def _predict_rows(forward, spec: dict | None, x: Any, top_k: int, batch_size: int) -> list[dict]:
    xt = _tensor(x, "x", "predict")
    if xt.dtype == torch.bool or xt.is_complex():
        raise UserError(f"predict: x holds {xt.dtype} values; pass numeric samples")
    if spec is not None and is_text_spec(spec):  # token ids, as encode_texts makes them: no scaling, no normalization
        if xt.is_floating_point():
            raise UserError("predict: this model reads token ids; pass integer ids (N, L), or the texts themselves")
        xt = xt.long().unsqueeze(0) if xt.dim() == 1 else xt.long()
        probs = predict_ids(forward, xt, int((spec.get("kwargs") or {}).get("pad_id", 0)), batch=batch_size)
        return top_k_rows(probs, list(spec["classes"]),
                          [f"x[{i}]" for i in range(len(xt))], top_k)
    xt = _as_float(xt)
    if spec is not None:
        shape = tuple(spec.get("input_shape") or ())
        if shape and tuple(xt.shape) == shape:
            xt = xt.unsqueeze(0)  # one sample
        if shape and tuple(xt.shape[1:]) != shape:
            raise UserError(f"predict: samples of shape {tuple(xt.shape[1:])} do not fit the model's input {shape}")
        xt = normalize(xt, spec)
    probs = predict_tensor(forward, xt, batch=batch_size)
    classes = (spec or {}).get("classes") or [str(i) for i in range(probs.shape[1])]
    return top_k_rows(probs, list(classes), [f"x[{i}]" for i in range(len(xt))], top_k)
