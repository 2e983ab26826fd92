"""Pruning: channels are really removed (fewer parameters, the model still runs, the checkpoint rebuilds
it), steps are targets relative to the unpruned model, unstructured zeros stay zero while training, and a
course with prune lessons recovers accuracy by distillation on digits (and resumes exactly)."""
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from curridistill import cli
from curridistill.errors import UserError
from curridistill.models import build_model
from curridistill.models.checkpoint import load_model, save_model
from tests.helpers import tiny_config

tp = pytest.importorskip("torch_pruning")

from curridistill.compress.prune import (channel_amount, keep_zeros, prune, prune_unstructured,  # noqa: E402
                                         recalibrate_batchnorm, weight_sparsity)

MODELS = [("mlp", {"hidden": [32], "image_size": 8}, (1, 8, 8)), ("cnn", {"widths": [8, 16]}, (1, 8, 8)),
          ("resnet8", {}, (3, 32, 32)), ("mobilenetv2", {}, (3, 32, 32))]


def _spec(name, kwargs, shape):
    return {"name": name, "kwargs": kwargs, "num_classes": 10, "in_channels": shape[0], "input_shape": list(shape),
            "classes": [str(i) for i in range(10)], "mean": [0.5] * shape[0], "std": [0.25] * shape[0]}


@pytest.mark.parametrize("name,kwargs,shape", MODELS, ids=[m[0] for m in MODELS])
def test_channel_pruning_removes_parameters_and_checkpoint_rebuilds(tmp_path, name, kwargs, shape):
    torch.manual_seed(0)
    model = build_model(name, 10, shape[0], kwargs).eval()
    reference = build_model(name, 10, shape[0], kwargs)
    before = sum(p.numel() for p in model.parameters())
    x = torch.randn(3, *shape)
    prune(model, 0.5, x[:1], num_classes=10, reference=reference)
    after = sum(p.numel() for p in model.parameters())
    assert after < 0.6 * before  # half the channels of most layers: roughly a quarter of the weights remain
    assert channel_amount(model, reference, 10) == pytest.approx(0.5, abs=0.06)
    out = model.eval()(x)
    assert out.shape == (3, 10) and torch.isfinite(out).all()
    # a pruned checkpoint records its layer widths and loads back to the same outputs
    path = save_model(tmp_path / "pruned.safetensors", model, _spec(name, kwargs, shape))
    assert json.loads(path.with_suffix(".json").read_text())["structure"]
    loaded, _ = load_model(path)
    assert sum(p.numel() for p in loaded.parameters()) == after
    torch.testing.assert_close(loaded(x), out)


def test_unpruned_checkpoint_has_no_structure(tmp_path):
    model = build_model("cnn", 10, 1, {"widths": [8, 16]})
    path = save_model(tmp_path / "m.safetensors", model, _spec("cnn", {"widths": [8, 16]}, (1, 8, 8)))
    assert "structure" not in json.loads(path.with_suffix(".json").read_text())


def test_progressive_amounts_are_relative_to_the_unpruned_model():
    model = build_model("cnn", 10, 1, {"widths": [16, 32]})
    reference = build_model("cnn", 10, 1, {"widths": [16, 32]})
    x = torch.randn(1, 1, 8, 8)
    for target in (0.25, 0.5, 0.75):
        step = prune(model, target, x, 10, reference=reference)
        assert channel_amount(model, reference, 10) == pytest.approx(target, abs=0.05)
        assert step["step_ratio"] <= target
    with pytest.raises(UserError, match="not above the 0.7"):
        prune(model, 0.5, x, 10, reference=reference)


@pytest.mark.parametrize("importance", ["l2", "taylor", "random"])
def test_other_importances(importance):
    model = build_model("cnn", 10, 1, {"widths": [8, 16]})
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    grads = lambda m: nn.functional.cross_entropy(m(x), y).backward()  # noqa: E731
    prune(model, 0.5, x[:1], 10, importance=importance, gradients=grads)
    assert model(x).shape == (16, 10)
    assert all(p.grad is None for p in model.parameters())


def test_round_to_keeps_multiples_of_the_block_and_may_remove_more():
    reference = build_model("resnet20", 10, 3, {})
    widths = {}
    for multiple in (None, 8):
        model = build_model("resnet20", 10, 3, {})
        prune(model, 0.3, torch.randn(1, 3, 32, 32), 10, reference=reference, round_to=multiple)
        widths[multiple] = sorted({m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)})
        assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert widths[None] == [11, 22, 44]  # 70% of 16, 32, 64 channels, rounded down
    assert widths[8] == [8, 16, 40]  # each rounded down to a multiple of 8


