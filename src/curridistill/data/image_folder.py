"""Images in class folders: ``<folder>/train/<class>/*.png|jpg|...`` and ``<folder>/test/<class>/...``.

``image-folder`` decodes every image with Pillow, converts it to RGB (or grey with ``grayscale: true``),
resizes it to ``image_size`` (an int for squares, or ``[height, width]``; default 32) and keeps the
split in memory as one uint8 tensor. Without a ``test`` folder (``train/`` alone, or the class folders
directly in ``<folder>``), a stratified ``test_fraction`` of the images (seeded by ``split_seed``)
becomes the test split. ``<folder>`` is ``data.options.path`` (relative paths are taken below
``data.root``) or else ``data.root``. Class indices follow the sorted training class folder names.

For folders too large for memory, ``ImageFolderStream`` is a ``torch.utils.data.Dataset`` over one
split folder yielding (uint8 CHW tensor, label), and ``stream_batches`` wraps it in a DataLoader that
yields uint8 batches, so the same batched augmentation (``BatchAugment``) runs afterwards on device.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from curridistill.data.base import ArrayData, check_split_seed, stratified_split
from curridistill.data.registry import DATA_ENV, DATASETS, INPUT_OPTIONS, TEST_SPLITS
from curridistill.errors import UserError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


def _size(image_size) -> tuple[int, int]:
    """(height, width) from an int or a pair."""
    if isinstance(image_size, bool):
        image_size = None
    if isinstance(image_size, int):
        h = w = image_size
    elif isinstance(image_size, (list, tuple)) and len(image_size) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in image_size):
        h, w = image_size
    else:
        raise UserError(f"data.options.image_size is {image_size!r}; use a positive int (like 32) or [height, width]")
    if h <= 0 or w <= 0:
        raise UserError(f"data.options.image_size is {image_size!r}; sizes must be positive")
    return int(h), int(w)


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def list_classes(split_dir: Path) -> list[str]:
    """Sorted names of the class folders in ``split_dir`` (hidden folders are skipped)."""
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan(split_dir: str | Path, classes: Sequence[str] | None = None) -> tuple[list[tuple[Path, int]], list[str]]:
    """(path, label) of every image below ``split_dir/<class>/`` (recursively, sorted) and the class list.

    ``classes`` fixes the label order (a test split uses the training classes); a folder naming a class
    not in it is an error. Without it every class folder must hold at least one image.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise UserError(f"image folder {split_dir} does not exist; set data.options.path (or data.root) to a folder "
                        f"with train/<class>/ image folders")
    found = list_classes(split_dir)
    fixed = classes is not None
    if not fixed:
        classes = found
        if not classes:
            raise UserError(f"image folder {split_dir} has no class folders; put images in {split_dir}/<class>/")
    else:
        classes = list(classes)
        extra = sorted(set(found) - set(classes))
        if extra:
            raise UserError(f"image folder {split_dir} has class folders {extra} that the training split lacks; "
                            f"add them to train/ or remove them")
    index = {c: i for i, c in enumerate(classes)}
    samples: list[tuple[Path, int]] = []
    for c in found:
        files = sorted(p for p in (split_dir / c).rglob("*") if _is_image(p))
        if not files and not fixed:
            raise UserError(f"class folder {split_dir / c} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                            f"add images or remove the folder")
        samples.extend((p, index[c]) for p in files)
    if not samples:
        raise UserError(f"image folder {split_dir} holds no images; put .png/.jpg files in {split_dir}/<class>/")
    return samples, list(classes)


def decode(path: str | Path, size: tuple[int, int], grayscale: bool = False) -> np.ndarray:
    """One image as uint8 (H, W, C): RGB (C=3) or grey (C=1), resized (bilinear, antialiased) to ``size``."""
    from PIL import Image

    h, w = size
    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft("L" if grayscale else "RGB", (w, h))  # decode JPEGs at a reduced scale when it is >= size
            im = im.convert("L" if grayscale else "RGB")
            if im.size != (w, h):
                im = im.resize((w, h), Image.Resampling.BILINEAR)
            arr = np.array(im, dtype=np.uint8)  # a writable copy
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        raise UserError(f"cannot decode image {path} ({exc}); delete or replace the file") from None
    return arr[:, :, None] if arr.ndim == 2 else arr


def _decode_all(samples: list[tuple[Path, int]], size: tuple[int, int], grayscale: bool, workers: int) -> torch.Tensor:
    h, w = size
    out = np.empty((len(samples), h, w, 1 if grayscale else 3), dtype=np.uint8)

    def work(i: int) -> None:
        out[i] = decode(samples[i][0], size, grayscale)

    if workers > 1 and len(samples) > 64:
        with ThreadPoolExecutor(max_workers=workers) as pool:  # Pillow releases the GIL while decoding
            for _ in pool.map(work, range(len(samples)), chunksize=64):
                pass
    else:
        for i in range(len(samples)):
            work(i)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _folder(root: Path | str | None, path: str | None) -> Path:
    base = Path(root).expanduser() if root not in (None, "") else None
    if path not in (None, ""):
        p = Path(path).expanduser()
        if not p.is_absolute() and base is not None and (base / p).is_dir():
            return base / p
        if p.is_dir():
            return p
        tried = f"{base / p} and {p}" if base is not None and not p.is_absolute() else str(p)
        raise UserError(f"image folder not found (tried {tried}); set data.options.path to the folder holding train/")
    if base is None:
        raise UserError(f"image-folder needs a folder: set data.options.path (or data.root / ${DATA_ENV}) to the folder "
                        f"holding train/<class>/ and test/<class>/")
    if not base.is_dir():
        raise UserError(f"image folder {base} does not exist; set data.options.path (or data.root) to the folder "
                        f"holding train/")
    return base


class LazyImages:
    """Image files decoded on demand: the streaming path for folders that do not fit in memory.

    It stands where the pipeline keeps a uint8 (N, C, H, W) tensor: ``len``, ``shape``, ``dim()`` and
    ``dtype`` answer like one; ``load(indices)`` decodes a batch; ``select(indices)`` is a cheap subset.
    Training batches are decoded in DataLoader worker processes (``data.workers``), in the sampler's
    order, so a streamed run sees exactly the pixels and batches of an in-memory one.
    """

    dtype = torch.uint8

    def __init__(self, paths: Sequence[Path], size: tuple[int, int], grayscale: bool = False):
        self.paths, self.size, self.grayscale = list(paths), tuple(size), bool(grayscale)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.paths), 1 if self.grayscale else 3, *self.size))

    def dim(self) -> int:
        return 4

    def select(self, indices) -> "LazyImages":
        return LazyImages([self.paths[int(i)] for i in indices], self.size, self.grayscale)

    def load(self, indices) -> torch.Tensor:
        """uint8 (B, C, H, W) of the images at ``indices``."""
        arrays = [decode(self.paths[int(i)], self.size, self.grayscale) for i in indices]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()

    def fingerprint(self) -> str:
        """Files, sizes and modification times: changes when the folder does."""
        import hashlib

        h = hashlib.sha256(repr((self.size, self.grayscale)).encode())
        for p in self.paths:
            st = p.stat()
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]

    def sampled_sum(self, step: int, chunk: int = 64) -> float:
        """Sum of the pixels of every ``step``-th image, equal to ``x[::step].double().sum()`` of the same folder
        decoded into memory (integer sums are exact in float64), so a cache key built from it is the same
        whether the folder is streamed or not. Decoded ``chunk`` images at a time; remembered per ``step``."""
        sums = self.__dict__.setdefault("_sampled_sums", {})
        if step not in sums:
            rows = list(range(0, len(self), max(1, int(step))))
            sums[step] = float(sum(self.load(rows[i:i + chunk]).double().sum() for i in range(0, len(rows), chunk)))
        return sums[step]


