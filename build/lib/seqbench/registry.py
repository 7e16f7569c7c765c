"""Registries of models and tasks: lazy imports, unique names, helpful unknown-name errors.

An entry names its implementation as ``"package.module:attr"``; the module is imported only when
the entry is first used, so ``seqbench list`` and spec validation never import heavy backends.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from seqbench.errors import UnknownNameError

E = TypeVar("E", bound="Entry")


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "package.module:attr", imported lazily
    description: str = ""

    def load(self) -> Any:
        module_name, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module_name), attr)


@dataclass(frozen=True)
class ModelEntry(Entry):
    display: str = ""  # name shown in tables and plots
    color: str = "#333333"  # one colour per architecture, used by every plot
    family: str = ""  # "rnn", "attention", "ssm"


@dataclass(frozen=True)
class TaskEntry(Entry):
    kind: str = "synthetic"  # "synthetic", "embedded" (ships in a package), "local" (data dir)


@dataclass
class Registry(Generic[E]):
    kind: str  # "model" or "task", used in error messages
    _entries: dict[str, E] = field(default_factory=dict)

    def add(self, entry: E) -> E:
        if entry.name in self._entries:
            raise ValueError(f"duplicate {self.kind} name {entry.name!r}")
        self._entries[entry.name] = entry
        return entry

    def __getitem__(self, name: str) -> E:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownNameError(self.kind, name, self.names()) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[E]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def order(self, name: str) -> int:
        """Registration order, the canonical order of architectures in tables and plots."""
        names = self.names()
        return names.index(name) if name in names else len(names)