def test_global_scope_prunes_layers_unevenly_to_the_same_total():
    torch.manual_seed(0)
    model = build_model("resnet8", 10, 3, {})
    reference = build_model("resnet8", 10, 3, {})
    prune(model, 0.5, torch.randn(1, 3, 32, 32), 10, reference=reference, scope="global")
    assert channel_amount(model, reference, 10) == pytest.approx(0.5, abs=0.06)
    kept = {name: m.out_channels / dict(reference.named_modules())[name].out_channels
            for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert min(kept.values()) > 0 and len({round(v, 3) for v in kept.values()}) > 1  # not one ratio for all
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(UserError, match="prune.scope 'all'"):
        prune(model, 0.7, torch.randn(1, 3, 32, 32), 10, reference=reference, scope="all")


def test_batchnorm_statistics_are_re_estimated_from_the_batches():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
    model = nn.Sequential(conv, bn, nn.ReLU()).eval()
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    batches = [torch.randn(8, 3, 6, 6) * 2 + 1 for _ in range(3)]
    assert recalibrate_batchnorm(model, batches) == 1
    with torch.no_grad():
        seen = [conv(b) for b in batches]  # what the BatchNorm sees
    torch.testing.assert_close(bn.running_mean, torch.cat(seen).mean((0, 2, 3)))  # equal batches: the exact mean
    torch.testing.assert_close(bn.running_var, torch.stack([s.var((0, 2, 3)) for s in seen]).mean(0))
    assert not model.training and bn.momentum == 0.1  # eval mode and the momentum are as they were
    for k, v in weights.items():
        torch.testing.assert_close(model.state_dict()[k], v)  # learned weights untouched
    assert all(p.grad is None for p in model.parameters())
    mlp = build_model("mlp", 10, 1, {"hidden": [8], "image_size": 4})
    before = [p.clone() for p in mlp.state_dict().values()]
    assert recalibrate_batchnorm(mlp, [torch.randn(4, 1, 4, 4)]) == 0  # no BatchNorm: nothing to do
    assert all(torch.equal(a, b) for a, b in zip(before, mlp.state_dict().values()))


def test_unstructured_zeros_stay_zero_while_training():
    torch.manual_seed(0)
    model = build_model("mlp", 10, 1, {"hidden": [32], "image_size": 8})
    done = prune(model, 0.6, torch.randn(1, 1, 8, 8), 10, kind="unstructured")
    first = model.stage1[0].weight
    assert (first == 0).float().mean() > 0.5 and weight_sparsity(model) > 0.5
    zeros = first == 0
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(8, 1, 8, 8)), torch.randint(0, 10, (8,))).backward()
        opt.step()
    assert (model.stage1[0].weight[zeros] == 0).all()
    for h in done["hooks"]:
        h.remove()
    assert keep_zeros(nn.Linear(2, 2)) == []  # nothing zero, nothing hooked


def _prune_config(tmp_path, teacher="teacher", compile_mode=False):
    lesson = {"loss": {"ce": 0.1, "kd": {"weight": 0.9, "temperature": 4}},
              "optimizer": {"name": "sgd", "lr": 0.02, "momentum": 0.9}}
    cfg = tiny_config(
        tmp_path, epochs=4, student={"name": "cnn", "kwargs": {"widths": [8, 16]}},
        teacher={"name": "cnn", "kwargs": {"widths": [16, 32]}},
        baseline={"enabled": False},
        course=[{"name": "distill", "epochs": 4, **lesson, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}},
                {"name": "prune", "epochs": 3, "prune": {"amount": 0.5, "teacher": teacher}, **lesson}])
    cfg["run"]["compile"] = compile_mode
    return cfg


@pytest.mark.parametrize("teacher", ["teacher", "unpruned"])
def test_course_prunes_and_recovers_by_distillation(tmp_path, teacher):
    import yaml

    cfg = _prune_config(tmp_path, teacher)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert cli.main(["run", str(tmp_path / "c.yaml"), "--out", str(out), "--quiet", "--set", "run.tensorboard=false"]) == 0
    steps = json.loads((out / "student" / "prune.json").read_text())
    assert len(steps) == 1
    step = steps[0]
    assert step["pruned"]["params"] < 0.5 * step["before"]["params"]
    assert step["pruned"]["flops"] < step["before"]["flops"]
    assert step["recovered"]["val_accuracy"] > step["pruned"]["val_accuracy"]  # recovery raises accuracy
    assert step["recovery_teacher"] == teacher
    # BatchNorm statistics were re-estimated after the cut; the raw just-pruned accuracy is kept beside it
    assert step["pruned"]["recalibrated_batches"] >= 1 and 0 <= step["pruned"]["val_accuracy_raw"] <= 1
    assert "val BN re-estimated" in (out / "ship" / "compression.md").read_text()
    assert step["sparsity"] == pytest.approx(1 - step["pruned"]["params"] / step["before"]["params"], abs=0.01)
    report = json.loads((out / "report.json").read_text())
    assert report["student"]["params"] == step["pruned"]["params"]
    assert report["compression"]["rows"][0]["stage"] == "teacher"
    assert (out / "ship" / "compression.md").is_file() and (out / "ship" / "compression.png").is_file()
    # the teacher was not pruned, and the shipped student loads as its pruned self
    assert report["teacher"]["params"] > report["student"]["params"] * 4
    model, _ = load_model(out / "student" / "model.safetensors")
    assert sum(p.numel() for p in model.parameters()) == step["pruned"]["params"]


