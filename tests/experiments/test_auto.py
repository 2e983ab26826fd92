"""auto: the built-in joint space, a tiny-budget search on digits, Pareto output, resume, budget errors."""
import csv
import json

import optuna
import pytest
import yaml

from curridistill import cli
from curridistill.config import AutoConfig, load_config, validate_config
from curridistill.curriculum import ORDER_MODES, PACINGS, SCORERS, SELF_PACED
from curridistill.data.pipeline import load_splits
from curridistill.errors import UserError
from curridistill.experiments import auto_space as S
from curridistill.experiments.auto import build_space, parse_budget
from curridistill.experiments.auto import auto as run_auto
from curridistill.experiments.auto_report import pareto_front_numbers
from curridistill.knowledge import load_all
from curridistill.train.callbacks import StopRequested
from tests.experiments.conftest import small, write_config

FAST = {"feature": ["fitnet", "sp"]}  # CRD's 16k-sample queue is slow for a test


def auto_config(tmp, **auto) -> dict:
    raw = small(tmp, epochs=4)
    raw["auto"] = {"seeds": [0, 1], "top_k": 2, "max_trials": 5, "proxy": {"min_epochs": 2}, "space": FAST, **auto}
    return raw


@pytest.fixture(scope="module")
def space(exp_root):
    cfg = validate_config(auto_config(exp_root))
    return cfg, build_space(cfg, load_splits(cfg.data), AutoConfig())


def _values(space, **chosen) -> dict:
    """A candidate: the first choice / the low end of every active dimension, with ``chosen`` values."""
    values = {}
    for d in space.dims:
        if not d.active({**values, **chosen}):
            continue
        if d.name in chosen:
            values[d.name] = chosen[d.name]
        elif d.param is None:
            values[d.name] = d.fixed
        elif d.param.kind == "categorical":
            values[d.name] = d.param.choices[0]
        else:
            values[d.name] = d.param.low
    return values


def _check_candidate(cfg, space, values) -> dict:
    from curridistill.experiments.auto import Fidelity, Search

    search = Search(out="unused", dims=space.dims, trial_base={}, template=cfg.course[0].model_dump(mode="json"),
                    fidelity=Fidelity(4, None, 0.1), costs=space.costs, teacher_stage="stage2", objective="accuracy",
                    cost="latency", max_latency_ms=None, max_params=None, storage="", study_name="")
    raw = search.candidate_raw(values, cfg.model_dump(mode="json") | {"auto": None}, 4)
    return validate_config(raw, "candidate").model_dump(mode="json")


def _choices(space, name: str) -> list:
    d = next(d for d in space.dims if d.name == name)
    return [d.fixed] if d.param is None else list(d.param.choices)


@pytest.mark.parametrize("registry", ["knowledge", "scorers", "pacings", "self_paced", "orders"])
def test_space_covers_registry(space, registry):
    """Every registered name is searched (and then makes a valid config) or listed as left out with a reason."""
    cfg, sp = space
    full_space = build_space(cfg, load_splits(cfg.data), AutoConfig(space={}))  # without the test's feature restriction
    registered = {"knowledge": set(load_all()), "scorers": set(SCORERS), "pacings": set(PACINGS),
                  "self_paced": set(SELF_PACED), "orders": set(ORDER_MODES)}[registry]
    left_out = full_space.left_out.get(registry, {})
    assert all(isinstance(why, str) and why for why in left_out.values())
    if registry == "knowledge":
        claimed = set(S.TERMS_USED) | set(S.TERMS_LEFT_OUT)
        assert registered <= claimed, f"terms neither searched nor listed as left out: {registered - claimed}"
        features = _choices(full_space, "feature")
        used = {"ce", "kd", "dkd", "dist", "ctkd", "mse_logits", *features}
        assert registered <= used | set(left_out)
        for recipe in S.RECIPES:
            for feature in (features if recipe == "feature" else [None]):
                chosen = {"recipe": recipe, **({"feature": feature} if feature else {})}
                course = _check_candidate(cfg, full_space, _values(full_space, **chosen))["course"]
                kinds = {t["kind"] for lesson in course for t in lesson["loss"].values()}
                assert kinds & (set(S.LOGIT_RECIPES.values()) | {"mse_logits"})
                if feature:
                    assert feature in kinds
        return
    dim, key = {"scorers": ("scorer", "scorer"), "pacings": ("pacing", "pacing"), "self_paced": ("self_paced", None),
                "orders": ("order", "order")}[registry]
    searched = set(_choices(full_space, dim))
    assert searched | set(left_out) == registered and not searched & set(left_out)
    for name in sorted(searched):
        curriculum = "self_paced" if registry == "self_paced" else "paced"
        for recipe in ("kd", "annealing_kd"):
            lesson = _check_candidate(cfg, full_space, _values(full_space, recipe=recipe, curriculum=curriculum,
                                                               **{dim: name}))["course"][0]
            cur = lesson["curriculum"]
            got = cur["self_paced"]["weighting"] if registry == "self_paced" else (
                cur["pacing"]["kind"] if registry == "pacings" else cur[key])
            assert got == name


