"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009): 32x32 RGB, 50,000 training and 10,000 test images.

Two on-disk layouts are read, looked for in ``root``, ``root/cifar10`` (``cifar-10``, ``CIFAR10``, ...)
and in ``cifar-10-batches-py`` / ``cifar-100-python`` below any of those:

* the official python archives, as extracted from ``cifar-10-python.tar.gz`` /
  ``cifar-100-python.tar.gz``: ``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`` and
  ``cifar-100-python/{train,test,meta}``. These are Python pickles; unpickling runs code chosen by
  whoever wrote the file, so they are treated as trusted official files and, with ``verify: true``
  (the default), every file's md5 is checked against the published checksums (the ones torchvision
  lists) *before* it is unpickled.
* npz files ``cifar10-train.npz`` / ``cifar10-test.npz`` (``cifar100-...`` for CIFAR-100) with keys
  ``x`` (N, 32, 32, 3) uint8 HWC RGB, ``y`` labels and optionally ``classes``; read without pickle.
  The md5s of the known CIFAR-10 conversion are checked; other npz files have no reference checksum.

Options: ``download: true`` fetches and extracts the official archive into ``root`` when no files are
found; ``verify: false`` skips the md5 checks (for your own copies); CIFAR-100 also takes
``labels: fine`` (100 classes, default) or ``coarse`` (20 superclasses).
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from curridistill.data import checksums
from curridistill.data.base import ArrayData
from curridistill.data.registry import DATA_ENV, DATASETS
from curridistill.errors import UserError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# md5 of each official file (torchvision.datasets.cifar: train_list, test_list, meta); a dict so tests can patch it
CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    # lossless npz conversion (see shared/datasets/README.md)
    "cifar10-train.npz": "c91380e9d2bc8c82c7a6e6e80e21134b",
    "cifar10-test.npz": "7be726473421798a23eb8ade8a643723",
}
CIFAR100_MD5 = {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}


@dataclass(frozen=True)
class _Spec:
    name: str
    folder: str  # folder the official archive extracts to
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    md5: dict
    url: str
    archive_md5: str
    subdirs: tuple[str, ...]

    @property
    def archive(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def npz(self) -> tuple[str, str]:
        return f"{self.name}-train.npz", f"{self.name}-test.npz"


CIFAR10 = _Spec("cifar10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                "batches.meta", CIFAR10_MD5, "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                "c58f30108f718f92721af3b95e74349a", ("cifar10", "cifar-10", "CIFAR10", "CIFAR-10"))
CIFAR100 = _Spec("cifar100", "cifar-100-python", ("train",), ("test",), "meta", CIFAR100_MD5,
                 "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
                 ("cifar100", "cifar-100", "CIFAR100", "CIFAR-100"))


def _candidates(root: Path, spec: _Spec) -> list[Path]:
    out: list[Path] = []
    for base in [root / s for s in spec.subdirs] + [root]:
        for d in (base / spec.folder, base):
            if d not in out:
                out.append(d)
    return out


def _find(root: Path | None, spec: _Spec) -> tuple[str, Path] | None:
    """('pickle' | 'npz', folder) of the first candidate folder holding any file of either layout."""
    if root is None:
        return None
    official = (*spec.train, *spec.test, spec.meta)
    for d in _candidates(root, spec):
        if not d.is_dir():
            continue
        if any((d / f).is_file() for f in official):
            return "pickle", d
        if any((d / f).is_file() for f in spec.npz):
            return "npz", d
    return None


def _not_found(root: Path | None, spec: _Spec) -> UserError:
    layout = f"{spec.folder}/ (official python version) or {spec.npz[0]} + {spec.npz[1]}"
    if root is None:
        return UserError(f"{spec.name} files not found: data.root is not set and ${DATA_ENV} is empty; set data.root "
                         f"(or {DATA_ENV}) to the folder holding {layout}, or set data.options.download: true")
    looked = ", ".join(str(d) for d in _candidates(root, spec)[:4])
    return UserError(f"{spec.name} files not found under {root} (looked in {looked}, ...); put {layout} there, "
                     f"point data.root (or {DATA_ENV}) at them, or set data.options.download: true")


def _require(folder: Path, names: tuple[str, ...], spec: _Spec) -> None:
    for n in names:
        if not (folder / n).is_file():
            raise UserError(f"{spec.name}: file {folder / n} is missing (the folder has only part of the dataset); "
                            f"restore it, or delete {folder} and set data.options.download: true")


def _download(root: Path | None, spec: _Spec) -> None:
    if root is None:
        raise UserError(f"{spec.name}: download needs a target folder; set data.root (or {DATA_ENV})")
    archive = checksums.download(spec.url, root / spec.archive, spec.archive_md5)
    checksums.extract_tar(archive, root)


def _get(d: dict, key: str):
    if key.encode() in d:
        return d[key.encode()]
    if key in d:
        return d[key]
    raise KeyError(key)


def _unpickle(path: Path) -> dict:
    # Official CIFAR archives are pickles written by Python 2; encoding="bytes" keeps their byte-string keys.
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise UserError(f"cannot read {path} as a CIFAR python batch ({type(exc).__name__}: {exc}); "
                        f"delete it and download again") from None
    if not isinstance(d, dict):
        raise UserError(f"{path} is not a CIFAR python batch (holds {type(d).__name__}); delete it and download again")
    return d


def _names(meta: dict, key: str, path: Path) -> list[str]:
    try:
        return [n.decode() if isinstance(n, bytes) else str(n) for n in _get(meta, key)]
    except KeyError:
        raise UserError(f"{path} has no {key!r} entry; delete it and download again") from None


def _check(x: np.ndarray, y: np.ndarray, num_classes: int, path: Path) -> None:
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] not in ((3, 32, 32), (32, 32, 3)):
        raise UserError(f"{path}: images have shape {tuple(x.shape)} dtype {x.dtype}, expected (N, 32, 32, 3) uint8; "
                        f"replace the file")
    if y.ndim != 1 or len(y) != len(x):
        raise UserError(f"{path}: {len(x)} images but labels of shape {tuple(y.shape)}; replace the file")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise UserError(f"{path}: labels span {int(y.min())}..{int(y.max())}, expected 0..{num_classes - 1}; "
                        f"replace the file")


