"""The bad-input catalogue: one case per bad or hostile input, with the one line it must get.

Each case builds its input under a temporary directory and returns the ``curridistill`` argv; the test
(``test_bad_inputs.py``) runs it through ``cli.main`` in-process and asserts exit code 2, one line on
stderr, no traceback, and ``expect`` in that line. ``docs/bad_inputs.md`` is generated from these cases
with the real messages (``python -m tests.trust.make_catalogue``); a test checks it is up to date.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml

from tests.helpers import tiny_config

MARKER = "PWNED"  # a hostile model.json tries to create this file


@dataclass(frozen=True)
class Case:
    id: str
    area: str  # config | data | models | checkpoints | cli | numerical | predict
    what: str
    make: Callable[[Path], list[str]]
    expect: str


def base(tmp: Path, **over) -> dict:
    cfg = tiny_config(tmp, epochs=1)
    cfg["baseline"] = {"enabled": False}
    cfg["run"]["tensorboard"] = False
    cfg.update(over)
    return cfg


def write_cfg(tmp: Path, cfg, name: str = "c.yaml") -> str:
    path = tmp / name
    path.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return str(path)


def validate(mutate: Callable[[dict, Path], None] | None = None, extra: tuple[str, ...] = ()) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        cfg = base(tmp)
        if mutate:
            mutate(cfg, tmp)
        return ["validate", write_cfg(tmp, cfg), *extra]
    return make


def sets(*overrides: str) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        argv = ["validate", write_cfg(tmp, base(tmp))]
        for o in overrides:
            argv += ["--set", o]
        return argv
    return make


def lesson(cfg: dict) -> dict:
    return cfg["course"][0]


# ------------------------------------------------------------------------------ checkpoints
def spec(**over) -> dict:
    s = {"name": "mlp", "kwargs": {"hidden": [16], "image_size": 8}, "num_classes": 10, "in_channels": 1,
         "input_shape": [1, 8, 8], "classes": [str(i) for i in range(10)], "mean": [0.3057], "std": [0.3763],
         "normalize": True, "data": {"name": "digits"}}
    s.update(over)
    return s


def checkpoint(tmp: Path, name: str = "ck", **over) -> Path:
    """A real (untrained) checkpoint pair written by save_model, then its spec updated with ``over``."""
    from curridistill.models import build_model
    from curridistill.models.checkpoint import save_model

    s = spec()
    torch.manual_seed(0)
    model = build_model(s["name"], 10, 1, s["kwargs"])
    path = save_model(tmp / f"{name}.safetensors", model, s)
    if over:
        saved = json.loads(path.with_suffix(".json").read_text())
        saved.update(over)
        path.with_suffix(".json").write_text(json.dumps(saved))
    return path


def with_ck(build: Callable[[Path, Path], list[str]], **over) -> Callable[[Path], list[str]]:
    return lambda tmp: build(tmp, checkpoint(tmp, **over))


def edit_spec(path: Path, fn) -> None:
    js = path.with_suffix(".json")
    data = json.loads(js.read_text())
    fn(data)
    js.write_text(json.dumps(data))


def hostile(tmp: Path) -> list[str]:
    ck = checkpoint(tmp)
    edit_spec(ck, lambda d: d.update(name="os:system", kwargs={"command": f"touch {tmp / MARKER}"}))
    return ["eval", str(ck)]


def hostile_predict(tmp: Path) -> list[str]:
    ck = checkpoint(tmp)
    edit_spec(ck, lambda d: d.update(name="subprocess:call", kwargs={"args": ["touch", str(tmp / MARKER)]}))
    np.save(tmp / "x.npy", np.zeros((2, 8, 8), np.uint8))
    return ["predict", str(ck), str(tmp / "x.npy")]


def hostile_teacher(tmp: Path) -> list[str]:
    ck = checkpoint(tmp)
    edit_spec(ck, lambda d: d.update(name="os:system", kwargs={"command": f"touch {tmp / MARKER}"}))
    cfg = base(tmp)
    cfg["teacher"] = {"name": "cnn", "kwargs": {"widths": [8, 16]}, "checkpoint": str(ck)}
    return ["validate", write_cfg(tmp, cfg)]


def tampered(tmp: Path) -> list[str]:
    ck = checkpoint(tmp)
    data = bytearray(ck.read_bytes())
    data[-5] ^= 0x40  # one flipped bit in the weights
    ck.write_bytes(bytes(data))
    return ["eval", str(ck)]


def tampered_teacher(tmp: Path) -> list[str]:
    ck = checkpoint(tmp)
    data = bytearray(ck.read_bytes())
    data[-5] ^= 0x01
    ck.write_bytes(bytes(data))
    cfg = base(tmp)
    cfg["teacher"] = {"name": "mlp", "kwargs": {"hidden": [16], "image_size": 8}, "checkpoint": str(ck)}
    return ["validate", write_cfg(tmp, cfg)]


def teacher_mismatch(tmp: Path) -> list[str]:
    ck = checkpoint(tmp)
    cfg = base(tmp)
    cfg["teacher"] = {"name": "cnn", "kwargs": {"widths": [8, 16]}, "checkpoint": str(ck)}
    return ["validate", write_cfg(tmp, cfg)]


def truncated_legacy(tmp: Path) -> list[str]:
    ck = checkpoint(tmp)
    edit_spec(ck, lambda d: d.pop("sha256"))
    ck.write_bytes(ck.read_bytes()[:100])
    return ["eval", str(ck)]


def predict_with(array_writer: Callable[[Path], Path], *extra: str) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        ck = checkpoint(tmp)
        return ["predict", str(ck), str(array_writer(tmp)), *extra]
    return make


def npy(arr) -> Callable[[Path], Path]:
    def write(tmp: Path) -> Path:
        np.save(tmp / "x.npy", arr, allow_pickle=True)
        return tmp / "x.npy"
    return write


def npz(**arrays) -> Callable[[Path], Path]:
    def write(tmp: Path) -> Path:
        np.savez(tmp / "x.npz", **arrays)
        return tmp / "x.npz"
    return write


# ------------------------------------------------------------------------------ data files
def tensors_cfg(y_train, y_test=None, image: tuple[int, ...] = (1, 8, 8)) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        rng = np.random.default_rng(0)
        y = np.asarray(y_train)
        np.savez(tmp / "train.npz", x=rng.integers(0, 255, (len(y), *image), dtype=np.uint8), y=y)
        yt = np.asarray(y_test if y_test is not None else y_train)
        np.savez(tmp / "test.npz", x=rng.integers(0, 255, (len(yt), *image), dtype=np.uint8), y=yt)
        cfg = base(tmp)
        cfg["data"] = {"name": "tensors", "options": {"path": str(tmp / "train.npz"), "test_path": str(tmp / "test.npz")},
                       "batch_size": 16}
        return ["validate", write_cfg(tmp, cfg)]
    return make


def text_cfg(options: dict | None = None, name: str = "text-table", student: dict | None = None,
             teacher: dict | None = None, root: str | None = None, augment: dict | None = None
             ) -> Callable[[Path], list[str]]:
    """``validate`` of a text config over a small CSV written under ``tmp`` (``path`` / ``test_fraction`` default
    to it for text-table); ``options`` replace those keys."""
    def make(tmp: Path) -> list[str]:
        rows = [f"{'good fine great' if i % 2 else 'bad awful poor'} movie {i},{'pos' if i % 2 else 'neg'}" for i in range(40)]
        (tmp / "reviews.csv").write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
        opts = {"path": str(tmp / "reviews.csv"), "test_fraction": 0.2} if name == "text-table" else {}
        opts.update(options or {})
        cfg = base(tmp)
        cfg["data"] = {"name": name, "options": {k: v for k, v in opts.items() if v is not None}, "val_size": 0.2,
                       "batch_size": 8, **({"root": root} if root else {}), **({"augment": augment} if augment else {})}
        cfg["student"] = student or {"name": "text-cnn", "kwargs": {"embed_dim": 8, "filters": 4}}
        if teacher:
            cfg["teacher"] = teacher
        else:
            cfg.pop("teacher", None)
            cfg["course"] = [{"name": "ce", "epochs": 1, "loss": {"ce": 1.0}}]
        return ["validate", write_cfg(tmp, cfg)]
    return make


# ------------------------------------------------------------------------------ run directories
def run_dir_with_state(tmp: Path, edit: bool = False) -> Path:
    """A run directory as a killed run leaves it: config, the applied copy, a finished teacher phase."""
    from curridistill.config import validate_config

    text = validate_config(base(tmp)).to_yaml()
    rd = tmp / "run"
    (rd / "teacher").mkdir(parents=True)
    (rd / "config.yaml").write_text(text)
    (rd / ".config.applied.yaml").write_text(text)
    (rd / "teacher" / "done.json").write_text("{}")
    if edit:
        cfg = yaml.safe_load(text)
        cfg["course"][0]["epochs"] = 3
        (rd / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return rd


def hostile_run_dir(tmp: Path) -> list[str]:
    """A run directory whose config.yaml (and its applied copy) name code to run as the student's model."""
    rd = run_dir_with_state(tmp)
    for name in ("config.yaml", ".config.applied.yaml"):
        cfg = yaml.safe_load((rd / name).read_text())
        cfg["student"] = {"name": "os:system", "kwargs": {"command": f"touch {tmp / MARKER}"}}
        (rd / name).write_text(yaml.safe_dump(cfg, sort_keys=False))
    return ["run", "--resume", str(rd)]


