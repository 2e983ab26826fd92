"""Whole commands with the model on another device than the CPU, checked on CPU-only machines.

``tests/stand_in_device.py`` gives a device whose tensors hold values and refuse to meet CPU tensors, as CUDA
tensors do. A GPU user's first command failed on a probe built on the CPU (issue 13); here every command a GPU user
types (run with every knowledge term, curricula, two teachers, seeds, stop and resume, eval, predict, bench, tune,
ship, text) runs with its models on that device, and a run gives exactly the numbers it gives on the CPU. CUDA's
own branches (autocast, CUDA RNG, CUDA graphs, synchronize) are left to ``benchmarks/gpu_check.py`` on a GPU.
"""
from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch
import yaml

from curridistill import api, serve
from curridistill.bench import throughput
from curridistill.models import build_model
from curridistill.models.placement import probe_input, resolve_device
from tests.engine.test_host_sync import CASES, every_term_config
from tests.helpers import REPO, cuda_marks, run_main, tiny_config
from tests.stand_in_device import DEVICE, DeviceMismatch, OnDevice, stand_in_device
from tests.text.tiny import write_table

REPORTED = ("accuracy", "loss", "kl_teacher_student", "agreement")


def _resolve(name: str, option: str = "run.device") -> torch.device:
    return DEVICE if name == "auto" or name.startswith("cuda") else resolve_device(name, option)


@contextlib.contextmanager
def placed(where: str, monkeypatch):
    """``stand-in``: ``--device cuda`` / ``run.device: cuda`` (and ``auto``) put the models on the stand-in device;
    ``cpu``, ``gpu`` (a real CUDA device, where there is one): nothing changes."""
    with monkeypatch.context() as patch:
        if where == "stand-in":
            for module in (api, throughput, serve):
                patch.setattr(module, "resolve_device", _resolve)
            with stand_in_device(patch):
                yield
        else:
            yield


@pytest.fixture
def on_device(monkeypatch):
    with placed("stand-in", monkeypatch):
        yield DEVICE



# ------------------------------------------------------------------------ the stand-in itself can fail
MISMATCHES = {
    "add": lambda d, c: d + c,
    "matmul": lambda d, c: d @ c.T,
    "cat": lambda d, c: torch.cat([d, c]),
    "index_select with a CPU index": lambda d, c: d.index_select(0, torch.tensor([0, 1])),
    "model fed a CPU probe": lambda d, c: build_model("mlp", 3, 1, {"hidden": [4], "image_size": 2}).to(DEVICE)(c),
}


@pytest.mark.parametrize("op", list(MISMATCHES))
def test_a_cpu_tensor_meeting_a_device_tensor_fails_as_on_cuda(on_device, op):
    d, c = torch.ones(2, 4, device=DEVICE), torch.ones(2, 4)
    with pytest.raises(DeviceMismatch, match="same device"):
        MISMATCHES[op](d, c)


ALLOWED = {  # what CUDA accepts: CPU scalars, CPU indices in advanced indexing, explicit copies
    "0-dim CPU scalar": lambda d: d * torch.tensor(2.0),
    "CPU advanced index": lambda d: d[torch.tensor([1, 0])],
    "list index": lambda d: d[[1, 0]],
    "copy_ from the CPU": lambda d: d.clone().copy_(torch.arange(8.0).view(2, 4)),
    "quantile (in-place view ops inside)": lambda d: torch.quantile(d.flatten(), 0.3),
}


@pytest.mark.parametrize("op", list(ALLOWED))
def test_what_cuda_accepts_runs_and_gives_the_cpu_values(on_device, op):
    values = torch.arange(8.0).view(2, 4)
    on = ALLOWED[op](values.to(DEVICE))
    assert isinstance(on, OnDevice) and on.device == DEVICE
    assert torch.equal(on.cpu(), ALLOWED[op](values))


def test_device_tensors_read_back_like_gpu_tensors(on_device):
    d = torch.arange(6.0, device=DEVICE)
    assert d.sum().item() == 15.0 and d.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    with pytest.raises(TypeError, match="numpy"):
        d.numpy()
    assert probe_input(build_model("mlp", 3, 1, {"hidden": [4], "image_size": 2}).to(DEVICE), (1, 2, 2)).device == DEVICE


# ------------------------------------------------------------------------------------- whole runs
def _tiny(tmp_path, cifar_shaped, name: str) -> dict:
    return tiny_config(tmp_path / name)


def _every_term(case: str):
    return lambda tmp_path, cifar_shaped, name: every_term_config(tmp_path, cifar_shaped, CASES[case], 36, name)