@pytest.mark.parametrize("curriculum", S.CURRICULA)
def test_curriculum_forms_validate(space, curriculum):
    cfg, sp = space
    for recipe in ("kd", "ctkd", "annealing_kd"):
        course = _check_candidate(cfg, sp, _values(sp, recipe=recipe, curriculum=curriculum))["course"]
        first = course[0]
        assert (first["curriculum"] is not None) == (curriculum in ("paced", "self_paced"))
        if curriculum == "annealing":
            term = next(t for name, t in first["loss"].items() if name != "ce")
            assert term["temperature"] is not None and term["temperature"]["kind"] == "cosine" or \
                term["weight"]["warmup"] > 0
        assert sum(lesson["epochs"] for lesson in course) == 4


@pytest.mark.parametrize("text,seconds", [("2h", 7200), ("30m", 1800), ("300s", 300), ("1h30m", 5400), ("45", 45)])
def test_parse_budget(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["abc", "0s", "5x", ""])
def test_parse_budget_bad(text):
    with pytest.raises(UserError, match="--budget"):
        parse_budget(text)


def test_space_overrides(exp_root, space):
    cfg, _ = space
    splits = load_splits(cfg.data)
    with pytest.raises(UserError, match="did you mean 'temperature'"):
        build_space(cfg, splits, AutoConfig(space={"temprature": {"float": [1, 4]}}))
    with pytest.raises(UserError, match="'kdd' is not a choice; did you mean 'kd'"):
        build_space(cfg, splits, AutoConfig(space={"recipe": ["kdd"]}))
    sp = build_space(cfg, splits, AutoConfig(space={"recipe": ["kd", "dkd"], "curriculum": "none",
                                                    "temperature": {"float": [2, 3]}}))
    assert _choices(sp, "recipe") == ["kd", "dkd"] and _choices(sp, "curriculum") == ["none"]
    with pytest.raises(UserError, match="no student of the space fits"):
        build_space(cfg, splits, AutoConfig(max_params=10))
    limited = build_space(cfg, splits, AutoConfig(max_params=2500))
    assert all(limited.costs[S.choice_key(c)].params <= 2500 for c in _choices(limited, "student"))


