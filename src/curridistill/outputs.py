"""Output paths checked before the work: a command refuses, in one line, a file it could not write (a folder, a path
under a file, a name too long, a place where no file can be created) or one whose writing would destroy a checkpoint
or one of its own inputs, before it trains, exports or benchmarks anything. The writing itself is ``io``'s."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from curridistill.errors import UserError
from curridistill.io import NAME_EXTRA, TMP_SUFFIX, is_directory, os_error_hint


def check_writable(path: str | Path, flag: str | None = None, example: str | None = None) -> Path:
    """Refuse, before any work, an output file that ``atomic_write`` could not write: a directory, a path under a
    file, a name too long for the file system, a folder where no file can be created. Creates and removes a temp
    file in the destination folder (in the nearest existing one when the folder is still to be made: nothing is
    left behind). ``flag``: the option that named it (``--out``); ``example``: a file name to suggest when ``path``
    is a folder."""
    path = Path(path)
    what = f"{flag} {path}" if flag else str(path)
    if is_directory(path):
        raise UserError(f"{what} is a directory; give a file path {f'such as {path / example}' if example else 'to write to'}")
    _check_folder(path.parent, what, path.name)
    return path


def check_writable_dir(path: str | Path, flag: str, purpose: str) -> Path:
    """Refuse, before any work, an output directory that cannot be made or written in: a file, a path under a file,
    a name too long, a read-only place. ``purpose``: what the directory is for ("the study")."""
    path = Path(path)
    if _exists(path) and not is_directory(path):
        raise UserError(f"{flag} {path} is a file, not a directory; choose a directory path for {purpose}")
    _check_folder(path, f"{flag} {path}")
    return path


def _check_folder(folder: Path, what: str, name: str | None = None) -> None:
    """``folder`` can be made (where missing) and a file ``name`` (any when None) created in it, or one line saying
    why not. Tries it with a temp file in ``folder``, or in its nearest existing ancestor, removed at once."""
    base = next((p for p in (folder, *folder.parents) if _exists(p)), folder)  # the nearest existing ancestor
    if not is_directory(base):
        raise UserError(f"{what}: {base} is a file, not a folder; choose another path")
    name_max = _name_max(base)
    for part in folder.relative_to(base).parts:
        if len(os.fsencode(part)) > name_max:
            raise UserError(f"{what}: the folder name {part[:24]}... is {len(os.fsencode(part))} bytes, longer than the "
                            f"{name_max} the file system allows; use a shorter path")
    if name is not None and len(os.fsencode(name)) + NAME_EXTRA > name_max:
        raise UserError(f"{what}: the file name is {len(os.fsencode(name))} bytes, too long for the file system (at "
                        f"most {name_max - NAME_EXTRA} here: the temp file of the atomic write adds {NAME_EXTRA}); "
                        f"use a shorter name")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}." if name and base == folder else ".curridistill-check.",
                                   suffix=TMP_SUFFIX, dir=base)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise UserError(f"{what} cannot be written (creating a file in {base}: {exc.strerror or type(exc).__name__}); "
                        f"{os_error_hint(exc, writing=True)}") from None


def _exists(path: Path) -> bool:
    try:
        return path.exists() or path.is_symlink()
    except OSError:  # a name too long to look up: absent
        return False


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows) or no answer: the usual limit
        return 255


def checkpoint_file(path: str | Path) -> Path | None:
    """The checkpoint ``path`` would overwrite: an existing ``NAME.safetensors`` (weights; a run's ``best`` and epoch
    files have no ``NAME.json``), or an existing ``NAME.json`` beside its ``NAME.safetensors`` (a checkpoint's spec).
    ``None`` when writing ``path`` destroys no checkpoint."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors" and path.is_file():
            return path
        if path.suffix == ".json" and path.is_file() and path.with_suffix(".safetensors").is_file():
            return path.with_suffix(".safetensors")
    except OSError:
        return None
    return None


def same_file(a: str | Path, b: str | Path) -> bool:
    """True when ``a`` and ``b`` name one file (the same path, a link, another spelling); false when either is absent."""
    try:
        if Path(a).resolve() == Path(b).resolve():
            return True
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def refuse_overwriting(path: str | Path, flag: str, inputs: list[str | Path] = ()) -> None:
    """Refuse, before any work, an output ``path`` that is an existing checkpoint file (see ``checkpoint_file``) or one
    of the ``inputs`` of the command: writing it would destroy a trained model or what the command reads."""
    ck = checkpoint_file(path)
    if ck is not None:
        if same_file(ck, path):
            raise UserError(f"{flag} {path} would overwrite the weights of a checkpoint (an existing .safetensors file); "
                            f"choose another path")
        raise UserError(f"{flag} {path} would overwrite the spec of the checkpoint {ck}; choose another path")
    for p in inputs:
        if same_file(path, p):
            raise UserError(f"{flag} {path} would overwrite {p}, an input of this command; choose another path")


OUTPUT_OPTIONS = ("out", "json_out", "cache_dir")  # command-line options naming what a command writes


def os_error_line(exc: OSError, given: dict) -> str | None:
    """``exc`` as one line when it names a file of the user's (a path given on the command line, ``given`` as
    argparse parsed it, or in a config: too long a name, no permission, ...), else None. Files of this installation
    (the package, its dependencies, Python itself) are not the user's: those stay tracebacks, as bugs."""
    if exc.filename is None or isinstance(exc.filename, int):
        return None
    path = os.fsdecode(exc.filename)
    try:
        resolved = Path(path).resolve()
        installation = {sys.prefix, sys.base_prefix, Path(__file__).parent}
        if any(resolved.is_relative_to(Path(p).resolve()) for p in installation):
            return None
    except (OSError, ValueError):
        pass
    writing = _under(path, [str(v) for k, v in given.items() if k in OUTPUT_OPTIONS and v])
    reading = _under(path, [str(x) for k, v in given.items() if k not in OUTPUT_OPTIONS
                            for x in (v if isinstance(v, list) else [v]) if isinstance(x, (str, Path))])
    action = "cannot write" if writing else "cannot read" if reading else "cannot use"  # else: a path a config named
    return f"{action} {path} ({exc.strerror or type(exc).__name__}); {os_error_hint(exc, writing)}"


def _under(path: str, folders: list[str]) -> bool:
    """``path`` is one of ``folders`` or inside one."""
    return any(path == f or path.startswith(f.rstrip("/\\") + os.sep) for f in folders)