@DATASETS.register("image-folder")
def load_image_folder(root: Path | str | None = None, path: str | None = None, image_size=32, grayscale: bool = False,
                      test_fraction: float = 0.2, split_seed: int = 0, workers: int | None = None,
                      stream: bool = False) -> tuple[ArrayData, ArrayData]:
    """Images of ``<folder>/train/<class>/`` and ``<folder>/test/<class>/`` (``<folder>``: ``path``, else
    ``data.root``), resized to ``image_size``; without test/ a stratified ``test_fraction`` is held out. Decoded
    into memory, or with ``stream: true`` read from disk batch by batch by DataLoader workers."""
    size = _size(image_size)
    folder = _folder(root, path)
    train_dir, test_dir = folder / "train", folder / "test"
    if not train_dir.is_dir():
        if test_dir.is_dir():
            raise UserError(f"image folder {folder} has test/ but no train/; add {train_dir}/<class>/ folders")
        train_dir = folder  # class folders directly in the folder; the test split is carved out below
    n_workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    samples, classes = scan(train_dir)
    if stream:
        decode_split = lambda items: LazyImages([p for p, _ in items], size, bool(grayscale))  # noqa: E731
    else:
        decode_split = lambda items: _decode_all(items, size, bool(grayscale), n_workers)  # noqa: E731
    x = decode_split(samples)
    y = torch.tensor([s[1] for s in samples], dtype=torch.int64)
    if test_dir.is_dir():
        test_samples, _ = scan(test_dir, classes)
        test = ArrayData(decode_split(test_samples),
                         torch.tensor([s[1] for s in test_samples], dtype=torch.int64), classes)
        return ArrayData(x, y, classes), test
    if not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise UserError(f"data.options.test_fraction is {test_fraction!r}; {folder} has no test/ folder, so give a "
                        f"fraction between 0 and 1 (like 0.2) or add {test_dir}/<class>/")
    holdout = int(round(test_fraction * len(y)))
    if not 0 < holdout < len(y):
        raise UserError(f"data.options.test_fraction={test_fraction} of {len(y)} images in {train_dir} leaves an "
                        f"empty split; add images or change test_fraction")
    check_split_seed(split_seed, "image-folder")
    keep, hold = stratified_split(y, holdout, seed=split_seed)
    full = ArrayData(x, y, classes)
    return full.subset(keep), full.subset(hold)


