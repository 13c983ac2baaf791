"""Name -> class registries for tasks, criterions, architectures, optimizers and schedulers."""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

from roberta.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """A registry for one kind of component, chosen on the command line by `--<flag>`."""

    def __init__(self, flag: str) -> None:
        self.flag = flag
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries and self._entries[name] is not entry:
                raise ValueError(f"--{self.flag} '{name}' is registered twice "
                                 f"({self._entries[name]!r} and {entry!r})")
            self._entries[name] = entry
            return entry
        return add

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise UserError(f"unknown --{self.flag} '{name}'; choose from: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


TASKS: Registry = Registry("task")
CRITERIONS: Registry = Registry("criterion")
ARCHS: Registry = Registry("arch")
OPTIMIZERS: Registry = Registry("optimizer")
LR_SCHEDULERS: Registry = Registry("lr-scheduler")