def _read_batches(folder: Path, files: tuple[str, ...], label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for name in files:
        path = folder / name
        d = _unpickle(path)
        try:
            data, labels = _get(d, "data"), _get(d, label_key)
        except KeyError as exc:
            raise UserError(f"{path} has no {exc.args[0]!r} entry; delete it and download again") from None
        data = np.asarray(data)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise UserError(f"{path}: data has shape {data.shape} dtype {data.dtype}, expected (N, 3072) uint8; "
                            f"delete it and download again")
        x = data.reshape(-1, 3, 32, 32)  # rows are R plane, G plane, B plane: already CHW
        y = np.asarray(labels, dtype=np.int64)
        _check(x, y, num_classes, path)
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def _load_pickle(folder: Path, spec: _Spec, verify: bool, labels: str) -> tuple[ArrayData, ArrayData]:
    names = (*spec.train, *spec.test, spec.meta)
    _require(folder, names, spec)
    if verify:
        for n in names:  # before anything is unpickled
            checksums.verify(folder / n, spec.md5[n])
    meta = _unpickle(folder / spec.meta)
    if spec is CIFAR10:
        classes, label_key = _names(meta, "label_names", folder / spec.meta), "labels"
    else:
        classes = _names(meta, f"{labels}_label_names", folder / spec.meta)
        label_key = f"{labels}_labels"
    out = []
    for files in (spec.train, spec.test):
        x, y = _read_batches(folder, files, label_key, len(classes))
        out.append(ArrayData(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y), classes))
    return out[0], out[1]


def _read_npz(path: Path, default_classes: list[str] | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    try:
        with np.load(path, allow_pickle=False) as d:
            keys = set(d.files)
            if not {"x", "y"} <= keys:
                raise UserError(f"{path} has keys {sorted(keys)}, expected x and y (and optionally classes); "
                                f"replace the file")
            x, y = d["x"], d["y"]
            classes = [str(c) for c in d["classes"]] if "classes" in keys else default_classes
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - zip/format errors of a damaged file
        raise UserError(f"cannot read {path} ({type(exc).__name__}: {exc}); delete it and restore it") from None
    if not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"{path}: labels have dtype {y.dtype}, expected integers; replace the file")
    y = y.astype(np.int64)
    if classes is None:
        classes = [str(i) for i in range(int(y.max()) + 1 if len(y) else 0)]
    _check(x, y, len(classes), path)
    return x, y, classes


def _load_npz(folder: Path, spec: _Spec, verify: bool) -> tuple[ArrayData, ArrayData]:
    _require(folder, spec.npz, spec)
    if verify:
        for n in spec.npz:
            if n in spec.md5:  # only files with a reference checksum
                checksums.verify(folder / n, spec.md5[n])
    default = list(CIFAR10_CLASSES) if spec is CIFAR10 else [str(i) for i in range(100)]
    out = []
    for n in spec.npz:
        x, y, classes = _read_npz(folder / n, default)
        t = torch.from_numpy(x)
        if x.shape[-1] == 3:  # HWC -> CHW
            t = t.permute(0, 3, 1, 2).contiguous()
        out.append(ArrayData(t, torch.from_numpy(y), classes))
    if out[0].classes != out[1].classes:
        raise UserError(f"{folder}: {spec.npz[0]} and {spec.npz[1]} list different classes; replace them")
    return out[0], out[1]


def _load(spec: _Spec, root: Path | str | None, download: bool, verify: bool, labels: str = "fine"):
    root = Path(root).expanduser() if root not in (None, "") else None
    found = _find(root, spec)
    if found is None and download:
        _download(root, spec)
        found = _find(root, spec)
    if found is None:
        raise _not_found(root, spec)
    layout, folder = found
    if layout == "pickle":
        return _load_pickle(folder, spec, bool(verify), labels)
    return _load_npz(folder, spec, bool(verify))


@DATASETS.register("cifar10")
def load_cifar10(root: Path | str | None = None, download: bool = False,
                 verify: bool = True) -> tuple[ArrayData, ArrayData]:
    """CIFAR-10: 10 classes, 5,000 training and 1,000 test images each."""
    return _load(CIFAR10, root, download, verify)


@DATASETS.register("cifar100")
def load_cifar100(root: Path | str | None = None, download: bool = False, verify: bool = True,
                  labels: str = "fine") -> tuple[ArrayData, ArrayData]:
    """CIFAR-100: 100 fine classes (500 training / 100 test images each) in 20 coarse superclasses."""
    if labels not in ("fine", "coarse"):
        raise UserError(f"data.options.labels for cifar100 is {labels!r}; use 'fine' (100 classes) or 'coarse' (20)")
    return _load(CIFAR100, root, download, verify, labels)
