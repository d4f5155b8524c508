"""The station file: which instruments exist, how to reach them, and their hard limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, PositiveInt, model_validator

from common.calibration import interpolate

from .base import Amperes, FileModel, Hertz, Kelvin, KelvinPerMinute, Seconds, Volts
from .cycling import ChannelName


SIM_SCHEME = "sim://"
"""An address that starts the built-in simulator for that one instrument (pyvisa's `@sim` is the model)."""


def is_sim(address: str | Path | None) -> bool:
    """True for a `sim://...` address."""
    return address is not None and str(address).startswith(SIM_SCHEME)


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
        return interpolate(self.points, setpoint_k)


class VtSpec(FileModel):
    """The VT unit: a Lake Shore 335/336 on a serial port (or socket:// URL), or TopSpin's own BVT."""

    driver: str = Field("lakeshore336", min_length=1, description="a VT driver name (acquisition.instruments)")
    port: str | None = Field(None, description="/dev/ttyUSB0, /dev/serial/by-id/..., socket://host:port or sim://vt")
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


class SampleSiteSpec(FileModel):
    """One site of a simulated sample; ppm and eV are plain numbers (the field names carry the unit)."""

    name: str = Field(min_length=1, max_length=60)
    shift_ppm: float = Field(alias="shift", ge=-100_000, le=100_000, description="at reference_temperature")
    population: float = Field(gt=0)
    linewidth_hz: Hertz = Field(alias="linewidth", gt=0)
    t1_s: Seconds = Field(alias="t1", gt=0, description="T1 at reference_temperature")
    t1_ea_ev: float = Field(0.0, alias="t1_ea", ge=-2, le=2, description="Arrhenius activation of 1/T1")
    reference_temperature_k: Kelvin = Field(293.0, alias="reference_temperature", gt=0)
    shift_slope_ppm_per_k: float = Field(0.0, ge=-100, le=100,
                                         description="d(shift)/dT about reference_temperature: a shift thermometer")


class SampleExchangeSpec(FileModel):
    """One exchange law k(T) = k0 exp(-ea / kB T) for the forward direction sites[0] -> sites[1]."""

    sites: tuple[str, str]
    k0_per_s: float = Field(alias="k0", gt=0, description="Arrhenius prefactor in 1/s")
    ea_ev: float = Field(alias="ea", ge=0, le=5)


class SampleSpec(FileModel):
    """The sample a `sim://` spectrometer measures; absent, the simulator uses the seed's Li2S(LiI) / LPSC mixture
    (hardware_sim.nmr_physics.paper_sample)."""

    sites: list[SampleSiteSpec] = Field(min_length=1)
    exchange: list[SampleExchangeSpec] = Field(default_factory=list)
    spin_diffusion: bool = False
    mas_rate_hz: Hertz = Field(10_000.0, alias="mas_rate", ge=0, le=150_000,
                               description="the rate the rotor spins at (spun up by hand before the run): "
                                           "sets the simulated probe's frictional heating")

    @model_validator(mode="after")
    def _pairs_name_sites(self) -> "SampleSpec":
        names = [s.name for s in self.sites]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate site names in {names}")
        seen: set[frozenset[str]] = set()
        for law in self.exchange:
            a, b = law.sites
            if a not in names or b not in names or a == b:
                raise ValueError(f"exchange sites [{a}, {b}] must name two distinct sites of {names}")
            if frozenset((a, b)) in seen:
                raise ValueError(f"exchange between {a} and {b} given twice; give one direction once")
            seen.add(frozenset((a, b)))
        return self


class SpectrometerSpec(FileModel):
    """The Bruker spectrometer, reached through TopSpin automation files (`sim://NAME`: a simulated TopSpin)."""

    driver: str = Field("topspin", min_length=1, description="a spectrometer driver name (acquisition.instruments)")
    automation_dir: str = Field(min_length=1, description="the folder the TopSpin-side script watches, or sim://FOLDER")
    data_dir: Path
    heartbeat_timeout_s: Seconds = Field(30.0, alias="heartbeat_timeout", gt=0)
    acquisition_overhead_s: Seconds = Field(2.0, alias="acquisition_overhead", ge=0)
    overdue_factor: float = Field(1.5, gt=1.0, le=10.0)
    sample: SampleSpec | None = Field(None, description="only for sim://: the simulated sample (default: the seed's)")

    def folders(self, workdir: Path) -> tuple[Path, Path]:
        """(automation folder, data folder); a simulated TopSpin's live in `workdir` (the run folder)."""
        automation = Path(self.automation_dir[len(SIM_SCHEME):]) if is_sim(self.automation_dir) else Path(self.automation_dir)
        return tuple(p if p.is_absolute() else workdir / p for p in (automation, self.data_dir))  # type: ignore[return-value]


class CyclerSpec(FileModel):
    """One cycler channel: its driver, its address and its hard limits; other keys are the driver's settings."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, populate_by_name=True)

    driver: str = Field("keithley2450", min_length=1, description="a cycler driver name (acquisition.instruments)")
    resource: str = Field(min_length=1, description="TCPIP::host::5025::SOCKET, USB0::...::INSTR or sim://NAME")
    voltage_min_v: Volts = Field(alias="voltage_min")
    voltage_max_v: Volts = Field(alias="voltage_max")
    current_max_a: Amperes = Field(alias="current_max", gt=0)
    ambient_temperature_k: Kelvin | None = Field(
        None, alias="ambient_temperature", gt=0, description="around the cell (room or climate chamber); BDF column")
    poll_interval_s: Seconds = Field(1.0, alias="poll_interval", gt=0, le=3600,
                                     description="how often a program-running cycler's channel is polled")

    @model_validator(mode="after")
    def _ordered(self) -> "CyclerSpec":
        if self.voltage_min_v >= self.voltage_max_v:
            raise ValueError("voltage_min must be below voltage_max")
        return self

    @property
    def settings(self) -> dict[str, Any]:
        """The driver-specific keys of the entry (checked by the driver when it opens)."""
        return dict(self.model_extra or {})


class NotificationSpec(FileModel):
    """Who to tell: a command run with the event as JSON on stdin, and/or a webhook POST."""

    command: list[str] | None = Field(None, min_length=1)
    webhook_url: str | None = Field(None, pattern=r"^https?://")
    webhook_token: str | None = Field(None, repr=False)


class ServerSpec(FileModel):
    """`exsylab serve`: the token that allows control (pause, queue); needed to listen beyond loopback."""

    token: str | None = Field(None, min_length=16, repr=False, description="a secret of 16 characters or more")


class StationSpec(FileModel):
    """A bench: spectrometer, VT unit and cycler channels, each optional."""

    kind: Literal["station"]
    name: str = Field(min_length=1, max_length=120)
    institution: str = Field("exsylab", pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$",
                             description="institution code at the head of BDF file names")
    simulated: bool | None = Field(None, description="obsolete: simulation is a property of each address (sim://)")
    spectrometer: SpectrometerSpec | None = None
    vt: VtSpec | None = None
    cyclers: dict[ChannelName, CyclerSpec] = Field(default_factory=dict)
    notifications: NotificationSpec = Field(default_factory=NotificationSpec)
    server: ServerSpec = Field(default_factory=ServerSpec)
    clock_speed: float = Field(1.0, gt=0, le=100_000, description="only for an accelerated simulated bench")
    clock_epoch_unix_s: float | None = Field(None, description="shared epoch of an accelerated bench's clocks")
    lock_dir: Path | None = Field(None, description="where instrument locks live (default: per-user folder)")

    @model_validator(mode="after")
    def _simulated_means_sim_addresses(self) -> "StationSpec":
        real = [f"{where} {address}" for where, address in self.addresses().items() if not is_sim(address)]
        if self.simulated and real:
            raise ValueError(f"simulated: true, but {real[0]} is a real address; simulation is a property of "
                             "each address: write sim://... for a simulated instrument and drop `simulated`")
        return self

    def addresses(self) -> dict[str, str]:
        """Every instrument's address by its place in the file (vt.port, spectrometer.automation_dir, ...)."""
        out: dict[str, str] = {}
        if self.spectrometer is not None:
            out["spectrometer.automation_dir"] = str(self.spectrometer.automation_dir)
        if self.vt is not None:
            if self.vt.port is not None:
                out["vt.port"] = self.vt.port
            elif self.spectrometer is not None:  # a TopSpin-run VT is as simulated as its spectrometer
                out["vt (through the spectrometer)"] = str(self.spectrometer.automation_dir)
        for name, cycler in self.cyclers.items():
            out[f"cyclers.{name}.resource"] = cycler.resource
        return out


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
            "spectrometer": {"automation_dir": "sim://automation", "data_dir": "data"},
            "vt": {
                "driver": "lakeshore336",
                "port": "sim://vt",
                "limits": {"min_k": 173.0, "max_k": 423.0, "max_ramp_k_per_min": 5.0},
                "settle_estimate_s": 45.0,  # the simulated probe enters a 0.5 K band 40-50 s after a ramp
                "ambient_k": 293.0,  # the simulated room (thermal model and cells), stated so BDF files record it
                "calibration": [{"mas_rate_hz": 10_000.0, "thermometer": "simulated",
                                 "points": [[173.0, 173.0 + SIMULATED_MAS_HEATING_K], [423.0, 423.0 + SIMULATED_MAS_HEATING_K]]}],
            },
            "cyclers": {
                "ch1": {"resource": "sim://ch1", "voltage_min_v": -0.5, "voltage_max_v": 5.0, "current_max_a": 0.1},
                "ch2": {"resource": "sim://ch2", "voltage_min_v": -0.5, "voltage_max_v": 5.0, "current_max_a": 0.1},
            },
        }
    )
