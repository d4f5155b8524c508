"""The cycling protocol: a cell, its constant-current steps, rests, loops and fixed-capacity schedules."""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, Discriminator, Field, Tag, PositiveInt, field_validator, model_validator

from .base import (Amperes, AmpHours, FileModel, Grams, Kelvin, MahPerGram, MilliampsPerCm2, Pascals, Seconds, SquareCm,
                   Volts, VoltsPerSecond)

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
    """A rest for `duration`, or until the voltage settles (|dV/dt| below until_dvdt over `window`), at most `duration`."""

    duration_s: Seconds = Field(alias="duration", gt=0)
    until_dvdt_v_per_s: VoltsPerSecond | None = Field(None, alias="until_dvdt", gt=0)
    window_s: Seconds = Field(600.0, alias="window", gt=0, description="the slope is fitted over this much time")

    @model_validator(mode="after")
    def _window_fits(self) -> "RestSpec":
        if self.until_dvdt_v_per_s is not None and self.window_s > self.duration_s:
            raise ValueError(f"window {self.window_s:g} s is longer than the rest's duration {self.duration_s:g} s")
        return self


class RestStep(FileModel):
    rest: RestSpec


class HoldEnds(FileModel):
    """A voltage hold ends when the current has decayed below `current`, or after `time`."""

    current_a: Amperes | None = Field(None, alias="current", gt=0)
    time_s: Seconds | None = Field(None, alias="time", gt=0)

    @model_validator(mode="after")
    def _at_least_one(self) -> "HoldEnds":
        if self.current_a is None and self.time_s is None:
            raise ValueError("a voltage hold needs at least one end: current or time")
        return self


class CvHoldSpec(FileModel):
    """Hold the cell at `voltage` (charging or discharging into it), the current limited to `current_limit`."""

    direction: Literal["charge", "discharge"]
    voltage_v: Volts = Field(alias="voltage")
    current_limit: CurrentSpec
    until: HoldEnds


class CvHoldStep(FileModel):
    cv_hold: CvHoldSpec


class CcCvSpec(CurrentSpec):
    """Constant current to `voltage`, then hold that voltage until the current decays (`until`)."""

    direction: Literal["charge", "discharge"] = "charge"
    voltage_v: Volts = Field(alias="voltage")
    cc_until: EndConditions | None = Field(None, description="extra ends of the CC part (capacity, time)")
    until: HoldEnds


class CcCvStep(FileModel):
    cccv: CcCvSpec


class PulseSpec(CurrentSpec):
    time_s: Seconds = Field(alias="time", gt=0)


class GittSpec(FileModel):
    """A pulse train: `pulses` x (constant-current pulse, rest); the train ends early when a pulse reaches `until_voltage`."""

    direction: Literal["charge", "discharge"]
    pulse: PulseSpec
    rest: RestSpec
    pulses: PositiveInt = Field(le=10000)
    until_voltage_v: Volts = Field(alias="until_voltage")


class GittStep(FileModel):
    gitt: GittSpec


class HalfCycleEnds(FileModel):
    until: EndConditions


class RateTestSpec(FileModel):
    """Cycles at each current density in turn (the seed: 0.066, 0.132, 0.264 mA/cm2)."""

    current_densities_ma_cm2: list[MilliampsPerCm2] = Field(alias="current_densities", min_length=1)
    cycles_each: PositiveInt = Field(le=10000)
    charge: HalfCycleEnds
    discharge: HalfCycleEnds
    rest_s: Seconds | None = Field(None, alias="rest", gt=0)


class RateTestStep(FileModel):
    rate_test: RateTestSpec


class CapacityFade(FileModel):
    percent: float = Field(gt=0, le=100)
    of_cycle: PositiveInt = Field(1, description="the loop's cycle (1-based) whose discharge capacity is the reference")


class LoopEnds(FileModel):
    """Stop a loop after the cycle in which coulombic efficiency or discharge capacity fell too low."""

    coulombic_efficiency_below_pct: float | None = Field(None, alias="coulombic_efficiency_below", gt=0, le=100)
    discharge_capacity_below: CapacityFade | None = None

    @model_validator(mode="after")
    def _at_least_one(self) -> "LoopEnds":
        if self.coulombic_efficiency_below_pct is None and self.discharge_capacity_below is None:
            raise ValueError("stop_when needs coulombic_efficiency_below or discharge_capacity_below")
        return self


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
    stop_when: LoopEnds | None = None


class LoopStep(FileModel):
    loop: LoopSpec


_STEP_KEYS = ("charge", "discharge", "rest", "cv_hold", "cccv", "gitt", "rate_test", "fixed_capacity_schedule", "loop")


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
        Annotated[CvHoldStep, Tag("cv_hold")],
        Annotated[CcCvStep, Tag("cccv")],
        Annotated[GittStep, Tag("gitt")],
        Annotated[RateTestStep, Tag("rate_test")],
        Annotated[ScheduleStep, Tag("fixed_capacity_schedule")],
        Annotated[LoopStep, Tag("loop")],
    ],
    Discriminator(
        _step_key,
        custom_error_type="step_kind",
        custom_error_message="a step is a mapping with exactly one key: " + ", ".join(_STEP_KEYS),
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
    if isinstance(step, CvHoldStep):
        return [(step.cv_hold.current_limit, [])]
    if isinstance(step, CcCvStep):
        ends = step.cccv.cc_until
        return [(step.cccv, [("cccv cc_until specific_capacity", ends.specific_capacity_mah_g if ends else None)])]
    if isinstance(step, GittStep):
        return [(step.gitt.pulse, [])]
    if isinstance(step, RateTestStep):
        r = step.rate_test
        return [(CurrentSpec(current_density_ma_cm2=j), [("rate_test charge until specific_capacity",
                                                   r.charge.until.specific_capacity_mah_g)])
                for j in r.current_densities_ma_cm2]
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
    if isinstance(step, CvHoldStep):
        return [("cv_hold voltage", step.cv_hold.voltage_v)]
    if isinstance(step, CcCvStep):
        return [("cccv voltage", step.cccv.voltage_v)]
    if isinstance(step, GittStep):
        return [("gitt until_voltage", step.gitt.until_voltage_v)]
    if isinstance(step, RateTestStep):
        r = step.rate_test
        return [(f"rate_test {half} until voltage", ends.until.voltage_v) for half, ends in
                (("charge", r.charge), ("discharge", r.discharge)) if ends.until.voltage_v is not None]
    return []
