"""auto --trials-parallel: trials run in worker processes, the study and the report are whole, the parent reports
every trial, and a budget in trials ends with as many finished trials as one process runs."""
import csv
import json
import os
import re

import optuna
import pytest

from curridistill import cli
from curridistill.errors import UserError
from curridistill.experiments.auto import _split_trials
from curridistill.experiments.auto import auto as run_auto
from tests.experiments.conftest import small, write_config

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


def parallel_config(tmp) -> dict:
    """Quickstart-size data (digits), 2 epochs (proxy: 1), 3 trials, one candidate and one seed re-run."""
    raw = small(tmp, epochs=2)
    raw["auto"] = {"seeds": [0], "top_k": 1, "max_trials": 3, "reference": False, "proxy": {"min_epochs": 1},
                   "space": {"feature": ["fitnet", "sp"]}}
    return raw


def _study(out):
    storage = f"sqlite:///{out / 'study.db'}"
    return optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)


@pytest.mark.parametrize("n_trials, workers, shares", [(3, 2, [2, 1]), (5, 2, [3, 2]), (4, 2, [2, 2]), (1, 4, [1]),
                                                       (None, 2, [None, None])])
def test_trials_are_shared_out_exactly(n_trials, workers, shares):
    assert _split_trials(n_trials, workers) == shares


def test_stop_after_trials_needs_one_process(tmp_path):
    with pytest.raises(UserError, match="trials_parallel=1"):
        run_auto(parallel_config(tmp_path), "10m", out=tmp_path / "x", trials_parallel=2, stop_after_trials=1)
    assert not (tmp_path / "x").exists()


def test_two_processes_make_the_same_number_of_trials_and_a_valid_report(tmp_path, capsys):
    raw = parallel_config(tmp_path)  # one cache_dir: the second search reuses the first one's teacher
    one = run_auto(raw, "10m", out=tmp_path / "one")  # a generous budget: max_trials ends both searches
    cfg = write_config(tmp_path / "auto.yaml", raw)
    out = tmp_path / "two"
    assert cli.main(["auto", str(cfg), "--budget", "10m", "--out", str(out), "--trials-parallel", "2"]) == 0
    printed = capsys.readouterr().out

    trials = _study(out).trials
    assert len(trials) == one["n_trials"] == 3 and all(t.state in FINISHED for t in trials)
    assert len([t for t in _study(tmp_path / "one").trials if t.state in FINISHED]) == 3
    pids = {t.user_attrs["pid"] for t in trials}
    assert len(pids) == 2 and os.getpid() not in pids  # two worker processes, not this one
    assert {t.user_attrs["pid"] for t in _study(tmp_path / "one").trials} == {os.getpid()}
    # the parent reported every trial the workers finished (CLI lines, trials.csv)
    assert sorted(int(n) for n in re.findall(r"^trial (\d+): ", printed, flags=re.M)) == [0, 1, 2]
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [int(r["number"]) for r in rows] == [0, 1, 2] and all(r["state"] in ("COMPLETE", "PRUNED", "FAIL") for r in rows)
    # a whole report: auto.json / auto.md / best.yaml as after a one-process search
    summary = json.loads((out / "auto.json").read_text())
    assert summary["n_trials"] == 3 and sum(summary["counts"].values()) == 3
    assert summary["chosen"]["trial"] in {t.number for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
    assert len(summary["chosen"]["test"]) == 1 and set(summary) == set(one) - {"out", "best_yaml"}
    assert "Search history" in (out / "auto.md").read_text()
    assert cli.main(["validate", str(out / "best.yaml")]) == 0
