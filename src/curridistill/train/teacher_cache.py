"""Teacher-output cache: a teacher's logits (and optionally features) over the training split, computed
once per augmentation epoch and reused across epochs, lessons, methods and student seeds.

Why it is exact: the pipeline draws sample i's augmentation in epoch e from (data_seed, e, i) only, so
the augmented training stream of an epoch does not depend on the student, its seed or the batch order.
When epoch e is first requested, the teacher (eval mode, inference mode, batched, bfloat16 autocast on
CUDA) runs once over *all* training samples with epoch e's augmentation; the (N, C) logits are stored as
float16 and a training batch is served by ``logits[indices]``. Un-augmented inputs (``epoch=None``, or
a pipeline without augmentation) share one entry for all epochs.

Layout: ``<cache_dir>/teacher_outputs/<key>/epoch-<e>.safetensors`` (``epoch-none`` for un-augmented
inputs), written atomically, with metadata ``format``, ``key``, ``epoch``, ``n``, ``c``, ``features``
and ``checksum`` (sha256 of the stored tensors' bytes); CIFAR-10 logits take 0.9 MB per epoch (45,000 x 10
float16), 216 MB for a 240-epoch course. The key is the sha256 of (sha256 of the
teacher's state_dict bytes, ``data_fingerprint``, split, ``pipeline.augment_key()`` + augmentation
parameter version, N): new teacher weights, data or augmentation settings give a new directory.

A stale entry (key, epoch or size mismatch, wrong shape or dtype) or a corrupt file (unreadable,
checksum mismatch) is reported on stderr, deleted and rebuilt; it is never used.

Features (``run.cache_features: true``): the requested teacher feature maps are stored in the same
file as float16 (``feature/<path>``; a batch whose values float16 cannot hold keeps that path in float32, as
the logits do). They can be large (CIFAR ResNet ``stage1`` is 16x32x32 values per
image: ~1.5 GB per epoch for 45,000 images) and the current epoch is held in memory on the device, so
this is off by default; then a lesson whose terms need teacher features runs that teacher online.
The cached path changes results only by the float16 rounding of the teacher outputs.
"""
from __future__ import annotations

import hashlib
import json
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor, nn

from curridistill.data.pipeline import data_fingerprint
from curridistill.evaluate.metrics import predict_logits
from curridistill.io import clean_orphans, save_tensors
from curridistill.locks import entry_lock
from curridistill.models.placement import bf16_autocast, uses_amp
from curridistill.train import distributed

FORMAT = "curridistill-teacher-outputs-v1"
LOGITS = "logits"
FEATURE_PREFIX = "feature/"


def state_digest(model: nn.Module) -> str:
    """sha256 of a model's state_dict: names, dtypes, shapes and raw bytes, in name order."""
    return tensors_checksum(model.state_dict())


def tensors_checksum(tensors: dict[str, Tensor]) -> str:
    """sha256 of the tensors' names, dtypes, shapes and bytes (CPU tensors), in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cache_key(model: nn.Module, pipeline, split: str = "train", weights_digest: str | None = None) -> str:
    desc = {
        "format": FORMAT,
        "teacher": weights_digest or state_digest(model),
        "data": data_fingerprint(pipeline.splits, pipeline.cfg),
        "split": split,
        "augment": pipeline.augment_key(),
        "augment_params": pipeline.augment_params_key(),  # bumps with the parameter-draw version
        "n": len(pipeline.split(split)),
    }
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:24]


def float16_unless_it_overflows(feature: Tensor) -> Tensor:
    """A batch of a teacher feature as the cache keeps it: float16 (half the memory), or float32 when float16 would
    turn finite values into inf (activations past 65504). Reads the device once per batch of this one-off pass."""
    half = feature.to(torch.float16)
    overflowed = bool((torch.isinf(half) & torch.isfinite(feature)).any())
    return (feature.float() if overflowed else half).contiguous()


def _distributed_active() -> bool:
    return distributed.info().active


def _is_main_process() -> bool:
    return distributed.info().is_main


class CacheEntryError(Exception):
    """A cache file that must not be used; ``kind`` is 'stale' or 'corrupt'."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind


@dataclass
class Entry:
    tag: str
    logits: Tensor  # (N, C) float16 (float32 if float16 would overflow), on the device
    features: dict[str, Tensor] = field(default_factory=dict)  # path -> (N, ...) float16 (float32 where it overflows)


def warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")
    sys.stderr.flush()


class TeacherCache:
    """The cached outputs of one teacher on one split of one pipeline."""

    def __init__(self, model: nn.Module, pipeline, cache_dir: str | Path, split: str = "train", amp: bool = False,
                 batch_size: int | None = None, keep: int = 2, who: str = "teacher 0"):
        self.model, self.pipeline, self.split, self.amp, self.who = model, pipeline, split, amp, who
        if batch_size is None:  # large batches on CUDA; on CPU a batch past ~256 images runs slower (cache misses)
            batch_size = int(getattr(pipeline.cfg, "eval_batch_size", 512))
            batch_size = batch_size if pipeline.device.type == "cuda" else min(batch_size, 128)
        self.batch_size = batch_size
        self.n = len(pipeline.split(split))
        self.num_classes = int(pipeline.splits.num_classes)
        self.key = cache_key(model, pipeline, split)
        self.dir = Path(cache_dir) / "teacher_outputs" / self.key
        self.keep = max(1, keep)
        self._memory: OrderedDict[str, Entry] = OrderedDict()
        self.stats = {"hits": 0, "loads": 0, "builds": 0, "rebuilt": 0, "build_seconds": 0.0}

    # ----------------------------------------------------------------------------- naming
    def tag(self, epoch: int | None) -> str:
        return "none" if epoch is None or not self.pipeline.augments else str(int(epoch))

    def path(self, epoch: int | None) -> Path:
        return self.dir / f"epoch-{self.tag(epoch)}.safetensors"

    @property
    def device(self) -> torch.device:
        return self.pipeline.device

    # ----------------------------------------------------------------------------- lookups
    def lookup(self, indices: Tensor, epoch: int | None, feature_paths: list[str] | tuple = (),
               taps=None) -> tuple[Tensor, dict[str, Tensor]]:
        """Float32 logits (B, C) and features of the samples ``indices`` in ``epoch``'s augmented stream."""
        entry = self.entry(epoch, feature_paths, taps)
        idx = indices.to(entry.logits.device)
        return entry.logits[idx].float(), {p: entry.features[p][idx].float() for p in feature_paths}

    def entry(self, epoch: int | None, feature_paths: list[str] | tuple = (), taps=None) -> Entry:
        """The entry of ``epoch`` holding at least ``feature_paths``: from memory, disk, or built."""
        tag = self.tag(epoch)
        need = set(feature_paths)
        entry = self._memory.get(tag)
        if entry is not None and need <= set(entry.features):
            self._memory.move_to_end(tag)
            self.stats["hits"] += 1
            return entry
        if not _distributed_active():  # one builder per entry across processes; the others wait, then read it
            # the lock file lies beside the entry directory, which then holds only the cached tensors
            with entry_lock(self.dir.parent / f".{self.key}.{self.path(epoch).name}", what="teacher outputs", wait_note=False):
                clean_orphans(self.dir, self.path(epoch).name)
                entry = self._load(epoch)
                if entry is not None and need <= set(entry.features):
                    self.stats["loads"] += 1
                else:
                    entry = self.build(epoch, sorted(need), taps)
            self._remember(entry)
            return entry
        entry = self._load(epoch)
        usable = entry is not None and need <= set(entry.features)
        if self._agreed(usable):
            if usable:
                self.stats["loads"] += 1
            else:  # rank 0 read a file this rank could not: build it here, no collective involved
                entry = self.build(epoch, sorted(need), taps)
        else:
            entry = self._build_once(epoch, sorted(need), taps)  # (re)built with the features the current lesson taps
        self._remember(entry)
        return entry

    @staticmethod
    def _agreed(usable: bool) -> bool:
        """Rank 0's answer to "is the file on disk usable?", so that every rank takes the same collectives.

        Ranks reach a memory miss at the same batch (they share the epoch and the memory policy), but a
        rank may look at the disk before or after rank 0 wrote the entry; only rank 0's view decides.
        """
        return distributed.broadcast(usable) if distributed.info().active else usable

    def _remember(self, entry: Entry) -> None:
        self._memory[entry.tag] = entry
        self._memory.move_to_end(entry.tag)
        while len(self._memory) > self.keep:
            self._memory.popitem(last=False)

    def clear_memory(self) -> None:
        self._memory.clear()

    # ----------------------------------------------------------------------------- disk
    def _load(self, epoch: int | None) -> Entry | None:
        path = self.path(epoch)
        if not path.is_file():
            return None
        try:
            return self.read(path, self.tag(epoch))
        except CacheEntryError as exc:
            warn(f"{self.who}: teacher-output cache file {path} is {exc.kind} ({exc}); deleted it and recomputing")
            path.unlink(missing_ok=True)
            self.stats["rebuilt"] += 1
            return None

    def read(self, path: Path, tag: str) -> Entry:
        """Load and verify one file; raises ``CacheEntryError`` for a stale or corrupt file."""
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # safetensors raises several types for truncated or garbled files
            raise CacheEntryError("corrupt", f"unreadable: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
        if meta.get("format") != FORMAT:
            raise CacheEntryError("stale", f"format {meta.get('format')!r}, expected {FORMAT!r}")
        if meta.get("key") != self.key:
            raise CacheEntryError("stale", f"key {meta.get('key')!r} does not match {self.key!r}")
        if meta.get("epoch") != tag:
            raise CacheEntryError("stale", f"holds epoch {meta.get('epoch')!r}, expected {tag!r}")
        try:
            n, c = int(meta.get("n", -1)), int(meta.get("c", -1))
            features = json.loads(meta.get("features", "[]"))
        except (TypeError, ValueError, json.JSONDecodeError):
            raise CacheEntryError("corrupt", "unreadable metadata") from None
        if n != self.n or c != self.num_classes:
            raise CacheEntryError("stale", f"metadata says {n} samples x {c} classes, expected {self.n} x {self.num_classes}")
        logits = tensors.get(LOGITS)
        if logits is None or tuple(logits.shape) != (self.n, self.num_classes) or logits.dtype not in (torch.float16, torch.float32):
            shape = None if logits is None else (tuple(logits.shape), str(logits.dtype))
            raise CacheEntryError("stale", f"logits {shape}, expected ({self.n}, {self.num_classes}) float16")
        expected = {LOGITS} | {FEATURE_PREFIX + p for p in features}
        if set(tensors) != expected or any(tensors[FEATURE_PREFIX + p].shape[0] != self.n for p in features):
            raise CacheEntryError("stale", f"holds tensors {sorted(tensors)}, expected {sorted(expected)}")
        if tensors_checksum(tensors) != meta.get("checksum"):
            raise CacheEntryError("corrupt", "checksum mismatch")
        if not all(bool(torch.isfinite(tensors[FEATURE_PREFIX + p]).all()) for p in features):
            raise CacheEntryError("stale", "features hold inf (float16 overflow, as versions before the float32 "
                                           "fallback stored it)")
        dev = self.device
        return Entry(tag, logits.to(dev), {p: tensors[FEATURE_PREFIX + p].to(dev) for p in features})

    # ----------------------------------------------------------------------------- build
    def _build_once(self, epoch: int | None, paths: list[str], taps) -> Entry:
        """Build an entry; under torchrun rank 0 builds and writes it while the other ranks wait, then read it.

        The broadcast doubles as the barrier. A rank that cannot read rank 0's file builds it itself.
        """
        if not distributed.info().active:
            return self.build(epoch, paths, taps)
        entry = self.build(epoch, paths, taps) if distributed.info().is_main else None
        written = distributed.broadcast(self.path(epoch).is_file() if entry is not None else None)
        if entry is not None:
            return entry
        loaded = self._load(epoch) if written else None
        if loaded is None or not set(paths) <= set(loaded.features):
            return self.build(epoch, paths, taps)
        self.stats["loads"] += 1
        return loaded

    def build(self, epoch: int | None, feature_paths: list[str] | tuple = (), taps=None) -> Entry:
        """Run the teacher over every sample of the split with ``epoch``'s augmentation; store and return."""
        import time

        tag = self.tag(epoch)
        aug_epoch = None if tag == "none" else int(epoch)
        paths = list(feature_paths)
        if paths and taps is None:
            raise ValueError(f"{self.who}: features {paths} requested but the teacher has no feature taps")
        model, pipe = self.model, self.pipeline
        t0 = time.perf_counter()
        was_training = model.training
        model.eval()
        logits_parts: list[Tensor] = []
        feat_parts: dict[str, list[Tensor]] = {p: [] for p in paths}
        dev = pipe.device
        # the teacher draws nothing in eval mode; keep the streams untouched anyway (only this run's GPU: another
        # machine's device count must not matter)
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []), torch.inference_mode(), \
                bf16_autocast(dev, self.amp):
            for start in range(0, self.n, self.batch_size):
                idx = torch.arange(start, min(start + self.batch_size, self.n))
                x, _ = pipe.batch(self.split, idx, epoch=aug_epoch)
                logits_parts.append(model(x).float())
                for p in paths:
                    feat_parts[p].append(float16_unless_it_overflows(taps.features[p]))
        model.train(was_training)
        full = torch.cat(logits_parts).clone()  # clone outside inference mode: normal tensors
        half = full.to(torch.float16)
        logits = half if bool(torch.isfinite(half).all()) or not bool(torch.isfinite(full).all()) else full
        features = {p: torch.cat(v).clone() for p, v in feat_parts.items()}  # float32 if any batch kept it
        if tuple(logits.shape) != (self.n, self.num_classes):
            raise ValueError(f"{self.who} outputs {tuple(logits.shape)} over the split, expected ({self.n}, {self.num_classes})")
        tensors = {LOGITS: logits.cpu(), **{FEATURE_PREFIX + p: t.cpu() for p, t in features.items()}}
        meta = {"format": FORMAT, "key": self.key, "epoch": tag, "n": str(self.n), "c": str(self.num_classes),
                "features": json.dumps(sorted(paths)), "checksum": tensors_checksum(tensors),
                "split": self.split, "dtype": str(logits.dtype).removeprefix("torch.")}
        try:
            if _is_main_process():  # under torchrun rank 0 writes; a rank building after it (unreadable file) does not
                save_tensors(self.path(epoch), tensors, metadata=meta)
        except OSError as exc:  # a full or read-only disk must not stop training: the entry still serves from memory
            warn(f"{self.who}: could not write teacher-output cache {self.path(epoch)} ({exc}); continuing in memory")
        self.stats["builds"] += 1
        self.stats["build_seconds"] += time.perf_counter() - t0
        return Entry(tag, logits, features)


