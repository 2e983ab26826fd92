"""From a DataConfig to device batches: splits, normalization and batched augmentation.

The training set stays one uint8 tensor; a batch is gathered by index, moved to the device,
augmented there with per-sample parameters drawn once per epoch (so sample i's augmentation in
epoch e depends only on (data_seed, e, i)), then normalized. No Python runs per sample.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Iterable, Iterator

import torch
from pydantic import ValidationError
from torch import Tensor

from curridistill.config import DataConfig, apply_overrides, explain
from curridistill.data.augment import AugmentConfig, BatchAugment
from curridistill.data.base import ArrayData, Splits, channel_stats, split_validation, stratified_split
from curridistill.data.registry import DATASETS, INPUT_OPTIONS, TEST_SPLITS, resolve_root
from curridistill.data.text import bucket_batches, lengths, trim
from curridistill.data.text_augment import TokenAugment
from curridistill.data.labels import check_labels, with_noisy_splits
from curridistill.errors import UserError


def load_splits(cfg: DataConfig) -> Splits:
    import curridistill.data  # noqa: F401  (registers the loaders)

    loader = DATASETS.get(cfg.name, where="data.name")
    try:
        train_full, test = loader(resolve_root(cfg.root), **cfg.options)
    except TypeError as exc:
        raise UserError(f"data.options for {cfg.name!r} are not accepted ({exc}); remove the unknown option") from None
    if cfg.classes is not None:
        train_full, test = keep_classes(train_full, cfg.classes), keep_classes(test, cfg.classes)
    check_labels(train_full, cfg.name)  # one class, or label indices with no sample: refused before any work
    train_full = training_subset(train_full, cfg.subset, cfg.split_seed, cfg.name)
    train, val = split_validation(train_full, cfg.val_size, cfg.split_seed)
    train, val = with_noisy_splits(train, val, cfg.label_noise, cfg.split_seed)
    mean, std = channel_stats(train.x)
    info = {"train": len(train), "val": len(val), "test": len(test), "classes": len(train.classes)}
    if cfg.label_noise:
        info["label_noise"] = cfg.label_noise
    return Splits(train, val, test, mean, std, name=cfg.name, info=info)


def training_subset(train_full: ArrayData, subset: int | None, seed: int, name: str = "data") -> ArrayData:
    """``data.subset``: a stratified draw of ``subset`` training samples (all of them when None or exactly as many).
    A file holding exactly this draw, in this order, reproduces the same run with no ``data.subset``.

    More than the data holds is refused: a run that silently trained on fewer samples than its config says
    would be reported (and compared) as something it is not."""
    if subset is not None and subset > len(train_full):
        raise UserError(f"data.subset {subset} is more than the {len(train_full)} training samples of {name!r}; "
                        f"lower it, or remove data.subset to use them all")
    if subset is None or subset == len(train_full):
        return train_full
    keep, _ = stratified_split(train_full.y, len(train_full) - subset, seed=seed)
    return train_full.subset(keep)


def keep_classes(data: ArrayData, names: list[str]) -> ArrayData:
    """The samples of the named classes, relabeled 0..k-1 in the order given (data.classes)."""
    missing = [c for c in names if c not in data.classes]
    if missing or len(set(names)) != len(names) or not names:
        raise UserError(f"data.classes {names} must name distinct classes of the data; unknown: {missing}; "
                        f"the data has {data.classes}")
    old = torch.tensor([data.classes.index(c) for c in names])
    idx = torch.nonzero(torch.isin(data.y, old)).flatten()
    kept = data.subset(idx)
    relabel = torch.full((len(data.classes),), -1, dtype=torch.int64)
    relabel[old] = torch.arange(len(names))
    return ArrayData(kept.x, relabel[kept.y], list(names), data.meta)


def eval_data_config(name: str | None, saved: dict | None = None, root: str | None = None,
                     overrides: list[str] | None = None, input_shape: list[int] | tuple[int, ...] | None = None,
                     **fields) -> DataConfig:
    """The data to evaluate a trained model on, as a DataConfig.

    ``name`` None: ``saved``, the data config the model was trained with (its spec's ``data``). A ``name``: that
    data set with its defaults, except the options that make its inputs fit the model (``INPUT_OPTIONS``: an
    image folder is decoded at the model's ``input_shape``, not at the default 32x32) and ``saved``'s
    ``normalize``. Then ``root``, ``fields``
    (e.g. ``eval_batch_size``) and ``overrides`` (``data.KEY=VALUE``, as ``run --set``) are applied, in that order,
    so an override wins (``data.options.image_size=64``)."""
    import curridistill.data  # noqa: F401  (registers the loaders)

    raw = dict(saved or {"name": "digits"}) if name is None else {"name": name}
    if name is not None and saved and "normalize" in saved:  # inputs prepared as the model learned them
        raw["normalize"] = saved["normalize"]
    if name is not None and input_shape and name in INPUT_OPTIONS:
        raw["options"] = INPUT_OPTIONS.get(name)(list(input_shape))
    if root:
        raw["root"] = root
    raw.update(fields)
    for item in overrides or []:
        if not item.startswith("data."):
            raise UserError(f"--set {item}: evaluation takes data settings only; give data.KEY=VALUE, e.g. "
                            f"--set data.options.path=new_folder")
    raw = apply_overrides({"data": raw}, list(overrides or []))["data"]
    try:
        return DataConfig.model_validate(raw)
    except ValidationError as exc:
        raise UserError(f"data: {explain(exc, DataConfig)}") from None


def load_test_split(cfg: DataConfig, classes: list[str] | None = None,
                    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None) -> Splits:
    """Splits to evaluate a trained model on ``cfg``'s test split (train and val are the test data too).

    A data set with a test-split reader (``TEST_SPLITS``: image-folder) reads only that split, labelled by
    ``classes`` (the model's class names), so a folder holding ``test/`` alone is enough; the others load as
    in training. ``stats``: the (mean, std) the model was trained with (its spec); default: the training split's,
    or the test split's when only it was read."""
    import curridistill.data  # noqa: F401  (registers the loaders)

    DATASETS.get(cfg.name, where="data.name")
    if cfg.name not in TEST_SPLITS:  # every split is read, as in training
        splits = load_splits(cfg)
        return replace(splits, mean=tuple(stats[0]), std=tuple(stats[1])) if stats else splits
    try:
        test = TEST_SPLITS.get(cfg.name)(resolve_root(cfg.root), classes=classes, **cfg.options)
    except TypeError as exc:
        raise UserError(f"data.options for {cfg.name!r} are not accepted ({exc}); remove the unknown option") from None
    if cfg.classes is not None:
        test = keep_classes(test, cfg.classes)
    mean, std = stats or channel_stats(test.x)
    info = {"test": len(test), "classes": len(test.classes)}
    return Splits(test, test, test, tuple(mean), tuple(std), name=cfg.name, info=info)


@dataclass
class Pipeline:
    """Serves normalized (and, for training, augmented) batches of a split on ``device``."""

    splits: Splits
    cfg: DataConfig
    device: torch.device
    _aug: object = field(default=None, init=False)
    _params: dict[str, Tensor] | None = field(default=None, init=False)
    _params_epoch: int | None = field(default=None, init=False)
    _resident: dict[str, Tensor] = field(default_factory=dict, init=False)
    _lengths: dict[str, Tensor] = field(default_factory=dict, init=False)  # text: token counts per split
    _augmented_lengths: Tensor | None = field(default=None, init=False)  # text: train token counts, this epoch's draws
    channels_last: bool = field(default=False, init=False)  # 4-D batches in channels_last (run.channels_last)

    def __post_init__(self) -> None:
        c = self.splits.train.x.shape[1] if self.splits.train.x.dim() == 4 else 1
        mean = torch.tensor(self.splits.mean if self.cfg.normalize else (0.0,) * c, dtype=torch.float32)
        std = torch.tensor(self.splits.std if self.cfg.normalize else (1.0,) * c, dtype=torch.float32)
        shape = (1, -1, 1, 1) if self.splits.train.x.dim() == 4 else (1, -1)
        self.mean = mean.view(shape).to(self.device)
        self.std = std.view(shape).to(self.device)
        self._aug = self._make_augment()

    def _make_augment(self):
        """The training augmentation for this kind of input (None when off); settings of the other kind are an error."""
        a = self.cfg.augment
        if self.tokens:
            if a.image_active():
                raise UserError("data.augment: crop_padding, flip and cutout are for images and this dataset is text; "
                                "for text use token_mask, token_replace or token_span")
            if not a.token_active():
                return None
            meta = self.splits.train.meta
            return TokenAugment(a, self.splits.train.x, meta["pad_id"], meta.get("mask_id"), meta.get("special_ids", []))
        if a.token_active():
            raise UserError("data.augment: token_mask, token_replace and token_span are for text (token ids) and this "
                            "dataset is not; for images use crop_padding, flip or cutout")
        if not a.image_active() or self.splits.train.x.dim() != 4:
            return None
        image = AugmentConfig(**a.model_dump(include=set(a.IMAGE_FIELDS)))
        return BatchAugment(image, tuple(self.splits.train.x.shape[1:]))

    @property
    def tokens(self) -> bool:
        """Whether inputs are token ids (text): served unnormalized, trimmed to the batch's longest row."""
        return self.splits.train.meta.get("kind") == "tokens"

    @property
    def augments(self) -> bool:
        return self._aug is not None

    def augment_key(self, augmented: bool = True) -> str:
        """Stable description of everything that decides the training inputs (for cache keys); ``augmented``
        false: that of un-augmented inputs (what a lesson with ``augment: false`` sees)."""
        a = self.cfg.augment if augmented else type(self.cfg.augment)()
        # token fields only when on, so cache keys of image runs stay what they were
        fields = a.model_dump(include=set(a.IMAGE_FIELDS) | (set(a.TOKEN_FIELDS) if a.token_active() else set()))
        return json.dumps({"augment": fields, "data_seed": self.cfg.data_seed,
                           "normalize": self.cfg.normalize}, sort_keys=True)

    def augment_params_key(self) -> str | None:
        """The version of the per-sample augmentation draws (None without augmentation): a cache of outputs on
        augmented inputs is stale when it changes."""
        return self._aug.key() if self._aug is not None else None

    def split(self, name: str) -> ArrayData:
        return getattr(self.splits, name)

    def _source(self, name: str, attr: str = "x") -> Tensor:
        """The split's raw tensor (``x`` or labels ``y``), kept resident on the device when that is not the CPU."""
        if self.device.type == "cpu" or _streamed(getattr(self.split(name), attr)):
            return getattr(self.split(name), attr)
        key = name if attr == "x" else f"{name}.{attr}"
        if key not in self._resident:
            self._resident[key] = getattr(self.split(name), attr).to(self.device, non_blocking=True)
        return self._resident[key]

    def to_float(self, x: Tensor) -> Tensor:
        if self.tokens:
            return x
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def batch(self, split: str, indices: Tensor, epoch: int | None = None) -> tuple[Tensor, Tensor]:
        """Inputs (B, ...) float on device and labels (B,). ``epoch`` given -> training augmentation."""
        src = self._source(split)
        raw = src.load(indices) if _streamed(src) else None
        return self.prepare(split, indices, raw, epoch)

    def prepare(self, split: str, indices: Tensor, raw: Tensor | None = None, epoch: int | None = None
                ) -> tuple[Tensor, Tensor]:
        """Device batch from ``indices`` (and their uint8 pixels ``raw`` when already decoded)."""
        src = self._source(split) if raw is None else raw
        width = self._text_width(split, indices, epoch) if self.tokens and raw is None else None
        if src.device.type == "cuda" and indices.device.type == "cpu":
            indices = indices.pin_memory()  # pinned + non_blocking: no stream sync per batch
        idx = indices.to(src.device if raw is None else self.device, non_blocking=True)
        x = self.to_float((src[idx] if raw is None else raw).to(self.device, non_blocking=True))
        idx = idx.to(self.device)
        if epoch is not None and self._aug is not None:
            x = self._aug.apply(x, {k: v[idx] for k, v in self.epoch_params(epoch).items()})
        y = self._source(split, "y")[idx]
        if self.tokens:  # (B, L) ids: padding columns beyond the longest row are dropped
            return (x[:, :width] if width is not None else trim(x, self.splits.train.meta["pad_id"])), y
        x = self.normalize(x)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def epoch_params(self, epoch: int) -> dict[str, Tensor]:
        if self._params_epoch != epoch:
            params = self._aug.epoch_params(len(self.splits.train), self.cfg.data_seed, epoch)
            if self.tokens:  # drawn on the host: the rows' lengths after augmentation are known here, per epoch
                self._augmented_lengths = self._aug.lengths_after(self.lengths("train"), params)
            self._params = {k: v.to(self.device) for k, v in params.items()}  # resident: indexed on the device
            self._params_epoch = epoch
        return self._params

    def train_batches(self, index_batches: Iterable[Tensor], epoch: int, augment: bool = True
                      ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """(indices, inputs, labels) of each training batch, in the sampler's order (``augment``: with epoch
        ``epoch``'s augmentation). Streamed images are decoded ahead by ``data.workers`` DataLoader processes;
        in-memory data is gathered directly."""
        aug_epoch = epoch if augment else None
        source = self.splits.train.x
        window = int(self.splits.train.meta.get("bucket", 0)) if self.tokens else 0
        if window > 1:  # text: batches of similar lengths, so little padding is computed
            index_batches = bucket_batches(index_batches, self.lengths("train"), window, self.cfg.data_seed + 104729 * epoch)
        if not _streamed(source) or self.cfg.workers == 0:
            for idx in index_batches:
                yield (idx, *self.batch("train", idx, aug_epoch))
            return
        from torch.utils.data import DataLoader

        loader = DataLoader(_DecodeBatches(source), sampler=list(index_batches), batch_size=None,
                            num_workers=self.cfg.workers, pin_memory=self.device.type == "cuda")
        for idx, raw in loader:
            yield (idx, *self.prepare("train", idx, raw, aug_epoch))

    def lengths(self, split: str) -> Tensor:
        """(N,) non-pad token counts of a text split (CPU)."""
        if split not in self._lengths:
            self._lengths[split] = lengths(self.split(split).x, self.splits.train.meta["pad_id"])
        return self._lengths[split]

    def _text_width(self, split: str, indices: Tensor, epoch: int | None) -> int | None:
        """The columns a text batch keeps: its longest row, from token counts on the host (stored ids are
        right-padded, ``text.pad_ids``; augmented rows are packed left and their lengths follow from the epoch's
        draws, ``TokenAugment.lengths_after``), so what ``trim`` finds without reading the device. None for
        indices already on a device (``trim`` measures the batch)."""
        if indices.device.type != "cpu":
            return None
        if not len(indices):
            return 1
        augmented = epoch is not None and self._aug is not None and self._aug.active  # as ``prepare`` decides
        if augmented:
            self.epoch_params(epoch)
        counts = self._augmented_lengths if augmented else self.lengths(split)
        # NumPy views of host tensors: a lookup no device must answer
        return max(int(counts.numpy()[indices.numpy()].max()), 1)

    def eval_batches(self, split: str, batch_size: int | None = None):
        n = len(self.split(split))
        bs = batch_size or self.cfg.eval_batch_size
        for start in range(0, n, bs):
            yield self.batch(split, torch.arange(start, min(start + bs, n)))


def _streamed(x) -> bool:
    return hasattr(x, "load")


class _DecodeBatches:
    """A map-style dataset whose item is a whole batch: (indices, uint8 pixels), decoded in a worker."""

    def __init__(self, images):
        self.images = images

    def __getitem__(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        return indices, self.images.load(indices)


# data.options that decide how data are read, never which samples or pixels: not part of data_fingerprint
READ_OPTIONS = frozenset({"stream", "workers", "download", "verify"})


def data_fingerprint(splits: Splits, cfg: DataConfig) -> str:
    """Hash of the data a model sees: dataset, split settings and the exact training tensors' sizes.

    Options that change how the data are read, not what they are (``READ_OPTIONS``: streaming, decoding
    threads, download, checksum verification) are left out, and a streamed folder's checksum equals the
    in-memory one, so switching them reuses the cached teacher and its outputs."""
    step = max(1, len(splits.train) // 997)
    x = splits.train.x
    desc = {"name": cfg.name, "options": {k: v for k, v in cfg.options.items() if k not in READ_OPTIONS},
            "val_size": cfg.val_size, "split_seed": cfg.split_seed,
            "subset": cfg.subset, "normalize": cfg.normalize, "info": splits.info,
            "checksum": x.sampled_sum(step) if _streamed(x) else float(x[::step].double().sum())}
    if cfg.classes is not None:  # only when set, so earlier cache keys stay valid
        desc["classes"] = list(cfg.classes)
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:16]
