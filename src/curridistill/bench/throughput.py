"""``curridistill bench throughput``: training images per second of distillation, against a ceiling.

Modes (same student, batch size, optimizer and batches; measured in the same process):

* ``ceiling``   student forward + backward + SGD step on resident, pre-normalized tensors: no data
  pipeline, no teacher. The most any training mode can reach on this machine.
* ``plain``     supervised student training (``ce``) through the real pipeline and the real lesson step
  (``LessonRun.step``), with the augmentation pad-crop 4 + flip.
* ``online_kd`` the same with ``ce: 0.1`` + ``kd: {weight: 0.9, temperature: 4}``; the teacher runs a
  forward on every batch (inference mode).
* ``cached_kd`` the same, with the teacher logits looked up in the teacher-output cache of the epoch,
  built beforehand; the build (one teacher pass over all training samples) is timed separately.
* ``ceiling_captured``, ``cached_kd_captured`` (``--captured``) the ceiling and cached_kd with the step
  compiled (``run.compile=step``: ``torch.compile`` of the loss and of the optimizer update, replayed as CUDA
  graphs on a GPU). On a GPU at this size the eager step is bound by Python and kernel launches, so the eager
  ceiling is not the GPU's; the captured ceiling is. Compilation happens in the warm-up steps, untimed.
* ``reference`` (``--with-reference``) the plain-PyTorch tutorial loop of ``bench.reference``: a
  DataLoader with per-sample Python augmentation in worker processes, online teacher, KD loss, SGD.

Rounds interleave the modes (each round in a rotated order) and the median per mode is reported, so
machine noise hits every mode alike; ratios are taken between medians of the same run.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` during the timed steps minus the allocation
before them. On CPU the resident set size of this process is sampled every 2 ms during the timed
steps (from ``/proc/self/statm``); ``peak_rss_mb`` is the highest sample and ``peak_rss_delta_mb``
that minus the RSS just before the steps (an estimate: the allocator keeps freed memory, so later
rounds can show smaller deltas; DataLoader worker processes are not included).
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from curridistill.bench.reference import ReferenceTrainer, to_hwc_numpy
from curridistill.config import DataConfig, LessonConfig
from curridistill.data.pipeline import Pipeline, load_splits
from curridistill.errors import UserError
from curridistill.io import write_json, write_text
from curridistill.knowledge import Clock
from curridistill.models import build_model
from curridistill.models.placement import cuda_speed, resolve_device, synchronize, uses_amp
from curridistill.models.taps import FeatureTaps
from curridistill.outputs import check_writable_dir
from curridistill.train.captured import CapturedStep
from curridistill.train.lesson import LessonContext, LessonRun
from curridistill.train.teachers import TeacherBank

MODES = ("ceiling", "plain", "online_kd", "cached_kd")
AUGMENT = {"crop_padding": 4, "flip": True}


# ------------------------------------------------------------------------------------------ machine
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags (avx2, avx512_vnni, ...) from /proc/cpuinfo; empty where it cannot be read."""
    try:
        line = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    except OSError:
        return set()
    return set(line.split(":", 1)[-1].split())


def git_commit() -> dict:
    """The checkout's commit and whether tracked files differ from it; a copy without ``.git`` (a working tree
    sent to a GPU machine) names its commit in ``CURRIDISTILL_COMMIT``, set by whoever sent it."""
    root = Path(__file__).resolve().parents[3]
    sent = os.environ.get("CURRIDISTILL_COMMIT")
    if sent and not (root / ".git").exists():
        return {"commit": sent, "dirty": None, "from": "CURRIDISTILL_COMMIT"}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        pass
    return {"commit": None, "dirty": None}


