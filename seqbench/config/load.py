"""Loading a spec: find the file, read it strictly, apply command-line overrides, validate.

Reading is strict before validation starts:

* only a regular file is read (a FIFO, a device such as ``/dev/zero`` or a directory is refused
  instead of hanging or filling memory), at most :data:`MAX_SPEC_BYTES`, as UTF-8;
* YAML: duplicate keys are refused (YAML would keep the last one silently, even a second
  ``models:``), nesting deeper than :data:`MAX_DEPTH` and alias expansion beyond
  :data:`MAX_NODES` nodes (a "billion laughs" bomb) are refused, and numbers are read the way
  YAML 1.2 and JSON read them (``1.0e6`` and ``3e-3`` are floats, not strings).

Every refusal is a :class:`~seqbench.errors.SpecError`: one line naming the field, the value and
what is allowed, exit code 2, before anything is written.
"""

from __future__ import annotations

import os
import re
import stat
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from seqbench.config.overrides import Overrides
from seqbench.config.spec import Suite
from seqbench.errors import SpecError

DEFAULT_SPEC = "quick"
MAX_SPEC_BYTES = 1 << 20  # 1 MiB: a spec is a page of YAML
MAX_DEPTH = 32  # mappings and lists nested deeper than this are not a spec
MAX_NODES = 100_000  # scalars, lists and mappings after alias expansion

# YAML 1.2 / JSON floats, which YAML 1.1 (PyYAML) reads as strings: 1.0e6, 3e-3, 1E5
_FLOAT = re.compile(r"^[-+]?(?:(?:[0-9][0-9_]*)?\.[0-9_]*(?:[eE][-+]?[0-9]+)?"
                    r"|[0-9][0-9_]*[eE][-+]?[0-9]+)$")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and deep nesting, and reads YAML 1.2 floats."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise SpecError("spec", f"line {mark.line + 1}",
                                f"nests mappings or lists more than {MAX_DEPTH} deep")
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
                                "a mapping key must be a plain value") from None
            if key in seen:
                raise SpecError(str(key), f"line {key_node.start_mark.line + 1}",
                                f"duplicate key (first at line {seen[key]}); a key may appear "
                                "once per mapping")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT,
                                    list("-+0123456789."))


def _expanded_nodes(node: yaml.Node, memo: dict[int, int]) -> int:
    """Nodes in ``node`` with every alias expanded (aliases share composed nodes)."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = 1  # a node that reaches itself (a recursive alias) counts once
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_expanded_nodes(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(_expanded_nodes(k, memo) + _expanded_nodes(v, memo) for k, v in node.value)
    memo[key] = total
    return total


def parse_yaml(text: str, source: str) -> Any:
    loader = None
    try:
        loader = _StrictLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_nodes(node, {}) > MAX_NODES:
            raise SpecError("spec", source, f"expands (through YAML aliases) to more than "
                            f"{MAX_NODES:,} values; a spec is much smaller")
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


def find_spec(name_or_path: str | None) -> Path:
    """A spec path, or the name of a shipped spec (``quick`` -> the packaged tasks/quick.yaml)."""
    name_or_path = name_or_path or DEFAULT_SPEC
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    shipped = resources.files("seqbench.specs") / f"{name_or_path}.yaml"
    if shipped.is_file():
        return Path(str(shipped))
    raise SpecError("spec", name_or_path,
                    f"not a file; shipped specs: {', '.join(shipped_specs())}")


def shipped_specs() -> list[str]:
    root = resources.files("seqbench.specs")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


# --- validation errors as one line ---------------------------------------------------------

def loc_text(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """The keys allowed at ``loc`` (for 'unknown key' errors)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if hasattr(current, "model_fields") else None
        if field is None:
            return ""
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        current = next((a for a in (ann, *args)
                        if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if current is None:
            return ""
    return ", ".join(current.model_fields) if current is not None else ""


def spec_error(exc: ValidationError, source: str | None,
               model: type[BaseModel] | None = None, prefix: str = "") -> SpecError:
    """The first validation error as one line: field, value, what is allowed."""
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    field = prefix + (("." if prefix and loc and not isinstance(loc[0], int) else "")
                      + loc_text(loc) if loc else "") or "spec"
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(model or Suite, loc)
        return SpecError(field, loc[-1], f"unknown key; allowed keys: {allowed}", source=source)
    msg = err["msg"]
    msg = msg[len("Value error, "):] if msg.startswith("Value error, ") else msg
    return SpecError(field, err.get("input"), msg[:1].lower() + msg[1:], source=source)


# --- the suite ------------------------------------------------------------------------------

def parse_suite(data: dict[str, Any], source: str = "spec",
                overrides: Overrides | None = None) -> Suite:
    """Validate spec data (after ``overrides``, if any) and check it against the registries."""
    from seqbench.config.resolve import check_suite

    if overrides is not None:
        data = overrides.apply(data, source)
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        raise spec_error(exc, source) from None
    if overrides is not None:
        suite = overrides.select(suite, source)
    check_suite(suite, source)
    return suite


def load_suite(name_or_path: str | None,
               overrides: Overrides | None = None) -> tuple[Suite, Path]:
    path = find_spec(name_or_path)
    return parse_suite(read_spec_file(path), str(path), overrides), path