# --------------------------------------------------------------------------------- evaluation logits
EVAL_FORMAT = "curridistill-eval-logits-v1"


def cached_eval_logits(model: nn.Module, pipeline, split: str, cache_dir: str | Path, amp: bool = False,
                       who: str = "teacher") -> Tensor:
    """Float32 logits (N, C) of an eval-mode model on an un-augmented split, computed once per weights.

    A multi-seed run evaluates the same fixed teacher on test once per seed; the logits depend only on the
    weights, the data and the precision, so they are stored beside the teacher-output cache
    (``<cache_dir>/teacher_outputs/<key>/eval-<split>-<precision>.safetensors``) in float32: metrics from
    them equal a fresh pass. A stale or corrupt file is reported, deleted and recomputed.
    """
    key = cache_key(model, pipeline, split)
    precision = "bf16" if uses_amp(pipeline.device, amp) else "fp32"
    path = Path(cache_dir) / "teacher_outputs" / key / f"eval-{split}-{precision}-{pipeline.device.type}.safetensors"
    n, c = len(pipeline.split(split)), int(pipeline.splits.num_classes)
    if path.is_file():
        try:
            with safe_open(str(path), framework="pt") as f:
                meta, logits = f.metadata() or {}, f.get_tensor(LOGITS)
            if meta.get("format") != EVAL_FORMAT or meta.get("key") != key or tuple(logits.shape) != (n, c):
                raise CacheEntryError("stale", f"format/key/shape do not match ({tuple(logits.shape)}, expected {(n, c)})")
            if tensors_checksum({LOGITS: logits}) != meta.get("checksum"):
                raise CacheEntryError("corrupt", "checksum mismatch")
            return logits.float()
        except CacheEntryError as exc:
            warn(f"{who}: cached {split} logits {path} are {exc.kind} ({exc}); deleted them and recomputing")
        except Exception as exc:  # safetensors raises several types for truncated or garbled files
            warn(f"{who}: cached {split} logits {path} are unreadable ({type(exc).__name__}); deleted them and recomputing")
        path.unlink(missing_ok=True)
    logits = predict_logits(model, pipeline, split, amp=amp).float().contiguous()
    if _is_main_process():
        try:
            save_tensors(path, {LOGITS: logits}, metadata={"format": EVAL_FORMAT, "key": key, "split": split,
                                                            "checksum": tensors_checksum({LOGITS: logits})})
        except OSError as exc:
            warn(f"{who}: could not write {path} ({exc}); continuing without it")
    return logits
