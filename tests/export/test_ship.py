"""configs/ship_quickstart.yaml end to end (shortened): teacher -> distill -> prune + recovery (two steps)
-> int8 -> ONNX/TorchScript export -> predict on PNG files; the compression report has a row per stage."""
import json

import pytest

from curridistill import cli
from tests.helpers import REPO

pytest.importorskip("torch_pruning")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

SHORT = ["teacher.course.0.epochs=4", "course.0.epochs=4", "course.1.epochs=2", "course.2.epochs=2",
         "run.tensorboard=false", "run.eval.latency_runs=5", "ship.check_samples=64"]


def test_ship_quickstart_config_validates(capsys):
    assert cli.main(["validate", str(REPO / "configs" / "ship_quickstart.yaml")]) == 0
    assert "3 lesson(s)" in capsys.readouterr().out


def test_ship_quickstart_runs_every_stage(tmp_path, capsys):
    out = tmp_path / "ship"
    sets = [a for s in SHORT + [f"run.cache_dir={tmp_path / 'cache'}"] for a in ("--set", s)]
    assert cli.main(["run", str(REPO / "configs" / "ship_quickstart.yaml"), "--out", str(out), *sets]) == 0
    printed = capsys.readouterr().out
    assert "compression report" in printed and "exported onnx" in printed
    report = json.loads((out / "report.json").read_text())
    comp = report["compression"]
    stages = [r["stage"] for r in comp["rows"]]
    assert stages[:2] == ["teacher", "student"]
    assert [s for s in stages if s.startswith("pruned")] == ["pruned 31% + recovery", "pruned 50% + recovery"]
    assert {"int8 dynamic", "int8 static", "exported onnx", "exported onnx-int8", "exported torchscript"} <= set(stages)
    rows = {r["stage"]: r for r in comp["rows"]}
    assert rows["pruned 50% + recovery"]["params"] < 0.35 * rows["student"]["params"]
    assert rows["int8 static"]["size_bytes"] < rows["pruned 50% + recovery"]["size_bytes"] / 1.5
    onnx_row = rows["exported onnx"]
    assert onnx_row["max_abs_diff"] < 1e-4 and onnx_row["top1_agreement"] == 1.0
    assert onnx_row["accuracy"] == pytest.approx(rows["pruned 50% + recovery"]["accuracy"], abs=0.003)
    assert rows["exported onnx-int8"]["top1_agreement"] >= 0.98
    # the unpruned student under ONNX Runtime too: the pruning gain where the model is deployed
    unpruned_onnx = rows["student exported onnx (unpruned)"]
    assert unpruned_onnx["runtime"] == "onnxruntime" and unpruned_onnx["params"] == rows["student"]["params"]
    assert unpruned_onnx["accuracy"] == pytest.approx(rows["student"]["accuracy"], abs=0.003)
    assert comp["reference_exports"][0]["check"]["ok"] and unpruned_onnx["max_abs_diff"] < 1e-4  # checked like the shipped file
    gain = rows["student exported onnx (unpruned)"]["latency_ms"] / onnx_row["latency_ms"]
    assert f"pruning under ONNX Runtime: {unpruned_onnx['latency_ms']:.3f} -> {onnx_row['latency_ms']:.3f} ms at batch 1 " \
           f"({gain:.2f}x faster" in " ".join(comp["notes"])
    steps = comp["prune_steps"]
    assert [s["recovery_teacher"] for s in steps] == ["teacher", "unpruned"]
    assert all(s["recovered"]["val_accuracy"] > s["pruned"]["val_accuracy"] for s in steps)
    # each step's latency before -> after is the interleaved timing of the stage rows it sits between
    timed = [rows["student"]["latency_ms"], rows["pruned 31% + recovery"]["latency_ms"],
             rows["pruned 50% + recovery"]["latency_ms"]]
    assert [s["latency_interleaved_ms"] for s in steps] == [timed[:2], timed[1:]]
    assert comp["predict"]["images"] == 8 and comp["predict"]["correct"] >= 6
    md = (out / "ship" / "compression.md").read_text()
    assert md.count("\n| ") >= len(stages) + len(steps) + 2 and "## Pruning steps" in md
    assert f"| {timed[1]:.3f} -> {timed[2]:.3f} |" in md
    assert (out / "ship" / "compression.png").stat().st_size > 10_000
    # the shipped ONNX file predicts the PNG files it came with, from the command line
    assert cli.main(["predict", str(out / "ship" / "model.onnx"), str(out / "ship" / "samples"), "--top-k", "2"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 8


def test_an_opset_the_exporter_cannot_honour_is_noted_not_hidden(tmp_path):
    """The ship report says which opset the ONNX file really has when it is not the one asked for."""
    import torch

    from curridistill.compress.ship import _export_checked, _Stages
    from curridistill.config import ShipConfig
    from curridistill.export.onnx import opset_of
    from curridistill.models import build_model

    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = build_model("cnn", 3, 1, {"widths": [4]}).eval()
    spec = {"name": "cnn", "num_classes": 3, "in_channels": 1, "kwargs": {"widths": [4]}, "input_shape": [1, 8, 8]}
    x, notes = torch.rand(4, 1, 8, 8), []
    sc = ShipConfig(export=["onnx"], opset=10, check_samples=4)
    entry = _export_checked(sc, _Stages(x, torch.zeros(4, dtype=torch.long), (1, 8, 8), runs=1), model, spec, "onnx",
                            tmp_path / "model.onnx", "exported onnx", None, x, [], notes)
    kept = opset_of(tmp_path / "model.onnx")
    if kept == 10:  # an exporter that can convert this model down: nothing to note
        assert "opset" not in entry and notes == []
    else:  # torch 2.13's exporter keeps 18 for a CNN
        assert entry["opset"] == kept and notes == [f"onnx: ship.opset 10 was asked; the exporter could not convert "
                                                     f"this model down and kept opset {kept}"]