@TEST_SPLITS.register("image-folder")
def load_image_folder_test(root: Path | str | None = None, path: str | None = None, image_size=32,
                           grayscale: bool = False, test_fraction: float = 0.2, split_seed: int = 0,
                           workers: int | None = None, stream: bool = False,
                           classes: Sequence[str] | None = None) -> ArrayData:
    """The test split alone, to evaluate a trained model: ``<folder>/test/<class>/`` is read without any
    ``train/`` beside it, labelled by ``classes`` (the model's class names, in its order; a class may have no
    test images). Without ``test/`` the test split is held out of the training images exactly as in training."""
    folder = _folder(root, path)
    test_dir = folder / "test"
    if not test_dir.is_dir():
        return load_image_folder(root, path, image_size, grayscale, test_fraction, split_seed, workers, stream)[1]
    size = _size(image_size)
    samples, names = scan(test_dir, classes)
    if stream:
        x = LazyImages([p for p, _ in samples], size, bool(grayscale))
    else:
        x = _decode_all(samples, size, bool(grayscale), workers if workers is not None else min(4, os.cpu_count() or 1))
    return ArrayData(x, torch.tensor([s[1] for s in samples], dtype=torch.int64), names)


@INPUT_OPTIONS.register("image-folder")
def image_folder_input(input_shape: list[int]) -> dict:
    """Decode images as a model with input (C, H, W) was trained: resized to (H, W), grey when C is 1."""
    if len(input_shape) != 3:
        return {}
    return {"image_size": [int(input_shape[1]), int(input_shape[2])], "grayscale": int(input_shape[0]) == 1}


class ImageFolderStream(Dataset):
    """One split folder (``<split>/<class>/*``) read lazily: item i is (uint8 (C, H, W) tensor, label)."""

    def __init__(self, root: str | Path, image_size=32, grayscale: bool = False, classes: Sequence[str] | None = None):
        self.root = Path(root)
        self.size = _size(image_size)
        self.grayscale = bool(grayscale)
        self.samples, self.classes = scan(self.root, classes)
        self.targets = torch.tensor([s[1] for s in self.samples], dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return torch.from_numpy(decode(path, self.size, self.grayscale)).permute(2, 0, 1).contiguous(), label

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1 if self.grayscale else 3, *self.size)


class _WithIndex(Dataset):
    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        x, y = self.dataset[index]
        return x, y, index


def stream_batches(dataset: Dataset, batch_size: int, shuffle: bool = False, seed: int = 0, num_workers: int = 0,
                   drop_last: bool = False, with_indices: bool = False) -> DataLoader:
    """A DataLoader of uint8 (B, C, H, W) batches and int64 labels (plus int64 dataset indices with
    ``with_indices``, to index ``BatchAugment.epoch_params``). Shuffling is seeded by ``seed``: each
    pass draws the next permutation of that stream. Pins memory when CUDA is available."""
    if batch_size <= 0:
        raise UserError(f"batch size is {batch_size}; use a positive int")
    generator = torch.Generator().manual_seed(int(seed))
    return DataLoader(_WithIndex(dataset) if with_indices else dataset, batch_size=batch_size, shuffle=shuffle,
                      generator=generator, num_workers=num_workers, pin_memory=torch.cuda.is_available(),
                      drop_last=drop_last, persistent_workers=num_workers > 0)
