"""From parsed flags to the typed settings each component declares: the one place a namespace
turns into frozen dataclasses. Below `roberta/cli/` nothing reads the namespace."""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Mapping, TypeVar

S = TypeVar("S")


def settings_from_flags(settings_type: type[S], flags: argparse.Namespace,
                        derived: Mapping[str, Any] | None = None) -> S:
    """`settings_type` filled field by field: a `derived` value (computed once by the command
    layer, e.g. the world size) first, else the flag of the same name, else the field's default.
    Lists become tuples, so the settings stay immutable."""
    derived = derived or {}
    values = {}
    # mypy cannot tell that a TypeVar bound only by use is a dataclass type.
    for field in dataclasses.fields(settings_type):  # type: ignore[arg-type]
        if field.name in derived:
            values[field.name] = derived[field.name]
        elif hasattr(flags, field.name):
            value = getattr(flags, field.name)
            values[field.name] = tuple(value) if isinstance(value, list) else value
    return settings_type(**values)
