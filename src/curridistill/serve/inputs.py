"""Inputs people have, turned into what the model was trained on: .npy/.npz arrays, image files
(PNG, JPEG, ... through Pillow) and folders of them, resized (bilinear, as ``image-folder`` data is)
and normalized with the model's own mean/std; for text models, texts from .txt / .csv / .tsv files or
strings (``read_texts``; tokenized by ``data.text.TextEncoder``). Every bad input is one ``UserError``
naming the file."""
from __future__ import annotations

import csv
import io
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from curridistill.errors import UserError
from curridistill.data.image_folder import decode

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
ARRAY_SUFFIXES = (".npy", ".npz")


def collect(paths: list[str | Path]) -> list[Path]:
    """Files to predict: each path as given, folders expanded to their image/array files (sorted, recursive)."""
    if not paths:
        raise UserError("give at least one INPUT: an .npy/.npz file, an image or a folder of images")
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES + ARRAY_SUFFIXES)
            if not found:
                raise UserError(f"folder {p} holds no images or arrays ({', '.join(IMAGE_SUFFIXES + ARRAY_SUFFIXES)})")
            files.extend(found)
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_SUFFIXES + ARRAY_SUFFIXES:
                raise UserError(f"cannot read {p}: expected an .npy/.npz array or an image "
                                f"({', '.join(IMAGE_SUFFIXES)})")
            files.append(p)
        else:
            raise UserError(f"input not found: {p}; check the path")
    return files


DAMAGED = (OSError, EOFError, zipfile.BadZipFile, zlib.error)  # a truncated or corrupt file (an .npz is a zip)


def _load_array(p: Path) -> np.ndarray:
    try:
        loaded = np.load(p, allow_pickle=False)
    except (ValueError, *DAMAGED) as exc:
        raise UserError(f"cannot read {p} as .npy/.npz ({str(exc).splitlines()[0][:120]}); save samples with numpy.save") from None
    except MemoryError:
        raise _too_large(p) from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        files = list(loaded.files)
        if "x" not in files and len(files) != 1:
            raise UserError(f"{p} has no array 'x' (it holds {files or 'nothing'}); save the samples with "
                            f"numpy.savez(path, x=samples)")
        try:
            loaded = loaded["x" if "x" in files else files[0]]
        except ValueError as exc:
            raise UserError(f"cannot read {p} ({exc}); save numeric arrays (uint8 pixels or floats in [0, 1])") from None
        except DAMAGED as exc:
            raise UserError(f"cannot read {p}: the .npz file is damaged ({str(exc).splitlines()[0][:120]}); "
                            f"save the samples again with numpy.savez(path, x=samples)") from None
        except MemoryError:
            raise _too_large(p) from None
    return np.asarray(loaded)


def _too_large(p: Path) -> UserError:
    """A header that claims more data than memory holds: a damaged file far more often than a real array."""
    return UserError(f"cannot read {p}: its header claims an array larger than this machine's memory; the file is "
                     f"damaged, or split the samples into smaller files")


def _fit_shape(x: Tensor, shape: tuple[int, ...], where: str) -> Tensor:
    """(N, *shape) from N x C x H x W, N x H x W x C, N x H x W (one channel) or one unbatched sample."""
    if tuple(x.shape[1:]) == shape:
        return x
    if len(shape) == 3 and tuple(x.shape[1:]) == (shape[1], shape[2], shape[0]):
        return x.permute(0, 3, 1, 2)
    if len(shape) == 3 and shape[0] == 1 and tuple(x.shape[1:]) == shape[1:]:
        return x.unsqueeze(1)
    if tuple(x.shape) == shape:
        return x.unsqueeze(0)
    if len(shape) == 3 and tuple(x.shape) == (shape[1], shape[2], shape[0]):
        return x.permute(2, 0, 1).unsqueeze(0)
    if len(shape) == 3 and shape[0] == 1 and tuple(x.shape) == shape[1:]:
        return x.view(1, *shape)
    raise UserError(f"{where}: samples of shape {tuple(x.shape[1:])} do not fit the model's input {shape} "
                    f"(N x C x H x W or N x H x W x C expected)")


