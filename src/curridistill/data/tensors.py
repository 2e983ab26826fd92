"""Arrays from .npz files: your own data without writing a loader.

Options: ``path`` (the training file: keys ``x``, ``y`` and optionally ``classes``) with ``test_path``
(the same keys), or one ``path`` holding ``x_train, y_train, x_test, y_test`` (and optionally
``classes``). Without a test split, ``test_fraction`` carves a stratified one out of ``path`` (seeded by
``split_seed``). Relative paths are taken below ``data.root`` when the file is there.

``x`` may be images (N, H, W, C) or (N, C, H, W) with C in 1, 3, 4 (when both the second and the
last dimension could be channels, the smaller one is taken; ``layout: nhwc | nchw`` settles it
explicitly), grey images (N, H, W), or feature vectors (N, D). uint8 stays uint8 (0..255); other
integer images must lie in 0..255 and become uint8; floats are used as they are (images are expected
in [0, 1]). ``y`` holds integer labels 0..K-1. Files are read with ``allow_pickle=False``.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch

from curridistill.data.base import ArrayData, check_test_source, stratified_split
from curridistill.data.registry import DATASETS
from curridistill.errors import UserError

_CHANNELS = (1, 3, 4)


def _resolve(root: Path | str | None, path: str, option: str) -> Path:
    p = Path(path).expanduser()
    base = Path(root).expanduser() if root not in (None, "") else None
    if not p.is_absolute() and base is not None and (base / p).is_file():
        return base / p
    if p.is_file():
        return p
    tried = f"{base / p} and {p.resolve()}" if base is not None and not p.is_absolute() else str(p)
    raise UserError(f"tensors: file for data.options.{option} not found (tried {tried}); fix the path")


def _read(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as d:
            return {k: d[k] for k in d.files}
    except Exception as exc:  # noqa: BLE001 - not a zip, truncated, or object arrays
        raise UserError(f"cannot read {path} as .npz ({type(exc).__name__}: {exc}); save it with numpy.savez "
                        f"(plain numeric arrays, no objects)") from None


def _images_to_nchw(x: np.ndarray, layout: str, where: str) -> np.ndarray:
    if layout == "nhwc":
        return x.transpose(0, 3, 1, 2)
    if layout == "nchw":
        return x
    first, last = x.shape[1] in _CHANNELS, x.shape[3] in _CHANNELS
    if first and last and x.shape[1] != x.shape[3]:  # both could be channels: the smaller one is
        first, last = x.shape[1] < x.shape[3], x.shape[3] < x.shape[1]
    if last and not first:
        return x.transpose(0, 3, 1, 2)
    if first and not last:
        return x
    raise UserError(f"{where}: cannot tell channels from shape {tuple(x.shape)}; set data.options.layout to "
                    f"'nhwc' or 'nchw'")


def _x(x: np.ndarray, layout: str, where: str) -> torch.Tensor:
    if x.ndim not in (2, 3, 4) or 0 in x.shape:
        raise UserError(f"{where}: x has shape {tuple(x.shape)}; expected (N, D) features, (N, H, W) grey images or "
                        f"(N, H, W, C) / (N, C, H, W) images, every size > 0")
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise UserError(f"{where}: x has dtype {x.dtype}; use uint8 (0..255) or float arrays")
    image = x.ndim > 2
    if np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise UserError(f"{where}: x holds NaN or infinite values; clean the data")
        with np.errstate(over="ignore"):  # reported below in one line, not as a numpy warning
            x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():  # finite float64 beyond float32's range became inf
            raise UserError(f"{where}: x holds values beyond float32's range (|x| > 3.4e38); rescale the data")
    elif x.dtype != np.uint8:
        if image:
            lo, hi = int(x.min()), int(x.max())
            if lo < 0 or hi > 255:
                raise UserError(f"{where}: integer images span {lo}..{hi}; store pixels as uint8 0..255 "
                                f"(or floats in [0, 1])")
            x = x.astype(np.uint8)
        else:
            x = x.astype(np.float32)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        x = _images_to_nchw(x, layout, where)
    return torch.from_numpy(np.ascontiguousarray(x))


def _y(y: np.ndarray, n: int, where: str) -> torch.Tensor:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise UserError(f"{where}: y has shape {tuple(y.shape)}; expected (N,) integer class labels "
                        f"(for one-hot labels save y.argmax(1))")
    if len(y) != n:
        raise UserError(f"{where}: x has {n} samples but y has {len(y)}; save matching arrays")
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all() or not np.all(y == np.round(y)):
            raise UserError(f"{where}: y holds non-integer values; save integer class labels 0..K-1")
        if len(y) and np.abs(y).max() >= 2**62:  # beyond int64 the cast below would wrap
            raise UserError(f"{where}: y holds a label of {np.abs(y).max():.3g}; save class indices 0..K-1")
    elif not np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        raise UserError(f"{where}: y has dtype {y.dtype}; save integer class labels 0..K-1")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise UserError(f"{where}: y has negative labels; use class indices 0..K-1")
    return torch.from_numpy(y)


def _classes(files: list[tuple[dict, Path]], labels: list[torch.Tensor]) -> list[str]:
    given = None
    for d, path in files:
        if "classes" in d:
            c = d["classes"]
            if c.ndim != 1:
                raise UserError(f"{path}: classes has shape {tuple(c.shape)}; save a 1-D array of names")
            names = [str(v) for v in c.tolist()]
            repeated = sorted(n for n, count in Counter(names).items() if count > 1)
            if repeated:
                raise UserError(f"{path}: class name(s) {', '.join(map(repr, repeated))} appear twice in classes; "
                                f"give each class one name")
            if given is not None and names != given:
                raise UserError(f"{path}: classes differ from the training file's; save the same class names")
            given = names
    top = max(int(y.max()) for y in labels)
    if given is None:
        samples = sum(len(y) for y in labels)
        if top >= samples:  # every class needs a training sample, so K <= N: a huge label is a mistake
            raise UserError(f"{files[0][1]}: labels go up to {top} with only {samples} samples; labels are class "
                            f"indices 0..K-1")
        return [str(i) for i in range(top + 1)]
    if top >= len(given):
        raise UserError(f"{files[0][1]}: labels go up to {top} but classes names only {len(given)}; "
                        f"fix y or classes")
    return given


@DATASETS.register("tensors")
def load_tensors(root: Path | str | None = None, path: str | None = None, test_path: str | None = None,
                 layout: str = "auto", test_fraction: float | None = None, split_seed: int = 0
                 ) -> tuple[ArrayData, ArrayData]:
    """Your own arrays: ``path``, an .npz with ``x`` and ``y`` (test split from ``test_path`` or a stratified
    ``test_fraction``), or one .npz holding ``x_train, y_train, x_test, y_test``; ``x`` holds images (uint8 or
    floats in [0, 1]) or (N, D) feature vectors, ``y`` labels 0..K-1 (see the module docstring)."""
    if path in (None, ""):
        raise UserError("dataset 'tensors' needs data.options.path: an .npz with x and y (plus test_path), "
                        "or one with x_train, y_train, x_test, y_test")
    if layout not in ("auto", "nhwc", "nchw"):
        raise UserError(f"data.options.layout is {layout!r}; use 'auto', 'nhwc' or 'nchw'")
    train_file = _resolve(root, str(path), "path")
    d = _read(train_file)
    files = [(d, train_file)]
    if {"x_train", "y_train", "x_test", "y_test"} <= d.keys():
        if test_path not in (None, "") or test_fraction is not None:
            raise UserError(f"{train_file} already holds x_test/y_test; remove data.options.test_path and test_fraction")
        parts = [(d["x_train"], d["y_train"], f"{train_file} (x_train)"),
                 (d["x_test"], d["y_test"], f"{train_file} (x_test)")]
    elif {"x", "y"} <= d.keys():
        parts = [(d["x"], d["y"], str(train_file))]
        if test_path not in (None, ""):
            test_file = _resolve(root, str(test_path), "test_path")
            check_test_source(train_file, test_file, test_fraction, split_seed, "tensors")
            t = _read(test_file)
            if not {"x", "y"} <= t.keys():
                raise UserError(f"{test_file} has keys {sorted(t)}; a test file needs x and y")
            files.append((t, test_file))
            parts.append((t["x"], t["y"], str(test_file)))
        elif test_fraction is None:
            raise UserError(f"{train_file} has no test split; set data.options.test_path, or data.options.test_fraction "
                            f"(like 0.2) to hold out part of it")
    else:
        raise UserError(f"{train_file} has keys {sorted(d)}; save x and y (or x_train, y_train, x_test, y_test)")

    xs = [_x(np.asarray(x), layout, where) for x, _, where in parts]
    ys = [_y(np.asarray(y), len(x), where) for (_, y, where), x in zip(parts, xs)]
    if len(xs) == 2 and (xs[0].shape[1:] != xs[1].shape[1:] or xs[0].dtype != xs[1].dtype):
        raise UserError(f"train x is {tuple(xs[0].shape[1:])} {xs[0].dtype} but test x is {tuple(xs[1].shape[1:])} "
                        f"{xs[1].dtype}; save both splits in one shape and dtype")
    classes = _classes(files, ys)
    if len(xs) == 2:
        return ArrayData(xs[0], ys[0], classes), ArrayData(xs[1], ys[1], classes)
    if not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise UserError(f"data.options.test_fraction is {test_fraction!r}; use a fraction between 0 and 1 (like 0.2)")
    check_test_source(train_file, None, test_fraction, split_seed, "tensors")
    holdout = int(round(test_fraction * len(ys[0])))
    if not 0 < holdout < len(ys[0]):
        raise UserError(f"data.options.test_fraction={test_fraction} of {len(ys[0])} samples leaves an empty split; "
                        f"add data or change test_fraction")
    keep, hold = stratified_split(ys[0], holdout, seed=split_seed)
    full = ArrayData(xs[0], ys[0], classes)
    return full.subset(keep), full.subset(hold)
