"""Outputs that cannot be written or would destroy a checkpoint, paths the file system refuses, and a bad torchrun
environment, in-process through ``cli.main``: exit code 2, one line on stderr naming the problem, no traceback,
refused before any work, and nothing written or changed (the checkpoint pair stays byte-identical).

One case per input. The checkpoint is an untrained pair written once per module by ``save_model`` and copied beside
each case, with a weights-only ``best.safetensors`` as a run directory holds one.
"""
import errno
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import one_error, run_main
from tests.trust.catalogue import base, checkpoint, write_cfg

LONG = "a" * 300  # longer than any file system's name limit (255 bytes)
NO_PROC = not Path("/proc/self").is_dir()  # /proc refuses new files: an output whose temp file cannot be created


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Path:
    """A checkpoint pair (ck.safetensors + ck.json), written once."""
    return checkpoint(tmp_path_factory.mktemp("pair"))


@pytest.fixture
def ck(pair, tmp_path) -> Path:
    """This case's copy of the pair in tmp_path, with best.safetensors (weights only) and x.npy (samples) beside."""
    for src in (pair, pair.with_suffix(".json")):
        shutil.copy(src, tmp_path / src.name)
    shutil.copy(pair, tmp_path / "best.safetensors")
    np.save(tmp_path / "x.npy", np.zeros((2, 8, 8), np.uint8))
    return tmp_path / pair.name


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


def tune_config(t: Path) -> str:
    cfg = base(t)
    cfg["tune"] = {"space": {"course.0.optimizer.lr": {"float": [0.01, 0.2]}}}
    return write_cfg(t, cfg, "tune.yaml")


def afile(t: Path) -> str:
    (t / "afile").write_text("a plain file")
    return str(t / "afile")


def report_json(t: Path) -> Path:
    (t / "report.json").write_text("{}")
    return t / "report.safetensors"


BENCH = ["bench", "throughput", "--data", "digits", "--teacher", "cnn", "--student", "mlp", "--steps", "1",
         "--rounds", "1", "--warmup", "0", "--device", "cpu"]
# /proc is the one place where even root (CI and this machine run as root) cannot create a file; Linux has it
proc = pytest.mark.skipif(NO_PROC, reason="no /proc on this OS: no place refuses a new file to root")