def read_array(p: Path, shape: tuple[int, ...]) -> Tensor:
    """Float samples in [0, 1] (N, *shape) from an array of uint8 pixels or floats in [0, 1]."""
    arr = _load_array(p)
    if arr.dtype.kind not in "biuf":
        raise UserError(f"{p} holds {arr.dtype} values; save numeric samples (uint8 pixels or floats in [0, 1])")
    if arr.ndim == 0 or arr.size == 0:
        raise UserError(f"{p} holds no samples (shape {arr.shape}); save an array of N >= 1 samples")
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1) if arr.ndim > 1 else np.isfinite(arr)
        if not finite.all():
            raise UserError(f"{p}: sample {int(np.flatnonzero(~finite)[0])} holds NaN or infinite values; fix or drop it")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise UserError(f"{p}: float values span [{lo:.3g}, {hi:.3g}] but must be pixels in [0, 1] (or save "
                            f"uint8 0..255); do not normalize them, the model applies its own mean/std")
        x = torch.from_numpy(arr.astype(np.float32))
    else:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise UserError(f"{p}: integer values span [{lo}, {hi}] but pixels are 0..255; save uint8 pixels")
        x = torch.from_numpy(arr.astype(np.float32) / (1.0 if arr.dtype.kind == "b" else 255.0))
    return _fit_shape(x, shape, str(p))


def read_image(p: Path, shape: tuple[int, ...]) -> Tensor:
    """One image file as a float sample in [0, 1] (1, C, H, W), resized to the model's input size."""
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise UserError(f"{p}: the model takes inputs of shape {shape}, not images; give an .npy/.npz array")
    arr = decode(p, (shape[1], shape[2]), grayscale=shape[0] == 1)  # (H, W, C) uint8; one line naming the cause
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).float().div(255.0)


def read_inputs(paths: list[str | Path], spec: dict) -> tuple[Tensor, list[str]]:
    """Normalized float samples (N, *input_shape) for the model of ``spec``, and a name per sample
    (the file, or ``file[i]`` for row i of an array)."""
    if "input_shape" not in spec:
        raise UserError("the model's spec has no 'input_shape'; restore the JSON saved with the weights")
    shape = tuple(spec["input_shape"])
    parts, names = [], []
    for p in collect(paths):
        if p.suffix.lower() in ARRAY_SUFFIXES:
            x = read_array(p, shape)
            names.extend(f"{p}[{i}]" for i in range(len(x)))
        else:
            x = read_image(p, shape)
            names.append(str(p))
        parts.append(x)
    x = torch.cat(parts)
    return normalize(x, spec), names


def normalize(x: Tensor, spec: dict) -> Tensor:
    """Pixels in [0, 1] -> what the model saw in training: ``(x - mean) / std`` per channel (when it normalized)."""
    if not spec.get("normalize", True) or "mean" not in spec or "std" not in spec:
        return x
    view = (1, -1) + (1,) * (x.dim() - 2)
    return (x - torch.tensor(spec["mean"], dtype=x.dtype).view(view)) / torch.tensor(spec["std"], dtype=x.dtype).view(view)


# ------------------------------------------------------------------------------------------------ text
TEXT_SUFFIXES = (".txt", ".csv", ".tsv")


def _names_a_file(s: str) -> bool:
    """A string without whitespace ending in a file suffix (``reviews.txt``): a missing file, not a text to classify."""
    suffixes = TEXT_SUFFIXES + IMAGE_SUFFIXES + ARRAY_SUFFIXES + (".json", ".jsonl")
    return not any(c.isspace() for c in s) and Path(s).suffix.lower() in suffixes


def _exists(s: str) -> bool:
    try:
        return Path(s).exists()
    except (OSError, ValueError):  # a long text or one with NUL is no file name
        return False


def _decode_text(p: Path) -> str:
    try:
        return p.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise UserError(f"cannot read {p} ({exc.strerror or exc}); check the path and its permissions") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{p} is not UTF-8 text (byte {exc.start}); save it as UTF-8 (one text per line, or a "
                        f".csv/.tsv with a header row)") from None