def _hf_text(tmp_path, cifar_shaped, name: str) -> dict:
    """A tiny random BERT teacher (transformers' own modules: buffers sliced under inference mode, masks built
    from the input's device) and a student initialised from its layer 1, with the hidden-state and attention-map
    terms and a length curriculum."""
    pytest.importorskip("transformers")
    from tests.text.tiny import make_bert_dir

    bert = tmp_path / "tiny-bert"
    if not bert.is_dir():
        make_bert_dir(bert)
    table = tmp_path / "reviews.csv"
    if not table.is_file():
        write_table(table)
    layer = "backbone.encoder.layer"
    return {"data": {"name": "text-table", "batch_size": 16, "val_size": 0.15,
                     "options": {"path": str(table), "text_column": "review", "label_column": "sentiment",
                                 "test_fraction": 0.25, "tokenizer": str(bert), "bucket": 3}},
            "teacher": {"hf": str(bert), "course": [{"epochs": 1, "optimizer": {"name": "adamw", "lr": 0.003}}]},
            "student": {"name": "text-transformer", "kwargs": {"init_from": str(bert), "init_layers": [1]}},
            "course": [{"epochs": 2, "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.0},
                        "loss": {"ce": 0.5, "kd": {"weight": 0.5, "temperature": 2},
                                 "hidden": {"weight": 1.0, "mask": "mask", "layers": {f"{layer}.0": f"{layer}.1"}},
                                 "attention_maps": {"weight": 1.0, "mask": "mask", "heads": 2, "layers": {
                                     f"{layer}.0.attention.self.query": f"{layer}.1.attention.self.query"}}},
                        "curriculum": {"scorer": "length", "pacing": {"kind": "linear", "start": 0.5}}}],
            "run": {"seed": 0, "tensorboard": False, "eval": {"latency_runs": 2, "throughput_runs": 1,
                                                              "throughput_batch": 8}}}


RUNS = {  # the teacher cache with a paced curriculum is the resume test's run; self-paced weights: test_meta_device
    "digits kd": _tiny,
    "every term, teacher online, augmented": _every_term("every term, augmented (teacher online)"),
    "two teachers, per-sample best": _every_term("two teachers, per-sample best"),
    "text: tiny BERT teacher, hidden + attention-map terms": _hf_text,
}


@pytest.mark.parametrize("case", list(RUNS))
def test_a_run_on_the_device_gives_the_numbers_of_the_cpu_run(tmp_path, cifar_shaped, monkeypatch, capsys, case):
    from curridistill.data import text

    monkeypatch.setenv(text.CACHE_ENV, str(tmp_path / "token-cache"))
    reports = {}
    for device in ("cpu", "cuda"):
        raw = RUNS[case](tmp_path, cifar_shaped, device)
        raw["run"]["device"] = device
        raw["run"]["cache_dir"] = str(tmp_path / f"cache-{device}")  # the device run trains and caches its own
        path = tmp_path / f"{device}.yaml"
        path.write_text(yaml.safe_dump(raw))
        with placed("stand-in" if device == "cuda" else "cpu", monkeypatch):
            code, _, err = run_main(["run", str(path), "--out", str(tmp_path / device), "--quiet"], capsys)
        assert code == 0, err
        reports[device] = json.loads((tmp_path / device / "report.json").read_text())
    for model in ("teacher", "baseline", "student"):
        for key in REPORTED:
            if model in reports["cpu"] and key in reports["cpu"][model]:
                assert reports["cuda"][model][key] == reports["cpu"][model][key], (model, key)


# ------------------------------------------------------------------------------- every other command
@pytest.fixture
def trained(tmp_path, capsys):
    """A digits run trained on the CPU (its checkpoints are what eval, predict and resume read)."""
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path)))
    code, _, err = run_main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet"], capsys)
    assert code == 0, err
    return tmp_path / "run"


def test_eval_and_predict_on_the_device_give_the_cpu_answers(trained, tmp_path, capsys, monkeypatch):
    ckpt = str(trained / "student" / "model.safetensors")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32))
    commands = {"eval": ["eval", ckpt, "--json", "{out}/eval.json"],
                "predict": ["predict", ckpt, str(tmp_path / "x.npy"), "--out", "{out}/predict.json"]}
    answers = {}
    for device in ("cpu", "cuda"):
        (tmp_path / device).mkdir()
        with placed("stand-in" if device == "cuda" else "cpu", monkeypatch):
            for name, argv in commands.items():
                code, _, err = run_main([a.format(out=tmp_path / device) for a in argv] + ["--device", device], capsys)
                assert code == 0, (name, err)
        answers[device] = {n: json.loads((tmp_path / device / f"{n}.json").read_text()) for n in commands}
    for key in ("accuracy", "loss", "f1_macro"):
        assert answers["cuda"]["eval"][key] == answers["cpu"]["eval"][key]
    assert answers["cuda"]["predict"] == answers["cpu"]["predict"]