def test_too_small_budget_one_line(exp_root, capsys):
    cfg = write_config(exp_root / "auto-small.yaml", auto_config(exp_root))
    out = exp_root / "auto-small"
    assert cli.main(["auto", str(cfg), "--budget", "1s", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "too small" in err[0] and "--budget" in err[0], err
    assert not out.exists()


def test_tiny_budget_writes_best_yaml_that_run_reproduces(exp_root, capsys):
    cfg = write_config(exp_root / "auto.yaml", auto_config(exp_root))
    out = exp_root / "auto"
    # a generous budget: max_trials ends the search, so the test does not depend on the machine's speed
    assert cli.main(["auto", str(cfg), "--budget", "3m", "--out", str(out), "--max-params", "5000", "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    summary = json.loads((out / "auto.json").read_text())
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == summary["n_trials"] == 5
    assert all(int(r["params"]) <= 5000 for r in rows if r["params"])
    assert summary["used_s"] <= 180 and summary["plan"]["search_s"] > 0
    # the teacher was trained once, before the search; trials load its checkpoint
    assert summary["teacher_paths"] and all(p.endswith("model.safetensors") for p in summary["teacher_paths"])
    trial_cfg = yaml.safe_load((out / "trials" / "trial-0" / "config.yaml").read_text())
    assert trial_cfg["teacher"]["checkpoint"] == summary["teacher_paths"][0]
    # finals: full fidelity, both seeds, chosen on validation; the gain survival is reported
    chosen = summary["chosen"]
    assert len(chosen["val"]) == len(chosen["test"]) == 2
    cands = [f for f in summary["finals"] if f["trial"] is not None]
    assert chosen["name"] == max(cands, key=lambda f: sum(f["val"]))["name"]
    md = (out / "auto.md").read_text()
    assert "estimated" in md and "survived" in md and "Search history" in md
    # best.yaml is a normal config: validate and run accept it, and run reproduces the seed-0 re-run
    best = out / "best.yaml"
    assert cli.main(["validate", str(best)]) == 0
    assert load_config(best).auto is None
    run_dir = exp_root / "auto-best-run"
    assert cli.main(["run", str(best), "--out", str(run_dir), "--quiet", "--set", "baseline.enabled=false"]) == 0
    report = json.loads((run_dir / "report.json").read_text())
    assert report["teacher"]["reused_from"]  # the search's teacher, from run.cache_dir
    seed0 = json.loads((out / "final" / chosen["name"] / "seed-0" / "report.json").read_text())
    assert report["student"]["accuracy"] == pytest.approx(seed0["student"]["accuracy"])


def test_pareto_output_is_non_dominated(exp_root):
    raw = auto_config(exp_root, objective="pareto", cost="params", max_trials=6, reference=False, top_k=2)
    out = exp_root / "auto-pareto"
    result = run_auto(raw, "3m", out=out)
    study = optuna.load_study(study_name=result["study_name"], storage=f"sqlite:///{out / 'study.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    points = {t.number: (t.values[0], t.values[1]) for t in complete}
    front = yaml.safe_load((out / "pareto.yaml").read_text())["front"]
    assert front and {m["trial"] for m in front} == set(result["pareto_front"])
    for m in front:
        a, c = points[m["trial"]]
        assert c == m["params"]
        dominated = [n for n, (a2, c2) in points.items() if a2 >= a and c2 <= c and (a2 > a or c2 < c)]
        assert not dominated, f"front member {m['trial']} is dominated by {dominated}"
    # every completed trial off the front is dominated by a member
    assert set(pareto_front_numbers(complete, "params")) == {m["trial"] for m in front}
    assert (out / "pareto.png").stat().st_size > 0
    assert "Pareto front" in (out / "auto.md").read_text()


def test_resume_after_kill_keeps_every_trial(exp_root):
    raw = auto_config(exp_root, max_trials=4, top_k=1, seeds=[0], reference=False)
    out = exp_root / "auto-resume"
    with pytest.raises(StopRequested):
        run_auto(raw, "3m", out=out, stop_after_trials=2)
    storage = f"sqlite:///{out / 'study.db'}"
    name = optuna.get_all_study_names(storage)[0]
    study = optuna.load_study(study_name=name, storage=storage)
    before = {t.number: (t.state, t.params) for t in study.trials}
    assert len(before) == 2
    # a process killed in the middle of a trial leaves it RUNNING
    cfg = validate_config(raw)
    sp = build_space(cfg, load_splits(cfg.data), cfg.auto)
    killed = study.ask()
    killed_values = S.sample(sp.dims, killed)
    with pytest.raises(UserError, match="already holds an auto search"):
        run_auto(raw, "3m", out=out)
    result = run_auto(raw, "3m", out=out, resume=True)
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.trials
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(trials)))  # nothing repeated or renumbered
    for n, (state, params) in before.items():  # finished trials are kept as they were, not re-run
        assert trials[n].state == state and trials[n].params == params
    assert trials[killed.number].state == optuna.trial.TrialState.FAIL and trials[killed.number].user_attrs["interrupted"]
    requeued = [t for t in trials if t.user_attrs.get("requeued_from") == killed.number]
    assert len(requeued) == 1 and requeued[0].params == killed.params  # the interrupted trial is not lost
    assert S.decode_params(sp.dims, requeued[0].params)["recipe"] == killed_values["recipe"]
    assert result["n_trials"] == len(trials) == 4
    assert result["invocations"] == 2


def test_trials_and_best_yaml_are_single_runs_whatever_run_parallel_says():
    """A config's ``run.parallel`` is for seeds side by side: auto's trials and best.yaml are one run each (a single
    run refuses run.parallel > 1), and the full-fidelity re-runs over seeds take it back."""
    from curridistill.experiments.auto import _base_raw

    base = _base_raw({"run": {"parallel": 4, "seeds": [0, 1]}, "auto": {}, "student": {"name": "mlp"}})
    assert base["run"]["parallel"] == 1 and base["run"]["seeds"] is None and "auto" not in base
