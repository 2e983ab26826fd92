"""Atomic file writes and safe loading: nothing half-written, nothing executed from data."""
from __future__ import annotations

import errno
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


class OutputError(UserError, OSError):
    """A file that cannot be written: one line for the CLI like any ``UserError``, and still an ``OSError`` for the
    callers that carry on without the file (the teacher-output cache keeps serving from memory on a full disk)."""

    def __str__(self) -> str:  # the message alone, whatever errno/filename say
        return str(self.args[0]) if self.args else ""


TMP_SUFFIX = ".tmp"
TMP_RANDOM_CHARS = 8  # what tempfile.mkstemp puts between a prefix and a suffix
# what the temp file of atomic_write, ".NAME.<random>.tmp", adds to NAME's length (checked before long work)
NAME_EXTRA = len("..") + TMP_RANDOM_CHARS + len(TMP_SUFFIX)


def os_error_hint(exc: OSError, writing: bool) -> str:
    """What to do about ``exc``, for the end of a one-line message."""
    code = exc.errno
    if code == errno.ENAMETOOLONG:
        return "use shorter file and folder names"
    if code in (errno.EACCES, errno.EPERM):
        return "check its permissions, or choose a writable path" if writing else "check its permissions"
    if code == errno.EROFS:
        return "the file system is read-only; choose a writable path"
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return "free some disk space, or choose a path on another disk"
    return "choose a writable path" if writing else "check the path"


def _write_error(path: Path, exc: OSError) -> OutputError:
    """``exc`` raised while writing ``path`` (or its temp file) as one line naming ``path``."""
    why = exc.strerror or type(exc).__name__
    err = OutputError(f"cannot write {path} ({why}); {os_error_hint(exc, writing=True)}")
    err.errno, err.filename = exc.errno, str(path)
    return err


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path`` so readers never see a partial file. Any ``OSError``
    (no such folder, no space, name too long, ...) is an ``OutputError`` naming ``path``; ``path`` is then as it was."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise _write_error(path, exc) from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, UserError) and _about_the_output(exc, tmp, path):
            raise _write_error(path, exc) from None
        raise  # e.g. ``write`` could not read one of its inputs: that file, not the output, is the problem
    return path


def _about_the_output(exc: OSError, tmp: str, path: Path) -> bool:
    """Whether ``exc`` concerns the file being written (its temp file, the target, or no file named)."""
    if exc.filename is None or isinstance(exc.filename, int):
        return True
    name = os.fsdecode(exc.filename)
    return name in (tmp, str(path)) or Path(name).parent == path.parent


def is_directory(path: str | Path) -> bool:
    """``Path.is_dir`` that answers False for a name the file system cannot look up (too long, ...)."""
    try:
        return Path(path).is_dir()
    except OSError:  # a name too long to look up: not a directory; writing it says why it fails
        return False


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    if is_directory(path):
        raise UserError(f"{path} is a directory; give a file path to write to")
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


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


# parts of a pydantic error location that name pydantic's own steps, not a key of the file: validator frames, the
# member of a union that was tried, "[key]" for a dict key that failed
_PYDANTIC_FRAME = re.compile(r"^(function-.*|(constrained-)?(int|float|str|bool)|(list|is-instance)\[.*\]|\[key\])$")


def explain_invalid(exc: ValidationError, at: tuple = ()) -> str:
    """The first problem of a pydantic error in one phrase: ``key.path: what is wrong (got VALUE)``; ``at``: the
    keys above what was validated."""
    err = exc.errors()[0]
    loc = [p for p in err["loc"] if not (isinstance(p, str) and _PYDANTIC_FRAME.match(p))]
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
        raise UserError(f"corrupt training state {path} ({type(exc).__name__}); restore it from a backup, or delete it "
                        f"to train the {path.parent.name} phase again from its start") from None