def test_a_teacher_checkpoint_loads_onto_the_device(trained, tmp_path, capsys, monkeypatch):
    """Issue 13's first GPU command: distilling from a saved teacher (the output check probed it with a CPU batch)."""
    raw = tiny_config(tmp_path / "from-checkpoint")
    raw["teacher"]["checkpoint"] = str(trained / "teacher" / "model.safetensors")
    raw["run"]["device"] = "cuda"
    with placed("stand-in", monkeypatch):
        code, _, err = run_main(["run", _config_file(tmp_path, raw), "--out", str(tmp_path / "on-device"), "--quiet"],
                                capsys)
    assert code == 0, err
    saved, loaded = (json.loads((d / "report.json").read_text())["teacher"] for d in (trained, tmp_path / "on-device"))
    assert loaded["accuracy"] == saved["accuracy"] and loaded["loss"] == saved["loss"]


def test_distill_with_the_callers_modules_on_the_device_gives_the_cpu_numbers(tmp_path, monkeypatch):
    """The Python API with the caller's own modules and tensors (``objects``): trained on the device, handed back
    on the CPU, with the CPU run's numbers."""
    from curridistill.api import distill
    from tests.engine.test_peer_loop import _data, _student, _teacher

    (x, y), val, test = _data(0, 96), _data(1, 20), _data(2, 20)
    results = {}
    for where in ("cpu", "stand-in"):
        with placed(where, monkeypatch):
            results[where] = distill(_student(), teacher=_teacher(), train=(x, y), val=val, test=test,
                                     out=tmp_path / where, course=[{"epochs": 2, "loss": {"ce": 0.5, "kd": 0.5}}],
                                     run={"device": "cuda" if where == "stand-in" else "cpu", "tensorboard": False,
                                          "cache_dir": str(tmp_path / f"cache-{where}")})
    on_device = results["stand-in"]
    assert all(type(p) is torch.nn.Parameter and p.device.type == "cpu" for p in on_device.student.parameters())
    for model in ("teacher", "baseline", "student"):
        assert on_device.report[model]["loss"] == results["cpu"].report[model]["loss"], model


def _text_config(tmp_path) -> dict:
    return {"data": {"name": "text-table", "batch_size": 16, "val_size": 0.15,
                     "options": {"path": str(write_table(tmp_path / "reviews.csv")), "text_column": "review",
                                 "label_column": "sentiment", "test_fraction": 0.25, "tokenizer": "words", "bucket": 3},
                     "augment": {"token_mask": 0.1, "token_replace": 0.1, "token_span": 0.25}},
            "teacher": {"name": "text-bilstm", "kwargs": {"embed_dim": 16, "hidden": 16},
                        "course": [{"epochs": 1, "optimizer": {"name": "adamw", "lr": 0.003}, "augment": False}]},
            "student": {"name": "text-cnn", "kwargs": {"embed_dim": 8, "filters": 4}},
            "course": [{"epochs": 2, "loss": {"ce": 0.5, "kd": {"weight": 0.5, "temperature": 2}},
                        "optimizer": {"name": "adamw", "lr": 0.003},
                        "curriculum": {"scorer": "teacher_confidence", "pacing": {"kind": "linear", "start": 0.5}}}],
            "run": {"seed": 0, "device": "cuda", "cache_dir": str(tmp_path / "cache"), "out": str(tmp_path / "runs"),
                    "tensorboard": False, "eval": {"latency_runs": 2, "throughput_runs": 1, "throughput_batch": 8}}}


def _config_file(tmp_path, raw: dict) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


SMALL_SHIP = {"teacher.course.0.epochs": 1, "course.0.epochs": 1, "course.1.epochs": 1, "course.2.epochs": 1,
              "teacher.kwargs.widths": "[8,16]", "student.kwargs.widths": "[8,16]",
              # exporting is CPU work on a CPU copy (ONNX's exporter takes seconds a file; tests/export has it)
              "ship.export": "[torchscript]", "ship.quantize": "[dynamic, static]",
              "ship.calibration_batches": 2, "ship.check_samples": 32, "ship.predict_samples": 2,
              "run.eval.latency_runs": 2, "run.eval.throughput_runs": 1, "run.eval.throughput_batch": 8}

