"""Name → implementation registries, so configs can name things and bad names fail with the valid choices."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._labels: dict[str, str] = {}

    def register(self, name: str, label: str | None = None) -> Callable[[T], T]:
        """Register under `name`; `label` is how tables and plots show it (default: the name)."""
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            self._labels[name] = label or name
            return obj

        return decorator

    def get(self, name: str) -> T:
        if name not in self._items:
            raise ValueError(f"unknown {self.kind} {name!r}; valid choices: {', '.join(sorted(self._items))}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def in_order(self) -> list[str]:
        """Names in registration order (the built-in modules register in the paper's order)."""
        return list(self._items)

    def label(self, name: str) -> str:
        return self._labels.get(name, name)

    def __contains__(self, name: str) -> bool:
        return name in self._items


def import_package(package: str) -> None:
    """Import every module of `package`, so everything they register is registered: a new method, task or attack
    is one file in its package, with nothing else to list."""
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__, package + "."):
        importlib.import_module(info.name)