# (id, argv from (tmp, checkpoint), words of the line[, marks]); <tmp> in the words is the case's directory
CASES = [
    # -------------------------------------------------------- export never destroys a checkpoint
    ("export-out-is-the-spec", lambda t, c: ["export", str(c), "--format", "onnx", "--out", str(c.with_suffix(".json"))],
     "--out <tmp>/ck.json would overwrite the spec of the checkpoint being exported; choose another path"),
    ("export-json-is-the-spec", lambda t, c: ["export", str(c), "--json", str(c.with_suffix(".json"))],
     "--json <tmp>/ck.json would overwrite the spec of the checkpoint being exported"),
    ("export-json-is-the-weights", lambda t, c: ["export", str(c), "--json", str(c)],
     "--json <tmp>/ck.safetensors would overwrite the checkpoint itself"),
    ("export-safetensors-pair-is-the-checkpoint", lambda t, c: ["export", str(c), "--format", "safetensors", "--out",
                                                                 str(t / "ck.pt")],
     "--out <tmp>/ck.pt would overwrite the checkpoint itself"),
    ("export-safetensors-onto-best", lambda t, c: ["export", str(c), "--format", "safetensors", "--out",
                                                    str(t / "best.safetensors")],
     "--out <tmp>/best.safetensors would overwrite the weights of a checkpoint (an existing .safetensors file)"),
    ("export-onnx-onto-best", lambda t, c: ["export", str(c), "--out", str(t / "best.safetensors")],
     "--out <tmp>/best.safetensors would overwrite the weights of a checkpoint"),
    ("export-safetensors-onto-a-json", lambda t, c: ["export", str(c), "--format", "safetensors", "--out",
                                                      str(report_json(t))],
     "<tmp>/report.json exists; a safetensors export writes a new checkpoint pair (report.safetensors + report.json) "
     "and never replaces files"),
    ("export-json-is-the-out", lambda t, c: ["export", str(c), "--out", str(t / "m.onnx"), "--json", str(t / "m.onnx")],
     "--json <tmp>/m.onnx is also a file the export writes"),
    ("export-json-is-the-exported-spec", lambda t, c: ["export", str(c), "--format", "safetensors", "--out",
                                                       str(t / "new.safetensors"), "--json", str(t / "new.json")],
     "--json <tmp>/new.json is also a file the export writes"),
    ("export-json-is-the-default-exported-spec", lambda t, c: ["export", str(c), "--format", "safetensors", "--json",
                                                               str(t / "ck-export.json")],
     "--json <tmp>/ck-export.json is also a file the export writes"),
    ("export-out-name-too-long", lambda t, c: ["export", str(c), "--out", str(t / f"{LONG}.onnx")],
     "bytes, too long for the file system"),
    ("export-out-folder-too-long", lambda t, c: ["export", str(c), "--out", str(t / LONG / "m.onnx")],
     "bytes, longer than the"),
    ("export-out-under-a-file", lambda t, c: ["export", str(c), "--out", f"{afile(t)}/m.onnx"],
     "<tmp>/afile is a file, not a folder"),
    ("export-out-in-proc", lambda t, c: ["export", str(c), "--out", "/proc/x.onnx"],
     "--out /proc/x.onnx cannot be written (creating a file in /proc", proc),
    # -------------------------------------------------------- predict, eval, compare, bench outputs
    ("predict-out-is-the-spec", lambda t, c: ["predict", str(c), str(t / "x.npy"), "--out", str(c.with_suffix(".json"))],
     "--out <tmp>/ck.json would overwrite the spec of the checkpoint <tmp>/ck.safetensors"),
    ("predict-out-is-an-input", lambda t, c: ["predict", str(c), str(t / "x.npy"), "--out", str(t / "x.npy")],
     "--out <tmp>/x.npy would overwrite <tmp>/x.npy, an input of this command"),
    ("predict-out-name-too-long", lambda t, c: ["predict", str(c), str(t / "x.npy"), "--out", str(t / f"{LONG}.json")],
     "too long for the file system"),
    ("predict-out-in-proc", lambda t, c: ["predict", str(c), str(t / "x.npy"), "--out", "/proc/p.json"],
     "--out /proc/p.json cannot be written", proc),
    ("eval-json-is-the-spec", lambda t, c: ["eval", str(c), "--json", str(c.with_suffix(".json"))],
     "--json <tmp>/ck.json would overwrite the spec of the checkpoint"),
    ("eval-json-is-the-weights", lambda t, c: ["eval", str(c), "--json", str(c)],
     "--json <tmp>/ck.safetensors would overwrite the weights of a checkpoint"),
    ("eval-json-name-too-long", lambda t, c: ["eval", str(c), "--json", str(t / f"{LONG}.json")],
     "too long for the file system"),
    ("eval-json-in-proc", lambda t, c: ["eval", str(c), "--json", "/proc/e.json"],
     "--json /proc/e.json cannot be written", proc),
    ("compare-out-in-proc", lambda t, c: ["compare", str(t), "--out", "/proc/c.md"],
     "--out /proc/c.md cannot be written", proc),
    ("compare-json-in-proc", lambda t, c: ["compare", str(t), "--json", "/proc/c.json"],
     "--json /proc/c.json cannot be written", proc),
    ("compare-json-onto-a-run-report", lambda t, c: ["compare", str(t), "--json", str(report_json(t).with_suffix(".json"))],
     "--json <tmp>/report.json would overwrite report.json of a run that compare reads"),
    ("compare-out-and-json-alike", lambda t, c: ["compare", str(t), "--out", str(t / "c.txt"), "--json", str(t / "c.txt")],
     "--out and --json both name <tmp>/c.txt"),
    ("bench-out-in-proc", lambda t, c: [*BENCH, "--out", "/proc/b.json"], "--out /proc/b.json cannot be written", proc),
    ("bench-out-is-a-directory", lambda t, c: [*BENCH, "--out", str(t)],
     "--out <tmp> is a directory; give a file path such as <tmp>/throughput.json"),
    ("bench-out-is-a-checkpoint", lambda t, c: [*BENCH, "--out", str(t / "best.safetensors")],
     "would overwrite the weights of a checkpoint"),
    # -------------------------------------------------------- bench arguments
    ("bench-threads-negative", lambda t, c: [*BENCH, "--threads", "-1"], "--threads -1: give a number of CPU threads >= 1"),
    ("bench-threads-zero", lambda t, c: [*BENCH, "--threads", "0"], "--threads 0: give a number of CPU threads >= 1"),
    ("bench-workers-negative", lambda t, c: [*BENCH, "--workers", "-1", "--with-reference"],
     "--workers -1: give 0 (the reference loads batches in its own process) or more"),
    ("bench-cache-dir-is-a-file", lambda t, c: [*BENCH, "--cache-dir", afile(t)],
     "--cache-dir <tmp>/afile is a file, not a directory"),
    # -------------------------------------------------------- tune / auto output directories
    ("tune-out-is-a-file", lambda t, c: ["tune", tune_config(t), "--trials", "1", "--out", afile(t)],
     "--out <tmp>/afile is a file, not a directory; choose a directory path for the study"),
    ("tune-resume-without-a-study", lambda t, c: ["tune", tune_config(t), "--trials", "1", "--out", str(t / "new"),
                                                  "--resume"],
     "<tmp>/new holds no study to resume (study.db is missing); start one without --resume"),
    ("tune-resume-without-a-journal", lambda t, c: ["tune", tune_config(t), "--trials", "1", "--out", str(t / "new"),
                                                    "--resume", "--storage", f"journal:{t / 'none.log'}"],
     "the file is missing, so there is no study to resume"),
    ("tune-resume-without-a-database", lambda t, c: ["tune", tune_config(t), "--trials", "1", "--out", str(t / "new"),
                                                     "--resume", "--storage", f"sqlite:///{t / 'none.db'}"],
     "the file is missing, so there is no study to resume"),
    ("tune-study-name-empty", lambda t, c: ["tune", tune_config(t), "--trials", "1", "--out", str(t / "new"),
                                            "--study-name", ""], "--study-name '' is empty"),
    ("tune-study-name-blank", lambda t, c: ["tune", tune_config(t), "--trials", "1", "--out", str(t / "new"),
                                            "--study-name", "  "], "--study-name '  ' is empty"),
    ("auto-out-is-a-file", lambda t, c: ["auto", write_cfg(t, base(t)), "--budget", "5m", "--out", afile(t)],
     "--out <tmp>/afile is a file, not a directory; choose a directory path for the search"),
    # -------------------------------------------------------- paths the file system refuses (central handler)
    ("run-out-name-too-long", lambda t, c: ["run", write_cfg(t, base(t)), "--out", str(t / LONG)],
     "cannot write <tmp>/" + LONG + " (File name too long)"),
    ("validate-name-too-long", lambda t, c: ["validate", str(t / f"{LONG}.yaml")],
     "cannot read <tmp>/" + LONG + ".yaml (File name too long)"),
    ("eval-name-too-long", lambda t, c: ["eval", str(t / f"{LONG}.safetensors")], "(File name too long)"),
    ("report-name-too-long", lambda t, c: ["report", str(t / LONG)], "cannot read <tmp>/" + LONG),
    ("resume-name-too-long", lambda t, c: ["run", "--resume", str(t / LONG)], "cannot read <tmp>/" + LONG),
]


