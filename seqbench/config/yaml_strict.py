"""Reading a spec file strictly, before validation starts:

* only a regular file is read (a FIFO, a device such as ``/dev/zero`` or a directory is refused
  instead of hanging or filling memory), at most :data:`MAX_SPEC_BYTES`, as UTF-8;
* YAML: duplicate keys are refused (YAML would keep the last one silently, even a second
  ``models:``), nesting deeper than :data:`MAX_DEPTH` and alias expansion beyond
  :data:`MAX_NODES` nodes or :data:`MAX_CHARS` characters of scalars (a "billion laughs" bomb,
  or one long string repeated through aliases) are refused, so is an alias inside the node it
  names (a structure that contains itself), and numbers are read the way
  YAML 1.2 and JSON read them (``1.0e6`` and ``3e-3`` are floats, not strings).

Every refusal is a :class:`~seqbench.errors.SpecError`: one line naming the field, the value and
what is allowed, exit code 2, before anything is written.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from seqbench.errors import SpecError

MAX_SPEC_BYTES = 1 << 20  # 1 MiB: a spec is a page of YAML
MAX_DEPTH = 32  # mappings and lists nested deeper than this are not a spec
MAX_NODES = 100_000  # scalars, lists and mappings after alias expansion
MAX_CHARS = 4 * MAX_SPEC_BYTES  # characters of all scalars after alias expansion

# YAML 1.2 / JSON floats, which YAML 1.1 (PyYAML) reads as strings: 1.0e6, 3e-3, 1E5
# (at least one digit: "." and "-." stay strings; integers are resolved as ints first)
_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?$")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and deep nesting, and reads YAML 1.2 floats."""

    def __init__(self, stream: str, source: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self.source = source

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise SpecError("spec", f"line {mark.line + 1}",
                                f"nests mappings or lists more than {MAX_DEPTH} deep",
                                source=self.source)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                raise SpecError("spec", f"line {key_node.start_mark.line + 1}",
                                "a mapping key must be a plain value",
                                source=self.source) from None
            if key in seen:
                raise SpecError(str(key), f"line {key_node.start_mark.line + 1}",
                                f"duplicate key (first at line {seen[key]}); a key may appear "
                                "once per mapping", source=self.source)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT,
                                    list("-+0123456789."))


class _Recursive(Exception):
    """An alias inside the node it names."""


def _expanded_size(node: yaml.Node, memo: dict[int, tuple[int, int] | None]) -> tuple[int, int]:
    """(nodes, scalar characters) in ``node`` with every alias expanded (aliases share composed
    nodes, so each distinct node is measured once); raises :class:`_Recursive` for a node that
    contains itself."""
    key = id(node)
    if key in memo:
        size = memo[key]
        if size is None:  # still being measured: the node reaches itself
            raise _Recursive
        return size
    memo[key] = None
    nodes, chars = 1, 0
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    else:
        chars = len(str(node.value))
    for child in children:
        n, c = _expanded_size(child, memo)
        nodes, chars = nodes + n, chars + c
    memo[key] = (nodes, chars)
    return nodes, chars


def parse_yaml(text: str, source: str) -> Any:
    loader = None
    try:
        loader = _StrictLoader(text, source)
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            nodes, chars = _expanded_size(node, {})
        except _Recursive:
            raise SpecError("spec", source, "holds a YAML alias inside the value it names (a "
                            "value that contains itself)") from None
        if nodes > MAX_NODES or chars > MAX_CHARS:
            raise SpecError("spec", source, f"expands (through YAML aliases) to more than "
                            f"{MAX_NODES:,} values or {MAX_CHARS:,} characters; a spec is much "
                            "smaller")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError("spec", source, f"is not valid YAML{where}") from None
    except RecursionError:
        raise SpecError("spec", source, "nests too deeply to be a spec") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_spec_file(path: Path) -> dict[str, Any]:
    """The spec file's content as data, read strictly (see the module docstring)."""
    source = str(path)
    try:
        info = os.stat(path)
    except OSError as exc:
        raise SpecError("spec", source, f"cannot be read ({type(exc).__name__}: "
                        f"{exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise SpecError("spec", source, "is not a regular file (a FIFO, device or directory "
                        "cannot be a spec)")
    if info.st_size > MAX_SPEC_BYTES:
        raise SpecError("spec", source, f"is {info.st_size:,} bytes; a spec is at most "
                        f"{MAX_SPEC_BYTES:,}")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SPEC_BYTES + 1)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError("spec", source, f"cannot be read ({type(exc).__name__}: "
                        f"{getattr(exc, 'strerror', None) or exc})") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError("spec", source, f"is longer than {MAX_SPEC_BYTES:,} bytes")
    data = parse_yaml(text, source)
    if not isinstance(data, dict):
        raise SpecError("spec", type(data).__name__, "must be a YAML mapping of keys to values",
                        source=source)
    return data