COMMANDS = {
    "run --seeds 0,1": lambda tmp: ["run", _config_file(tmp, tiny_config(tmp)), "--seeds", "0,1", "--set",
                                    "run.device=cuda"],
    "cross-validation, 2 folds": lambda tmp: ["run", _config_file(tmp, {**tiny_config(tmp), "data": {
        "name": "digits", "val_size": 0.1, "batch_size": 64, "cv": {"folds": 2}}}), "--set", "run.device=cuda"],
    "run.micro_batches 2": lambda tmp: ["run", _config_file(tmp, tiny_config(tmp)), "--set", "run.device=cuda",
                                        "--set", "run.micro_batches=2"],
    "tune --trials 2": lambda tmp: ["tune", _config_file(tmp, {**tiny_config(tmp), "tune": {"space": {
        "course.0.optimizer.lr": {"float": [0.01, 0.2], "log": True}}}}), "--trials", "2", "--set", "run.device=cuda"],
    "ship (prune, int8, export)": lambda tmp: ["run", str(REPO / "configs" / "ship_quickstart.yaml"),
                                             "--set", "run.device=cuda", "--set", f"run.cache_dir={tmp / 'cache'}",
                                             *[f"--set={key}={value}" for key, value in SMALL_SHIP.items()]],
    "text: token augmentation, teacher-confidence curriculum": lambda tmp: ["run", _config_file(tmp, _text_config(tmp))],
}



def _hf_text_on_cuda(tmp) -> list[str]:
    raw = _hf_text(tmp, None, "gpu")
    raw["run"].update(device="cuda", cache_dir=str(tmp / "cache"))
    return ["run", _config_file(tmp, raw)]


# on a GPU machine too (the gpu_check's CUDA step), except the ship path: its packages (Torch-Pruning, ONNX Runtime)
# are an extra the GPU check does not install. The Hugging Face run is there only: on the stand-in it is one of RUNS
# (compared with the CPU run), and the GPU image has transformers
ON_A_GPU_TOO = ("run --seeds 0,1", "cross-validation, 2 folds", "run.micro_batches 2", "tune --trials 2",
                "text: token augmentation, teacher-confidence curriculum")
ON_A_GPU_ONLY = {"text: tiny BERT teacher, hidden + attention-map terms": _hf_text_on_cuda}
COMMANDS.update(ON_A_GPU_ONLY)


@pytest.mark.parametrize("where, command", [("stand-in", c) for c in COMMANDS if c not in ON_A_GPU_ONLY] + [
    pytest.param("gpu", c, marks=cuda_marks()) for c in (*ON_A_GPU_TOO, *ON_A_GPU_ONLY)])
def test_a_command_runs_on_the_device(where, tmp_path, capsys, command, monkeypatch):
    from curridistill.data import text

    monkeypatch.setenv(text.CACHE_ENV, str(tmp_path / "token-cache"))
    with placed(where, monkeypatch):
        code, _, err = run_main(COMMANDS[command](tmp_path) + ["--out", str(tmp_path / "out"), "--quiet"], capsys)
    assert code == 0, err


def test_a_run_stopped_on_the_device_resumes_there_to_the_uninterrupted_numbers(tmp_path, cifar_shaped, capsys,
                                                                                 monkeypatch):
    """The training state saved from the device (optimizer, sampler, curriculum, RNG) is read back onto it."""
    raw = every_term_config(tmp_path, cifar_shaped, CASES["teacher cache + paced curriculum"], 36, "resume")
    raw["course"][0]["epochs"] = 2
    with placed("cpu", monkeypatch):
        code, _, err = run_main(["run", _config_file(tmp_path, raw), "--out", str(tmp_path / "whole"), "--quiet"], capsys)
    assert code == 0, err
    raw["run"]["device"], raw["run"]["cache_dir"] = "cuda", str(tmp_path / "cache-device")
    config = _config_file(tmp_path, raw)
    with placed("stand-in", monkeypatch):
        code, _, err = run_main(["run", config, "--out", str(tmp_path / "run"), "--stop-after-epochs", "1", "--quiet"],
                                capsys)
        assert code == 3, err
        code, _, err = run_main(["run", "--resume", str(tmp_path / "run"), "--quiet"], capsys)
    assert code == 0, err
    whole, resumed = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("whole", "run"))
    for key in REPORTED:
        assert resumed["student"][key] == whole["student"][key], key


def test_bench_throughput_on_the_device(tmp_path, shared_data, capsys, monkeypatch):  # on a GPU: gpu_check's bench steps
    with placed("stand-in", monkeypatch):
        code, _, err = run_main(["bench", "throughput", "--teacher", "resnet14", "--student", "resnet8", "--data",
                                 "cifar10", "--root", str(shared_data), "--subset", "200", "--steps", "3", "--warmup",
                                 "1", "--rounds", "1", "--device", "cuda", "--out", str(tmp_path / "bench.json"),
                                 "--quiet"], capsys)
    assert code == 0, err
    modes = json.loads((tmp_path / "bench.json").read_text())["modes"]
    assert set(modes) == {"ceiling", "plain", "online_kd", "cached_kd"}
