"""Validation errors as one line: the field, the value and what is allowed."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from seqbench.config.spec import Suite
from seqbench.errors import SpecError


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
