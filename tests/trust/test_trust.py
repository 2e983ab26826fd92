"""No code from data, integrity, locks, reruns, plain logs, tune recovery: behaviour beyond the one-line errors."""
import json
from pathlib import Path

import pytest
import torch
import yaml

from curridistill import api, cli
from curridistill.errors import UserError
from curridistill.io import atomic_write, clean_orphans, copy_atomic
from curridistill.locks import entry_lock, is_locked, run_dir_lock
from curridistill.models import build_model
from curridistill.models.checkpoint import load_model, save_model, trusting_code
from tests.helpers import tiny_config
from tests.trust.catalogue import base, checkpoint, spec, write_cfg


# ---------------------------------------------------------------------------------------- code from data
def _factory_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_model("tests.trust.factories:tiny", 10, 1)
    return save_model(tmp_path / "f.safetensors", model, spec(name="tests.trust.factories:tiny", kwargs={}))


def test_factory_checkpoint_needs_trust_code(tmp_path, capsys):
    ck = _factory_checkpoint(tmp_path)
    with pytest.raises(UserError, match="would import and run code from a data file"):
        load_model(ck)
    with trusting_code():
        model, s = load_model(ck)
    assert s["name"] == "tests.trust.factories:tiny"
    assert cli.main(["eval", str(ck)]) == 2
    assert cli.main(["eval", str(ck), "--trust-code"]) == 0
    assert "accuracy" in capsys.readouterr().out


def test_a_config_naming_the_factory_may_load_its_checkpoint(tmp_path):
    ck = _factory_checkpoint(tmp_path)
    model, _ = load_model(ck, allowed=("tests.trust.factories:tiny",))
    assert isinstance(model, torch.nn.Module)


# ---------------------------------------------------------------------------------------- integrity
def test_checkpoint_carries_sha256_checked_on_load(tmp_path):
    ck = checkpoint(tmp_path)
    recorded = json.loads(ck.with_suffix(".json").read_text())["sha256"]
    import hashlib

    assert recorded == hashlib.sha256(ck.read_bytes()).hexdigest()
    load_model(ck)  # intact: loads
    data = bytearray(ck.read_bytes())
    data[-1] ^= 1
    ck.write_bytes(bytes(data))
    with pytest.raises(UserError, match="does not match the sha256"):
        load_model(ck)


def test_older_checkpoint_without_sha256_still_loads(tmp_path):
    ck = checkpoint(tmp_path)
    s = json.loads(ck.with_suffix(".json").read_text())
    s.pop("sha256")
    ck.with_suffix(".json").write_text(json.dumps(s))
    load_model(ck)


def test_factory_returning_one_shared_object_gives_separate_models():
    a = build_model("tests.trust.factories:shared", 10, 1)
    b = build_model("tests.trust.factories:shared", 10, 1)
    assert a is not b
    assert all(p.data_ptr() != q.data_ptr() for p, q in zip(a.parameters(), b.parameters()))


# ---------------------------------------------------------------------------------------- files and locks
def test_atomic_writes_use_unique_temp_names_and_orphans_are_cleaned(tmp_path):
    seen = []
    atomic_write(tmp_path / "a.bin", lambda tmp: (seen.append(tmp), open(tmp, "wb").write(b"1")))
    atomic_write(tmp_path / "a.bin", lambda tmp: (seen.append(tmp), open(tmp, "wb").write(b"2")))
    assert seen[0] != seen[1] and (tmp_path / "a.bin").read_bytes() == b"2"
    (tmp_path / ".a.bin.xyz.tmp").write_bytes(b"half")  # what a killed writer leaves
    copy_atomic(tmp_path / "a.bin", tmp_path / "sub" / "b.bin")
    assert clean_orphans(tmp_path) == [tmp_path / ".a.bin.xyz.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "sub"]


def test_second_writer_of_a_run_directory_is_refused(tmp_path, capsys):
    rd = tmp_path / "run"
    rd.mkdir()
    (rd / "config.yaml").write_text(yaml.safe_dump(base(tmp_path)))
    with run_dir_lock(rd):
        assert is_locked(rd)
        assert cli.main(["run", "--resume", str(rd)]) == 2
        assert "is in use by another curridistill process" in capsys.readouterr().err
        assert cli.main(["run", write_cfg(tmp_path, base(tmp_path)), "--out", str(rd)]) == 2
        assert "is in use" in capsys.readouterr().err
    assert not is_locked(rd)


def test_entry_lock_makes_a_second_builder_wait(tmp_path):
    import threading
    import time

    order = []

    def second():
        with entry_lock(tmp_path / "entry", wait_note=False):
            order.append("second")

    with entry_lock(tmp_path / "entry"):
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        order.append("first")
    t.join(5)
    assert order == ["first", "second"]


def test_out_of_memory_names_the_phase():
    def boom():
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(UserError, match="out of memory while training the baseline student; lower data.batch_size"):
        api._phase("training the baseline student", boom)
    with pytest.raises(ValueError):
        api._phase("x", lambda: (_ for _ in ()).throw(ValueError("not memory")))


# ---------------------------------------------------------------------------------------- reruns
def test_failed_run_directory_is_reusable_and_plain_log_has_one_line_per_epoch(tmp_path, capsys):
    rd = tmp_path / "run"
    bad = write_cfg(tmp_path, {**base(tmp_path), "student": {"name": "mlp", "kwargs": {"image_size": 32}}}, "bad.yaml")
    assert cli.main(["run", bad, "--out", str(rd)]) == 2  # found by the dry build, before the directory is made
    assert not rd.exists()
    rd.mkdir()  # as a run killed before its first checkpoint leaves it: the configs, no training state
    for name in ("config.yaml", api.APPLIED):
        (rd / name).write_text(Path(bad).read_text())
    assert not api.has_state(rd)
    capsys.readouterr()
    good = write_cfg(tmp_path, tiny_config(tmp_path, epochs=1, baseline={"enabled": False}), "good.yaml")
    assert cli.main(["run", good, "--out", str(rd), "--log-format", "plain", "--set", "run.tensorboard=false"]) == 0
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if " epoch 1/1 " in line] == [
        line for line in out.splitlines() if line.startswith(("teacher lesson", "student lesson"))]
    assert sum(" epoch 1/1 " in line for line in out.splitlines()) == 2  # teacher and student
    assert (rd / "report.json").is_file()