INSIDE = {"run-out-name-too-long": "run", "eval-name-too-long": "evaluate"}  # refused by the API call itself


@pytest.mark.parametrize("case_id, make, expect", [pytest.param(*c[:3], id=c[0], marks=c[3:]) for c in CASES])
def test_bad_output_or_path_is_one_line_and_nothing_changes(case_id, make, expect, ck, tmp_path, capsys, monkeypatch):
    import curridistill.api as api
    import curridistill.bench.throughput as throughput
    import curridistill.experiments.auto as auto
    import curridistill.experiments.compare as compare
    import curridistill.export as export
    import curridistill.serve as serve

    monkeypatch.chdir(tmp_path)
    argv = make(tmp_path, ck)
    before = snapshot(tmp_path)

    def no_work(*a, **k):
        pytest.fail("the expensive work started before the bad input was refused")

    work = [(throughput, "load_splits"), (auto, "load_splits"), (export, "load_model"), (serve, "predict_files"),
            (compare, "compare_runs"), (api, "evaluate"), (api, "run")]
    for module, name in work:
        if name != INSIDE.get(case_id):
            monkeypatch.setattr(module, name, no_work)
    line = one_error(*run_main(argv, capsys))
    assert expect.replace("<tmp>", str(tmp_path)) in line, line
    assert snapshot(tmp_path) == before, "a file was written, changed or left behind"


