"""Friction a new user met (issue 19): listings, help examples, eval data, report, wide output, docs, cache keys.

CLI checks run in-process through ``curridistill.cli.main`` with tiny data (digits, a few generated images)."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import yaml

from curridistill.catalog import listing
from curridistill.cli import build_parser, main
from curridistill.config import DataConfig
from curridistill.data.digits import load_digits
from curridistill.data.pipeline import Pipeline, data_fingerprint, eval_data_config, load_splits, load_test_split
from curridistill.errors import UserError
from curridistill.io import write_json
from curridistill.models import build_model
from curridistill.models.checkpoint import save_model
from curridistill.report import write_report
from curridistill.report.plots import train_ce
from curridistill.report.render import _fmt_selected
from tests.helpers import REPO, write_image_folder

README = (REPO / "README.md").read_text(encoding="utf-8")


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _row(out: str, name: str) -> str:
    """The table row (one line: output that is not a terminal is never wrapped) starting with ``name``."""
    return next(line for line in out.splitlines() if re.match(rf"\W*{re.escape(name)}\s", line))


@pytest.fixture
def folder(tmp_path):
    """An image folder with test/ alone: 3 classes x 4 RGB images of 12x12 (one bright channel per class)."""
    return write_image_folder(tmp_path / "new", {"test": 4})


# ------------------------------------------------------------------------ 1. list datasets / models, mlp in_features
@pytest.mark.parametrize("dataset, option", [
    ("image-folder", "path=None"), ("image-folder", "image_size=32"), ("image-folder", "grayscale=False"),
    ("image-folder", "test_fraction=0.2"), ("image-folder", "stream=False"), ("tensors", "test_path=None"),
    ("tensors", "layout=auto"), ("cifar100", "labels=fine"),
])
def test_list_datasets_shows_each_loaders_options(capsys, dataset, option):
    code, out, _ = _cli(capsys, "list", "datasets")
    assert code == 0 and option in _row(out, dataset)


def test_list_datasets_help_is_a_whole_sentence(capsys):
    _, out, _ = _cli(capsys, "list", "datasets")
    assert "DataLoader workers" in _row(out, "image-folder")  # the docstring's first paragraph, not its first line
    assert "bundled digits" in _row(out, "digits")  # a loader without a docstring: its module's


@pytest.fixture(scope="module")
def model_rows() -> dict[str, dict]:
    return {row["name"]: row for row in listing("models", "1,8,8")}  # builds every model once


@pytest.mark.parametrize("model, kwarg", [("mlp", "in_features=None"), ("mlp", "hidden=[64]"), ("cnn", "widths=[32, 64]"),
                                          ("resnet_cifar", "depth=20"), ("wrn", "widen_factor=1"), ("resnet20", "-")])
def test_list_models_shows_kwargs(model_rows, model, kwarg):
    assert kwarg in model_rows[model]["kwargs (model.kwargs)"]


def test_list_models_of_feature_vectors(capsys):
    code, out, _ = _cli(capsys, "list", "models", "--input-size", "20")
    row = _row(out, "mlp")
    assert code == 0 and "n/a" not in row and "in_features=None" in row  # an mlp on 20 features: measured


@pytest.mark.parametrize("kwargs, inputs", [({"in_features": 20}, (4, 20)), ({"in_features": 20, "image_size": 3}, (4, 20)),
                                            ({"image_size": 8}, (4, 1, 8, 8)), ({"image_size": [6, 4]}, (4, 1, 6, 4))])
def test_mlp_input_width(kwargs, inputs):
    model = build_model("mlp", 3, 1, {"hidden": [8], **kwargs})
    assert model(torch.rand(inputs)).shape == (4, 3)


@pytest.mark.parametrize("kwargs, words", [({"in_features": 0}, "in_features must be a positive int"),
                                           ({"in_features": "20"}, "in_features must be a positive int"),
                                           ({"image_size": [8, 8, 8]}, "image_size must be a positive int or [height, width]")])
def test_mlp_bad_input_width_is_one_line(kwargs, words):
    with pytest.raises(UserError) as exc:
        build_model("mlp", 3, 1, kwargs, where="student")
    assert words in str(exc.value) and "student.kwargs" in str(exc.value) and "\n" not in str(exc.value)


def test_tabular_config_with_in_features_validates(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(90, 20)).astype(np.float32), np.arange(90) % 3
    np.savez(tmp_path / "tab.npz", x=x, y=y)
    cfg = {"data": {"name": "tensors", "options": {"path": str(tmp_path / "tab.npz"), "test_fraction": 0.2}},
           "teacher": {"name": "mlp", "kwargs": {"in_features": 20, "hidden": [32]}},
           "student": {"name": "mlp", "kwargs": {"in_features": 20, "hidden": [8]}},
           "course": [{"epochs": 1, "loss": {"ce": 0.5, "kd": 0.5}}], "run": {"device": "cpu"}}
    (tmp_path / "tab.yaml").write_text(yaml.safe_dump(cfg))
    code, out, err = _cli(capsys, "validate", str(tmp_path / "tab.yaml"))  # builds and probes every model
    assert code == 0, err
    assert "valid" in out


# ------------------------------------------------------------------------------------------ 2. eval on a new folder
def test_image_folder_test_split_alone(folder):
    cfg = DataConfig(name="image-folder", options={"path": str(folder), "image_size": 8})
    splits = load_test_split(cfg, classes=["class0", "class1", "class2", "class3"])  # the model knows a 4th class
    assert len(splits.test) == 12 and splits.test.classes == ["class0", "class1", "class2", "class3"]
    assert splits.input_shape == (3, 8, 8) and splits.num_classes == 4
    assert sorted(splits.test.y.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    with pytest.raises(UserError, match="has test/ but no train/"):  # training still needs train/
        load_splits(cfg)


def test_test_split_of_other_data_is_the_usual_one():
    splits = load_test_split(DataConfig(name="digits"), stats=((0.5,), (0.25,)))
    assert len(splits.test) == 359 and splits.mean == (0.5,) and splits.std == (0.25,)


@pytest.mark.parametrize("input_shape, overrides, image_size, grayscale", [
    ([3, 48, 48], [], [48, 48], False),  # the size the model was trained at, not the loader's default 32
    ([1, 20, 30], [], [20, 30], True),
    ([3, 48, 48], ["data.options.image_size=64"], 64, False),  # an override wins
    (None, [], None, None),  # no model shape: the loader's defaults
])
def test_eval_data_config_fits_the_model(input_shape, overrides, image_size, grayscale):
    cfg = eval_data_config("image-folder", saved={"name": "cifar10", "normalize": False}, root="/data", overrides=overrides,
                           input_shape=input_shape, eval_batch_size=32)
    assert cfg.name == "image-folder" and cfg.root == "/data" and cfg.eval_batch_size == 32 and cfg.normalize is False
    assert cfg.options.get("image_size") == image_size and cfg.options.get("grayscale") == grayscale


def test_eval_data_config_of_the_saved_data():
    saved = {"name": "image-folder", "options": {"path": "flowers", "image_size": [48, 48]}, "normalize": False}
    cfg = eval_data_config(None, saved=saved, overrides=["data.options.path=new_flowers"])
    assert cfg.options == {"path": "new_flowers", "image_size": [48, 48]} and cfg.normalize is False


@pytest.mark.parametrize("overrides, words", [(["run.seed=1"], "evaluation takes data settings only"),
                                              (["data.batch_sise=3"], "unknown key 'batch_sise'; did you mean 'batch_size'?"),
                                              (["data.eval_batch_size=0"], "eval_batch_size")])
def test_eval_data_config_bad_overrides_are_one_line(overrides, words):
    with pytest.raises(UserError) as exc:
        eval_data_config("digits", overrides=overrides)
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_eval_set_points_a_trained_model_at_a_new_test_only_folder(folder, tmp_path, capsys):
    """`eval --set data.options.path=NEW`: only test/ is needed, and the model's saved image size (8x8) is kept
    although the folder holds 12x12 images (the MLP's first layer takes exactly 3*8*8 inputs: a wrong size fails)."""
    spec = {"name": "mlp", "kwargs": {"hidden": [4], "image_size": 8}, "num_classes": 3, "in_channels": 3,
            "input_shape": [3, 8, 8], "classes": ["class0", "class1", "class2"], "mean": [0.5] * 3, "std": [0.25] * 3,
            "normalize": True, "data": {"name": "image-folder", "options": {"path": str(tmp_path / "gone"), "image_size": 8}}}
    path = save_model(tmp_path / "model.safetensors", build_model("mlp", 3, 3, spec["kwargs"]), spec)
    code, out, err = _cli(capsys, "eval", str(path), "--set", f"data.options.path={folder}", "--json", str(tmp_path / "m.json"))
    assert code == 0, err
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["samples"] == 12 and result["data"] == "image-folder" and len(result["confusion"]) == 3
    code, _, err = _cli(capsys, "eval", str(path), "--set", "run.seed=1")  # only data.* may change
    assert code == 2 and err.count("\n") == 1 and "data." in err


def test_new_folder_evaluates_with_the_model_pipeline(folder):
    cfg = eval_data_config("image-folder", overrides=[f"data.options.path={folder}"], input_shape=[3, 12, 12])
    pipeline = Pipeline(load_test_split(cfg, classes=["class0", "class1", "class2"]), cfg, torch.device("cpu"))
    x, y = next(pipeline.eval_batches("test"))
    assert x.shape == (12, 3, 12, 12) and y.tolist() == [0] * 4 + [1] * 4 + [2] * 4


# ------------------------------------------------------------------------------------------------------- 3. report
def _entry(k: int) -> dict:
    return {"accuracy": 0.9, "top5": 1.0, "f1_macro": 0.9, "confusion": np.eye(k, dtype=int).tolist(),
            "params": 1000, "latency_ms": 0.1, "selected": {"lesson": 1, "epoch": 4, "val_accuracy": 0.875}}


@pytest.mark.parametrize("k, shown", [(3, False), (5, False), (10, True)])
def test_report_top5_only_with_more_than_5_classes(tmp_path, k, shown):
    write_json(tmp_path / "report.json", {"student": _entry(k), "classes": [str(i) for i in range(k)]})
    text = write_report(tmp_path)["report.md"].read_text(encoding="utf-8")
    assert ("top-5 accuracy" in text) is shown
    assert "| selected epoch | epoch 4, lesson 1 (val accuracy 0.8750) |" in text and "{" not in text


@pytest.mark.parametrize("value, text", [({"lesson": 0, "epoch": 14, "val_accuracy": 0.8448}, "epoch 14, lesson 0 (val accuracy 0.8448)"),
                                         ({"epoch": 3}, "epoch 3"), (7, "7"), (None, "–")])
def test_selected_epoch_is_formatted(value, text):
    assert _fmt_selected(value) == text


@pytest.mark.parametrize("record, ce", [
    ({"train_loss": 3.0, "losses": {"ce": 0.4, "kd": 2.6}, "weights": {"ce": 0.1, "kd": 0.9}}, 0.4),  # the unweighted CE
    ({"train_loss": 0.7, "weights": {"ce": 1.0}}, 0.7),  # CE alone at weight 1: the objective is the CE
    ({"train_loss": 2.0, "losses": {"kd": 2.0}, "weights": {"kd": 1.0}}, None),  # no CE term: not drawn
    ({"train_loss": 0.5, "weights": {"ce": 0.5}}, None),
])
def test_curves_plot_comparable_training_ce(record, ce):
    assert train_ce(record) == ce


def test_report_confusion_matrices_in_one_figure(tmp_path):
    write_json(tmp_path / "report.json", {n: _entry(3) for n in ("teacher", "baseline", "student")} | {"classes": ["a", "b", "c"]})
    paths = write_report(tmp_path)
    assert [k for k in paths if k.startswith("confusion")] == ["confusion"]


def test_eval_omits_top5_for_few_classes(tmp_path, capsys):
    torch.manual_seed(0)
    model = build_model("mlp", 3, 1, {"hidden": [8], "image_size": 8})
    spec = {"name": "mlp", "kwargs": {"hidden": [8], "image_size": 8}, "num_classes": 3, "in_channels": 1,
            "input_shape": [1, 8, 8], "classes": ["0", "1", "2"], "mean": [0.3], "std": [0.4], "normalize": True,
            "data": {"name": "digits", "classes": ["0", "1", "2"]}}
    path = save_model(tmp_path / "model.safetensors", model, spec)
    code, out, err = _cli(capsys, "eval", str(path), "--json", str(tmp_path / "m.json"))
    assert code == 0, err
    assert "accuracy" in out and ", top5 " not in out
    assert json.loads((tmp_path / "m.json").read_text())["samples"] == 107


# ------------------------------------------------------------------------------------------- 4. wide, unwrapped output
def test_compare_keeps_long_run_names_on_one_line(tmp_path, capsys):
    names = ["quickstart-kd-temperature-sweep-20250101-120000", "quickstart-dkd-temperature-sweep-20250101-130000"]
    for name in names:
        write_json(tmp_path / name / "report.json", {"student": {"accuracy": 0.9, "params": 1000},
                                                     "baseline": {"accuracy": 0.88, "params": 1000}})
    code, out, _ = _cli(capsys, "compare", *(str(tmp_path / n) for n in names))
    assert code == 0
    for name in names:
        assert name in out  # whole, not folded across rows


# ------------------------------------------------------------------------------------------- 5. help, validate, docs
def _subcommands() -> list[str]:
    subs = next(a for a in build_parser()._actions if a.dest == "command")
    return sorted(subs.choices)


@pytest.mark.parametrize("command", _subcommands())
def test_help_examples_name_folders_that_exist(capsys, command):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    example = capsys.readouterr().out.split("example:", 1)[1]
    made = set(re.findall(r"--out (runs/[\w.-]+)", example))
    for path in re.findall(r"(?<![\w/.])runs/[\w.-]+", example):  # a run folder the example makes, or a pattern
        assert path in made or "YYYYmmdd" in path or re.search(r"-\d{8}-\d{6}$", path), (command, path)


def test_validate_print_shows_the_effective_root(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CURRIDISTILL_DATA", str(tmp_path))
    code, out, _ = _cli(capsys, "validate", str(REPO / "configs" / "quickstart.yaml"), "--static", "--print")
    assert code == 0 and out.startswith("# data.root: from $CURRIDISTILL_DATA")
    assert yaml.safe_load(out)["data"]["root"] == str(tmp_path)
    monkeypatch.delenv("CURRIDISTILL_DATA")
    code, out, _ = _cli(capsys, "validate", str(REPO / "configs" / "quickstart.yaml"), "--static", "--print")
    assert yaml.safe_load(out)["data"]["root"] is None


@pytest.mark.parametrize("documented", [
    "eval_batch_size:", "normalize:", "compile:", "channels_last:", "eval:", "latency_runs:", "throughput_batch:",
    "throughput_runs:", "classes:", "cache_features:", "tensorboard:",
    "`image_size`", "`grayscale`", "`test_fraction`", "`stream: true`", "`test_path`", "`layout:", "{in_features: D}",
])
def test_readme_config_reference_documents(documented):
    reference = README.split("## Config reference", 1)[1].split("\n## ", 1)[0]
    assert documented in reference


def test_digits_test_set_size_agrees_with_readme():
    _, test = load_digits()
    assert len(test) == 359
    assert "360-image" not in README and "359-image test set" in README


# --------------------------------------------------------------------------------- 6. cache keys and read options
@pytest.fixture
def train_folder(tmp_path):
    return write_image_folder(tmp_path / "imgs", {"train": 6, "test": 2}, classes=2, size=10, seed=1, bright=False)


@pytest.mark.parametrize("changed, same", [({"stream": True}, True), ({"workers": 1}, True),
                                           ({"stream": True, "workers": 3}, True), ({"image_size": 6}, False),
                                           ({"grayscale": True}, False)])
def test_data_fingerprint_ignores_how_data_are_read(train_folder, changed, same):
    base = DataConfig(name="image-folder", options={"path": str(train_folder), "image_size": 8}, val_size=0.25)
    other = DataConfig(name="image-folder", options={**base.options, **changed}, val_size=0.25)
    a, b = data_fingerprint(load_splits(base), base), data_fingerprint(load_splits(other), other)
    assert (a == b) is same
