"""The Python API on the caller's own objects: distill(modules, tensors) -> report + trained student;
evaluate / predict on a module or its checkpoint; one-line errors for bad objects."""
import json

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import Dataset, TensorDataset

import curridistill
from curridistill import MODELS, UserError, distill, evaluate, load_weights, predict
from curridistill.objects import UserModel
from tests.helpers import cuda_marks

FAST_EVAL = {"latency_runs": 2, "throughput_runs": 1, "throughput_batch": 16}
COURSE = [{"name": "kd", "epochs": 2, "loss": {"ce": 0.1, "kd": {"weight": 0.9, "temperature": 4}},
           "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9}}]


class TinyNet(nn.Module):
    """A user's own model: not in the zoo, features in, logits out."""

    def __init__(self, hidden: int = 8, num_classes: int = 10, in_features: int = 64):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.head(self.body(x.flatten(1)))


class PairDataset(Dataset):
    """A map-style Dataset of (x, label) items, as people write them."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


class XOnly(PairDataset):
    """A Dataset whose items lack the label."""

    def __getitem__(self, i):
        return self.x[i]


def digits():
    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)  # (1797, 64) in [0, 1]
    y = torch.tensor(d.target, dtype=torch.int64)
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


def options(tmp):
    return {"run": {"out": str(tmp / "runs"), "cache_dir": str(tmp / "cache"), "device": "cpu", "threads": 1,
                    "tensorboard": False, "eval": FAST_EVAL}}


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distill")
    train, test = digits()
    teacher, student = TinyNet(hidden=32), TinyNet()
    before = {"teacher": state(teacher), "student": state(student)}
    result = distill(student, teacher=teacher, train=train, test=test, course=COURSE, out=tmp / "run", **options(tmp))
    return result, teacher, student, before, test


def test_distill_returns_report_and_trained_student(distilled):
    result, teacher, student, before, test = distilled
    assert {"teacher", "baseline", "student", "comparison"} <= set(result.report)
    assert result.report == json.loads((result.run_dir / "report.json").read_text())
    assert result["student"]["accuracy"] > 0.5  # 2 epochs on digits
    assert isinstance(result.student, TinyNet) and isinstance(result.teacher, TinyNet)
    assert not result.student.training
    # the caller's modules were copied, never trained in place
    assert result.student is not student and result.teacher is not teacher
    assert same(state(student), before["student"]) and same(state(teacher), before["teacher"])
    assert not same(state(result.student), before["student"])  # it learned
    assert result.baseline is not result.student
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {r["model"] for r in records} == {"teacher", "baseline", "student"}
    spec = json.loads((result.run_dir / "student" / "model.json").read_text())
    assert spec["name"] == "object/student" and spec["object"] == f"{__name__}.TinyNet"
    assert spec["normalize"] is False  # in-memory data are fed as given: the student takes the caller's tensors


def test_evaluate_and_predict_the_returned_module(distilled):
    result, _, _, _, (x_test, y_test) = distilled
    metrics = evaluate(result.student, (x_test, y_test), eval=FAST_EVAL)
    assert metrics["accuracy"] == pytest.approx(result["student"]["accuracy"])  # the same numbers as the report
    assert {"accuracy", "top5", "f1_macro", "loss", "confusion", "params", "latency_ms"} <= set(metrics)
    assert evaluate(result.student, (x_test.numpy(), y_test.numpy()), eval=FAST_EVAL)["accuracy"] == metrics["accuracy"]
    rows = predict(result.student, x_test[:5], top_k=3)
    assert len(rows) == 5 and all(len(r["top_k"]) == 3 for r in rows)
    with torch.no_grad():
        assert [r["label"] for r in rows] == result.student(x_test[:5]).argmax(1).tolist()


@pytest.mark.parametrize("call", ["evaluate", "predict"])
@pytest.mark.parametrize("device", [None, "cpu", pytest.param("cuda", marks=cuda_marks())])
def test_the_callers_module_is_left_where_and_as_it_was(call, device):
    """A module in training, on its device: evaluate/predict use it there (device None) or on a copy, and hand it
    back still on that device and still in training mode."""
    x, y = torch.rand(12, 64), torch.arange(12) % 10
    model = TinyNet()
    home = next(model.parameters()).device
    if call == "evaluate":
        assert 0 <= evaluate(model, (x, y), device=device, eval=FAST_EVAL)["accuracy"] <= 1
    else:
        rows = predict(model, x, device=device)
        with torch.no_grad():
            assert [r["label"] for r in rows] == model(x).argmax(1).tolist()
    assert model.training and next(model.parameters()).device == home


@pytest.mark.parametrize("call", [pytest.param(c, marks=cuda_marks()) for c in ("evaluate", "predict")])
def test_a_module_on_the_gpu_is_used_there_and_stays(call):
    x, y = torch.rand(12, 64), torch.arange(12) % 10
    model = TinyNet().cuda()
    (evaluate(model, (x, y), eval=FAST_EVAL) if call == "evaluate" else predict(model, x))
    assert next(model.parameters()).is_cuda and model.training


def test_checkpoint_of_a_module_is_not_code(distilled, monkeypatch):
    result, _, _, _, (x_test, y_test) = distilled
    path = result.run_dir / "student" / "model.safetensors"
    with pytest.raises(UserError, match="load_weights") as exc:
        evaluate(path, (x_test, y_test), eval=FAST_EVAL)
    assert "\n" not in str(exc.value)
    # the weights load into the caller's own module...
    mine = load_weights(TinyNet(), path)
    assert evaluate(mine, (x_test, y_test), eval=FAST_EVAL)["accuracy"] == pytest.approx(result["student"]["accuracy"])
    # ...and by name once the class is registered
    monkeypatch.setitem(MODELS._items, "tinynet", TinyNet)
    metrics = evaluate(path, (x_test, y_test), eval=FAST_EVAL)
    assert metrics["accuracy"] == pytest.approx(result["student"]["accuracy"])
    rows = predict(path, x_test[:4].numpy(), top_k=2)
    assert [r["label"] for r in rows] == [r["label"] for r in predict(result.student, x_test[:4])]


def test_copies_are_fresh_objects_with_equal_weights():
    module = TinyNet()
    a, b = UserModel("student", module).build(), UserModel("student", module).build()
    assert a is not b and a is not module and same(state(a), state(b))
    shared = TinyNet()  # a factory that hands out one object: still two models, and the object stays untouched
    user = UserModel("student", lambda: shared)
    a, b = user.build(), user.build()
    assert a is not b and a is not shared and same(state(a), state(b))


def test_factory_dataset_and_trained_teacher(tmp_path):
    (x, y), test = digits()
    teacher = TinyNet(hidden=32)
    calls = []

    def make_student():
        calls.append(1)
        torch.manual_seed(0)
        return TinyNet()

    course = [{**COURSE[0], "epochs": 1}]
    result = distill(make_student, teacher=teacher, teacher_trained=True, train=PairDataset(x[:1200], y[:1200]),
                     val=TensorDataset(x[1200:], y[1200:]), test=TensorDataset(*test), course=course,
                     out=tmp_path / "run", baseline={"enabled": False}, **options(tmp_path))
    assert calls and result.baseline is None and "baseline" not in result.report
    assert result.report["data"]["train"] == 1200 and result.report["data"]["val"] == 200
    assert result.report["teacher"]["reused_from"] == "caller's module"
    assert same(state(result.teacher), state(teacher))  # used as it is: not trained
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {r["model"] for r in records} == {"student"}


def test_val_is_held_out_of_train_when_absent(tmp_path):
    train, test = digits()
    result = distill(TinyNet, train=train, test=test, course=[{"epochs": 1, "loss": {"ce": 1}}],
                     baseline={"enabled": False}, data={"val_size": 0.2}, out=tmp_path / "run", **options(tmp_path))
    assert result.report["data"]["train"] == 1120 and result.report["data"]["val"] == 280
    assert "teacher" not in result.report


@pytest.mark.parametrize("case, match", [
    ("lengths", "x has 1400 samples but y has shape"),
    ("float_labels", "integer class indices"),
    ("not_module", "pass a torch.nn.Module"),
    ("factory_returns_other", "not a torch.nn.Module"),
    ("no_test", "give test data"),
    ("bad_item", "each item must be"),
    ("unknown_option", "unknown option"),
    ("trained_without_teacher", "no teacher was given"),
])
def test_bad_inputs_give_one_line(tmp_path, case, match):
    (x, y), test = digits()
    kwargs = {"train": (x, y), "test": test, "course": [{"epochs": 1, "loss": {"ce": 1}}], **options(tmp_path),
              "out": tmp_path / "run"}
    student = TinyNet()
    if case == "lengths":
        kwargs["train"] = (x, y[:-1])
    elif case == "float_labels":
        kwargs["train"] = (x, y.float())
    elif case == "not_module":
        student = 42
    elif case == "factory_returns_other":
        student = lambda: "mlp"  # noqa: E731
    elif case == "no_test":
        kwargs["test"] = None
    elif case == "bad_item":
        kwargs["train"] = XOnly(x[:3], y[:3])
    elif case == "unknown_option":
        kwargs["runn"] = {}
    elif case == "trained_without_teacher":
        kwargs["teacher_trained"] = True
    with pytest.raises(UserError, match=match) as exc:
        distill(student, **kwargs)
    assert "\n" not in str(exc.value)


def test_public_surface():
    assert {"distill", "evaluate", "predict", "run", "Result", "UserError"} <= set(curridistill.__all__)
    assert all(hasattr(curridistill, name) for name in curridistill.__all__)
