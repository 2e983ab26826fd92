"""GPU check: every user-facing path on one device in one command, with its numbers (sized for 8 minutes).

    python benchmarks/gpu_check.py --data DIR            # DIR holds cifar10-train.npz (any subset) + cifar10-test.npz
    python benchmarks/gpu_check.py --data DIR --toy      # minutes -> seconds: the same steps at toy scale (CPU tests)

Steps (each a real CLI process, timed, its exit code and key numbers recorded):
  1. the quickstart (digits, no files needed);
  2. the CPU-scale CIFAR-10 protocol's kd row, 1 seed, with the committed resnet56 teacher checkpoint
     (the command that failed on CUDA: a teacher checkpoint probed with a CPU tensor);
  3. `bench throughput` resnet56 -> resnet8 and resnet56 -> resnet20 (ceiling, plain, online_kd, cached_kd, and
     at full scale the captured ceiling and cached_kd: `--captured`, CUDA graphs);
  3b. at full scale, the quickstart with `run.compile=step` (the captured step trains to the eager accuracy);
  4. `run --seeds 0,1` (the quickstart, short);
  5. `tune --trials 2`;
  6. the CUDA-marked tests (`pytest -m cuda`), run third: correctness before speed when a budget cuts the check.
``--part targets`` (run as a second call where one call may last only 10 minutes; ``--part all`` runs both)
measures what the issue's targets need beyond the check:
  7. the 240-epoch resnet56 -> resnet20 protocol, 3 epochs of each model on the subset: its median epoch seconds
     (training, validation and the teacher-cache builds included) give an estimate of the full protocol on
     the full 45,000-image training split (240 epochs x the three models x 45,000 / the subset's training size);
  8. `--parallel 4`: the CPU-scale kd row with the committed teacher, one seed alone and then four seeds side
     by side; the speed-up is the four runs' summed images/s over the lone run's (from each run's student
     training seconds, so process start-up is left out; wall-clock seconds are recorded beside).
It needs only the project and the two npz files (``data.options.verify: false``: your own subset files
have no reference checksum). Results: ``benchmarks/results/gpu_check_<device>.json`` (device name, date,
commit, per-step seconds, exit codes, accuracies, images/s) and the Markdown table beside it. A failed
step is recorded and the check goes on; the exit code is 1 when any step failed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
TEACHER = REPO / "teachers" / "resnet56_cifar10_cpu_scale.safetensors"
CUDA_TESTS = "CUDA-marked tests"  # the step whose pytest counts are judged


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "curridistill", *args]


def steps(data: Path, work: Path, toy: bool, device: str) -> list[tuple[str, list[str], Path | None]]:
    """(name, command, file holding its numbers) in order; toy shrinks epochs, data and steps."""
    dev = [f"run.device={device}"]
    cifar = ["data.root=" + str(data), "data.options.verify=false", *dev]
    if toy:
        cifar += ["data.subset=300", "data.val_size=60", "course.0.epochs=1", "baseline.enabled=false",
                  "run.eval.latency_runs=2", "run.eval.throughput_runs=1", "run.eval.throughput_batch=16"]
    quick = dev + (["course.0.epochs=2"] if toy else [])
    # --captured compiles with inductor: minutes of C++ on a CPU, seconds of warm-up on a GPU; the CPU tests
    # cover the captured paths on their own
    bench = (["--steps", "3", "--warmup", "1", "--rounds", "1", "--subset", "256"] if toy else
             ["--steps", "100", "--warmup", "10", "--rounds", "3", "--captured"])
    sets = lambda values: [a for v in values for a in ("--set", v)]  # noqa: E731
    out = []
    out.append(("quickstart", _cli("run", "configs/quickstart.yaml", "--out", str(work / "quickstart"), "--quiet",
                                   *sets(quick)), work / "quickstart" / "report.json"))
    out.append(("protocol kd (committed teacher)",
                _cli("run", "configs/protocol/cifar10_cpu_scale.yaml", "--out", str(work / "protocol"), "--quiet",
                     *sets(cifar + [f"teacher.checkpoint={TEACHER}", f"run.cache_dir={work / 'cache'}"])),
                work / "protocol" / "report.json"))
    # correctness before speed: a check cut short by its budget has run these
    out.append((CUDA_TESTS, [sys.executable, "-m", "pytest", "-q", "-n", "0", "-m", "cuda", "-p", "no:cacheprovider", "tests"], None))
    for student in ("resnet8", "resnet20"):
        out.append((f"bench resnet56 -> {student}",
                    _cli("bench", "throughput", "--teacher", "resnet56", "--student", student, "--data", "cifar10",
                         "--root", str(data), "--no-verify", "--device", device, "--batch-size", "64", "--quiet", *bench,
                         "--out", str(work / f"bench_{student}.json")), work / f"bench_{student}.json"))
    if not toy:
        out.append(("quickstart, run.compile=step", _cli("run", "configs/quickstart.yaml", "--out", str(work / "captured"),
                                                         "--quiet", *sets(quick + ["run.compile=step"])),
                    work / "captured" / "report.json"))
    out.append(("run --seeds 0,1", _cli("run", "configs/quickstart.yaml", "--seeds", "0,1", "--out", str(work / "seeds"),
                                        "--quiet", *sets(quick + ["course.0.epochs=2"])), work / "seeds" / "aggregate.json"))
    # a journal file: the study needs no SQLAlchemy, which a GPU machine's image may lack
    out.append(("tune --trials 2", _cli("tune", "configs/tune_quickstart.yaml", "--trials", "2", "--out", str(work / "tune"),
                                        "--storage", f"journal:{work / 'tune-study.log'}", "--quiet",
                                        *sets(dev + ["course.0.epochs=2"])), None))
    return out


def target_steps(data: Path, work: Path, toy: bool, device: str) -> list[tuple[str, list[str], Path | None]]:
    """The issue's GPU targets that the check alone does not measure (see the module docstring, 7 and 8)."""
    sets = lambda values: [a for v in values for a in ("--set", v)]  # noqa: E731
    data_sets = ["data.root=" + str(data), "data.options.verify=false", f"run.device={device}"]
    epochs = 1 if toy else 3
    subset = ["data.subset=300", "data.val_size=60"] if toy else ["data.val_size=1000"]
    small_eval = ["run.eval.latency_runs=2", "run.eval.throughput_runs=1", "run.eval.throughput_batch=16"]
    protocol = _cli("run", "configs/cifar10_resnet56_resnet20.yaml", "--out", str(work / "protocol240"), "--quiet",
                    *sets(data_sets + subset + small_eval + [f"course.0.epochs={epochs}", f"run.cache_dir={work / 'cache240'}"]))
    kd_row = data_sets + (subset if toy else []) + small_eval + [
        f"teacher.checkpoint={TEACHER}", "baseline.enabled=false", f"course.0.epochs={1 if toy else 4}",
        f"run.cache_dir={work / 'cache'}"]
    alone = _cli("run", "configs/protocol/cifar10_cpu_scale.yaml", "--seeds", "0", "--out", str(work / "alone"),
                 "--quiet", *sets(kd_row))
    side_by_side = _cli("run", "configs/protocol/cifar10_cpu_scale.yaml", "--seeds", "1,2,3,4", "--parallel", "4",
                        "--out", str(work / "parallel"), "--quiet", *sets(kd_row))
    return [("protocol 240 epochs, timed on 3", protocol, work / "protocol240"),
            ("one run alone", alone, work / "alone"),
            ("four runs, --parallel 4", side_by_side, work / "parallel")]


