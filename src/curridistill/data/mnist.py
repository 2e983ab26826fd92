"""MNIST and Fashion-MNIST from their idx files (gzip-compressed as published, or uncompressed).

A loader needs all four files: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each ``.gz`` or not), looked for in
``root/mnist`` (``root/MNIST/raw``, ...), ``root/fashion-mnist`` (``root/FashionMNIST/raw``, ...) or
``root`` itself. The ``.gz`` files are checked against the published md5s (torchvision's, and the
Fashion-MNIST README's) unless ``verify: false``; uncompressed files have no reference checksum.
``download: true`` fetches missing ``.gz`` files into ``root/mnist`` or ``root/fashion-mnist``.

``read_idx`` reads any idx file into a numpy array (used by the loaders, and handy on its own).
"""
from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from curridistill.data import checksums
from curridistill.data.base import ArrayData
from curridistill.data.registry import DATA_ENV, DATASETS
from curridistill.errors import UserError

# idx type code -> numpy dtype (big-endian, as stored)
_IDX_DTYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# md5 of each .gz file; dicts so tests can patch them
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


@dataclass(frozen=True)
class _Spec:
    name: str
    md5: dict
    mirrors: tuple[str, ...]
    subdirs: tuple[str, ...]  # first one is the download target below root
    classes: tuple[str, ...]


MNIST = _Spec("mnist", MNIST_MD5, ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
              ("mnist", "MNIST/raw", "MNIST", "mnist/raw"), tuple(str(i) for i in range(10)))
FASHION_MNIST = _Spec("fashion-mnist", FASHION_MNIST_MD5,
                      ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
                      ("fashion-mnist", "FashionMNIST/raw", "FashionMNIST", "fashion_mnist", "fashion-mnist/raw"),
                      FASHION_CLASSES)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (``.gz`` or plain) into an array of its stored shape, in native byte order."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise UserError(f"idx file {path} does not exist; check the path") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"cannot read idx file {path} ({exc}); delete it and download again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise UserError(f"{path} is not an idx file (header {raw[:4].hex() or 'empty'}); "
                        f"point the loader at the original idx files")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"idx file {path} is truncated in its header; delete it and download again")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != need:
        raise UserError(f"idx file {path} holds {len(raw) - header} data bytes, expected {need} for shape {shape}; "
                        f"the file is truncated or corrupt: delete it and download again")
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True) if dtype.itemsize > 1 else arr.copy()


def _folder(root: Path, spec: _Spec) -> Path | None:
    """First candidate folder holding any of the four files."""
    for d in [root / s for s in spec.subdirs] + [root]:
        if d.is_dir() and any((d / f).is_file() or (d / f"{f}.gz").is_file() for f in FILES):
            return d
    return None


def _download(root: Path | None, spec: _Spec, folder: Path | None) -> Path:
    if root is None:
        raise UserError(f"{spec.name}: download needs a target folder; set data.root (or {DATA_ENV})")
    folder = folder or root / spec.subdirs[0]
    for f in FILES:
        if (folder / f).is_file() or (folder / f"{f}.gz").is_file():
            continue
        errors = []
        for mirror in spec.mirrors:
            try:
                checksums.download(mirror + f"{f}.gz", folder / f"{f}.gz", spec.md5[f"{f}.gz"])
                break
            except UserError as exc:
                errors.append(str(exc))
        else:
            raise UserError(errors[-1])
    return folder


def _locate(root: Path | None, spec: _Spec, download: bool) -> dict[str, Path]:
    folder = _folder(root, spec) if root is not None else None
    if download and (folder is None or not all((folder / f).is_file() or (folder / f"{f}.gz").is_file() for f in FILES)):
        folder = _download(root, spec, folder)
    if folder is None:
        where = (f"under {root} (looked in {', '.join(str(root / s) for s in spec.subdirs[:2])} and {root})"
                 if root is not None else f"because data.root is not set and ${DATA_ENV} is empty")
        raise UserError(f"{spec.name} idx files not found {where}; put {', '.join(FILES)} (.gz or not) in "
                        f"{root / spec.subdirs[0] if root else 'a folder'}, point data.root (or {DATA_ENV}) at it, "
                        f"or set data.options.download: true")
    paths = {}
    for f in FILES:
        gz, plain = folder / f"{f}.gz", folder / f
        if gz.is_file():
            paths[f] = gz
        elif plain.is_file():
            paths[f] = plain
        else:
            raise UserError(f"{spec.name}: file {gz} (or uncompressed {plain.name}) is missing; all four idx files "
                            f"are needed: supply it, or set data.options.download: true")
    return paths


def _split(images: np.ndarray, labels: np.ndarray, img_path: Path, lbl_path: Path,
           n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    if images.ndim != 3 or images.dtype != np.uint8:
        raise UserError(f"{img_path}: expected (N, H, W) uint8 images, found {images.shape} {images.dtype}; "
                        f"use the original idx3 image file")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"{lbl_path}: expected (N,) integer labels, found {labels.shape} {labels.dtype}; "
                        f"use the original idx1 label file")
    if len(images) != len(labels):
        raise UserError(f"{img_path} has {len(images)} images but {lbl_path} has {len(labels)} labels; "
                        f"use matching files")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise UserError(f"{lbl_path}: labels span {int(labels.min())}..{int(labels.max())}, expected "
                        f"0..{n_classes - 1}; use the original label file")
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def _load(spec: _Spec, root: Path | str | None, download: bool, verify: bool) -> tuple[ArrayData, ArrayData]:
    root = Path(root).expanduser() if root not in (None, "") else None
    paths = _locate(root, spec, download)
    if verify:
        for p in paths.values():
            if p.name in spec.md5:  # uncompressed files have no published checksum
                checksums.verify(p, spec.md5[p.name])
    arrays = {f: read_idx(p) for f, p in paths.items()}
    classes = list(spec.classes)
    out = []
    for img, lbl in ((FILES[0], FILES[1]), (FILES[2], FILES[3])):
        x, y = _split(arrays[img], arrays[lbl], paths[img], paths[lbl], len(classes))
        out.append(ArrayData(x, y, classes))
    if out[0].x.shape[1:] != out[1].x.shape[1:]:
        raise UserError(f"{spec.name}: training images are {tuple(out[0].x.shape[2:])} but test images are "
                        f"{tuple(out[1].x.shape[2:])}; use files of one dataset")
    return out[0], out[1]


@DATASETS.register("mnist")
def load_mnist(root: Path | str | None = None, download: bool = False, verify: bool = True) -> tuple[ArrayData, ArrayData]:
    """MNIST handwritten digits: 60,000 training and 10,000 test 28x28 grey images, classes '0'..'9'."""
    return _load(MNIST, root, download, verify)


@DATASETS.register("fashion-mnist")
def load_fashion_mnist(root: Path | str | None = None, download: bool = False,
                       verify: bool = True) -> tuple[ArrayData, ArrayData]:
    """Fashion-MNIST (Xiao et al. 2017): 60,000 / 10,000 28x28 grey images of 10 clothing classes."""
    return _load(FASHION_MNIST, root, download, verify)
