"""The station file: which instruments exist, how to reach them, and their hard limits."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from .base import Amperes, FileModel, Hertz, Kelvin, KelvinPerMinute, Seconds, Volts
from .cycling import ChannelName


class VtLimitsSpec(FileModel):
    """The probe's hard limits: the driver refuses anything outside them."""

    min_k: Kelvin = Field(alias="min", gt=0)
    max_k: Kelvin = Field(alias="max", gt=0)
    max_ramp_k_per_min: KelvinPerMinute = Field(alias="max_ramp", gt=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> "VtLimitsSpec":
        if self.min_k >= self.max_k:
            raise ValueError(f"min {self.min_k:g} K must be below max {self.max_k:g} K")
        return self


class CalibrationSpec(FileModel):
    """Set point -> sample temperature at one MAS rate (from a Pb(NO3)2 or KBr thermometer)."""

    mas_rate_hz: Hertz = Field(alias="mas_rate", ge=0)
    points: list[tuple[float, float]] = Field(min_length=2, description="[setpoint_k, sample_k] pairs")
    thermometer: str = Field("", max_length=200)

    @model_validator(mode="after")
    def _monotonic(self) -> "CalibrationSpec":
        setpoints = [p[0] for p in self.points]
        samples = [p[1] for p in self.points]
        if setpoints != sorted(setpoints) or len(set(setpoints)) != len(setpoints):
            raise ValueError("calibration set points must be strictly increasing")
        if any(b <= a for a, b in zip(samples, samples[1:])):
            raise ValueError("calibration sample temperatures must increase with the set point")
        if any(not 0 < v < 2000 for p in self.points for v in p):
            raise ValueError("calibration temperatures must be in K (0..2000)")
        return self

    def sample_k(self, setpoint_k: float) -> float:
        """Sample temperature at a set point: piecewise linear, end segments extended (for planning)."""
        points = self.points
        for (x0, y0), (x1, y1) in zip(points, points[1:]):
            if setpoint_k <= x1 or (x1, y1) == points[-1]:
                return y0 + (y1 - y0) * (setpoint_k - x0) / (x1 - x0)
        return setpoint_k  # unreachable: at least two points


class VtSpec(FileModel):
    """The VT unit: a Lake Shore 335/336 on a serial port (or socket:// URL), or TopSpin's own BVT."""

    driver: Literal["lakeshore336", "topspin"] = "lakeshore336"
    port: str | None = Field(None, description="/dev/ttyUSB0, /dev/serial/by-id/..., or socket://host:port")
    baudrate: PositiveInt = 57600
    output: int = Field(1, ge=1, le=4)
    sensor_input: Literal["A", "B", "C", "D"] = "A"
    limits: VtLimitsSpec
    ramp_rate_k_per_min: KelvinPerMinute | None = Field(None, alias="ramp_rate", gt=0)
    settle_estimate_s: Seconds = Field(
        60.0, alias="settle_estimate", ge=0, description="planning allowance for lag after a ramp"
    )
    ambient_k: Kelvin = Field(293.0, alias="ambient", gt=0)
    calibration: list[CalibrationSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _reachable(self) -> "VtSpec":
        if self.driver == "lakeshore336" and not self.port:
            raise ValueError("a lakeshore336 VT needs a port")
        if self.ramp_rate_k_per_min is not None and self.ramp_rate_k_per_min > self.limits.max_ramp_k_per_min:
            raise ValueError(
                f"ramp_rate {self.ramp_rate_k_per_min:g} K/min exceeds limits.max_ramp {self.limits.max_ramp_k_per_min:g} K/min"
            )
        return self

    def calibration_for(self, mas_rate_hz: float) -> CalibrationSpec | None:
        """The calibration measured at this MAS rate (within 1 %), if the station has one."""
        return next((c for c in self.calibration if abs(c.mas_rate_hz - mas_rate_hz) <= 0.01 * max(mas_rate_hz, 1.0)),
                    None)

    @property
    def planned_ramp_k_per_min(self) -> float:
        return self.ramp_rate_k_per_min or self.limits.max_ramp_k_per_min


class SpectrometerSpec(FileModel):
    """The Bruker spectrometer, reached through TopSpin automation files."""

    driver: Literal["topspin"] = "topspin"
    automation_dir: Path
    data_dir: Path
    heartbeat_timeout_s: Seconds = Field(30.0, alias="heartbeat_timeout", gt=0)
    acquisition_overhead_s: Seconds = Field(2.0, alias="acquisition_overhead", ge=0)
    overdue_factor: float = Field(1.5, gt=1.0, le=10.0)


class CyclerSpec(FileModel):
    """One cycler channel: a source-measure unit addressed by a VISA resource string."""

    driver: Literal["keithley2450"] = "keithley2450"
    resource: str = Field(min_length=1, description="TCPIP::host::5025::SOCKET or USB0::...::INSTR")
    voltage_min_v: Volts = Field(alias="voltage_min")
    voltage_max_v: Volts = Field(alias="voltage_max")
    current_max_a: Amperes = Field(alias="current_max", gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> "CyclerSpec":
        if self.voltage_min_v >= self.voltage_max_v:
            raise ValueError("voltage_min must be below voltage_max")
        return self


class NotificationSpec(FileModel):
    """Who to tell: a command run with the event as JSON on stdin, and/or a webhook POST."""

    command: list[str] | None = Field(None, min_length=1)
    webhook_url: str | None = Field(None, pattern=r"^https?://")
    webhook_token: str | None = Field(None, repr=False)


class StationSpec(FileModel):
    """A bench: spectrometer, VT unit and cycler channels, each optional."""

    kind: Literal["station"]
    name: str = Field(min_length=1, max_length=120)
    simulated: bool = False
    spectrometer: SpectrometerSpec | None = None
    vt: VtSpec | None = None
    cyclers: dict[ChannelName, CyclerSpec] = Field(default_factory=dict)
    notifications: NotificationSpec = Field(default_factory=NotificationSpec)
    clock_speed: float = Field(1.0, gt=0, le=100_000, description="only for an accelerated simulated bench")
    clock_epoch_unix_s: float | None = Field(None, description="shared epoch of an accelerated bench's clocks")


# The simulated probe's sample sits this much above its sensor at 10 kHz MAS (frictional heating,
# hardware_sim.thermal's default); the built-in station carries the matching calibration, as a
# real station carries one measured with a Pb(NO3)2 thermometer.
SIMULATED_MAS_HEATING_K = 4.0


def simulated_station() -> StationSpec:
    """The built-in simulated station used when no station file is given."""
    return StationSpec.model_validate(
        {
            "kind": "station",
            "name": "built-in simulated station",
            "simulated": True,
            "spectrometer": {"automation_dir": "automation", "data_dir": "data"},
            "vt": {
                "driver": "lakeshore336",
                "port": "sim://vt",
                "limits": {"min_k": 173.0, "max_k": 423.0, "max_ramp_k_per_min": 5.0},
                "settle_estimate_s": 45.0,  # the simulated probe enters a 0.5 K band 40-50 s after a ramp
                "calibration": [{"mas_rate_hz": 10_000.0, "thermometer": "simulated",
                                 "points": [[173.0, 173.0 + SIMULATED_MAS_HEATING_K], [423.0, 423.0 + SIMULATED_MAS_HEATING_K]]}],
            },
            "cyclers": {
                "ch1": {"resource": "sim://ch1", "voltage_min_v": -0.5, "voltage_max_v": 5.0, "current_max_a": 0.1},
                "ch2": {"resource": "sim://ch2", "voltage_min_v": -0.5, "voltage_max_v": 5.0, "current_max_a": 0.1},
            },
        }
    )