def _without_applied(rd: Path) -> Path:
    (rd / ".config.applied.yaml").unlink()
    return rd


def locked_resume(tmp: Path) -> list[str]:
    rd = run_dir_with_state(tmp)
    return ["run", "--resume", str(rd)]


def unwritable_parent(tmp: Path) -> list[str]:
    (tmp / "file").write_text("x")
    return ["run", write_cfg(tmp, base(tmp)), "--out", str(tmp / "file" / "run")]


def _m(fn):  # a mutation helper that returns None (lambdas cannot assign)
    return fn


def _set(path: str, value):
    def mutate(cfg: dict, tmp: Path) -> None:
        node = cfg
        parts = path.split(".")
        for p in parts[:-1]:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        if isinstance(node, list):
            node[int(parts[-1])] = value
        else:
            node[parts[-1]] = value
    return mutate


def _rename(old: str, new: str):
    def mutate(cfg: dict, tmp: Path) -> None:
        cfg[new] = cfg.pop(old)
    return mutate


def _fitnet(student_layer: str):
    def mutate(cfg: dict, tmp: Path) -> None:
        cfg["student"] = {"name": "cnn", "kwargs": {"widths": [8, 16]}}
        lesson(cfg)["loss"]["fitnet"] = {"weight": 1.0, "student_layer": student_layer, "teacher_layer": "stage2"}
    return mutate


