"""Notebook parameters: papermill injects plain values; a dataclass validates them."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A parameter with the wrong name, type or value."""


def _check_type(name: str, value: Any, annotation: Any) -> Any:
    """Accept ints for floats; otherwise the value must match the annotation's base types."""
    origin = typing.get_origin(annotation)
    options = typing.get_args(annotation) if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) else (annotation,)
    for option in options:
        if option is type(None) and value is None:
            return value
        base = typing.get_origin(option) or option
        if base is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(base, type) and isinstance(value, base) and not (base is int and isinstance(value, bool)):
            return value
    raise ConfigError(f"parameter {name!r} must be {annotation}, got {value!r} ({type(value).__name__})")


def build(cls: type[T], values: Mapping[str, Any], *, strict: bool = True) -> T:
    """Build dataclass ``cls`` from ``values``; with ``strict``, unknown keys raise."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if strict and unknown:
        raise ConfigError(f"unknown parameter(s) {unknown} for {cls.__name__}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _check_type(k, v, hints[k]) for k, v in values.items() if k in fields}
    return cls(**kwargs)


def from_namespace(cls: type[T], namespace: Mapping[str, Any]) -> T:
    """Pick ``cls``'s fields out of a notebook's globals (the parameters cell's values)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return build(cls, {k: v for k, v in namespace.items() if k in names})


def param(default: Any, help: str = "") -> Any:
    """A notebook parameter: its default and its help text (what ``utils.run --list``, the notebooks'
    parameters cells and the command lines show), in one place."""
    kwargs: dict[str, Any] = {"default": default} if not isinstance(default, (list, dict, set)) else \
        {"default_factory": lambda: type(default)(default)}
    return dataclasses.field(**kwargs, metadata={"help": help})
