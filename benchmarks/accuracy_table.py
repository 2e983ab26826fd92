"""Accuracy table: every method on one teacher/student pair, several seeds, same budget.

    python benchmarks/accuracy_table.py configs/protocol/cifar10_cpu_scale.yaml --seeds 0,1,2 \
        --set data.root=../shared/datasets --out runs/accuracy --json benchmarks/results/accuracy_resnet56_resnet8_cpu.json

Each row replaces the config's course (and assistants) with the method's, runs it for every seed with
`run.seeds`, and reads the aggregate: test accuracy of the validation-selected checkpoint (mean ± std),
delta vs the student trained alone (the kd row's baseline: same lessons, budget and initialization, CE
only), Welch p-value vs `kd`, and training time per seed. The teacher is trained (or loaded) once and
its outputs are cached, so every row and seed sees the same teacher on the same augmented stream.
Rows already finished under --out are read back, so the command resumes where it stopped; a row that
was interrupted resumes from its own config.yaml, and more --seeds train only the new seeds (a row whose
settings changed is refused: delete its folder to rerun it). Seeds that the --json file already records
for the same protocol are read back from it too (marked with the commit that measured them), so a fresh
checkout of a committed partial table trains only what is missing. The JSON and Markdown table are rewritten
after every row (`"complete": false` until the last).
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

from curridistill import api
from curridistill.bench.throughput import git_commit, machine
from curridistill.config import apply_overrides, load_config
from curridistill.errors import UserError
from curridistill.evaluate.stats import holm, paired_t_test, summarize, welch_t_test
from curridistill.io import write_json, write_text


BASELINE_ROW = "kd"
FEATURE_TERMS = {"fitnet", "at", "crd"}
# TAKD's assistant sits between teacher and student in depth (Mirzadeh et al. use one of intermediate size)
TAKD_ASSISTANT = {"resnet8": "resnet14", "resnet14": "resnet20", "resnet20": "resnet32", "resnet32": "resnet44",
                  "wrn_16_1": "wrn_16_2", "wrn_16_2": "wrn_28_2", "vgg8": "vgg11"}


# Hacohen & Weinshall: teacher-confidence order, class-balanced, fixed exponential pacing (all data from epoch 4)
CONFIDENCE_CURRICULUM = {"scorer": "teacher_confidence", "order": "class_balanced",
                         "pacing": {"kind": "fixed_exponential", "start": 0.1, "inc": 1.9, "unit": "epoch", "step_length": 1}}
# Kumar et al.: the student keeps the samples whose loss is under a quantile threshold growing from 0.5 to all
SELF_PACED = {"scorer": "student_loss", "self_paced": {"weighting": "hard", "quantile": True,
                                                        "threshold": {"kind": "linear", "start": 0.5, "end": 1.5}}}


def _kd(base: dict) -> dict:
    return {"ce": 0.1, "kd": {"weight": 0.9, "temperature": 4}}


def _lesson(base: dict, **changes) -> dict:
    lesson = copy.deepcopy(base["course"][0])
    lesson.update(changes)
    return lesson


def rows(base: dict, assistant: str | None = None) -> dict[str, dict]:
    """Method name -> the config edits that make it; budgets (epochs, optimizer, LR) stay the base's.

    ``assistant`` is TAKD's intermediate model; by default one step up in depth from the student. Without
    one (a student outside TAKD_ASSISTANT and no --assistant) the takd row is left out."""
    epochs = base["course"][0]["epochs"]
    warm = max(1, round(epochs * 20 / 240))  # DKD's 20-of-240-epoch warm-up, scaled to the budget
    half = max(1, epochs // 2)
    assistant = assistant or TAKD_ASSISTANT.get(base["student"]["name"])
    table = {
        "kd": {"course": [_lesson(base, loss=_kd(base))]},
        "dkd": {"course": [_lesson(base, loss={"ce": 1.0, "dkd": {"weight": {"kind": "constant", "value": 1, "warmup": warm, "unit": "epoch"}}})]},
        "dist": {"course": [_lesson(base, loss={"ce": 1.0, "dist": 2.0})]},
        # Sun et al.'s setting (their repo: --logit-stand --base-temp 2 --kd-weight 9): standardized logits
        # have unit spread, so the KL is small and needs the larger weight.
        "kd+ls": {"course": [_lesson(base, loss={"ce": 0.1, "kd": {"weight": 9.0, "temperature": 2, "ls": True}})]},
        "fitnet": {"course": [_lesson(base, loss={"ce": 1.0, "kd": {"weight": 0.0}, "fitnet": 100})]},
        "at": {"course": [_lesson(base, loss={"ce": 1.0, "at": {"weight": 1000, "student_layers": ["stage2", "stage3"],
                                                                  "teacher_layers": ["stage2", "stage3"]}})]},
        "ctkd": {"course": [_lesson(base, loss={"ce": 0.1, "ctkd": 0.9})]},
        # CTKD's instance-wise variant: one learned temperature per sample (an MLP on the logits), same weights
        "ctkd (instance)": {"course": [_lesson(base, loss={"ce": 0.1, "ctkd": {"weight": 0.9, "mode": "instance"}})]},
        # RepDistiller's CRD row (-r 1 -a 0 -b 0.8) on the pooled last stage; K keeps the paper's K / N (16384 of
        # 50,000) on this training set; the paper's memory bank + NCE, and the bounded queue + InfoNCE
        "crd": {"course": [_lesson(base, loss={"ce": 1.0, "crd": {"weight": 0.8, "num_negatives": _crd_k(base)}})]},
        "crd (queue)": {"course": [_lesson(base, loss={"ce": 1.0, "crd": {
            "weight": 0.8, "num_negatives": _crd_k(base), "memory": "queue"}})]},
        "curriculum+kd": {"course": [_lesson(base, loss=_kd(base), curriculum=CONFIDENCE_CURRICULUM)]},
        "self-paced kd": {"course": [_lesson(base, loss=_kd(base), curriculum=SELF_PACED)]},
        # the curricula alone, without soft targets (CE only): the teacher only scores (Hacohen & Weinshall's
        # transfer-teacher curriculum) or the student picks its own easy samples (self-paced learning)
        "curriculum": {"course": [_lesson(base, loss={"ce": 1.0}, curriculum=CONFIDENCE_CURRICULUM)]},
        "self-paced": {"course": [_lesson(base, loss={"ce": 1.0}, curriculum=SELF_PACED)]},
        "annealing-kd": {"course": [
            _lesson(base, name="anneal", epochs=half, loss={"mse_logits": {"teacher_scale": {"kind": "staircase", "start": 0.1, "end": 1.0, "steps": 10}}}),
            _lesson(base, name="labels", epochs=epochs - half, loss={"ce": 1.0})]},
        # the combined recipe: the strongest logit term of the CPU-scale tables (DKD) served easy-to-hard by
        # the teacher's confidence, the same pacing as curriculum+kd (full data from epoch 4 of 15)
        "curriculum+dkd": {"course": [_lesson(base, loss={"ce": 1.0, "dkd": {"weight": {
            "kind": "constant", "value": 1, "warmup": warm, "unit": "epoch"}}}, curriculum=CONFIDENCE_CURRICULUM)]},
    }
    if assistant:
        table[f"takd ({assistant})"] = {"course": [_lesson(base, loss=_kd(base))], "assistants": [{"name": assistant}]}
    return table


def _crd_k(base: dict) -> int:
    """CRD's negatives per anchor at the paper's ratio to the training set (16384 of CIFAR's 50,000); a config
    without ``data.subset`` is taken as the full 50,000-image training file."""
    data = load_config(base).data
    n_train = data.subset or 50_000
    n_train -= round(data.val_size * n_train) if data.val_size < 1 else int(data.val_size)
    return max(256, round(16384 * n_train / 50_000))


def _row_dir(out: Path, name: str) -> Path:
    return out / name.replace(" ", "_").replace("(", "").replace(")", "").replace("+", "_")


def run_row(name: str, edits: dict, base: dict, seeds: list[int], out: Path, parallel: int = 1) -> dict:
    """The row's multi-seed aggregate: read back when finished, resumed when interrupted, extended when
    --seeds adds seeds to a finished row (its finished seeds are kept, only the new ones train)."""
    row_dir = _row_dir(out, name)
    raw = {**copy.deepcopy(base), **copy.deepcopy(edits)}
    raw["run"] = {**raw.get("run", {}), "seeds": seeds, "parallel": parallel}
    # The student-alone row is the kd row's baseline: the same lessons, budget and initialization with CE
    # only. Training it once (not once per method) keeps the comparison paired and saves a third of the time.
    raw["baseline"] = {"enabled": name == BASELINE_ROW}
    if any(term in FEATURE_TERMS for lesson in raw["course"] for term in lesson.get("loss", {})):
        raw["run"]["cache_features"] = True  # teacher features go into the shared cache: no online teacher per seed
    cfg = load_config(raw)
    if not (row_dir / "config.yaml").is_file():
        return api.run(cfg, out=row_dir)
    saved = load_config(row_dir / "config.yaml")
    if _without_seeds(saved) != _without_seeds(cfg):
        raise UserError(f"row {name!r}: {row_dir} was run with other settings; delete that folder to rerun the row, "
                        f"or pass another --out")
    wanted = [f"seed-{s}" for s in seeds]
    if (row_dir / "aggregate.json").is_file():
        agg = json.loads((row_dir / "aggregate.json").read_text())
        if agg.get("children") == wanted:
            return agg
    if saved.run.seeds != seeds:
        write_text(row_dir / "config.yaml", cfg.to_yaml())  # the parent now lists the new seeds
    return api.resume(row_dir)


def _earlier_seeds(json_path: Path, base: dict) -> dict:
    """Per-row, per-seed results that an earlier invocation recorded in --json for this same protocol.

    The JSON is the durable record (committed), the run folders are not: a fresh checkout, or a machine
    whose runs/ was cleaned, keeps every seed the JSON already holds and trains only the others. A JSON
    written for another protocol (data, models, budget, teacher checkpoint) is ignored."""
    if not json_path.is_file():
        return {}
    record = json.loads(json_path.read_text())
    if record.get("protocol") != json.loads(json.dumps(_protocol(base))):
        return {}
    source = {"commit": record.get("git", {}).get("commit"), "date": record.get("date")}
    found: dict = {"teacher_accuracy": record.get("teacher_accuracy")}
    by_method = {r["method"]: r for r in record.get("rows", [])}
    for method, row in by_method.items():
        seeds = row.get("seeds") or record.get("seeds", [])
        if method == "student alone" or len(seeds) != len(row.get("per_seed", [])):
            continue
        times = row.get("train_seconds") or [None] * len(seeds)
        found[method] = {s: {"student": acc, "train_seconds": t, "from": row.get("read_back", {}).get(str(s), source)}
                         for s, acc, t in zip(seeds, row["per_seed"], times)}
    alone = by_method.get("student alone")
    if BASELINE_ROW in found and alone and len(alone.get("per_seed", [])) == len(found[BASELINE_ROW]):
        times = alone.get("train_seconds") or [None] * len(alone["per_seed"])
        for (s, entry), acc, t in zip(found[BASELINE_ROW].items(), alone["per_seed"], times):
            entry.update(baseline=acc, baseline_train_seconds=t)
    return found


def _pending(earlier: dict, done: dict, chosen: list[str]) -> dict:
    """Rows the JSON already records that this invocation has not (re)computed yet, as recorded: a run that is
    stopped mid-way never rewrites the durable record with fewer rows or seeds than it read."""
    names = [n for n in chosen if n not in done] + [n for n in earlier if n not in chosen and n != "teacher_accuracy"]
    return {n: _merge(list(earlier[n]), earlier[n], {}, earlier.get("teacher_accuracy"))
            for n in names if earlier.get(n)}


def _kept_seeds(earlier: dict, wanted: list[int], row_dir: Path) -> dict:
    """The wanted seeds taken from the JSON: those its run folder does not hold (the folder wins)."""
    in_folder = set()
    if (row_dir / "config.yaml").is_file():
        in_folder = set(load_config(row_dir / "config.yaml").run.seeds or [])
    return {s: earlier[s] for s in wanted if s in earlier and s not in in_folder}


def _per_seed(agg: dict, seeds: list[int]) -> dict:
    student, baseline = agg["per_seed"]["student"], agg["per_seed"].get("baseline", [])
    times, base_times = _train_seconds(agg, "student") or [], _train_seconds(agg, "baseline") or []
    fresh = {}
    for i, s in enumerate(seeds):
        fresh[s] = {"student": student[i], "train_seconds": times[i] if i < len(times) else None}
        if baseline:
            fresh[s].update(baseline=baseline[i], baseline_train_seconds=base_times[i] if i < len(base_times) else None)
    fresh["teacher_accuracy"] = agg.get("teacher", {}).get("accuracy", {}).get("mean")
    return fresh


def _merge(wanted: list[int], kept: dict, fresh: dict, earlier_teacher: float | None) -> dict:
    """One row's per-seed lists in --seeds order, the kept seeds marked with the run that measured them."""
    entries = [kept.get(s) or fresh[s] for s in wanted]
    return {"seeds": wanted, "student": [e["student"] for e in entries],
            "baseline": [e["baseline"] for e in entries if "baseline" in e],
            "teacher": fresh.get("teacher_accuracy") or earlier_teacher,
            "train_seconds": [e["train_seconds"] for e in entries],
            "baseline_train_seconds": [e.get("baseline_train_seconds") for e in entries if "baseline" in e],
            "read_back": {str(s): kept[s]["from"] for s in wanted if s in kept}}


def _without_seeds(cfg) -> dict:
    # through the saved YAML form, so defaults that a term fills in when it is built compare equal
    raw = load_config(yaml.safe_load(cfg.to_yaml())).model_dump(mode="json")
    raw["run"]["seeds"] = None
    raw["run"]["parallel"] = 1  # how many seeds ran side by side does not change a row's results
    return raw


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--more-seeds", metavar="ROW,ROW=SEEDS", action="append", default=[],
                   help="other seeds for some rows, e.g. kd,dkd=0,1,2,3,4 (repeatable); the kd row's seeds are also "
                        "the student-alone row's")
    p.add_argument("--parallel", type=int, default=1, help="seeds of a row run side by side in N processes")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--rows", help="comma-separated subset of the rows")
    p.add_argument("--assistant", help="TAKD's assistant model (default: one step up in depth from the student)")
    p.add_argument("--out", default="runs/accuracy")
    p.add_argument("--json", dest="json_out", required=True)
    p.add_argument("--render", action="store_true", help="only rewrite the Markdown table from the --json record")
    args = p.parse_args(argv)
    if args.render:  # e.g. after the table's wording changed, without training anything
        record = json.loads(Path(args.json_out).read_text())
        _mark_holm(record["rows"])  # the current correction, so the JSON and its table agree
        _add_paired(record["rows"], record["seeds"])
        record.setdefault("notes", {}).update(paired_p_vs_alone=PAIRED_NOTE, paired_p_vs_kd=PAIRED_NOTE)
        write_json(args.json_out, record)
        write_text(Path(args.json_out).with_suffix(".md"), markdown(record))
        return 0
    try:
        return build_table(args, argv)
    except UserError as exc:  # bad config, missing data or checkpoint, NaN loss: one line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        return 2