def _no_teacher_kd(cfg: dict, tmp: Path) -> None:
    cfg.pop("teacher")


def _assistant_only(cfg: dict, tmp: Path) -> None:
    cfg.pop("teacher")
    lesson(cfg)["loss"] = {"ce": 1.0}
    cfg["assistants"] = ["mlp"]


def _both_teachers(cfg: dict, tmp: Path) -> None:
    cfg["teachers"] = [cfg["teacher"]]


def _factory_import_error(cfg: dict, tmp: Path) -> None:
    cfg["student"] = {"name": "curridistill_no_such_module:build"}


def _factory_not_callable(cfg: dict, tmp: Path) -> None:
    cfg["student"] = {"name": "math:pi"}


def _factory_not_module(cfg: dict, tmp: Path) -> None:
    cfg["student"] = {"name": "string:Formatter"}


CASES: list[Case] = [
    # ------------------------------------------------------------------ config files
    Case("config-missing", "config", "config path that does not exist",
         lambda tmp: ["validate", str(tmp / "absent.yaml")], "config file not found"),
    Case("config-directory", "config", "a directory given as the config",
         lambda tmp: ["validate", str(tmp)], "is a directory; give a config file"),
    Case("config-bad-yaml", "config", "YAML syntax error",
         lambda tmp: ["validate", write_cfg(tmp, "data: {name: digits\nstudent: [")], "is not valid YAML"),
    Case("config-not-utf8", "config", "a config saved as Latin-1 (not UTF-8)",
         lambda tmp: ["validate", _bytes(tmp, "data:\n  name: d\xefgits\n".encode("latin-1"))], "not a UTF-8 text file"),
    Case("config-binary", "config", "a binary file given as the config",
         lambda tmp: ["validate", _bytes(tmp, bytes(range(256)))], "not a UTF-8 text file"),
    Case("config-binary-ascii", "config", "ASCII control bytes in the config",
         lambda tmp: ["validate", _bytes(tmp, b"data:\x00\x01\x02 x\n")], "is not valid YAML"),
    Case("config-list", "config", "top level is a list", lambda tmp: ["validate", write_cfg(tmp, "- a\n- b\n")],
         "the config must be a YAML mapping"),
    Case("config-scalar", "config", "top level is a number", lambda tmp: ["validate", write_cfg(tmp, "42\n")],
         "the config must be a YAML mapping"),
    Case("config-empty", "config", "an empty file", lambda tmp: ["validate", write_cfg(tmp, "")],
         "missing required key 'student'"),
    Case("config-number-key", "config", "a number as a key (`1: 2` inside `loss`)",
         lambda tmp: ["validate", write_cfg(tmp, "student: {name: mlp}\ncourse: [{loss: {1: 2}}]\n")],
         "key 1 at course.0.loss is not a name"),
    Case("config-misspelled-required", "config", "`studnet:` instead of `student:`",
         validate(_rename("student", "studnet")), "missing required key 'student' — did you mean 'studnet'?"),
    Case("config-misspelled-course", "config", "`cource:` instead of `course:`",
         validate(_rename("course", "cource")), "missing required key 'course' — did you mean 'cource'?"),
    Case("config-unknown-nested-key", "config", "`optimzer` in a lesson",
         validate(_m(lambda c, t: lesson(c).update(optimzer={}))), "unknown key 'course.0.optimzer'; did you mean 'optimizer'?"),
    Case("config-unknown-top-key", "config", "an unknown top-level section",
         validate(_set("trainer", {"epochs": 3})), "unknown key 'trainer'"),
    Case("config-empty-course", "config", "`course: []`", validate(_set("course", [])), "course"),
    Case("config-empty-loss", "config", "a lesson with `loss: {}`", validate(_set("course.0.loss", {})),
         "loss must be a non-empty mapping"),
    Case("config-teacher-and-teachers", "config", "both `teacher` and `teachers`", validate(_both_teachers),
         "give either 'teacher' or 'teachers', not both"),
    Case("config-assistant-without-teacher", "config", "assistants but no teacher", validate(_assistant_only),
         "assistants need a teacher"),
    Case("config-seeds-duplicate", "config", "`run.seeds: [0, 0]`", validate(_set("run.seeds", [0, 0])),
         "run.seeds must be a non-empty list of distinct integers"),
    Case("config-parallel-single-run", "config", "`run.parallel: 3` without seeds or folds",
         validate(_set("run.parallel", 3)), "run.parallel 3 (--parallel) runs seeds or folds side by side"),
    Case("config-curriculum-empty", "config", "a curriculum with neither pacing nor self_paced",
         validate(_set("course.0.curriculum", {"scorer": "teacher_confidence"})), "a curriculum needs 'pacing'"),
    Case("config-tune-test-metric", "config", "tuning on a test metric",
         validate(_set("tune", {"space": {"course.0.optimizer.lr": {"float": [0.01, 0.1]}}, "metric": "test_accuracy"})),
         "must be a validation metric"),
    Case("config-optimizer-unknown", "config", "`optimizer: {name: sgdd}`", validate(_set("course.0.optimizer", {"name": "sgdd"})),
         "invalid value at course.0.optimizer.name"),
    # ------------------------------------------------------------------ names in registries
    Case("model-unknown-student", "models", "student `mlpp`", validate(_set("student", {"name": "mlpp"})),
         "unknown model 'mlpp' at student.name; did you mean 'mlp'?"),
    Case("model-unknown-teacher", "models", "teacher `resnet2O` (letter O)", validate(_set("teacher", {"name": "resnet2O"})),
         "unknown model 'resnet2O' at teacher.name"),
    Case("model-unknown-assistant", "models", "assistant `mpl`",
         validate(_set("assistants", ["mpl"])), "unknown model 'mpl' at assistants.0.name"),
    Case("model-factory-import-error", "models", "`module:callable` whose module does not exist",
         validate(_factory_import_error), "cannot import model module 'curridistill_no_such_module'"),
    Case("model-factory-missing-attr", "models", "`os:nothing`", validate(_set("student", {"name": "os:nothing"})),
         "module 'os' has no factory 'nothing'"),
    Case("model-factory-not-callable", "models", "`math:pi` (a number)", validate(_factory_not_callable),
         "'math:pi' is a float, not a callable"),
    Case("model-factory-not-module", "models", "a factory that returns a dict", validate(_factory_not_module),
         "returned Formatter, not a torch.nn.Module"),
    Case("model-bad-kwargs", "models", "a kwarg the model does not take",
         validate(_set("student", {"name": "mlp", "kwargs": {"depth": 3}})), "cannot build 'mlp' with kwargs"),
    Case("model-wrong-input", "models", "a model for another input size",
         validate(_set("student", {"name": "mlp", "kwargs": {"image_size": 32}})), "the model cannot take inputs of shape (1, 8, 8)"),
    Case("model-too-large", "models", "a model too large for memory (10^12 weights)",
         validate(_set("student", {"name": "mlp", "kwargs": {"hidden": [1000000, 1000000], "image_size": 8}})),
         "does not fit in memory while it is built; pick a smaller model"),
    Case("run-unknown-student", "models", "`run` (not validate) with an unknown student: refused before any directory",
         lambda tmp: ["run", write_cfg(tmp, base(tmp, student={"name": "mlpp"})), "--out", str(tmp / "r")],
         "unknown model 'mlpp' at student.name"),
    Case("run-bad-tap", "models", "`run` with a tap path the student lacks: refused before the teacher trains",
         lambda tmp: ["run", _fitnet_cfg(tmp), "--out", str(tmp / "r")], "student has no module 'stage9' to tap"),
    Case("knowledge-unknown-term", "models", "loss term `kdd`", validate(_set("course.0.loss", {"kdd": 1.0})),
         "unknown knowledge term 'kdd'"),
    Case("knowledge-unknown-option", "models", "an option the term does not have",
         validate(_set("course.0.loss", {"kd": {"weight": 1, "temprature": 4}})), "unknown option 'temprature' for term 'kd'"),
    Case("knowledge-needs-teacher", "models", "`kd` without a teacher", validate(_no_teacher_kd),
         "term 'kd' needs a teacher"),
    Case("tap-path-missing", "models", "a FitNet tap on a module the student does not have",
         validate(_fitnet("stage9")), "student has no module 'stage9' to tap"),
    Case("schedule-unknown-lr", "models", "`lr_schedule: {kind: cosin}`",
         validate(_set("course.0.lr_schedule", {"kind": "cosin"})), "unknown schedule 'cosin' at course.0.lr_schedule.kind"),
    Case("schedule-unknown-weight", "models", "a weight schedule of unknown kind",
         validate(_set("course.0.loss", {"ce": {"weight": {"kind": "linaer", "start": 1, "end": 0}}})),
         "unknown schedule 'linaer'"),
    Case("pacing-unknown", "models", "`pacing: {kind: linearr}`",
         validate(_set("course.0.curriculum", {"pacing": {"kind": "linearr"}})), "unknown pacing 'linearr'"),
    Case("scorer-unknown", "models", "`scorer: confidence`",
         validate(_set("course.0.curriculum", {"scorer": "confidence", "pacing": {"kind": "linear"}})), "unknown scorer"),
    Case("data-unknown-name", "data", "`data.name: cifar11`", validate(_set("data.name", "cifar11")),
         "unknown dataset 'cifar11' at data.name"),
    Case("image-token-augment", "data", "`data.augment: {token_mask: 0.1}` for images",
         validate(_set("data.augment", {"token_mask": 0.1})), "token_mask, token_replace and token_span are for text"),
    Case("data-unknown-option", "data", "`data.options: {colour: true}` for digits",
         validate(_set("data.options", {"colour": True})), "unknown option 'data.options.colour' for data set 'digits'"),
    Case("data-tensors-no-path", "data", "the tensors data set without a path", validate(_set("data", {"name": "tensors"})),
         "dataset 'tensors' needs data.options.path"),
    Case("data-one-class", "data", "a data set with one class", tensors_cfg([0] * 40),
         "has a single class (0) in training"),
    Case("data-gapped-labels", "data", "labels {0, 5, 10}", tensors_cfg([0, 5, 10] * 20),
         "classes 1, 2, 3, 4, 6, 7, 8, 9 of 0..10 have no training sample"),
    Case("data-negative-labels", "data", "negative labels", tensors_cfg([-1, 0, 1] * 20), "y has negative labels"),
    Case("data-zero-size-images", "data", "images of 0x0 pixels", tensors_cfg([0, 1] * 20, image=(1, 0, 0)),
         "x has shape (40, 1, 0, 0)"),
    Case("data-float-labels", "data", "non-integer labels", tensors_cfg([0.5, 1.0] * 20), "y holds non-integer values"),
    Case("data-missing-file", "data", "tensors path that does not exist",
         validate(_set("data", {"name": "tensors", "options": {"path": "/nonexistent/train.npz", "test_fraction": 0.2}})),
         "/nonexistent/train.npz"),
    # ------------------------------------------------------------------ text data and models
    Case("text-missing-text-column", "data", "text-table: `text_column: sentence` absent from the CSV",
         text_cfg({"text_column": "sentence"}), "no column 'sentence' for data.options.text_column; columns: text, label"),
    Case("text-missing-label-column", "data", "text-table: `label_column: y` absent from the CSV",
         text_cfg({"label_column": "y"}), "no column 'y' for data.options.label_column"),
    Case("text-no-test-split", "data", "text-table without test_path or test_fraction",
         text_cfg({"test_fraction": None}), "has no test split; set data.options.test_path, or data.options.test_fraction"),
    Case("text-unknown-format", "data", "text-table: `format: xml`", text_cfg({"format": "xml"}),
         "data.options.format is 'xml'; use auto (from the file name), csv, tsv or jsonl"),
    Case("text-image-augment", "data", "text: `augment: {flip: true}` (an image augmentation)",
         text_cfg(augment={"flip": True}), "data.augment: crop_padding, flip and cutout are for images and this dataset is text"),
    Case("text-augment-over-1", "numerical", "text: `token_mask: 0.6, token_replace: 0.6`",
         text_cfg(augment={"token_mask": 0.6, "token_replace": 0.6}), "token_mask + token_replace is 1.2"),
    Case("text-max-length-0", "numerical", "text: `max_length: 0`", text_cfg({"max_length": 0}),
         "data.options.max_length is 0; use an integer >= 2"),
    Case("text-tokenizer-dir-missing", "data", "text: `tokenizer:` a directory that does not exist",
         text_cfg({"tokenizer": "/nonexistent/tokenizer"}), "data.options.tokenizer: Hugging Face model directory"),
    Case("text-trec-bad-labels", "data", "trec: `labels: medium`", text_cfg({"labels": "medium"}, name="trec"),
         "data.options.labels is 'medium'; use 'coarse' (6 classes) or 'fine' (50)"),
    Case("text-trec-files-missing", "data", "trec with a data.root that lacks its files",
         text_cfg(name="trec", root="/nonexistent"), "trec: file 'train_5500.label' not found"),
    Case("text-hf-teacher-missing", "models", "`teacher: {hf: DIR}` with no such directory",
         text_cfg(teacher={"hf": "/nonexistent/bert"}), "hf model '/nonexistent/bert': Hugging Face model directory"),
    Case("text-transformer-heads", "models", "text-transformer: hidden 10 with 3 heads",
         text_cfg(student={"name": "text-transformer", "kwargs": {"hidden": 10, "heads": 3}}),
         "text-transformer: hidden 10 is not divisible by heads 3"),
    Case("text-image-model", "models", "an image model (resnet8) on token ids",
         text_cfg(student={"name": "resnet8"}), "student: the model cannot take inputs of shape"),
    Case("text-init-embeddings-missing", "models", "text-cnn: `init_embeddings:` a directory that does not exist",
         text_cfg(student={"name": "text-cnn", "kwargs": {"init_embeddings": "/nonexistent/x"}}),
         "init_embeddings '/nonexistent/x': Hugging Face model directory"),
    # ------------------------------------------------------------------ numerical ranges
    Case("num-temperature-zero", "numerical", "`temperature: 0`",
         validate(_set("course.0.loss", {"kd": {"weight": 1, "temperature": 0}})),
         "course.0.loss.kd.temperature is 0 at progress 0; it must stay > 0 over the whole lesson"),
    Case("num-temperature-crosses-zero", "numerical", "a temperature schedule that reaches 0",
         validate(_set("course.0.loss", {"kd": {"weight": 1, "temperature": {"kind": "linear", "start": 4, "end": 0}}})),
         "course.0.loss.kd.temperature is 0 at progress 1"),
    Case("num-weight-negative", "numerical", "a negative loss weight", validate(_set("course.0.loss", {"ce": -1.0})),
         "course.0.loss.ce.weight is -1 at progress 0; it must stay >= 0"),
    Case("num-batch-size-zero", "numerical", "`batch_size: 0`", validate(_set("data.batch_size", 0)),
         "invalid value at data.batch_size: Input should be greater than or equal to 1"),
    Case("num-eval-batch-size-zero", "numerical", "`eval_batch_size: 0`", validate(_set("data.eval_batch_size", 0)),
         "invalid value at data.eval_batch_size"),
    Case("num-lesson-batch-size-zero", "numerical", "a lesson `batch_size: 0`", validate(_set("course.0.batch_size", 0)),
         "invalid value at course.0.batch_size"),
    Case("num-batch-larger-than-data", "numerical", "`batch_size: 5000` on 1,617 training images",
         validate(_set("data.batch_size", 5000)), "batch size 5000 is larger than the"),
    Case("num-val-size-2.5", "numerical", "`val_size: 2.5`", validate(_set("data.val_size", 2.5)),
         "data.val_size=2.5: give a fraction in (0, 1) like 0.1, or a whole count"),
    Case("num-val-size-zero", "numerical", "`val_size: 0`", validate(_set("data.val_size", 0)),
         "invalid value at data.val_size: Input should be greater than 0"),
    Case("num-val-size-all", "numerical", "`val_size: 5000` (more than the data)", validate(_set("data.val_size", 5000)),
         "leaves no training or no validation data"),
    Case("num-subset-one", "numerical", "`subset: 1`", validate(_set("data.subset", 1)), "invalid value at data.subset"),
    Case("num-subset-more-than-data", "numerical", "`subset: 5000` on digits' 1,438 training images",
         validate(_set("data.subset", 5000)), "data.subset 5000 is more than the"),
    Case("num-label-noise-one", "numerical", "`label_noise: 1` (every label wrong)", validate(_set("data.label_noise", 1)),
         "invalid value at data.label_noise"),
    Case("num-label-noise-negative", "numerical", "`label_noise: -0.1`", validate(_set("data.label_noise", -0.1)),
         "invalid value at data.label_noise"),
    Case("num-threads-negative", "numerical", "`--set run.threads=-1`", sets("run.threads=-1"),
         "invalid value at run.threads: Input should be greater than or equal to 1"),
    Case("num-epochs-zero", "numerical", "`epochs: 0`", validate(_set("course.0.epochs", 0)), "invalid value at course.0.epochs"),
    Case("num-lr-zero", "numerical", "`lr: 0`", sets("course.0.optimizer.lr=0"), "invalid value at course.0.optimizer.lr"),
    Case("num-lr-nan", "numerical", "`lr: .nan`", sets("course.0.optimizer.lr=.nan"), "invalid value at course.0.optimizer.lr"),
    Case("knowledge-option-inf", "numerical", "a knowledge-term option `beta: .inf` (dkd)",
         validate(_set("course.0.loss", {"ce": 0.5, "dkd": {"weight": 1.0, "beta": float("inf")}})),
         "option 'beta' of term 'dkd' is inf; give a finite number"),
    Case("num-lr-inf", "numerical", "`lr: .inf`", sets("course.0.optimizer.lr=.inf"), "invalid value at course.0.optimizer.lr"),
    Case("num-keep-epochs-past-the-course", "numerical", "`teacher.keep_epochs: [5]` for a 1-epoch teacher",
         validate(_set("teacher.keep_epochs", [5])), "teacher.keep_epochs [5] lie outside the teacher's 1 epoch(s)"),
    Case("route-anchor-not-saved", "numerical", "a route through `epoch_1`, which teacher.keep_epochs does not save",
         validate(_set("course.0.teacher", {"route": ["epoch_1", "final"]})),
         "course.0.teacher.route names anchors ['epoch_1'] the teacher does not save"),
    Case("num-lr-schedule-negative", "numerical", "an LR multiplier that goes negative",
         validate(_set("course.0.lr_schedule", {"kind": "linear", "start": 1, "end": -1})),
         "course.0.lr_schedule is -0.02 at progress 0.51"),
    Case("num-grad-clip-zero", "numerical", "`grad_clip: 0`", validate(_set("course.0.grad_clip", 0)),
         "course.0.grad_clip=0.0: give a positive gradient norm"),
    # ------------------------------------------------------------------ checkpoints (data, never code)
    Case("ck-missing", "checkpoints", "eval of a file that does not exist",
         lambda tmp: ["eval", str(tmp / "nope.safetensors")], "checkpoint not found"),
    Case("ck-no-spec", "checkpoints", "weights without model.json",
         lambda tmp: ["eval", str(_no_spec(tmp))], "is missing: a curridistill checkpoint is NAME.safetensors"),
    Case("ck-spec-no-name", "checkpoints", "model.json without `name`",
         lambda tmp: ["eval", str(_spec_edit(tmp, lambda d: d.pop("name")))], "has no 'name'"),
    Case("ck-spec-not-json", "checkpoints", "model.json that is not JSON",
         lambda tmp: ["eval", str(_spec_text(tmp, "{not json"))], "corrupt JSON file"),
    Case("ck-spec-list", "checkpoints", "model.json holding a list",
         lambda tmp: ["eval", str(_spec_text(tmp, "[1, 2]"))], "is not a checkpoint spec"),
    Case("ck-spec-bad-classes", "checkpoints", "`num_classes: \"ten\"`",
         lambda tmp: ["eval", str(_spec_edit(tmp, lambda d: d.update(num_classes="ten")))], "'num_classes' is 'ten', not an integer"),
    Case("ck-code-eval", "checkpoints", "model.json naming `os:system` (eval)", hostile,
         "names model 'os:system', which would import and run code from a data file; pass --trust-code"),
    Case("ck-code-predict", "checkpoints", "model.json naming `subprocess:call` (predict)", hostile_predict,
         "names model 'subprocess:call', which would import and run code from a data file"),
    Case("ck-code-teacher", "checkpoints", "teacher.checkpoint whose model.json names `os:system`", hostile_teacher,
         "names model 'os:system', which would import and run code from a data file"),
    Case("ck-unknown-model", "checkpoints", "model.json naming an unregistered model",
         lambda tmp: ["eval", str(_spec_edit(tmp, lambda d: d.update(name="resnet1000")))], "unknown model 'resnet1000'"),
    Case("ck-tampered", "checkpoints", "one flipped bit in the weights", tampered,
         "does not match the sha256 in"),
    Case("ck-tampered-teacher", "checkpoints", "teacher.checkpoint with a flipped bit", tampered_teacher,
         "does not match the sha256 in"),
    Case("ck-teacher-other-model", "checkpoints", "teacher.checkpoint of an `mlp` for a `cnn` teacher", teacher_mismatch,
         "holds a 'mlp' model but teacher.name is 'cnn'"),
    Case("ck-truncated-legacy", "checkpoints", "truncated weights of an older checkpoint (no sha256)", truncated_legacy,
         "corrupt checkpoint"),
    Case("ck-teacher-missing", "checkpoints", "teacher.checkpoint that does not exist",
         validate(_m(lambda c, t: c["teacher"].update(checkpoint=str(t / "none.safetensors")))), "teacher.checkpoint:"),
    Case("ck-wrong-shape", "checkpoints", "weights that do not fit the spec's model",
         lambda tmp: ["eval", str(_spec_edit(tmp, lambda d: d.update(kwargs={"hidden": [32], "image_size": 8}, sha256=None)))],
         "do not fit the model"),
    # ------------------------------------------------------------------ predict inputs
    Case("predict-missing-input", "predict", "an input file that does not exist",
         lambda tmp: ["predict", str(checkpoint(tmp)), str(tmp / "none.npy")], "not found"),
    Case("predict-empty", "predict", "an empty array", predict_with(npy(np.zeros((0, 8, 8), np.uint8))), "holds no samples"),
    Case("predict-npz-no-key", "predict", "an npz without `x` (two arrays)",
         predict_with(npz(a=np.zeros((2, 8, 8)), b=np.zeros(2))), "has no array 'x' (it holds ['a', 'b'])"),
    Case("predict-npz-empty", "predict", "an npz with no arrays", predict_with(npz()), "has no array 'x' (it holds nothing)"),
    Case("predict-object-array", "predict", "an object array (pickled)",
         predict_with(npy(np.array([{"a": 1}, None], dtype=object))), "cannot read"),
    Case("predict-string-array", "predict", "an array of strings", predict_with(npy(np.array(["a", "b"]))),
         "holds <U1 values; save numeric samples"),
    Case("predict-nan", "predict", "a sample with NaN", predict_with(npy(np.full((3, 8, 8), np.nan, np.float32))),
         "sample 0 holds NaN or infinite values"),
    Case("predict-wrong-shape", "predict", "samples of another shape", predict_with(npy(np.zeros((2, 5, 5), np.uint8))),
         "samples of shape (5, 5) do not fit the model's input (1, 8, 8)"),
    Case("predict-not-numpy", "predict", "a text file as input",
         predict_with(lambda tmp: _text(tmp / "x.npy", "hello")), "cannot read"),
    Case("predict-out-directory", "predict", "`--out` that is a directory",
         lambda tmp: ["predict", str(checkpoint(tmp)), str(npy(np.zeros((2, 8, 8), np.uint8))(tmp)), "--out", str(tmp)],
         "is a directory; give a file path"),
    Case("eval-json-directory", "predict", "`eval --json` to a directory",
         lambda tmp: ["eval", str(checkpoint(tmp)), "--json", str(tmp)], "is a directory; give a file path"),
    # ------------------------------------------------------------------ CLI usage and run directories
    Case("cli-unknown-command", "cli", "`curridistill trian`", lambda tmp: ["trian"], "invalid choice: 'trian'"),
    Case("cli-run-no-config", "cli", "`run` without a config", lambda tmp: ["run"], "run needs a CONFIG file"),
    Case("cli-resume-with-config", "cli", "`--resume` together with a CONFIG",
         lambda tmp: ["run", write_cfg(tmp, base(tmp)), "--resume", str(tmp)], "--resume continues a run with its saved config"),
    Case("cli-resume-not-run", "cli", "`--resume` of a directory that is not a run",
         lambda tmp: ["run", "--resume", str(tmp)], "is not a run directory (no config.yaml)"),
    Case("cli-seeds-empty", "cli", "`--seeds ''`", lambda tmp: ["run", write_cfg(tmp, base(tmp)), "--seeds", ""],
         "--seeds '': empty item"),
    Case("cli-seeds-text", "cli", "`--seeds a,b`", lambda tmp: ["run", write_cfg(tmp, base(tmp)), "--seeds", "a,b"],
         "'a' is not an integer"),
    Case("cli-stop-negative", "cli", "`--stop-after-epochs -1`",
         lambda tmp: ["run", write_cfg(tmp, base(tmp)), "--stop-after-epochs", "-1"], "--stop-after-epochs -1: give a number of epochs >= 1"),
    Case("cli-stop-zero", "cli", "`--stop-after-epochs 0`",
         lambda tmp: ["run", write_cfg(tmp, base(tmp)), "--stop-after-epochs", "0"], "--stop-after-epochs 0"),
    Case("cli-set-no-equals", "cli", "`--set course.0.epochs`", sets("course.0.epochs"), "expected KEY=VALUE"),
    Case("cli-set-bad-index", "cli", "`--set course.5.epochs=1`", sets("course.5.epochs=1"), "is a list of 1; use an index 0..0"),
    Case("rd-code-resume", "checkpoints", "a run directory whose config names `os:system` as the student (resume)",
         hostile_run_dir, "names model 'os:system' at student.name, which would import and run code from a run directory"),
    Case("cli-set-into-value", "cli", "`--set run.seed.x=1`", sets("run.seed.x=1"), "run.seed is a value, not a section"),
    Case("cli-out-is-file", "cli", "`--out` that is a file",
         lambda tmp: ["run", write_cfg(tmp, base(tmp)), "--out", write_cfg(tmp, "x", "file.txt")], "is a file, not a directory"),
    Case("cli-out-under-file", "cli", "`--out` below a file", unwritable_parent, "cannot create run directory"),
    Case("cli-out-holds-run", "cli", "`--out` of a run that has training state",
         lambda tmp: ["run", write_cfg(tmp, base(tmp)), "--out", str(run_dir_with_state(tmp))], "already holds a run; continue it"),
    Case("cli-resume-edited-config", "cli", "config.yaml edited by hand under a training state",
         lambda tmp: ["run", "--resume", str(run_dir_with_state(tmp, edit=True))],
         "config.yaml was edited after training started (course.0.epochs: 1 -> 3)"),
    Case("cli-resume-applied-config-missing", "cli", "`.config.applied.yaml` deleted under a training state",
         lambda tmp: ["run", "--resume", str(_without_applied(run_dir_with_state(tmp)))],
         ".config.applied.yaml is missing (a copy without hidden files?)"),
    Case("cli-out-not-a-run-dir", "cli", "`--out` of a folder holding other files",
         lambda tmp: ["run", write_cfg(tmp, base(tmp)), "--out", str(tmp)],
         "already holds files and is not a curridistill run directory"),
    Case("cli-tune-no-space", "cli", "`tune` on a config without a tune section",
         lambda tmp: ["tune", write_cfg(tmp, base(tmp)), "--out", str(tmp / "t")], "has no tune section"),
    Case("cli-tune-zero-trials", "cli", "`tune --trials 0`",
         lambda tmp: ["tune", write_cfg(tmp, base(tmp)), "--trials", "0"], "--trials 0: give at least 1 trial"),
]


def _bytes(tmp: Path, data: bytes) -> str:
    (tmp / "c.yaml").write_bytes(data)
    return str(tmp / "c.yaml")


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _fitnet_cfg(tmp: Path) -> str:
    cfg = base(tmp)
    _fitnet("stage9")(cfg, tmp)
    return write_cfg(tmp, cfg)


def _no_spec(tmp: Path) -> Path:
    ck = checkpoint(tmp)
    ck.with_suffix(".json").unlink()
    return ck


def _spec_edit(tmp: Path, fn) -> Path:
    ck = checkpoint(tmp)
    edit_spec(ck, fn)
    return ck


def _spec_text(tmp: Path, text: str) -> Path:
    ck = checkpoint(tmp)
    ck.with_suffix(".json").write_text(text)
    return ck


def run_case(case: Case, tmp: Path, capsys) -> tuple[int, str, str]:
    """Run one case through ``cli.main``; returns (exit code, stdout, stderr)."""
    from curridistill import cli

    argv = case.make(tmp)
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse errors exit through _Parser.error
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def normalize(text: str, tmp: Path) -> str:
    return text.replace(str(tmp), "<tmp>").strip()