def epoch_seconds(run_dir: Path) -> dict[str, float]:
    """Median seconds of an epoch per model (teacher, baseline, student), the first epoch (warm-up) left out."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    out = {}
    for model in sorted({r.get("model") for r in rows if "epoch_seconds" in r}):
        secs = sorted(r["epoch_seconds"] for r in rows if r.get("model") == model and "epoch_seconds" in r)
        kept = secs[1:] if len(secs) > 1 else secs
        out[model] = kept[len(kept) // 2] if len(kept) % 2 else (kept[len(kept) // 2 - 1] + kept[len(kept) // 2]) / 2
    return out


def protocol_estimate(run_dir: Path, full_train: int = 45_000, epochs: int = 240) -> dict:
    """Epoch medians of the short protocol run and the full protocol's minutes they imply."""
    medians = epoch_seconds(run_dir)
    trained = json.loads((run_dir / "report.json").read_text()).get("data", {}).get("train")
    found = {f"{m}_epoch_s": round(v, 2) for m, v in medians.items()}
    if trained:
        found["estimate_240_epochs_full_data_min"] = round(epochs * sum(medians.values()) * full_train / trained / 60, 1)
    return found


def student_images_per_s(run_dir: Path) -> list[float]:
    """Images/s of the student's epochs (training split, validation included) in each seed directory."""
    rates = []
    for report in sorted(run_dir.glob("seed-*/report.json")):
        train = json.loads(report.read_text()).get("data", {}).get("train", 0)
        rows = [json.loads(line) for line in (report.parent / "metrics.jsonl").read_text().splitlines() if line.strip()]
        seconds = [r["epoch_seconds"] for r in rows if r.get("model") == "student" and "epoch_seconds" in r]
        if train and seconds:
            rates.append(train * len(seconds) / sum(seconds))
    return rates