def build_table(args: argparse.Namespace, argv: list[str] | None) -> int:
    load_config(args.config, args.overrides)  # one clear line for a missing file, bad YAML or a wrong key
    base = apply_overrides(yaml.safe_load(Path(args.config).read_text()), args.overrides)
    seeds = _seed_list(args.seeds, "--seeds")
    if args.parallel < 1:
        raise UserError(f"--parallel {args.parallel}: give a number of processes >= 1")
    table = rows(base, args.assistant)
    row_seeds = _more_seeds(args.more_seeds, table)
    if not args.rows and not any(name.startswith("takd") for name in table):
        print(f"note: no takd row: no default assistant for student {base['student']['name']!r}; pass --assistant MODEL")
    chosen = args.rows.split(",") if args.rows else list(table)
    unknown = [c for c in chosen if c not in table]
    if unknown:
        raise UserError(f"--rows: unknown row(s) {unknown}; choose from {list(table)}")
    # kd first: its baseline is the student-alone row and its student the p-value reference of every other row
    chosen = [BASELINE_ROW] + [c for c in chosen if c != BASELINE_ROW]
    earlier = _earlier_seeds(Path(args.json_out), base)
    results, t0 = {}, time.time()
    code = git_commit()  # the code this invocation runs: commits made while it trains do not change it
    for name in chosen:
        wanted = row_seeds.get(name, seeds)
        kept = _kept_seeds(earlier.get(name, {}), wanted, _row_dir(Path(args.out), name))
        remaining = [s for s in wanted if s not in kept]
        fresh = {}
        if remaining:
            agg = run_row(name, table[name], base, remaining, Path(args.out), args.parallel)
            fresh = _per_seed(agg, remaining)
        results[name] = _merge(wanted, kept, fresh, earlier.get("teacher_accuracy"))
        print(f"{name}: {summarize(results[name]['student'])['mean']:.4f}"
              + (f" (seeds {sorted(kept)} read back from {args.json_out})" if kept else ""), flush=True)
        # the table so far, after every row: a long table that is stopped still shows what it measured
        shown = {**results, **_pending(earlier, results, chosen)}
        record = _record(args, argv, base, seeds, shown, complete=len(results) == len(chosen), t0=t0, code=code)
        write_json(args.json_out, record)  # atomic: an interrupted write never leaves half a table
        write_text(Path(args.json_out).with_suffix(".md"), markdown(record))
    print(markdown(record))
    return 0