def _read_txt(p: Path) -> tuple[list[str], list[str]]:
    texts, names = [], []
    for n, line in enumerate(_decode_text(p).splitlines(), start=1):
        if line.strip():  # blank lines are skipped; names keep the line numbers
            texts.append(line.strip())
            names.append(f"{p}:{n}")
    return texts, names


def _read_table(p: Path, text_column: str | None, trained_column: str | None) -> tuple[list[str], list[str]]:
    # strict: a quote that is never closed is an error, not one text running to the end of the file
    reader = csv.DictReader(io.StringIO(_decode_text(p), newline=""), delimiter="\t" if p.suffix.lower() == ".tsv" else ",",
                            strict=True)
    row_start = 1  # the line the row being read starts on (a quoted text may span lines)
    try:
        columns = list(reader.fieldnames or [])
        if not columns:
            raise UserError(f"{p} is empty; write a header row naming the text column, then one text per row")
        if text_column is not None:
            if text_column not in columns:
                raise UserError(f"{p}: no column {text_column!r} (columns: {', '.join(columns)}); fix --text-column")
            column = text_column
        else:
            known = [c for c in (trained_column, "text") if c and c in columns]
            if not known and len(columns) != 1:
                raise UserError(f"{p}: which column holds the texts? columns: {', '.join(columns)}; name it with "
                                f"--text-column (Python: text_column=...)")
            column = known[0] if known else columns[0]
        texts, names = [], []
        row_start = reader.line_num + 1
        for row in reader:
            value = row.get(column)
            if value is None:
                raise UserError(f"{p}:{reader.line_num}: the row has no {column!r} value (fewer fields than the header); "
                                f"fix or remove the row")
            if value.strip():  # empty cells are skipped; names keep the line numbers
                texts.append(value.strip())
                names.append(f"{p}:{reader.line_num}")
            row_start = reader.line_num + 1
    except csv.Error as exc:
        hint = "close the quote opened there" if "unexpected end of data" in str(exc) else "fix the row"
        raise UserError(f"{p}:{row_start}: not valid {p.suffix.lstrip('.').upper()} ({exc}); {hint}") from None
    return texts, names


def _text_files(p: Path) -> list[Path]:
    if p.is_dir():
        found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES)
        if not found:
            raise UserError(f"folder {p} holds no .txt/.csv/.tsv files; give text files (one text per line)")
        return found
    if not p.is_file():
        raise UserError(f"input not found: {p}; check the path")
    if p.suffix.lower() not in TEXT_SUFFIXES:
        raise UserError(f"cannot read {p} for a text model: give a .txt file (one text per line) or a .csv/.tsv file "
                        f"with a text column")
    return [p]


def read_texts(inputs: list[str | Path] | str | Path, literal: bool = True, text_column: str | None = None,
               trained_column: str | None = None) -> tuple[list[str], list[str]]:
    """Texts to classify and a name per text (``file:line``, or ``texts[i]`` for a string given as a text).

    ``inputs``: .txt files (one text per line), .csv/.tsv files with a header row (the text is ``text_column``, else
    the column the model was trained on (``trained_column``) or ``text``, else the only column) and folders of them;
    with ``literal``, a string that names no file is a text itself (a missing ``name.txt`` is still an error).
    Blank lines and empty cells are skipped."""
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not items:
        raise UserError("give at least one INPUT: a .txt file (one text per line), a .csv/.tsv with a text column, "
                        "or texts (from Python)")
    texts: list[str] = []
    names: list[str] = []
    n_literal = 0
    for item in items:
        if isinstance(item, str) and literal and not _exists(item) and not _names_a_file(item):
            texts.append(item)
            names.append(f"texts[{n_literal}]")
            n_literal += 1
            continue
        if not isinstance(item, (str, Path)):
            raise UserError(f"a text model takes texts (str) or paths to .txt/.csv/.tsv files, got {type(item).__name__}")
        for p in _text_files(Path(item)):
            got = _read_txt(p) if p.suffix.lower() == ".txt" else _read_table(p, text_column, trained_column)
            if not got[0]:
                raise UserError(f"{p} holds no texts; write one text per line (a .csv/.tsv: a header row, then rows)")
            texts.extend(got[0])
            names.extend(got[1])
    return texts, names