def test_prune_lesson_with_the_step_compiled_trains_like_eager(tmp_path):
    """run.compile=step compiles the step after the cut, so it traces the pruned widths."""
    import yaml

    runs = {}
    for mode in (False, "step"):
        cfg = _prune_config(tmp_path, compile_mode=mode)
        cfg["course"] = [{**cfg["course"][1], "epochs": 2, "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9}}]
        # ^ the prune lesson alone, from the initial weights
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
        out = tmp_path / str(mode)
        assert cli.main(["run", str(tmp_path / "c.yaml"), "--out", str(out), "--quiet", "--set", "run.tensorboard=false"]) == 0
        epochs = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["model"] == "student"]
        runs[mode] = (json.loads((out / "report.json").read_text())["student"], epochs)
    (eager, eager_epochs), (step, step_epochs) = runs[False], runs["step"]
    unpruned = sum(p.numel() for p in build_model("cnn", 10, 1, {"widths": [8, 16]}).parameters())
    assert step["params"] == eager["params"] < unpruned / 2
    # the first epoch's loss terms agree to rounding (a term computed differently, a weight or temperature baked
    # into the graph, would be off by far more); later, rounding compounds in this fast-moving training
    for term, value in eager_epochs[0]["losses"].items():
        assert step_epochs[0]["losses"][term] == pytest.approx(value, rel=5e-3), term
    assert min(eager["accuracy"], step["accuracy"]) > 0.3  # both learned (chance: 0.1)


def test_prune_lesson_resumes_exactly(tmp_path, capsys):
    import shutil

    import yaml

    cfg = _prune_config(tmp_path)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    args = ["--quiet", "--set", "run.tensorboard=false"]
    assert cli.main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "a"), *args]) == 0
    # killed after the first epoch of the prune lesson (the teacher comes from the cache: 4 + 1 student epochs)
    assert cli.main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "b"), "--stop-after-epochs", "5", *args]) == 3
    for i, damaged in enumerate(["[1]", '{"0": {"stage1": {"out": -1}}}', '{"first": {}}']):  # a tampered structure.json
        copy = Path(shutil.copytree(tmp_path / "b", tmp_path / f"damaged-{i}"))
        (copy / "student" / "structure.json").write_text(damaged)
        capsys.readouterr()
        assert cli.main(["run", "--resume", str(copy), "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {copy / 'student' / 'structure.json'}"), err
    assert cli.main(["run", "--resume", str(tmp_path / "b"), "--quiet"]) == 0
    a, _ = load_model(tmp_path / "a" / "student" / "model.safetensors")
    b, _ = load_model(tmp_path / "b" / "student" / "model.safetensors")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, msg=k)


@pytest.mark.parametrize("lesson,match,run", [
    ({"prune": {"amount": 1.5}}, "course.0.prune.amount", {}),
    ({"prune": {"amount": 0.5, "kind": "filters"}}, "course.0.prune.kind", {}),
    ({"prune": {"amount": 0.5, "importance": "l3"}}, "course.0.prune.importance", {}),
    ({"prune": {"amount": 0.5}, "keep_optimizer": True}, "drop keep_optimizer", {}),
    ({"prune": {"amont": 0.5}}, "'amount'", {}),
    ({"prune": {"amount": 0.5, "scope": "all"}}, "course.0.prune.scope", {}),
    ({"prune": {"amount": 0.5, "recalibrate_bn": -1}}, "course.0.prune.recalibrate_bn", {}),
    ({"prune": {"amount": 0.5, "round_to": 1}}, "course.0.prune.round_to", {}),
    ({"prune": {"amount": 0.5, "kind": "unstructured", "round_to": 8}}, "drop round_to", {}),
    ({"prune": {"amount": 0.5}}, "set run.compile=step", {"compile": True}),  # the pruner traces an eager model
])
def test_bad_prune_config_is_one_line_exit_2(tmp_path, capsys, lesson, match, run):
    import yaml

    cfg = tiny_config(tmp_path)
    cfg["course"][0].update(lesson)
    cfg["run"].update(run)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert cli.main(["validate", str(tmp_path / "c.yaml"), "--static"]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1


def test_layer_table_of_another_model_is_one_line_exit_2(tmp_path, capsys):
    model = build_model("cnn", 10, 1, {"widths": [8, 16]}).eval()
    prune(model, 0.5, torch.randn(1, 1, 8, 8), 10, reference=build_model("cnn", 10, 1, {"widths": [8, 16]}))
    path = save_model(tmp_path / "p.safetensors", model, _spec("cnn", {"widths": [8, 16]}, (1, 8, 8)))
    spec = json.loads(path.with_suffix(".json").read_text())
    spec["structure"] = {"layer9.conv": {"in_channels": 1, "out_channels": 2, "groups": 1}}
    spec.pop("sha256", None)
    path.with_suffix(".json").write_text(json.dumps(spec))
    assert cli.main(["export", str(path), "--format", "safetensors", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "names 'layer9.conv'" in err and err.count("\n") == 1
    del spec["structure"]  # without its table, the pruned weights do not fit the rebuilt model
    path.with_suffix(".json").write_text(json.dumps(spec))
    assert cli.main(["predict", str(path), str(tmp_path)]) == 2
    assert "do not fit" in capsys.readouterr().err