def _seed_list(text: str, flag: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if len(set(seeds)) != len(seeds):
        raise UserError(f"{flag} {text!r}: a seed is repeated")
    return seeds


def _more_seeds(items: list[str], table: dict) -> dict[str, list[int]]:
    """``["kd,dkd=0,1,2,3,4"]`` -> {"kd": [0..4], "dkd": [0..4]}; unknown rows are one clear line."""
    found = {}
    for item in items:
        names, sep, seeds = item.partition("=")
        if not sep:
            raise UserError(f"--more-seeds {item!r}: expected ROW,ROW=SEEDS, e.g. kd,dkd=0,1,2,3,4")
        for name in names.split(","):
            if name not in table:
                raise UserError(f"--more-seeds: unknown row {name!r}; choose from {list(table)}")
            found[name] = _seed_list(seeds, "--more-seeds")
    return found


def _record(args, argv, base: dict, seeds: list[int], results: dict, complete: bool, t0: float, code: dict) -> dict:
    alone, kd = results[BASELINE_ROW]["baseline"], results[BASELINE_ROW]["student"]
    first = results[BASELINE_ROW]
    table_rows = [{"method": "student alone", "seeds": first["seeds"], **_stats(alone, alone, kd),
                   "train_seconds": first["baseline_train_seconds"], "read_back": first["read_back"]}]
    for name, r in results.items():
        table_rows.append({"method": name, "seeds": r["seeds"], **_stats(r["student"], alone, kd),
                           "train_seconds": r["train_seconds"], "read_back": r["read_back"]})
    _mark_holm(table_rows)
    _add_paired(table_rows, seeds)
    return {"command": "python benchmarks/accuracy_table.py " + " ".join(argv or sys.argv[1:]),
            "git": code, "machine": machine(torch.device("cpu")), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "complete": complete, "seeds": seeds,
            "selection": "validation-selected checkpoint, evaluated once on the test split",
            "protocol": _protocol(base),
            "teacher_accuracy": next((r["teacher"] for r in results.values()), None),
            "rows": table_rows,
            "notes": {"train_seconds": "per seed: [seed 0, seed 1, ...]; the table shows the median. A seed that is the "
                                       "first to need a teacher stream also pays its one-time teacher pass (cache build), "
                                       "and a TAKD seed includes training its assistant",
                      "read_back": "seed -> the earlier invocation (commit, date) whose JSON record this seed's result "
                         "was read back from instead of training it again; empty: trained by this invocation",
            "p_vs_kd": "Welch's t-test over seeds against the kd row", "p_vs_alone": "Welch's t-test over "
                      "seeds against the student trained alone (the kd row's baseline: same seeds and initialization)",
            "paired_p_vs_alone": PAIRED_NOTE, "paired_p_vs_kd": PAIRED_NOTE},
            "seconds_this_invocation": time.time() - t0}


def _protocol(base: dict) -> dict:
    """What every row shares: data, models and the training budget."""
    lesson, data = base["course"][0], base["data"]
    return {"teacher": base.get("teacher", {}).get("name"), "teacher_checkpoint": base.get("teacher", {}).get("checkpoint"),
            "student": base["student"]["name"], "data": data.get("name"), "subset": data.get("subset"),
            "val_size": data.get("val_size"), "batch_size": data.get("batch_size"), "augment": data.get("augment"),
            "epochs": lesson["epochs"], "optimizer": lesson.get("optimizer"), "lr_schedule": lesson.get("lr_schedule")}


def _train_seconds(agg: dict, model: str) -> list[float] | None:
    """Per-seed training time of ``model``; a TAKD student's includes training its assistants."""
    times = []
    for child in agg.get("children", []):
        report = json.loads((Path(agg["run_dir"]) / child / "report.json").read_text())
        if model not in report:
            return None
        times.append((report[model].get("train_seconds") or 0.0)
                     + (sum(a.get("train_seconds") or 0.0 for a in report.get("assistants", [])) if model == "student" else 0.0))
    return times or None


def _mark_holm(table_rows: list[dict], alpha: float = 0.05) -> None:
    """Holm-adjusted p-values over one family: every distinct comparison in the table, vs alone and vs kd.

    kd against the student alone sits in both columns (the kd row's p vs alone, the alone row's p vs kd); it is
    one test, counted once and marked alike in both cells."""
    def repeats_kd_vs_alone(row: dict, key: str) -> bool:
        return key == "p_vs_kd" and row["method"] == "student alone"

    keys = ("p_vs_alone", "p_vs_kd")
    cells = [(i, key) for key in keys for i, r in enumerate(table_rows) if not repeats_kd_vs_alone(r, key)]
    adjusted = dict(zip(cells, holm([table_rows[i].get(key) for i, key in cells])))
    kd = next((i for i, r in enumerate(table_rows) if r["method"] == "kd"), None)
    for i, r in enumerate(table_rows):
        for key in keys:
            adj = adjusted.get((kd, "p_vs_alone")) if repeats_kd_vs_alone(r, key) else adjusted[(i, key)]
            r[f"holm_{key}"] = adj
            r[f"holm_{key}_significant"] = adj is not None and adj < alpha


PAIRED_NOTE = ("the paired t-test over the seeds both rows have (a seed is the same initialization and batch order "
               "in every row); not Holm-corrected and not in the Markdown table, whose test is Welch's")


def _add_paired(table_rows: list[dict], seeds: list[int]) -> None:
    """``paired_p_vs_alone`` / ``paired_p_vs_kd``: the paired t-test over the seeds a row shares with the student
    alone / the kd row. A seed gives every row the same initialization and batch order, so the pairs share that
    part of the spread; Welch's test (the table's) ignores it and is the more conservative of the two."""
    def by_seed(row: dict) -> dict[int, float]:
        row_seeds = row.get("seeds") or (seeds if len(seeds) == len(row["per_seed"]) else [])
        return dict(zip(row_seeds, row["per_seed"]))

    refs = {"alone": next(r for r in table_rows if r["method"] == "student alone"),
            "kd": next((r for r in table_rows if r["method"] == "kd"), None)}
    ref_values = {name: by_seed(ref) for name, ref in refs.items() if ref is not None}
    for row in table_rows:
        mine = by_seed(row)
        for name, ref in refs.items():
            if ref is None or ref is row:
                row[f"paired_p_vs_{name}"] = None
                continue
            theirs = ref_values[name]
            common = [s for s in mine if s in theirs]
            row[f"paired_p_vs_{name}"] = paired_t_test([mine[s] for s in common], [theirs[s] for s in common])["p_value"]


def _stats(values: list[float], alone: list[float], kd: list[float]) -> dict:
    s = summarize(values)
    return {"mean": s["mean"], "std": s["std"], "ci95": [s["ci_low"], s["ci_high"]], "n": s["n"], "per_seed": values,
            "delta_vs_alone": s["mean"] - summarize(alone)["mean"],
            "p_vs_alone": welch_t_test(values, alone)["p_value"] if values is not alone else None,
            "p_vs_kd": welch_t_test(values, kd)["p_value"] if values is not kd else None}


def _p_cell(row: dict, key: str) -> str:
    if row.get(key) is None:
        return "–"
    text = f"{row[key]:.3f}" if row[key] >= 0.001 else f"{row[key]:.1e}"
    return f"**{text}**" if row.get(f"holm_{key}_significant") else text


def _read_back_note(record: dict) -> str:
    """Which rows' seeds came from an earlier invocation's record rather than this one."""
    sources: dict[str, list[str]] = {}
    for r in record["rows"]:
        for origin in (r.get("read_back") or {}).values():
            label = f"commit {str(origin.get('commit'))[:7]} ({str(origin.get('date'))[:10]})"
            if r["method"] not in sources.setdefault(label, []):
                sources[label].append(r["method"])
    return "".join(f"; {', '.join(methods)}: seeds measured by {label}, read back from this JSON"
                   for label, methods in sources.items())


def _seeds_text(record: dict) -> str:
    """The invocation's seeds, and the rows that have others (``--more-seeds``, read back)."""
    def text(seeds: list[int]) -> str:
        return ",".join(map(str, seeds))

    others: dict[str, list[str]] = {}
    for r in record["rows"]:
        if r.get("seeds") and r["seeds"] != record["seeds"]:
            others.setdefault(text(r["seeds"]), []).append(r["method"])
    return text(record["seeds"]) + "".join(f" ({', '.join(methods)}: {seeds})" for seeds, methods in others.items())


def markdown(record: dict) -> str:
    """The table the README includes verbatim (tests/bench/test_readme_tables.py checks it)."""
    pr = record["protocol"]
    lines = ["| method | seeds | top-1 mean ± std | 95% CI | Δ vs student alone | p vs alone | p vs kd | train s / seed |",
             "|---|---:|---|---|---|---|---|---|"]
    for r in record["rows"]:
        std = f"{r['std']:.4f}" if r["std"] is not None else "–"
        delta = f"{r['delta_vs_alone']:+.4f}" if r["method"] != "student alone" else "–"
        p_alone = _p_cell(r, "p_vs_alone")
        p_kd = _p_cell(r, "p_vs_kd")
        times = [t for t in r.get("train_seconds") or [] if t is not None]
        wall = f"{statistics.median(times):.0f}" if times else "–"
        ci = f"[{r['ci95'][0]:.4f}, {r['ci95'][1]:.4f}]" if r.get("ci95") and r["ci95"][0] is not None else "–"
        lines.append(f"| {r['method']} | {r['n']} | {r['mean']:.4f} ± {std} | {ci} | {delta} | {p_alone} | {p_kd} | {wall} |")
    teacher = f"{record['teacher_accuracy']:.4f}" if record.get("teacher_accuracy") is not None else "–"
    lines += ["", f"{pr['teacher']} (test top-1 {teacher}) → {pr['student']}, {pr['data']}"
                  + (f" subset {pr['subset']}" if pr.get("subset") else "")
                  + f", {pr['epochs']} epochs, seeds {_seeds_text(record)}; "
                  f"{record['selection']}. Welch's t-test over seeds; **bold** p: survives a Holm correction "
                  f"(α = 0.05) over every distinct comparison in the table (kd vs alone counted once)"
                  + _read_back_note(record)
                  + ("" if record.get("complete", True) else "; **incomplete: rows still running**")]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
