"""The cycling protocol: a cell, its constant-current steps, rests, loops and fixed-capacity schedules."""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, Discriminator, Field, Tag, PositiveInt, field_validator, model_validator

from .base import Amperes, AmpHours, FileModel, Grams, Kelvin, MahPerGram, MilliampsPerCm2, Pascals, Seconds, SquareCm, Volts

LI2S_THEORETICAL_MAH_G = 1166.0

_CHANNEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")


def _check_channel(name: str) -> str:
    if not _CHANNEL_NAME.match(name):
        raise ValueError(f"{name!r} is not a valid channel name (letters, digits, _ -; at most 32 characters)")
    return name


ChannelName = Annotated[str, AfterValidator(_check_channel)]


class Cell(FileModel):
    """The cell on one cycler channel: what is in it and how much."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
    channel: ChannelName = "ch1"
    active_mass_g: Grams = Field(alias="active_mass", gt=0, le=10.0)
    area_cm2: SquareCm = Field(alias="area", gt=0, le=1000.0)
    theoretical_capacity_mah_g: MahPerGram = Field(
        LI2S_THEORETICAL_MAH_G, alias="theoretical_capacity", gt=0, le=4000.0
    )
    active_material: str = Field("Li2S", max_length=64)
    pressure_pa: Pascals | None = Field(None, alias="pressure", gt=0, le=1e9,
                                        description="stack pressure applied to the cell (BDF Applied Pressure)")

    @field_validator("name")
    @classmethod
    def _no_double_underscore(cls, name: str) -> str:
        if "__" in name:
            raise ValueError(f"{name!r}: '__' separates the parts of a BDF file name; use '_' or '-'")
        return name


class EndConditions(FileModel):
    """A constant-current step ends on whichever of these comes first."""

    specific_capacity_mah_g: MahPerGram | None = Field(None, alias="specific_capacity", gt=0)
    capacity_ah: AmpHours | None = Field(None, alias="capacity", gt=0)
    voltage_v: Volts | None = Field(None, alias="voltage")
    time_s: Seconds | None = Field(None, alias="time", gt=0)

    @model_validator(mode="after")
    def _at_least_one(self) -> "EndConditions":
        if all(v is None for v in (self.specific_capacity_mah_g, self.capacity_ah, self.voltage_v, self.time_s)):
            raise ValueError("a constant-current step needs at least one end: specific_capacity, capacity, voltage or time")
        return self


class CurrentSpec(FileModel):
    """Exactly one of current density, current or C-rate."""

    current_density_ma_cm2: MilliampsPerCm2 | None = Field(None, alias="current_density", gt=0)
    current_a: Amperes | None = Field(None, alias="current", gt=0)
    c_rate: float | None = Field(None, gt=0, le=100)

    @model_validator(mode="after")
    def _exactly_one(self) -> "CurrentSpec":
        given = [v for v in (self.current_density_ma_cm2, self.current_a, self.c_rate) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of current_density, current, c_rate")
        return self

    def current_a_for(self, cell: Cell) -> float:
        """The current magnitude in A for this cell."""
        if self.current_a is not None:
            return self.current_a
        if self.current_density_ma_cm2 is not None:
            return self.current_density_ma_cm2 * cell.area_cm2 * 1e-3
        assert self.c_rate is not None
        capacity_ah = cell.theoretical_capacity_mah_g * cell.active_mass_g * 1e-3
        return self.c_rate * capacity_ah


class ConstantCurrent(CurrentSpec):
    """A constant-current half-cycle with its end conditions."""

    until: EndConditions


class ChargeStep(FileModel):
    charge: ConstantCurrent


class DischargeStep(FileModel):
    discharge: ConstantCurrent


class RestSpec(FileModel):
    duration_s: Seconds = Field(alias="duration", gt=0)


class RestStep(FileModel):
    rest: RestSpec


class FixedCapacitySchedule(FileModel):
    """The paper's activation: charge to increasing fixed capacities, each followed by a discharge to a voltage."""

    capacities_mah_g: list[MahPerGram] = Field(alias="capacities", min_length=1)
    charge: CurrentSpec
    discharge: CurrentSpec
    discharge_to_v: Volts = Field(alias="discharge_to")
    charge_cutoff_v: Volts | None = Field(None, alias="charge_cutoff", description="safety end of each charge")
    rest_s: Seconds | None = Field(None, alias="rest", gt=0)

    @model_validator(mode="after")
    def _increasing(self) -> "FixedCapacitySchedule":
        caps = self.capacities_mah_g
        if any(b < a for a, b in zip(caps, caps[1:])):
            raise ValueError(f"capacities must not decrease: {caps}")
        return self


class ScheduleStep(FileModel):
    fixed_capacity_schedule: FixedCapacitySchedule


class LoopSpec(FileModel):
    count: PositiveInt = Field(le=100000)
    steps: list["Step"] = Field(min_length=1)


class LoopStep(FileModel):
    loop: LoopSpec


_STEP_KEYS = ("charge", "discharge", "rest", "fixed_capacity_schedule", "loop")


