"""A checkpoint's spec (NAME.json) and weights are data: a damaged or crafted field, a factory that fails on the
spec's kwargs, or NaN/inf weights give one line naming the file and what is wrong, exit code 2, through
``cli.main`` in-process. Valid specs (the committed teachers, what save_model writes, unknown extra keys) load as
before. One test case per input."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from curridistill.models.checkpoint import load_model, read_spec, save_model
from curridistill.models.registry import build_model
from tests.helpers import REPO, run_main
from tests.trust.catalogue import checkpoint, edit_spec, spec


def samples(tmp: Path) -> str:
    np.save(tmp / "x.npy", np.zeros((2, 8, 8), np.uint8))
    return str(tmp / "x.npy")


def assert_one_line(code: int, out: str, err: str, expect: str) -> None:
    assert code == 2, f"exit {code}; stderr: {err}"
    assert "Traceback" not in err and "Traceback" not in out
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and expect in lines[0], lines[0]


SPEC_CASES = [  # (id, fields set in ck.json, what the one line says after "<tmp>/ck.json")
    ("classes-too-short", {"classes": ["a", "b"]}, ": 'classes' names 2 classes but num_classes is 10"),
    ("classes-dict", {"classes": {"a": 1}}, ": 'classes' is {'a': 1}, not a list of class names"),
    ("classes-int", {"classes": 5}, ": 'classes' is 5, not a list of class names"),
    ("classes-string", {"classes": "abcdefghij"}, ": 'classes' is 'abcdefghij', not a list of class names"),
    ("input-shape-int", {"input_shape": 5}, ": 'input_shape' is 5, not a list of positive integers"),
    ("input-shape-empty", {"input_shape": []}, ": 'input_shape' is [], not a list of positive integers"),
    ("input-shape-negative", {"input_shape": [1, -8, 8]}, ": 'input_shape' is [1, -8, 8], not a list of positive"),
    ("input-shape-string", {"input_shape": "abc"}, ": 'input_shape' is 'abc', not a list of positive integers"),
    ("in-channels-negative", {"in_channels": -1}, ": 'in_channels' is -1, not an integer of at least 1"),
    ("in-channels-not-the-input-shape", {"in_channels": 3}, ": 'in_channels' is 3 but input_shape [1, 8, 8] has 1"),
    ("mean-string", {"mean": "abc"}, ": 'mean' is 'abc', not a list of finite numbers"),
    ("mean-one-per-rgb-channel", {"mean": [0.1, 0.2, 0.3], "std": [1, 1, 1]},
     ": 'mean' and 'std' hold 3 entries but input_shape [1, 8, 8] has 1 channels"),
    ("mean-std-lengths-differ", {"std": [0.3, 0.3]}, ": 'mean' has 1 entries and 'std' 2"),
    ("std-nan-string", {"std": ["NaN"]}, ": 'std' is ['NaN'], not a list of positive finite numbers"),
    ("std-nan", {"std": [float("nan")]}, ": 'std' is [nan], not a list of positive finite numbers"),
    ("std-zero", {"std": [0.0]}, ": 'std' is [0.0], not a list of positive finite numbers"),
    ("std-negative", {"std": [-0.5]}, ": 'std' is [-0.5], not a list of positive finite numbers"),
    ("normalize-string", {"normalize": "no"}, ": 'normalize' is 'no', not true or false"),
    ("structure-string", {"structure": "x"}, ": 'structure' is 'x', not a JSON object of layer widths"),
    ("structure-negative-width", {"structure": {"fc": {"in_features": 16, "out_features": -3}}},
     ": 'structure' is {'fc': {'in_features': 16, 'out_features': -3}}, not a JSON object of layer widths"),
    ("data-string", {"data": "x"}, ": 'data' is 'x', not a JSON object (the data settings)"),
    ("object-not-a-name", {"object": 5}, ": 'object' is 5, not a class name"),
]


@pytest.mark.parametrize("fields, expect", [c[1:] for c in SPEC_CASES], ids=[c[0] for c in SPEC_CASES])
def test_a_bad_spec_field_is_one_line_naming_the_file_and_field(fields, expect, tmp_path, capsys):
    ck = checkpoint(tmp_path, **fields)
    code, out, err = run_main(["predict", str(ck), samples(tmp_path)], capsys)
    assert_one_line(code, out, err, f"{ck.with_suffix('.json')}{expect}")
    assert err.rstrip().endswith("; restore the file saved with the weights") and out == ""


@pytest.mark.parametrize("fields", [{"std": [0.0]}, {"data": "x"}], ids=["std-zero", "data-string"])
def test_eval_refuses_a_bad_spec_field_too(fields, tmp_path, capsys):
    ck = checkpoint(tmp_path, **fields)
    code, out, err = run_main(["eval", str(ck)], capsys)
    assert_one_line(code, out, err, f"{ck.with_suffix('.json')}: '{next(iter(fields))}' is")


@pytest.mark.parametrize("kwargs, error", [
    ({"hidden": [16], "image_size": 8, "dropout": 5}, "ValueError: dropout probability"),  # nn.Dropout's own check
    ({"embed_dim": 8, "filters": 4, "kernel_sizes": [2], "vocab_size": -3, "pad_id": 0}, "RuntimeError"),
], ids=["mlp-dropout-5", "text-cnn-negative-vocab"])
def test_a_factory_failing_on_the_spec_kwargs_is_one_line_naming_checkpoint_and_model(kwargs, error, tmp_path, capsys):
    name = "mlp" if "hidden" in kwargs else "text-cnn"
    ck = checkpoint(tmp_path)
    edit_spec(ck, lambda d: d.update(name=name, kwargs=kwargs))
    code, out, err = run_main(["predict", str(ck), samples(tmp_path)], capsys)
    assert_one_line(code, out, err, f"{ck}: cannot build model {name!r} from the kwargs in {ck.with_suffix('.json')} ({error}")


# ------------------------------------------------------------------------------ non-finite weights
def damaged_checkpoint(tmp: Path, tensor: str, value: float) -> Path:
    """A cnn checkpoint whose ``tensor`` holds ``value`` in one entry, written by save_model (its sha256 matches)."""
    torch.manual_seed(0)
    model = build_model("cnn", 10, 1, {"widths": [8, 16]})
    with torch.no_grad():
        {**dict(model.named_parameters()), **dict(model.named_buffers())}[tensor].view(-1)[0] = value
    return save_model(tmp / "ck.safetensors", model, spec(name="cnn", kwargs={"widths": [8, 16]}))


@pytest.mark.parametrize("command", ["eval", "predict", "export"])
@pytest.mark.parametrize("tensor, value", [("stage1.0.weight", float("nan")), ("fc.bias", float("inf")),
                                           ("stage2.1.running_var", float("inf"))],
                         ids=["nan-parameter", "inf-parameter", "inf-buffer"])
def test_non_finite_weights_are_refused_naming_the_tensor(command, tensor, value, tmp_path, capsys):
    ck = damaged_checkpoint(tmp_path, tensor, value)
    argv = {"eval": ["eval", str(ck)], "predict": ["predict", str(ck), samples(tmp_path)],
            "export": ["export", str(ck), "--format", "torchscript", "--out", str(tmp_path / "m.pt")]}[command]
    code, out, err = run_main(argv, capsys)
    assert_one_line(code, out, err, f"{ck}: tensor {tensor!r} holds NaN or infinite values")
    assert not (tmp_path / "m.pt").exists()


# ------------------------------------------------------------------------------ valid specs load as before
@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "teachers").glob("*.json")))
def test_committed_teacher_specs_pass(name):
    path = REPO / "teachers" / f"{name}.safetensors"
    assert read_spec(path) == json.loads(path.with_suffix(".json").read_text())


def test_an_older_spec_with_unknown_keys_and_nulls_loads(tmp_path):
    def older(d: dict) -> None:  # no statistics or input shape; a key this version does not know; null classes
        for key in ("mean", "std", "input_shape"):
            del d[key]
        d.update(note="kept as written", classes=None)

    ck = checkpoint(tmp_path)
    edit_spec(ck, older)
    model, loaded = load_model(ck)
    assert loaded["note"] == "kept as written" and "mean" not in loaded
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