def provenance(device: torch.device | None = None) -> dict:
    """What every benchmark result records: the exact command, the commit, the machine and the date."""
    return {"command": " ".join([Path(sys.executable).name, *sys.argv]), "git": git_commit(),
            "machine": machine(device or torch.device("cpu")), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def save_result(json_path: str | Path, record: dict, markdown: str) -> None:
    """A benchmark's result: the JSON record and, beside it (.md), the Markdown the README shows verbatim."""
    write_json(json_path, {**provenance(), **record})
    write_text(Path(json_path).with_suffix(".md"), markdown.rstrip("\n") + "\n")
    print(markdown)


def machine(device: torch.device) -> dict:
    info = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# ------------------------------------------------------------------------------------------ memory
class PeakMemory:
    """Peak memory of a block: CUDA allocator statistics, or sampled RSS on CPU (see module doc)."""

    def __init__(self, device: torch.device, interval: float = 0.002):
        self.device, self.interval = device, interval
        self.result: dict = {}

    @staticmethod
    def rss_bytes() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            return self
        self.start = self.peak = self.rss_bytes()
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.wait(self.interval):
                self.peak = max(self.peak, self.rss_bytes())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        mb = 1024 ** 2
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            self.result = {"peak_allocated_mb": peak / mb, "peak_delta_mb": (peak - self.start) / mb}
            return
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss_bytes())
        self.result = {"peak_rss_mb": self.peak / mb, "peak_rss_delta_mb": (self.peak - self.start) / mb}


# ------------------------------------------------------------------------------------------ modes
class Mode:
    """A training loop prepared for timing: ``step()`` trains one batch and returns its image count."""

    def __init__(self, step: Callable[[], int], close: Callable[[], None] = lambda: None):
        self.step, self.close = step, close


def _student(name: str, pipeline, device: torch.device, channels_last: bool) -> nn.Module:
    s = pipeline.splits
    torch.manual_seed(0)
    model = build_model(name, s.num_classes, s.input_shape[0] if len(s.input_shape) == 3 else 1, {}, where="--student")
    model = model.to(device).train()
    return model.to(memory_format=torch.channels_last) if channels_last else model