def _step_key(data: object) -> str | None:
    if isinstance(data, dict):
        keys = [k for k in _STEP_KEYS if k in data]
        return keys[0] if len(keys) == 1 and len(data) == 1 else None
    return next((k for k in _STEP_KEYS if hasattr(data, k)), None)


Step = Annotated[
    Union[
        Annotated[ChargeStep, Tag("charge")],
        Annotated[DischargeStep, Tag("discharge")],
        Annotated[RestStep, Tag("rest")],
        Annotated[ScheduleStep, Tag("fixed_capacity_schedule")],
        Annotated[LoopStep, Tag("loop")],
    ],
    Discriminator(
        _step_key,
        custom_error_type="step_kind",
        custom_error_message="a step is a mapping with exactly one key: charge, discharge, rest, fixed_capacity_schedule or loop",
    ),
]
LoopSpec.model_rebuild()


class CyclingLimits(FileModel):
    """Whole-run safety limits: any breach stops the channel within one sample."""

    voltage_min_v: Volts = Field(alias="voltage_min")
    voltage_max_v: Volts = Field(alias="voltage_max")
    current_max_a: Amperes = Field(alias="current_max", gt=0)
    capacity_max_mah_g: MahPerGram | None = Field(None, alias="capacity_max", gt=0)
    temperature_max_k: Kelvin | None = Field(None, alias="temperature_max", gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> "CyclingLimits":
        if self.voltage_min_v >= self.voltage_max_v:
            raise ValueError(f"voltage_min {self.voltage_min_v:g} V must be below voltage_max {self.voltage_max_v:g} V")
        return self


class CyclingProtocol(FileModel):
    """Cycling of one cell on one cycler channel."""

    kind: Literal["cycling"]
    name: str = Field(min_length=1, max_length=120)
    cell: Cell
    steps: list[Step] = Field(min_length=1)
    limits: CyclingLimits
    sample_interval_s: Seconds = Field(60.0, alias="sample_interval", gt=0, le=3600)
    on_resume: Literal["continue", "restart-step"] = "continue"

    @model_validator(mode="after")
    def _physically_possible(self) -> "CyclingProtocol":
        cell, limits = self.cell, self.limits
        for where, step in _walk(self.steps):
            for spec, ends in _cc_parts(step):
                current_a = spec.current_a_for(cell)
                if current_a > limits.current_max_a:
                    raise ValueError(
                        f"{where}: current {current_a * 1e3:.4g} mA exceeds limits.current_max {limits.current_max_a * 1e3:.4g} mA"
                    )
                for label, specific in ends:
                    if specific is not None and specific > cell.theoretical_capacity_mah_g:
                        raise ValueError(
                            f"{where}: {label} {specific:g} mAh/g is above the theoretical capacity of "
                            f"{cell.active_material} ({cell.theoretical_capacity_mah_g:g} mAh/g)"
                        )
                    if specific is not None and limits.capacity_max_mah_g is not None and specific > limits.capacity_max_mah_g:
                        raise ValueError(f"{where}: {label} {specific:g} mAh/g is above limits.capacity_max")
            for label, volts in _voltages(step):
                if not limits.voltage_min_v <= volts <= limits.voltage_max_v:
                    raise ValueError(
                        f"{where}: {label} {volts:g} V is outside the limits {limits.voltage_min_v:g}..{limits.voltage_max_v:g} V"
                    )
        return self


def _walk(steps: list[Step], prefix: str = "steps") -> list[tuple[str, Step]]:
    out: list[tuple[str, Step]] = []
    for i, step in enumerate(steps):
        where = f"{prefix}[{i}]"
        out.append((where, step))
        if isinstance(step, LoopStep):
            out.extend(_walk(step.loop.steps, f"{where}.loop.steps"))
    return out


def _cc_parts(step: Step) -> list[tuple[CurrentSpec, list[tuple[str, float | None]]]]:
    if isinstance(step, ChargeStep):
        return [(step.charge, [("charge until specific_capacity", step.charge.until.specific_capacity_mah_g)])]
    if isinstance(step, DischargeStep):
        return [(step.discharge, [("discharge until specific_capacity", step.discharge.until.specific_capacity_mah_g)])]
    if isinstance(step, ScheduleStep):
        s = step.fixed_capacity_schedule
        return [(s.charge, [("schedule capacity", c) for c in s.capacities_mah_g]), (s.discharge, [])]
    return []


def _voltages(step: Step) -> list[tuple[str, float]]:
    if isinstance(step, ChargeStep) and step.charge.until.voltage_v is not None:
        return [("charge until voltage", step.charge.until.voltage_v)]
    if isinstance(step, DischargeStep) and step.discharge.until.voltage_v is not None:
        return [("discharge until voltage", step.discharge.until.voltage_v)]
    if isinstance(step, ScheduleStep):
        s = step.fixed_capacity_schedule
        out = [("discharge_to", s.discharge_to_v)]
        if s.charge_cutoff_v is not None:
            out.append(("charge_cutoff", s.charge_cutoff_v))
        return out
    return []