def numbers(name: str, path: Path | None) -> dict:
    """The few numbers a reader wants from a step's output file."""
    if path is not None and path.is_dir():  # the targets' run directories
        if name.startswith("protocol"):
            return protocol_estimate(path)
        rates = student_images_per_s(path)
        return {"runs": len(rates), "student_images_per_s_total": round(sum(rates))} if rates else {}
    if path is None or not path.is_file():
        return {}
    rec = json.loads(path.read_text())
    if name.startswith("bench"):
        modes = rec.get("modes", {})
        found = {f"{m}_images_per_s": round(v["images_per_s"]) for m, v in modes.items()}
        if "cached_kd" in modes and "ceiling" in modes:
            found["cached_kd/ceiling"] = round(modes["cached_kd"]["images_per_s"] / modes["ceiling"]["images_per_s"], 3)
        if "cached_kd_captured" in modes and "ceiling_captured" in modes:
            found["cached_kd_captured/ceiling_captured"] = round(
                modes["cached_kd_captured"]["images_per_s"] / modes["ceiling_captured"]["images_per_s"], 3)
        return found
    found = {}
    for role in ("teacher", "baseline", "student"):
        acc = rec.get(role, {}).get("accuracy") if isinstance(rec.get(role), dict) else None
        if isinstance(acc, dict):  # a multi-seed aggregate: mean over the seeds
            acc = acc.get("mean")
        if isinstance(acc, (int, float)):
            found[role] = round(float(acc), 4)
    return found


def run_step(name: str, cmd: list[str], env: dict, limit: float) -> dict:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=limit)
        rc, tail = proc.returncode, (proc.stdout + proc.stderr).strip().splitlines()[-3:]
    except subprocess.TimeoutExpired:
        rc, tail = 124, [f"timed out after {limit:.0f} s"]
    return {"step": name, "command": shlex.join(cmd), "exit_code": rc, "seconds": round(time.perf_counter() - t0, 1),
            "tail": tail}


def test_counts(tail: list[str]) -> dict:
    """pytest's closing line ("3 passed, 2 skipped in 9.1s") as counts."""
    found = re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", tail[-1] if tail else "")
    return {word.rstrip("s") if word.startswith("error") else word: int(n) for n, word in found}


def judge_tests(res: dict, on_gpu: bool) -> dict:
    """The CUDA-marked tests' counts; on a GPU a skipped one fails the step (CUDA was not usable there)."""
    counts = test_counts(res["tail"])
    res["numbers"] = counts
    if on_gpu and res["exit_code"] == 0 and counts.get("skipped", 0):
        res["exit_code"] = 1
        res["tail"] = res["tail"] + [f"{counts['skipped']} CUDA-marked test(s) skipped on a GPU machine: CUDA not usable"]
    return res


def device_name(device: str) -> str:
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "cpu"


def parallel_speedup(results: list[dict]) -> float | None:
    """Four runs side by side: their summed student images/s over one run's alone."""
    found = {r["step"]: r.get("numbers", {}).get("student_images_per_s_total") for r in results}
    alone, four = found.get("one run alone"), found.get("four runs, --parallel 4")
    return round(four / alone, 2) if alone and four else None