def test_resume_with_set_continues_and_records_the_change(tmp_path, capsys):
    rd = tmp_path / "run"
    cfg = write_cfg(tmp_path, tiny_config(tmp_path, epochs=2, baseline={"enabled": False}))
    assert cli.main(["run", cfg, "--out", str(rd), "--quiet", "--stop-after-epochs", "3",
                     "--set", "run.tensorboard=false"]) == 3
    assert api.has_state(rd)
    capsys.readouterr()
    assert cli.main(["run", "--resume", str(rd), "--quiet", "--set", "course.0.optimizer.lr=0.02"]) == 0
    err = capsys.readouterr().err
    assert "course.0.optimizer.lr: 0.05 -> 0.02" in err
    assert yaml.safe_load((rd / "config.yaml").read_text())["course"][0]["optimizer"]["lr"] == 0.02
    records = [json.loads(line) for line in (rd / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["model"], r["lesson"], r["epoch"]) for r in records]
    assert len(keys) == len(set(keys)) == 4  # teacher 2 + student 2 epochs, none twice


# ---------------------------------------------------------------------------------------- tune
def test_tune_marks_interrupted_trials_failed_and_requeues_their_params(tmp_path):
    import optuna

    from curridistill.experiments.tune import recover_interrupted, trial_seed

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="s")
    t = study.ask()
    lr = t.suggest_float("course.0.optimizer.lr", 0.01, 0.2, log=True)
    assert recover_interrupted(study, tmp_path) == [t.number]  # its process is gone: its directory is not locked
    assert study.trials[0].state == optuna.trial.TrialState.FAIL
    again = study.ask()
    assert again.suggest_float("course.0.optimizer.lr", 0.01, 0.2, log=True) == lr
    live = study.ask()
    live.suggest_float("course.0.optimizer.lr", 0.01, 0.2, log=True)
    (tmp_path / f"trial-{live.number}").mkdir()
    with run_dir_lock(tmp_path / f"trial-{live.number}"):  # a live worker's trial is left alone
        assert live.number not in recover_interrupted(study, tmp_path)
    assert len({trial_seed(0, n) for n in range(100)}) == 100


def test_per_trial_seed_sampler_does_not_repeat_after_restart(tmp_path):
    import optuna

    from curridistill.config import TuneConfig
    from curridistill.experiments.tune import _make_sampler, parse_space

    tc = TuneConfig(space={"course.0.optimizer.lr": {"float": [0.01, 0.2]}}, sampler="random")
    params = parse_space(tc.space)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    drawn = []
    for _ in range(2):  # two "processes": a fresh sampler with the same seed each time
        study = optuna.create_study(storage=url, study_name="s", sampler=_make_sampler("random", params, tc),
                                    load_if_exists=True)
        trial = study.ask()
        drawn.append(trial.suggest_float("lr", 0.01, 0.2))
        study.tell(trial, 0.5)
    assert drawn[0] != drawn[1]


def test_progress_is_plain_and_flushed_when_output_is_not_a_terminal(capsys):
    from curridistill.train.progress import PlainProgress, Progress, make_progress

    assert isinstance(make_progress(False), PlainProgress)  # pytest captures: not a terminal
    assert isinstance(make_progress(False, "rich"), Progress)
    assert make_progress(True) is None
    p = make_progress(False, "plain")
    p.on_record({"model": "student", "lesson": 0, "epoch": 0, "epochs": 3, "train_loss": 1.0, "val_accuracy": 0.5,
                 "lr": 0.1, "seconds": 1.0, "temperature": 4.0})
    p.on_note("[bold]seed-0[/] (runs/x)")
    assert capsys.readouterr().out.splitlines() == [
        "student lesson 0 epoch 1/3  loss 1.0000  val_acc 0.5000  lr 0.1 T=4.00  1.0s", "seed-0 (runs/x)"]


def test_a_run_directory_naming_code_needs_trust_or_a_parent_that_names_it(tmp_path):
    """`run --resume` refuses a saved config naming ``module:callable`` (the catalogue's rd-code-resume); a child of a
    multi-seed parent, or an `auto` final stage, resumes with the names its parent's config gave (``allowed``), and
    ``--trust-code`` lifts the refusal."""
    from curridistill.config import validate_config

    cfg = validate_config({**base(tmp_path), "student": {"name": "mypkg.nets:small"}})
    saved = tmp_path / "config.yaml"
    with pytest.raises(UserError, match="names model 'mypkg.nets:small' at student.name, which would import"):
        api.refuse_code_named_by(cfg, saved)
    with pytest.raises(UserError):
        api.refuse_code_named_by(cfg, saved, allowed={"mypkg.nets:other"})
    api.refuse_code_named_by(cfg, saved, allowed=api.model_names(cfg))
    with trusting_code():
        api.refuse_code_named_by(cfg, saved)
