"""Strict checking of the free-form ``params`` a spec gives a model or a task.

A model's params are checked against its mixer's ``Config`` dataclass (and the backbone's), a
task's against its constructor's signature, through pydantic in strict mode: the declared
type exactly (no bool for a number, no string for a number, no float for an integer), finite
numbers, ``Literal`` choices, unknown names refused. A config's own ``__post_init__`` then checks
ranges. Each refusal is one line naming the field, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from seqbench.errors import SpecError

_CONFIG = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False,
                     arbitrary_types_allowed=True)


def _lenient_sequences(annotation: Any) -> Any:
    """Tuples accept the lists YAML writes (strict mode alone takes only tuple instances)."""
    if typing.get_origin(annotation) is tuple:
        return Annotated[annotation, Field(strict=False)]
    return annotation


def _model(name: str, fields: dict[str, tuple[Any, Any]]) -> type[BaseModel]:
    spec = {k: (_lenient_sequences(t), d) for k, (t, d) in fields.items()}
    return create_model(name, __config__=_CONFIG, **spec)  # type: ignore[call-overload]


@functools.cache
def _dataclass_model(cls: type) -> type[BaseModel]:
    hints = typing.get_type_hints(cls, include_extras=True)
    fields: dict[str, tuple[Any, Any]] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = Field(default_factory=f.default_factory)
        else:
            default = ...
        fields[f.name] = (hints[f.name], default)
    return _model(f"{cls.__name__}Params", fields)


@functools.cache
def _signature_model(func: Callable[..., Any], skip: tuple[str, ...]) -> type[BaseModel] | None:
    """A model of ``func``'s keyword parameters, or None when it takes ``**kwargs``."""
    signature = inspect.signature(func)
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        return None
    hints = typing.get_type_hints(func, include_extras=True)
    fields = {name: (hints.get(name, Any), ... if p.default is p.empty else p.default)
              for name, p in signature.parameters.items() if name not in skip}
    return _model(f"{getattr(func, '__qualname__', 'func')}Params", fields)


def _refusal(exc: ValidationError, where: str, allowed_names: list[str]) -> SpecError:
    err = exc.errors()[0]
    name = ".".join(str(p) for p in err["loc"])
    field = f"{where}.{name}" if name else where
    if err["type"] == "extra_forbidden":
        return SpecError(field, err["loc"][-1],
                         f"unknown key; allowed keys: {', '.join(sorted(allowed_names))}")
    if err["type"] == "missing":
        return SpecError(field, None, "required")
    msg = err["msg"]
    msg = msg[len("Value error, "):] if msg.startswith("Value error, ") else msg
    return SpecError(field, err.get("input"), msg[:1].lower() + msg[1:])


def check_dataclass(cls: type, params: dict[str, Any], where: str) -> Any:
    """An instance of the config dataclass ``cls`` from ``params``, checked strictly."""
    model = _dataclass_model(cls)
    try:
        checked = model.model_validate(params)
    except ValidationError as exc:
        raise _refusal(exc, where, list(model.model_fields)) from None
    values = {name: getattr(checked, name) for name in params}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise SpecError(where, params, str(exc)) from None


def check_signature(func: Callable[..., Any], params: dict[str, Any], where: str,
                    skip: tuple[str, ...] = ("self", "seq_len")) -> None:
    """Check ``params`` against the keyword parameters of ``func`` (strict types)."""
    model = _signature_model(func, skip)
    if model is None:
        return
    try:
        model.model_validate(params)
    except ValidationError as exc:
        raise _refusal(exc, where, list(model.model_fields)) from None