def markdown(record: dict) -> str:
    status = "" if record.get("complete", True) else " (stopped early: the steps below are all that ran)"
    lines = [f"GPU check on **{record['device_name']}** ({record['date']}, commit `{str(record['git'].get('commit', '?'))[:10]}`, "
             f"{'toy scale' if record['toy'] else 'full scale'}): {record['passed']}/{len(record['steps'])} steps passed "
             f"in {record['seconds']:.0f} s{status}.", "",
             "| step | exit | seconds | numbers |", "|---|---:|---:|---|"]
    for s in record["steps"]:
        nums = ", ".join(f"{k} {v}" for k, v in s.get("numbers", {}).items() if v is not None)
        exit_code = "skipped" if s["exit_code"] is None else s["exit_code"]
        lines.append(f"| {s['step']} | {exit_code} | {s['seconds']:.1f} | {nums} |")
    if "parallel_4_speedup" in record:
        lines += ["", f"`--parallel 4`: four runs side by side train {record['parallel_4_speedup']}x the images/s of one run alone."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder with cifar10-train.npz (a subset is fine) and cifar10-test.npz")
    p.add_argument("--device", default="auto", help="auto | cuda | cpu (default auto)")
    p.add_argument("--toy", action="store_true", help="tiny epochs, data and steps (the CPU test of this script)")
    p.add_argument("--work", help="scratch folder for the runs (default runs/gpu_check)")
    p.add_argument("--results", help="folder for the JSON and Markdown (default benchmarks/results)")
    p.add_argument("--step-timeout", type=float, default=300.0, help="seconds before a step is stopped (default 300)")
    p.add_argument("--budget", type=float, help="seconds for the whole check: a step gets at most what is left, and "
                   "steps with less than 10 s left are recorded as skipped (a machine lent for a fixed time)")
    p.add_argument("--part", choices=["check", "targets", "all"], default="check",
                   help="check: steps 1-6; targets: steps 7-8 (sized for a second call); all: both")
    args = p.parse_args(argv)
    data = Path(args.data).resolve()
    missing = [n for n in ("cifar10-train.npz", "cifar10-test.npz") if not (data / n).is_file()]
    if missing:
        sys.stderr.write(f"error: --data {data} lacks {', '.join(missing)}; put the CIFAR-10 npz files there\n")
        return 2
    work = Path(args.work or REPO / "runs" / "gpu_check").resolve()
    if work.exists():
        import shutil

        shutil.rmtree(work)
    work.mkdir(parents=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    planned = ((steps(data, work, args.toy, args.device) if args.part != "targets" else [])
               + (target_steps(data, work, args.toy, args.device) if args.part != "check" else []))
    stem = "gpu_targets" if args.part == "targets" else "gpu_check"
    results: list[dict] = []
    record = {}
    for name, cmd, out in planned:
        left = args.step_timeout if args.budget is None else min(args.step_timeout, args.budget - (time.perf_counter() - t0))
        if left < 10:
            res = {"step": name, "command": shlex.join(cmd), "exit_code": None, "seconds": 0.0, "tail": ["skipped: budget spent"]}
        else:
            res = run_step(name, cmd, env, left)
            res["numbers"] = numbers(name, out) if res["exit_code"] == 0 else {}
            if name == CUDA_TESTS:
                res = judge_tests(res, on_gpu=device_name(args.device) != "cpu")
            if res["exit_code"] == 0:
                res["tail"] = []  # a passing step keeps only its numbers
        results.append(res)
        print(f"{name}: exit {res['exit_code']} in {res['seconds']:.1f} s {res.get('numbers') or ''}", flush=True)
        # after every step: a check stopped from outside (a lease that ends) leaves what it measured
        record = write_record(args, stem, results, len(planned), time.perf_counter() - t0)
    print(markdown(record))
    return 0 if record["passed"] == len(planned) else 1


def write_record(args, stem: str, results: list[dict], planned: int, seconds: float) -> dict:
    """The JSON and Markdown of the steps run so far (``complete`` once every planned step has run)."""
    from curridistill.bench.throughput import git_commit
    from curridistill.io import write_json, write_text

    dev = device_name(args.device)
    record = {"device_name": dev, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "git": git_commit(), "toy": args.toy,
              "command": shlex.join([sys.executable, *sys.argv]), "seconds": round(seconds, 1),
              "complete": len(results) == planned, "passed": sum(r["exit_code"] == 0 for r in results), "steps": results}
    speedup = parallel_speedup(results)
    if speedup is not None:
        record["parallel_4_speedup"] = speedup
    slug = re.sub(r"[^a-z0-9]+", "-", dev.lower()).strip("-") + ("-toy" if args.toy else "")
    results_dir = Path(args.results or RESULTS)
    results_dir.mkdir(parents=True, exist_ok=True)
    write_json(results_dir / f"{stem}_{slug}.json", record)
    write_text(results_dir / f"{stem}_{slug}.md", markdown(record))
    return record


if __name__ == "__main__":
    raise SystemExit(main())