@pytest.mark.parametrize("env, expect", [
    ({"RANK": "abc"}, "environment variable RANK='abc' is not a whole number; torchrun sets RANK, WORLD_SIZE and "
                      "LOCAL_RANK for each process it starts: unset RANK, or launch with torchrun"),
    ({"WORLD_SIZE": "two"}, "environment variable WORLD_SIZE='two' is not a whole number"),
    ({"LOCAL_RANK": "x1"}, "environment variable LOCAL_RANK='x1' is not a whole number"),
    ({"WORLD_SIZE": "0"}, "environment variable WORLD_SIZE=0 must be >= 1"),
    ({"RANK": "-1"}, "environment variable RANK=-1 must be >= 0"),
    ({"RANK": "3", "WORLD_SIZE": "2"}, "environment variables RANK=3 and WORLD_SIZE=2 disagree"),
    ({"LOCAL_RANK": "2", "WORLD_SIZE": "2"}, "environment variables LOCAL_RANK=2 and WORLD_SIZE=2 disagree"),
    ({"RANK": "2"}, "environment variable RANK=2 is set without WORLD_SIZE, so this process would run alone as rank 2"),
], ids=["rank-not-a-number", "world-not-a-number", "local-rank-not-a-number", "world-zero", "rank-negative",
        "rank-beyond-world", "local-rank-beyond-world", "rank-without-world"])
def test_bad_torchrun_environment_is_one_line(env, expect, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    line = one_error(*run_main(["run", write_cfg(tmp_path, base(tmp_path)), "--out", str(tmp_path / "r")], capsys))
    assert expect in line, line
    assert not (tmp_path / "r").exists() and not (tmp_path / "cache").exists()


def test_torchrun_environment_of_a_real_launch_is_accepted(monkeypatch):
    from curridistill.train import distributed

    for env, ranks in (({}, (0, 1, 0)), ({"RANK": "", "WORLD_SIZE": ""}, (0, 1, 0)),
                       ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}, (1, 2, 1)), ({"RANK": "0"}, (0, 1, 0)),
                       ({"LOCAL_RANK": "3"}, (0, 1, 3))):
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        info = distributed.env_ranks()
        assert (info.rank, info.world, info.local_rank) == ranks


@proc
@pytest.mark.parametrize("write", ["text", "bytes", "tensors"])
def test_writers_turn_os_errors_into_one_line_that_is_still_an_os_error(write, tmp_path):
    """A full disk or an unwritable place is a UserError naming the file; the teacher-output cache still catches it
    as an OSError and carries on in memory."""
    import torch

    from curridistill.errors import UserError
    from curridistill.io import save_tensors, write_bytes, write_text

    call = {"text": lambda p: write_text(p, "x"), "bytes": lambda p: write_bytes(p, b"x"),
            "tensors": lambda p: save_tensors(p, {"w": torch.zeros(2)})}[write]
    for path, why in ((Path("/proc/out.bin"), "No such file or directory"),
                      (tmp_path / f"{LONG}.bin", "File name too long")):
        with pytest.raises(UserError) as info:
            call(path)
        assert isinstance(info.value, OSError)
        assert str(info.value).startswith(f"cannot write {path} ({why}); "), str(info.value)
        assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_an_os_error_that_names_no_file_stays_a_traceback(monkeypatch):
    """The central handler converts only errors about a path; anything else is a bug to see in full."""
    from curridistill import cli, commands

    def broken(args):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(commands, "cmd_list", broken)
    with pytest.raises(OSError):
        cli.main(["list", "models"])


def test_an_os_error_about_a_package_file_stays_a_traceback(monkeypatch):
    import curridistill
    from curridistill import cli, commands

    inside = os.path.join(os.path.dirname(curridistill.__file__), "missing.py")

    def broken(args):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", inside)

    monkeypatch.setattr(commands, "cmd_list", broken)
    with pytest.raises(FileNotFoundError):
        cli.main(["list", "models"])


def test_the_temp_file_name_of_an_atomic_write_is_as_long_as_the_name_check_assumes(tmp_path):
    """``outputs`` refuses a file name too long once the atomic write's temp file (".NAME.<random>.tmp") is added:
    the length it adds must be tempfile's own."""
    import tempfile

    from curridistill.io import NAME_EXTRA, TMP_SUFFIX

    fd, tmp = tempfile.mkstemp(prefix=".name.", suffix=TMP_SUFFIX, dir=tmp_path)
    os.close(fd)
    assert len(Path(tmp).name) == len("name") + NAME_EXTRA
