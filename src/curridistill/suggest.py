"""The "did you mean ...?" hint of a one-line error about a name that is not one of the valid ones."""
from __future__ import annotations

import difflib
from typing import Iterable


def suggest(name: object, valid: Iterable[object], *, fallback: str, cutoff: float = 0.5, n: int = 1) -> str:
    """``did you mean 'x'?`` naming the ``n`` valid names nearest to ``name``, else ``fallback``.

    Nearness is difflib's ratio (``cutoff`` in [0, 1]; higher asks for closer names). ``fallback`` is what to
    say when nothing is near: usually the list of valid names, or where to find them.
    """
    near = difflib.get_close_matches(str(name), [str(v) for v in valid], n=n, cutoff=cutoff)
    if not near:
        return fallback
    return f"did you mean {', '.join(repr(v) for v in near)}?"
