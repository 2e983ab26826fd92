"""One generic registry, one instance per extension point (models, datasets, knowledge, ...)."""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from curridistill.errors import UserError
from curridistill.suggest import suggest

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps config names to objects. ``@MODELS.register("resnet20")`` adds one; a miss lists the names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return add

    def add(self, name: str, obj: T) -> T:
        return self.register(name)(obj)

    def get(self, name: str, where: str = "") -> T:
        if name not in self._items:
            raise UserError(unknown_name_message(self.kind, name, list(self._items), where))
        return self._items[name]

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())


def unknown_name_message(kind: str, name: str, valid: list[str], where: str = "") -> str:
    hint = suggest(name, valid, fallback=f"valid names: {', '.join(sorted(valid))}")
    loc = f" at {where}" if where else ""
    return f"unknown {kind} {name!r}{loc}; {hint}"
