"""File integrity: chunked md5 (cached per process), verification with a one-line UserError, downloads.

``download`` and ``extract_tar`` are the real network/archive code, used only when a loader is asked
for ``download: true`` and its files are missing; the tests never call them.
"""
from __future__ import annotations

import hashlib
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from curridistill.errors import UserError
from curridistill.io import atomic_write, hash_file

CHUNK = 1 << 20
# (resolved path, size, mtime_ns) -> md5 hex digest; a file is hashed once per process unless it changes
_MD5_CACHE: dict[tuple[str, int, int], str] = {}


def _stat_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def md5sum(path: str | Path, chunk_size: int = CHUNK) -> str:
    """Hex md5 of a file, read in chunks; cached by (path, size, mtime) for the life of the process."""
    path = Path(path)
    try:
        key = _stat_key(path)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}; check that the file exists and is readable") from None
    cached = _MD5_CACHE.get(key)
    if cached is not None:
        return cached
    try:
        digest = hash_file(hashlib.md5(usedforsecurity=False), path, chunk_size).hexdigest()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}; check that the file exists and is readable") from None
    _MD5_CACHE[key] = digest
    return digest


def verify(path: str | Path, expected_md5: str) -> None:
    """Raise a one-line UserError when ``path``'s md5 is not ``expected_md5``."""
    got = md5sum(path)
    expected = expected_md5.lower()
    if got != expected:
        raise UserError(f"corrupt or truncated file {path}: md5 {got}, expected {expected}; "
                        f"delete it and download again (or restore it)")


def clear_cache() -> None:
    _MD5_CACHE.clear()


def download(url: str, dest: str | Path, md5: str | None = None, timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``dest`` atomically (``io.atomic_write``: temporary file in the same folder, then a rename).

    The md5 is computed while streaming; on a mismatch nothing is left at ``dest``. An existing
    ``dest`` with the right md5 is kept without downloading.
    """
    dest = Path(dest)
    if dest.is_file() and md5 is not None and md5sum(dest) == md5.lower():
        return dest

    def fetch(tmp: str) -> None:
        h = hashlib.md5(usedforsecurity=False)
        req = urllib.request.Request(url, headers={"User-Agent": "curridistill"})
        with open(tmp, "wb") as out, urllib.request.urlopen(req, timeout=timeout) as resp:
            while chunk := resp.read(CHUNK):
                h.update(chunk)
                out.write(chunk)
        got = h.hexdigest()
        if md5 is not None and got != md5.lower():  # atomic_write deletes the temp file: nothing left at dest
            raise UserError(f"download of {url} is corrupt or truncated: md5 {got}, expected {md5.lower()}; "
                            f"try again, or fetch it by hand to {dest}")

    try:
        atomic_write(dest, fetch)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise UserError(f"cannot download {url} to {dest} ({reason}); check the network, "
                        f"or fetch the file by hand and put it at {dest}") from None
    return dest


def extract_tar(archive: str | Path, dest: str | Path) -> Path:
    """Extract a (gzip) tar archive into ``dest``, refusing members that would land outside it."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter="data")
            else:  # pragma: no cover - Python without extraction filters
                root = dest.resolve()
                for member in tar.getmembers():
                    target = (dest / member.name).resolve()
                    if root != target and root not in target.parents or member.issym() or member.islnk():
                        raise UserError(f"archive {archive} has an unsafe member {member.name!r}; "
                                        f"delete it and download again")
                tar.extractall(dest)
    except (tarfile.TarError, OSError) as exc:
        raise UserError(f"cannot extract {archive} ({exc}); delete it and download again") from None
    return dest

