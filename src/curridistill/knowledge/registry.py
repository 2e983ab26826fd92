"""The knowledge registry. Each term module registers itself on import; ``load_all`` imports them."""
from __future__ import annotations

import importlib
import pkgutil

from curridistill.registry import Registry

KNOWLEDGE: Registry = Registry("knowledge term")


def load_all() -> Registry:
    import curridistill.knowledge as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name not in {"base", "registry"}:
            importlib.import_module(f"curridistill.knowledge.{info.name}")
    return KNOWLEDGE