def ceiling_mode(student: str, pipeline, device, batch_size: int, lr: float, channels_last: bool, batches: int = 8,
                 captured: bool = False) -> Mode:
    """Resident pre-normalized batches (un-augmented), CE + SGD: no pipeline, no teacher. ``captured``: the
    loss and the update compiled as ``run.compile=step`` compiles them (CUDA graphs on a GPU)."""
    model = _student(student, pipeline, device, channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    n = len(pipeline.splits.train)
    resident = []
    for k in range(min(batches, max(1, n // batch_size))):
        x, y = pipeline.batch("train", torch.arange(k * batch_size, min((k + 1) * batch_size, n)))
        resident.append((x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous(), y))
    state = {"k": 0}

    def loss(x, y):
        return F.cross_entropy(model(x), y)

    update = opt.step
    if captured:
        torch._dynamo.reset()  # a fresh model per round: start from an empty compile cache, not a recompile
        compiled = CapturedStep(loss, opt, device)
        loss, update = compiled.loss, compiled.update

    def step() -> int:
        x, y = resident[state["k"] % len(resident)]
        state["k"] += 1
        opt.zero_grad(set_to_none=True)
        loss(x, y).backward()
        update()
        return len(y)

    return Mode(step)


def lesson_mode(student: str, pipeline, device, batch_size: int, lr: float, channels_last: bool, bank=None,
                amp: bool = False, captured: bool = False) -> Mode:
    """The product's own training step (``LessonRun.step``) over the real pipeline, epoch 0's batches;
    ``captured``: as with ``run.compile=step``."""

    loss = {"ce": 0.1, "kd": {"weight": 0.9, "temperature": 4}} if bank is not None else {"ce": 1.0}
    lesson = LessonConfig(epochs=1, loss=loss, batch_size=batch_size,
                          optimizer={"name": "sgd", "lr": lr, "momentum": 0.9, "weight_decay": 5e-4})
    model = _student(student, pipeline, device, channels_last)
    if captured:
        torch._dynamo.reset()
    ctx = LessonContext(phase="student", lesson_index=0, pipeline=pipeline, device=device, seed=0, teachers=bank, amp=amp,
                        capture=captured)
    run = LessonRun(model, lesson, ctx)
    taps = FeatureTaps(model, [], who="student")
    batches = list(run.sampler.epoch_batches(0))
    state = {"k": 0}

    def step() -> int:
        k = state["k"]
        state["k"] += 1
        idx = batches[k % len(batches)]
        x, y = pipeline.batch("train", idx, epoch=0)
        clock = Clock(progress=(k % len(batches)) / len(batches), epoch=0, epochs=1, step=k % len(batches))
        run.step(x, y, idx, clock, taps)
        return len(idx)

    return Mode(step, taps.remove)


def reference_mode(student: str, teacher: nn.Module, pipeline, device, batch_size: int, lr: float, workers: int) -> Mode:
    s = pipeline.splits
    trainer = ReferenceTrainer(to_hwc_numpy(s.train.x), s.train.y.numpy(), s.mean, s.std, teacher,
                               _student(student, pipeline, device, False), device, batch_size=batch_size,
                               num_workers=workers, lr=lr)
    return Mode(trainer.step, trainer.close)


# ------------------------------------------------------------------------------------------ runner
def run_throughput(teacher: str = "resnet56", student: str = "resnet20", data: str = "cifar10", root: str | None = None,
                   batch_size: int = 64, steps: int = 30, warmup: int = 5, rounds: int = 3, subset: int | None = None,
                   device: str = "auto", with_reference: bool = False, workers: int = 2, channels_last: bool = False,
                   cache_dir: str | None = None, lr: float = 0.05, command: str | None = None,
                   log: Callable[[str], None] = lambda msg: None, data_options: dict | None = None,
                   captured: bool = False) -> dict:
    """Measure every mode in interleaved rounds; returns the JSON-ready result (see module doc)."""

    if steps < 1 or warmup < 0 or rounds < 1 or batch_size < 2:
        raise UserError("bench throughput needs --steps >= 1, --warmup >= 0, --rounds >= 1 and --batch-size >= 2")
    if subset is not None and subset < batch_size:
        raise UserError(f"--subset {subset} is smaller than --batch-size {batch_size}; give at least one batch of "
                        f"training images")
    if workers < 0:
        raise UserError(f"--workers {workers}: give 0 (the reference loads batches in its own process) or more "
                        f"DataLoader worker processes")
    if cache_dir is not None:
        check_writable_dir(cache_dir, "--cache-dir", "the teacher-output cache")
    dev = resolve_device(device, "--device")
    amp = uses_amp(dev, True)  # the bench measures what a run with run.amp (the default) does
    cuda_math = cuda_speed(dev, tf32=True, autotune=True)  # a run's defaults for image data
    t_setup = time.perf_counter()
    cfg = DataConfig(name=data, root=root, subset=subset, batch_size=batch_size, augment=AUGMENT, options=data_options or {})
    splits = load_splits(cfg)
    if len(splits.input_shape) != 3:
        raise UserError(f"bench throughput needs image data (C, H, W); {data!r} has samples of shape {splits.input_shape}")
    pipeline = Pipeline(splits, cfg, dev)
    pipeline.channels_last = channels_last
    n = len(splits.train)
    if n < batch_size:
        raise UserError(f"--batch-size {batch_size} is larger than the {n} training samples; raise --subset or lower it")
    torch.manual_seed(1000)
    t_model = build_model(teacher, splits.num_classes, splits.input_shape[0], {}, where="--teacher").to(dev).eval()
    if channels_last:
        t_model = t_model.to(memory_format=torch.channels_last)
    log(f"data {data}: {n} training images; teacher {teacher}, student {student}; device {dev}, "
        f"{torch.get_num_threads()} torch thread(s)")

    tmp = None
    if cache_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="curridistill-bench-")
        cache_dir = tmp.name
    try:
        online_bank = TeacherBank([t_model], [1.0], amp=amp)
        cached_bank = TeacherBank([t_model], [1.0], amp=amp, pipeline=pipeline, cache_dir=cache_dir)
        cache = cached_bank.caches[0]
        existed = cache.path(0).is_file()
        synchronize(dev)
        t0 = time.perf_counter()
        cache.entry(0)  # epoch 0's outputs of every training sample: built (or read, if --cache-dir held them)
        synchronize(dev)
        build_seconds = time.perf_counter() - t0
        log(f"teacher-output cache: {'read' if existed else 'built'} epoch 0 ({n} images) in {build_seconds:.1f} s")

        factories: dict[str, Callable[[], Mode]] = {
            "ceiling": lambda: ceiling_mode(student, pipeline, dev, batch_size, lr, channels_last),
            "plain": lambda: lesson_mode(student, pipeline, dev, batch_size, lr, channels_last, None, amp),
            "online_kd": lambda: lesson_mode(student, pipeline, dev, batch_size, lr, channels_last, online_bank, amp),
            "cached_kd": lambda: lesson_mode(student, pipeline, dev, batch_size, lr, channels_last, cached_bank, amp),
        }
        if captured:
            factories["ceiling_captured"] = lambda: ceiling_mode(student, pipeline, dev, batch_size, lr, channels_last,
                                                                 captured=True)
            factories["cached_kd_captured"] = lambda: lesson_mode(student, pipeline, dev, batch_size, lr, channels_last,
                                                                  cached_bank, amp, captured=True)
        if with_reference:
            factories["reference"] = lambda: reference_mode(student, t_model, pipeline, dev, batch_size, lr, workers)
        names = list(factories)
        results: dict[str, dict] = {m: {"rounds": [], "memory": []} for m in names}
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                mode = factories[name]()
                try:
                    for _ in range(warmup):
                        mode.step()
                    synchronize(dev)
                    with PeakMemory(dev) as mem:
                        t0 = time.perf_counter()
                        seen = sum(mode.step() for _ in range(steps))
                        synchronize(dev)
                        seconds = time.perf_counter() - t0
                finally:
                    mode.close()
                results[name]["rounds"].append(seen / seconds)
                results[name]["memory"].append(mem.result)
                log(f"round {r + 1}/{rounds} {name:>9}: {seen / seconds:8.1f} images/s")
        if cache.stats["builds"] + cache.stats["loads"] != 1:
            raise RuntimeError(f"the cache was rebuilt during timing: {cache.stats}")
        cached_bank.close()
        online_bank.close()
    finally:
        if tmp is not None:
            tmp.cleanup()

    modes = {}
    for name, res in results.items():
        ips = statistics.median(res["rounds"])
        mem_keys = res["memory"][0].keys()
        modes[name] = {"images_per_s": ips, "seconds_per_step": batch_size / ips, "rounds_images_per_s": res["rounds"],
                       **{k: max(m[k] for m in res["memory"]) for k in mem_keys}}
    ceiling = modes["ceiling"]["images_per_s"]
    ratios = {f"{m}/ceiling": modes[m]["images_per_s"] / ceiling for m in modes if m != "ceiling"}
    if captured:
        ratios["cached_kd/ceiling_captured"] = modes["cached_kd"]["images_per_s"] / modes["ceiling_captured"]["images_per_s"]
        ratios["cached_kd_captured/ceiling_captured"] = (modes["cached_kd_captured"]["images_per_s"]
                                                         / modes["ceiling_captured"]["images_per_s"])
    ratios["cached_kd/online_kd"] = modes["cached_kd"]["images_per_s"] / modes["online_kd"]["images_per_s"]
    if "reference" in modes:
        ratios["cached_kd/reference"] = modes["cached_kd"]["images_per_s"] / modes["reference"]["images_per_s"]
        ratios["online_kd/reference"] = modes["online_kd"]["images_per_s"] / modes["reference"]["images_per_s"]
    cached_ips = modes["cached_kd"]["images_per_s"]
    build = {
        "seconds": build_seconds, "images": n, "read_from_disk": existed,
        "teacher_images_per_s": n / build_seconds if build_seconds > 0 else None,
        # an epoch whose entry must be built first (the first run on new settings): build + cached steps
        "first_run_epoch_images_per_s": n / (build_seconds + n / cached_ips),
        "note": "one teacher pass (eval, inference mode; batches of data.eval_batch_size on CUDA, <= 128 on CPU) over all training samples with "
                "epoch 0's augmentation; paid once per (teacher, data, augmentation, epoch), then reused by every "
                "epoch, lesson, method and seed that sees the same stream",
    }
    return {
        "benchmark": "throughput",
        "command": command or "curridistill bench throughput (Python API)",
        "git": git_commit(),
        "torch": torch.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(dev),
        "settings": {"teacher": teacher, "student": student, "data": data, "subset": subset, "train_images": n,
                     "batch_size": batch_size, "steps": steps, "warmup": warmup, "rounds": rounds,
                     "augment": AUGMENT, "amp": amp, **cuda_math, "channels_last": channels_last, "lr": lr,
                     "reference_workers": workers if with_reference else None, "captured": captured,
                     "wall_seconds": time.perf_counter() - t_setup},  # the whole bench: data, build, rounds
        "modes": modes,
        "ratios": ratios,
        "cache_build": build,
        "targets": {"cached_kd >= 0.9 x ceiling": ratios["cached_kd/ceiling"] >= 0.9,
                    "cached_kd >= 2 x online_kd": ratios["cached_kd/online_kd"] >= 2.0,
                    **({"cached_kd_captured >= 0.85 x ceiling_captured": ratios["cached_kd_captured/ceiling_captured"] >= 0.85}
                       if captured else {}),
                    "set_for": "resnet56 -> resnet8 on a 2-core CPU; with a larger student the teacher's share of "
                               "online_kd is smaller, so the cached_kd / online_kd gain is smaller"},
        "notes": {
            "statistic": "images_per_s is the median over rounds; modes run interleaved in every round (rotated order)",
            "memory": ("CUDA: torch.cuda.max_memory_allocated during the timed steps" if dev.type == "cuda" else
                       "CPU: resident set size of this process sampled every 2 ms during the timed steps "
                       "(peak_rss_mb) and that minus the RSS before them (peak_rss_delta_mb); an estimate, the "
                       "allocator keeps freed memory; DataLoader workers of the reference are not included"),
            "teacher_weights": "random initialization: throughput does not depend on the weights' values",
        },
    }


def print_table(result: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    s = result["settings"]
    table = Table(title=f"training throughput: {s['teacher']} -> {s['student']} on {s['data']} "
                        f"({s['train_images']} images, batch {s['batch_size']}, {s['steps']} steps x {s['rounds']} rounds, "
                        f"{result['machine']['device']}, {result['machine']['torch_threads']} thread(s))")
    for col in ("mode", "images/s", "min..max", "vs ceiling", "peak memory MB"):
        table.add_column(col, justify="left" if col == "mode" else "right")
    ceiling = result["modes"]["ceiling"]["images_per_s"]
    for name, m in result["modes"].items():
        mem = m.get("peak_rss_delta_mb", m.get("peak_delta_mb"))
        table.add_row(name, f"{m['images_per_s']:.1f}",
                      f"{min(m['rounds_images_per_s']):.0f}..{max(m['rounds_images_per_s']):.0f}",
                      f"{m['images_per_s'] / ceiling:.2f}x", "-" if mem is None else f"{mem:+.0f}")
    console.print(table)
    r = result["ratios"]
    console.print(f"cached_kd / online_kd = {r['cached_kd/online_kd']:.2f}x; cached_kd / ceiling = {r['cached_kd/ceiling']:.2f}"
                  + (f"; cached_kd / reference = {r['cached_kd/reference']:.2f}x" if "cached_kd/reference" in r else "")
                  + (f"; captured: cached_kd / ceiling = {r['cached_kd_captured/ceiling_captured']:.2f}"
                     if "cached_kd_captured/ceiling_captured" in r else ""))
    b = result["cache_build"]
    console.print(f"cache build (epoch 0, {b['images']} images): {b['seconds']:.1f} s "
                  f"({b['teacher_images_per_s']:.0f} teacher images/s); an epoch that must build its entry first runs at "
                  f"{b['first_run_epoch_images_per_s']:.1f} images/s")


def command_line() -> str:
    return "curridistill " + " ".join(shlex.quote(a) for a in sys.argv[1:])
