"""Changing a spec from the command line without editing its YAML.

``--set PATH=VALUE`` (repeatable) edits the spec data before validation, so an override is
validated exactly like the same edit to the YAML and changes config hashes exactly as that edit
would. ``PATH`` is dotted: mapping keys by name, list items by index (``tasks.0.seq_lens``) or,
in the named lists ``models`` and ``tasks``, by their ``name`` (``models.lstm.params.d_model``).
Missing mapping keys are added. ``VALUE`` is read as YAML (``50``, ``3e-3``, ``[25, 50]``,
``{d_model: 32}``, ``true``).

``--models a,b``, ``--tasks t`` and ``--seeds 0,1`` narrow the sweep after validation: they keep
the named models and tasks of the spec (refusing names it does not have) and replace its seeds.
A filter changes which jobs run, never a job's config hash. Every override is recorded with the
run (``suite.json`` and each row's ``overrides``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from seqbench.config.spec import Suite
from seqbench.config.yaml_strict import parse_yaml
from seqbench.errors import SpecError

NAMED_LISTS = ("models", "tasks")
MAX_SET_CHARS = 64 << 10  # one --set value: a number, a list, a small mapping


def _parse_value(text: str, flag: str) -> Any:
    if len(text) > MAX_SET_CHARS:
        raise SpecError(flag, text, f"the value is {len(text):,} characters; at most "
                        f"{MAX_SET_CHARS:,}")
    try:
        return parse_yaml(text, flag) if text.strip() else ""
    except SpecError as exc:
        key = f"key {exc.field!r}: " if exc.field != "spec" else ""
        raise SpecError(flag, text, f"the value is refused: {key}{exc.allowed}") from None


def _step(node: Any, key: str, path: str, flag: str, create: bool) -> tuple[Any, Any]:
    """The container and the key/index within it that ``key`` names."""
    if isinstance(node, list):
        if key.lstrip("-").isdigit():
            index = int(key)
            if not -len(node) <= index < len(node):
                raise SpecError(flag, path, f"index {index} is out of range (the list has "
                                f"{len(node)} items)")
            return node, index
        names = [item.get("name") for item in node if isinstance(item, dict)]
        if key in names:
            return node, names.index(key)
        raise SpecError(flag, path, f"no item named {key!r} in this list (it has "
                        f"{', '.join(map(str, names)) or 'no named items'})")
    if isinstance(node, dict):
        if key not in node and create:
            node[key] = {}
        if key not in node:
            raise SpecError(flag, path, f"no key {key!r} here")
        return node, key
    raise SpecError(flag, path, f"{key!r} goes inside a {type(node).__name__}, which has no "
                    "keys")


def set_path(data: dict[str, Any], path: str, value: Any, flag: str = "--set") -> None:
    """``data`` with ``value`` at the dotted ``path`` (in place)."""
    keys = path.split(".")
    if not all(keys):
        raise SpecError(flag, path, "write a dotted path such as train.steps or "
                        "models.lstm.params.d_model")
    node: Any = data
    for key in keys[:-1]:
        container, k = _step(node, key, path, flag, create=True)
        node = container[k]
    if isinstance(node, dict):
        node[keys[-1]] = value
    else:
        container, k = _step(node, keys[-1], path, flag, create=False)
        container[k] = value


def _names(text: str, flag: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise SpecError(flag, text, "a comma-separated list of names")
    return names


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        seeds = ()
    if not seeds or any(s < 0 for s in seeds):
        raise SpecError("--seeds", text, "a comma-separated list of integers >= 0")
    return seeds


@dataclass(frozen=True)
class Overrides:
    sets: tuple[str, ...] = ()
    models: tuple[str, ...] | None = None
    tasks: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None

    @classmethod
    def from_flags(cls, sets: list[str] | None = None, models: str | None = None,
                   tasks: str | None = None, seeds: str | None = None) -> Overrides:
        for text in sets or []:
            if "=" not in text:
                raise SpecError("--set", text, "write PATH=VALUE, e.g. train.steps=50")
        return cls(tuple(sets or ()), _names(models, "--models") if models else None,
                   _names(tasks, "--tasks") if tasks else None, _seeds(seeds) if seeds else None)

    def __bool__(self) -> bool:
        return bool(self.sets) or any(v is not None for v in (self.models, self.tasks,
                                                               self.seeds))

    def apply(self, data: dict[str, Any], source: str) -> dict[str, Any]:
        """The spec data with every ``--set`` and ``--seeds`` applied (a copy)."""
        data = copy.deepcopy(data)
        for text in self.sets:
            path, _, raw = text.partition("=")
            set_path(data, path.strip(), _parse_value(raw, "--set"))
        if self.seeds is not None:
            data["seeds"] = list(self.seeds)
        return data

    def select(self, suite: Suite, source: str) -> Suite:
        """The validated suite narrowed to ``--models`` and ``--tasks``."""
        update: dict[str, Any] = {}
        for flag, wanted, entries in (("--models", self.models, suite.models),
                                      ("--tasks", self.tasks, suite.tasks)):
            if wanted is None:
                continue
            have = [e.name for e in entries]
            missing = [n for n in wanted if n not in have]
            if missing:
                raise SpecError(flag, ",".join(missing), f"not in {source}; it has "
                                f"{', '.join(have)}")
            update[flag[2:]] = [e for e in entries if e.name in wanted]
        return suite.model_copy(update=update) if update else suite

    def describe(self) -> list[str]:
        """The overrides as the flags that gave them (recorded with the run)."""
        out = [f"--set {s}" for s in self.sets]
        for flag, value in (("--models", self.models), ("--tasks", self.tasks),
                            ("--seeds", self.seeds)):
            if value is not None:
                out.append(f"{flag} {','.join(map(str, value))}")
        return out
