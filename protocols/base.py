"""Base model for every file-backed model: unknown keys (typos) are refused."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict

from .units import quantity

Kelvin = Annotated[float, quantity("temperature")]
Seconds = Annotated[float, quantity("time")]
Amperes = Annotated[float, quantity("current")]
MilliampsPerCm2 = Annotated[float, quantity("current_density")]
AmpHours = Annotated[float, quantity("capacity")]
MahPerGram = Annotated[float, quantity("specific_capacity")]
Volts = Annotated[float, quantity("voltage")]
Grams = Annotated[float, quantity("mass")]
SquareCm = Annotated[float, quantity("area")]
KelvinPerMinute = Annotated[float, quantity("ramp_rate")]
Hertz = Annotated[float, quantity("frequency")]
VoltsPerSecond = Annotated[float, quantity("voltage_rate")]
Pascals = Annotated[float, quantity("pressure")]


class FileModel(BaseModel):
    """Strict: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)
