"""Bad input on the command line, in-process through ``cli.main``: exit code 2, exactly one line on stderr that
names the problem, no traceback, and nothing trained. One test case per input, so one failure hides no other.

tests/trust/test_bad_inputs.py runs the bad-input catalogue (tests/trust/catalogue.py) the same way; inputs it
already covers are not repeated here: a misspelled key (config-unknown-nested-key), a missing config file
(config-missing), `run` with an unknown student (run-unknown-student), `--set` without '=' (cli-set-no-equals)
and `--resume` of a directory that is not a run (cli-resume-not-run). The last test crosses the process boundary
once: `python -m curridistill` exits with status 2.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import run_cli, run_main
from tests.trust.catalogue import base, checkpoint, write_cfg


def config(tmp: Path, **sections) -> str:
    """A valid tiny config (one epoch, no baseline) with ``sections`` replaced, written under ``tmp``."""
    cfg = base(tmp)
    for key, value in sections.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict) else value
    return write_cfg(tmp, cfg)


def garbage_checkpoint(tmp: Path) -> str:
    """Weights that are not a safetensors file at all, beside a spec that names a registered model."""
    (tmp / "garbage.safetensors").write_bytes(b"not a safetensors file at all")
    (tmp / "garbage.json").write_text(json.dumps({"name": "mlp", "num_classes": 10, "kwargs": {}}))
    return str(tmp / "garbage.safetensors")


def text_labels(tmp: Path) -> dict:
    """A tensors data set whose labels are strings: found only when the data is read, after the static checks."""
    x = np.random.default_rng(0).random((40, 1, 8, 8), dtype=np.float32)
    np.savez(tmp / "text_labels.npz", x=x, y=np.array(list("ab") * 20))
    return {"name": "tensors", "options": {"path": str(tmp / "text_labels.npz"), "test_fraction": 0.25}}


def samples(tmp: Path) -> str:
    np.save(tmp / "x.npy", np.zeros((2, 8, 8), np.uint8))
    return str(tmp / "x.npy")


def yaml_file(tmp: Path, name: str, text: str) -> str:
    (tmp / name).write_text(text)
    return str(tmp / name)


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))


def not_a_run(tmp: Path) -> str:
    (tmp / "notrun").mkdir()
    return str(tmp / "notrun")


CASES = [
    # ---------------------------------------------------- the inputs of the former subprocess loop
    ("run-unknown-dataset", lambda t: ["run", config(t, data={"name": "cifar11"}), "--out", str(t / "r")],
     "unknown dataset 'cifar11' at data.name; did you mean 'cifar10'?"),
    ("run-teacher-checkpoint-missing",
     lambda t: ["run", config(t, teacher={"checkpoint": str(t / "missing.safetensors")}), "--out", str(t / "r")],
     "teacher.checkpoint: checkpoint not found: <tmp>/missing.safetensors"),
    ("eval-garbage-weights", lambda t: ["eval", garbage_checkpoint(t)], "corrupt checkpoint <tmp>/garbage.safetensors"),
    ("predict-garbage-weights", lambda t: ["predict", garbage_checkpoint(t), samples(t)],
     "corrupt checkpoint <tmp>/garbage.safetensors"),
    ("list-unknown-kind", lambda t: ["list", "nothing"], "argument what: invalid choice: 'nothing'"),
    # ---------------------------------------------------- usage
    ("no-command", lambda t: [], "the following arguments are required: command"),
    ("validate-no-config", lambda t: ["validate"], "the following arguments are required: config"),
    ("run-unknown-option", lambda t: ["run", config(t), "--epochs", "3"], "unrecognized arguments: --epochs 3"),
    ("run-parallel-without-seeds", lambda t: ["run", config(t), "--parallel", "2"],
     "run.parallel 2 (--parallel) runs seeds or folds side by side, and this run is one"),
    ("run-config-parallel-without-seeds", lambda t: ["run", config(t, run={"parallel": 3}), "--out", str(t / "r")],
     "run.parallel 3 (--parallel) runs seeds or folds side by side, and this run is one"),
    ("validate-config-parallel-without-seeds", lambda t: ["validate", config(t, run={"parallel": 3})],
     "run.parallel 3 (--parallel) runs seeds or folds side by side, and this run is one"),
    ("tune-config-parallel-without-seeds", lambda t: ["tune", config(t, run={"parallel": 3}), "--out", str(t / "s")],
     "run.parallel 3 (--parallel) runs seeds or folds side by side, and this run is one"),
    ("run-parallel-zero", lambda t: ["run", config(t), "--seeds", "0,1", "--parallel", "0"],
     "--parallel 0: give a number of processes >= 1"),
    ("validate-set-unknown-key", lambda t: ["validate", config(t), "--set", "run.sed=1"],
     "unknown key 'run.sed'; did you mean 'seed'?"),
    ("list-bad-input-size", lambda t: ["list", "models", "--input-size", "3,x"], "--input-size '3,x': expected C,H,W"),
    ("tune-parallel-zero", lambda t: ["tune", config(t), "--parallel", "0"],
     "--parallel 0: give a number of worker processes >= 1"),
    ("auto-no-budget", lambda t: ["auto", config(t)], "the following arguments are required: --budget"),
    ("auto-bad-budget", lambda t: ["auto", config(t), "--budget", "soon", "--out", str(t / "a")],
     "--budget 'soon': give a duration like 2h"),
    # ---------------------------------------------------- hostile configs (found by an input audit)
    ("validate-alias-bomb", lambda t: ["validate", yaml_file(t, "bomb.yaml", BILLION_LAUGHS)],
     "anchors and aliases expand to more than 100,000 values"),
    ("validate-duplicate-key", lambda t: ["validate", yaml_file(t, "dup.yaml", "run: {seed: 1}\nrun: {seed: 2}\n")],
     "key 'run' appears twice in one section (also on line 1)"),
    ("run-name-escapes-out", lambda t: ["run", config(t), "--set", "run.name=../../escape"],
     "run.name '../../escape' must be a plain name"),
    ("run-seed-too-big", lambda t: ["run", config(t), "--set", "run.seed=99999999999999999999"],
     "invalid value at run.seed"),
    ("run-seeds-huge-range", lambda t: ["run", config(t), "--seeds", "0-2000000000"], "more than 1000 seeds"),
    ("run-seeds-too-big", lambda t: ["run", config(t), "--seeds", "0,99999999999999999999"], "run.seeds"),
    ("validate-val-size-inf", lambda t: ["validate", config(t), "--set", "data.val_size=.inf"],
     "invalid value at data.val_size: Input should be a finite number"),
    ("run-negative-momentum", lambda t: ["run", config(t), "--set", "course.0.optimizer.momentum=-1"],
     "course.0.optimizer.momentum"),
    ("run-latency-runs-zero", lambda t: ["run", config(t), "--set", "run.eval.latency_runs=0"],
     "run.eval.latency_runs"),
    ("tune-space-unknown-model",
     lambda t: ["tune", config(t, tune={"space": {"student.name": {"categorical": ["mlp", "nonexist"]}}}),
                "--trials", "1", "--out", str(t / "tuned")],
     "tune.space key 'student.name' with value 'nonexist': unknown model 'nonexist'"),
    ("list-negative-classes", lambda t: ["list", "models", "--num-classes", "-5"], "--num-classes -5: give a number"),
    ("run-zero-width-layer", lambda t: ["run", config(t), "--set", "student.kwargs.hidden=[0]"],
     "hidden must be a list of positive layer widths"),
    ("bench-subset-below-a-batch",
     lambda t: ["bench", "throughput", "--data", "digits", "--teacher", "cnn", "--student", "mlp", "--subset", "1"],
     "--subset 1 is smaller than --batch-size"),
    ("tune-timeout-nan", lambda t: ["tune", config(t), "--timeout", "nan"], "--timeout nan: give a positive number"),
    ("validate-epochs-a-boolean", lambda t: ["validate", config(t), "--set", "course.0.epochs=true"],
     "course.0.epochs: true is a yes/no value where a number is expected"),
    ("validate-split-seed-not-int", lambda t: ["validate", config(t), "--set", "data.split_seed=abc"],
     "data.split_seed"),
    ("run-labels-as-text", lambda t: ["run", config(t, data=text_labels(t))], "y has dtype <U1"),
    # ---------------------------------------------------- models and files given to eval / predict / export
    ("predict-top-k-zero", lambda t: ["predict", str(checkpoint(t)), samples(t), "--top-k", "0"],
     "--top-k must be at least 1, got 0"),
    ("predict-top-k-not-a-number", lambda t: ["predict", str(checkpoint(t)), samples(t), "--top-k", "abc"],
     "argument --top-k: invalid int value: 'abc'"),
    ("predict-missing-onnx", lambda t: ["predict", str(t / "model.onnx"), samples(t)],
     "ONNX model not found: <tmp>/model.onnx"),
    ("eval-unknown-device", lambda t: ["eval", str(checkpoint(t)), "--device", "tpu"], "'tpu' is not a device"),
    ("eval-mps-device", lambda t: ["eval", str(checkpoint(t)), "--device", "mps"], "run on the CPU or on CUDA GPUs"),
    ("predict-meta-device", lambda t: ["predict", str(checkpoint(t)), samples(t), "--device", "meta"],
     "run on the CPU or on CUDA GPUs"),
    ("run-xpu-device", lambda t: ["run", config(t), "--set", "run.device=xpu"], "run on the CPU or on CUDA GPUs"),
    ("export-unknown-format", lambda t: ["export", str(checkpoint(t)), "--format", "tflite"],
     "argument --format: invalid choice: 'tflite'"),
    ("export-json-is-a-directory", lambda t: ["export", str(checkpoint(t)), "--json", str(t)],
     "--json <tmp> is a directory; give a file path"),
    ("export-missing-checkpoint", lambda t: ["export", str(t / "nope.safetensors")],
     "checkpoint not found: <tmp>/nope.safetensors"),
    ("export-garbage-weights", lambda t: ["export", garbage_checkpoint(t)],
     "corrupt checkpoint <tmp>/garbage.safetensors"),
    # ---------------------------------------------------- run directories given to report / compare
    ("report-not-a-run", lambda t: ["report", not_a_run(t)], "no report.json in <tmp>/notrun"),
    ("compare-not-a-run", lambda t: ["compare", not_a_run(t)], "<tmp>/notrun has no report.json or aggregate.json"),
    ("compare-missing-directory", lambda t: ["compare", str(t / "absent")], "<tmp>/absent is not a directory"),
]


@pytest.mark.parametrize("make, expect", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_and_exit_2(make, expect, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default output directories (runs/...) land in tmp_path
    argv = make(tmp_path)
    code, out, err = run_main(argv, capsys)
    assert code == 2, f"exit {code}; stderr: {err}"
    assert "Traceback" not in err and "Traceback" not in out
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert expect.replace("<tmp>", str(tmp_path)) in lines[0], lines[0]
    if argv and argv[0] == "run":  # refused before any work: nothing trained, nothing checkpointed, no run directory
        assert not list(tmp_path.rglob("state.pt")) and not list(tmp_path.rglob("model.safetensors"))
        assert not (tmp_path / "runs").exists()


def test_a_bad_device_option_is_named_as_the_user_typed_it(tmp_path, capsys):
    code, _, err = run_main(["eval", str(checkpoint(tmp_path)), "--device", "tpu"], capsys)
    assert code == 2 and "--device 'tpu'" in err and "run.device" not in err, err


def test_the_process_exits_2_with_one_line(tmp_path):
    proc = run_cli("eval", str(tmp_path / "nope.safetensors"), timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: checkpoint not found: {tmp_path / 'nope.safetensors'}")
    assert "Traceback" not in proc.stderr and proc.stdout == ""


ONE_PROCESS_ONLY = {  # config sections -> the line
    "run.compile: step": ({"run": {"compile": "step"}},
                          "run.compile: step runs in one process; under torchrun use run.compile: true"),
}


@pytest.mark.parametrize("case", list(ONE_PROCESS_ONLY))
def test_one_process_options_under_torchrun_are_refused_before_joining(tmp_path, capsys, monkeypatch, case):
    sections, line = ONE_PROCESS_ONLY[case]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it; the check runs before the process group is joined
    code, out, err = run_main(["run", config(tmp_path, **sections), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert line in err, err
    assert not (tmp_path / "r").exists()
