"""The one error type for refused input: it names the file, the field, the value and the reason."""

from __future__ import annotations

from pathlib import Path
import re
from typing import Any

from pydantic import ValidationError


class InputError(Exception):
    """A protocol, station or other input the user gave was refused before anything moved."""

    def __init__(self, source: str | Path | None, field: str, value: Any, reason: str) -> None:
        self.source = str(source) if source is not None else "<input>"
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(self.message())

    def message(self) -> str:
        """One line whatever the input (a YAML key may hold a newline): file: field = value: reason."""
        where = f"{self.source}: {self.field}" if self.field else self.source
        shown = _short(self.value)
        return _one_line(f"{where}" + (f" = {shown}" if shown is not None else "") + f": {self.reason}")


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _short(value: Any) -> str | None:
    if value is _MISSING:
        return None
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_MISSING = object()
_LOCATED = re.compile(r"^([A-Za-z_]+(?:\[\d+\]|\.[A-Za-z_]+)+): (.*)$", re.S)
MISSING = _MISSING


def from_validation_error(source: str | Path | None, error: ValidationError) -> InputError:
    """The first problem pydantic found, as an InputError (with a count of the others)."""
    problems = error.errors(include_url=False)
    first = problems[0]
    field = _loc(first.get("loc", ()))
    reason = first.get("msg", "invalid").removeprefix("Value error, ")
    if first.get("type") == "extra_forbidden":
        reason = "unknown key (a typo?)"
    elif first.get("type") == "missing":
        reason = "required but missing"
    if field == "(top level)":
        located = _LOCATED.match(reason)
        if located:  # a whole-model check that names its own field path
            field, reason = located.group(1), located.group(2)
    if len(problems) > 1:
        reason += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
    value = first.get("input", _MISSING) if first.get("type") not in ("missing",) else _MISSING
    if isinstance(value, dict) and first.get("type") != "extra_forbidden":
        value = _MISSING
    return InputError(source, field, value, reason)


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    previous: Any = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == previous or str(part).startswith(("function-", "tagged-union", "union[")):
            continue  # tagged-union tags repeat the step's key
        else:
            out += ("." if out else "") + str(part)
        previous = part
    return out or "(top level)"
