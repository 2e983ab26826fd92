"""Atomic file writes and safe loading: nothing half-written, nothing executed from data."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from pydantic import BaseModel, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save as save_bytes, save_file

from curridistill.errors import UserError


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path`` so readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory; give a file path to write to")
    try:
        return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    except (NotADirectoryError, FileExistsError, PermissionError) as exc:
        raise UserError(f"cannot write {path} ({exc.strerror or type(exc).__name__}); choose a writable path") from None


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def copy_atomic(src: str | Path, dst: str | Path) -> Path:
    """Copy ``src`` onto ``dst`` through a unique temp file in ``dst``'s directory and a rename."""
    return atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def clean_orphans(directory: str | Path, name: str = "*", recursive: bool = False) -> list[Path]:
    """Delete temp files (``.NAME.XXXX.tmp``) left by writers that were killed mid-write.

    Call it only while holding the lock of ``directory`` (or of the file ``name``): a live writer's temp
    file looks the same as an orphan.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    pattern = f".{name}.*.tmp"
    removed = []
    for tmp in (directory.rglob(pattern) if recursive else directory.glob(pattern)):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def hash_file(h: Any, path: str | Path, chunk_size: int = 1 << 20) -> Any:
    """Feed the bytes of ``path`` into the hashlib object ``h`` chunk by chunk (constant memory); return ``h``."""
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h


def file_sha256(path: str | Path) -> str:
    return hash_file(hashlib.sha256(), path).hexdigest()


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"file not found: {path}; check the path")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"corrupt JSON file {path}: {exc}; delete it or restore it from a backup") from None


def read_checked(path: str | Path, schema: type[BaseModel], what: str, fix: str) -> dict:
    """A JSON object that ``schema`` (a strict pydantic model of the parts its readers use) accepts, returned as
    parsed; anything else is one line naming the file, the key, what is wrong and ``fix``. ``what``: the kind of
    file, for a top level that is not an object ("a report")."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path} is not {what} (expected a JSON object, got a {type(data).__name__}); {fix}")
    try:
        schema.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"{path}: {explain_invalid(exc)}; {fix}") from None
    return data


def explain_invalid(exc: ValidationError, at: tuple = ()) -> str:
    """The first problem of a pydantic error in one phrase: ``key.path: what is wrong (got VALUE)``; ``at``: the
    keys above what was validated."""
    err = exc.errors()[0]
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]  # validator frames
    where = ".".join(str(p) for p in (*at, *loc))
    if err["type"] == "missing":
        return f"{where or 'a required key'} is missing"
    msg = re.sub(r" or instance of \w+", "", err["msg"].removeprefix("Value error, "))
    value = err.get("input")
    got = f" (got {value!r})" if err["type"] != "value_error" and len(repr(value)) <= 60 else ""
    return f"{where}: {msg}{got}" if where else f"{msg}{got}"


_FIX_LINE = "repair or delete that line (each line is one record, as it was written)"


def read_jsonl(path: str | Path, schema: type[BaseModel] | None = None) -> list[dict]:
    """The records of a JSONL file, one JSON object per line; a line cut by a kill mid-write (or any line that is
    not a JSON object) is skipped, a missing file is no records. A line that is not UTF-8, or a record ``schema``
    refuses, is one error naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(f"{path}, line {number}: not UTF-8 text (byte {raw[exc.start]:#04x} at column "
                            f"{exc.start + 1}); {_FIX_LINE}") from None
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        except RecursionError:
            raise UserError(f"{path}, line {number}: JSON nested too deeply to read; {_FIX_LINE}") from None
        if not isinstance(rec, dict):
            continue
        try:
            if schema is not None:
                schema.model_validate(rec)
        except ValidationError as exc:
            raise UserError(f"{path}, line {number}: {explain_invalid(exc)}; {_FIX_LINE}") from None
        out.append(rec)
    return out


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(flat, tmp, metadata=metadata))


def save_tensors_hashed(path: str | Path, tensors: dict[str, torch.Tensor],
                        metadata: dict[str, str] | None = None) -> str:
    """Write tensors atomically and return the sha256 of the bytes written (the file's checksum)."""
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    data = save_bytes(flat, metadata=metadata)
    write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}; check the path or train it first")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise UserError(f"corrupt checkpoint {path} ({exc}); delete it and retrain, or point at another file") from None


def save_state(path: str | Path, state: dict[str, Any]) -> Path:
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"training state not found: {path}; the run has no checkpoint to resume from")
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises many types for bad pickles
        raise UserError(f"corrupt training state {path} ({type(exc).__name__}); delete the run directory and start again") from None
