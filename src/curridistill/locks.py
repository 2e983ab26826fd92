"""One writer at a time: file locks (``filelock``) on run directories and shared cache entries.

The lock is an OS lock (``flock``) on a small file: the kernel releases it when its process ends, so a run
killed with SIGKILL never leaves a stale lock behind. A run directory is locked for the whole run or
resume (a second writer is refused at once); a cache entry is locked while it is built (a second run
needing the same entry waits for it, then reads it instead of building it again).
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from curridistill.errors import UserError

RUN_LOCK = ".lock"


@contextmanager
def run_dir_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold ``RUN_DIR/.lock`` or refuse in one line: another process is writing this run directory."""
    run_dir = Path(run_dir)
    if int(os.environ.get("RANK", "0") or 0) > 0:  # under torchrun rank 0 alone writes, so it alone locks
        yield
        return
    lock = FileLock(str(run_dir / RUN_LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UserError(f"{run_dir} is in use by another curridistill process (run or --resume); wait for it to "
                        f"finish, or choose another --out") from None
    except OSError as exc:
        raise UserError(f"cannot lock {run_dir} ({exc.strerror or exc}); choose a writable --out") from None
    try:
        yield
    finally:
        lock.release()


def is_locked(run_dir: str | Path) -> bool:
    """True when some live process holds ``RUN_DIR/.lock``."""
    path = Path(run_dir) / RUN_LOCK
    if not path.exists():
        return False
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    except OSError:
        return False
    lock.release()
    return False


@contextmanager
def entry_lock(path: str | Path, what: str = "cache entry", wait_note: bool = True) -> Iterator[None]:
    """Hold the lock of a shared cache entry, waiting (with one note on stderr) while another process holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path.with_name(path.name + ".lock")))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if wait_note:
            sys.stderr.write(f"waiting for another process building the {what} {path} ...\n")
            sys.stderr.flush()
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
