"""Lab units at the edges, SI-ish units inside.

Protocol and station files write quantities the way people do ("20 degC", "10 ms",
"0.132 mA/cm2", "600 mAh/g"); `parse_quantity` turns them into the one internal unit that
the receiving field's name carries (temperature_k, mixing_time_s, ...).
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

from pydantic import BeforeValidator, ValidationInfo

# dimension -> {unit spelling: (scale, offset)} giving value_internal = value * scale + offset
_UNITS: dict[str, dict[str, tuple[float, float]]] = {
    "temperature": {"K": (1.0, 0.0), "degC": (1.0, 273.15), "°C": (1.0, 273.15), "C": (1.0, 273.15)},
    "time": {"s": (1.0, 0.0), "ms": (1e-3, 0.0), "us": (1e-6, 0.0), "µs": (1e-6, 0.0),
             "min": (60.0, 0.0), "h": (3600.0, 0.0)},
    "current": {"A": (1.0, 0.0), "mA": (1e-3, 0.0), "uA": (1e-6, 0.0), "µA": (1e-6, 0.0)},
    "current_density": {"mA/cm2": (1.0, 0.0), "mA/cm^2": (1.0, 0.0), "uA/cm2": (1e-3, 0.0),
                        "A/m2": (0.1, 0.0)},
    "capacity": {"Ah": (1.0, 0.0), "mAh": (1e-3, 0.0), "uAh": (1e-6, 0.0)},
    "specific_capacity": {"mAh/g": (1.0, 0.0), "Ah/kg": (1.0, 0.0)},
    "voltage": {"V": (1.0, 0.0), "mV": (1e-3, 0.0)},
    "mass": {"g": (1.0, 0.0), "mg": (1e-3, 0.0), "ug": (1e-6, 0.0)},
    "area": {"cm2": (1.0, 0.0), "cm^2": (1.0, 0.0), "mm2": (1e-2, 0.0), "m2": (1e4, 0.0)},
    "ramp_rate": {"K/min": (1.0, 0.0), "K/s": (60.0, 0.0), "degC/min": (1.0, 0.0)},
    "frequency": {"Hz": (1.0, 0.0), "kHz": (1e3, 0.0), "MHz": (1e6, 0.0)},
    "c_rate": {"C": (1.0, 0.0)},
    "voltage_rate": {"V/s": (1.0, 0.0), "mV/s": (1e-3, 0.0), "mV/min": (1e-3 / 60, 0.0), "mV/h": (1e-3 / 3600, 0.0),
                     "uV/s": (1e-6, 0.0), "µV/s": (1e-6, 0.0)},
    "pressure": {"Pa": (1.0, 0.0), "kPa": (1e3, 0.0), "MPa": (1e6, 0.0), "bar": (1e5, 0.0)},
}

# the internal unit of each dimension, as field names spell it
INTERNAL_UNIT = {
    "temperature": "K", "time": "s", "current": "A", "current_density": "mA/cm2", "capacity": "Ah",
    "specific_capacity": "mAh/g", "voltage": "V", "mass": "g", "area": "cm2", "ramp_rate": "K/min",
    "frequency": "Hz", "c_rate": "C", "voltage_rate": "V/s", "pressure": "Pa",
}

_QUANTITY = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([^\s\d].*?)?\s*$")


def parse_quantity(value: Any, dimension: str, *, bare_numbers_allowed: bool) -> float:
    """Convert "20 degC" (or a bare number in the internal unit, where allowed) to a float.

    Raises ValueError with a message a user can act on.
    """
    units = _UNITS[dimension]
    example = f"'{next(iter(units))}'"
    if isinstance(value, bool):
        raise ValueError(f"expected a {dimension.replace('_', ' ')} with a unit such as {example}, got {value!r}")
    if isinstance(value, (int, float)):
        if not bare_numbers_allowed:
            raise ValueError(
                f"{value!r} has no unit; write it with one, e.g. '{value} {next(iter(units))}' "
                f"(units: {', '.join(units)})"
            )
        number = float(value)
    elif isinstance(value, str):
        match = _QUANTITY.match(value)
        if not match:
            raise ValueError(f"cannot read {value!r} as a {dimension.replace('_', ' ')} (e.g. '5 {next(iter(units))}')")
        number_text, unit = match.group(1), (match.group(2) or "").strip()
        if not unit:
            if not bare_numbers_allowed:
                raise ValueError(f"{value!r} has no unit (units: {', '.join(units)})")
            number = float(number_text)
        else:
            if unit not in units:
                raise ValueError(
                    f"unit {unit!r} is not a unit of {dimension.replace('_', ' ')} (use one of: {', '.join(units)})"
                )
            scale, offset = units[unit]
            number = float(number_text) * scale + offset
    else:
        raise ValueError(f"expected a {dimension.replace('_', ' ')} such as {example}, got {type(value).__name__}")
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def _validator(dimension: str) -> Callable[[Any, ValidationInfo], float]:
    def validate(value: Any, info: ValidationInfo) -> float:
        from_file = bool(info.context and info.context.get("from_file"))
        return parse_quantity(value, dimension, bare_numbers_allowed=not from_file)

    return validate


def quantity(dimension: str) -> BeforeValidator:
    """A pydantic validator for a quantity field: files must give units, Python callers may pass SI numbers."""
    return BeforeValidator(_validator(dimension))
