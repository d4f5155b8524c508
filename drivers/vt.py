"""Temperature-controller interface for the VT unit, with the logic every backend shares.

Protocol temperatures are SAMPLE temperatures; under MAS the sample is warmer than the
sensor, so a per-MAS-rate calibration converts them to controller set points. The
station's probe limits are checked here, before any backend writes anything.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Mapping

from common.calibration import interpolate
from drivers.clock import Clock
from drivers.errors import InstrumentConfigurationError, InstrumentError, InstrumentUnreachable

log = logging.getLogger(__name__)


class VtError(InstrumentError):
    """Any failure of the VT unit or its driver."""


class UnsafeTemperatureRequest(VtError):
    """A request outside the station's probe limits; refused before anything was sent."""


class VtStabilityTimeout(VtError):
    """The temperature did not settle within tolerance for the hold time before the timeout."""


class VtCommunicationError(VtError):
    """The controller did not answer correctly after the bounded retries and reconnects."""


class VtSensorError(VtError):
    """The controller answered, but its sensor reports no valid reading (dropout, open lead)."""


class VtHeaterError(VtError):
    """The controller reports a heater fault (open load, short): it cannot heat."""


class VtConfigurationError(VtError, InstrumentConfigurationError):
    """The controller answers but is set up so a run cannot use it (units, output mode, faults); says how to fix it."""


class VtUnreachable(VtCommunicationError, InstrumentUnreachable):
    """The controller's port cannot be opened (missing, or held by another process)."""


@dataclass(frozen=True)
class VtLimits:
    """The station's probe limits; every set point and ramp rate is checked against them."""

    min_k: float
    max_k: float
    max_ramp_k_per_min: float

    def __post_init__(self) -> None:
        if not (0 < self.min_k < self.max_k):
            raise ValueError(f"VT limits need 0 < min_k < max_k, got {self.min_k}, {self.max_k}")
        if not self.max_ramp_k_per_min > 0:
            raise ValueError(f"VT max_ramp_k_per_min must be > 0, got {self.max_ramp_k_per_min}")

    def clamp_k(self, temperature_k: float) -> float:
        """The temperature moved inside [min_k, max_k]."""
        return min(self.max_k, max(self.min_k, temperature_k))


@dataclass(frozen=True)
class MasCalibration:
    """Set point -> sample temperature at one MAS rate, piecewise linear between measured points.

    Outside the measured range the end segments are extended (one point: a constant offset).
    Both columns must increase strictly so the map can be inverted.
    """

    mas_rate_hz: float
    points: tuple[tuple[float, float], ...]  # (setpoint_k, sample_k)

    def __post_init__(self) -> None:
        pts = tuple(sorted((float(s), float(t)) for s, t in self.points))
        if not pts:
            raise ValueError("MAS calibration needs at least one (setpoint_k, sample_k) point")
        for (s0, t0), (s1, t1) in zip(pts, pts[1:]):
            if not (s1 > s0 and t1 > t0):
                raise ValueError(
                    f"MAS calibration at {self.mas_rate_hz} Hz must increase strictly in both "
                    f"columns; got ({s0}, {t0}) then ({s1}, {t1})"
                )
        object.__setattr__(self, "points", pts)

    def sample_k(self, setpoint_k: float) -> float:
        """Sample temperature reached at steady state for this set point (sensor reading)."""
        return interpolate(self.points, setpoint_k)

    def setpoint_k(self, sample_k: float) -> float:
        """Set point that brings the sample to `sample_k` at steady state."""
        return interpolate(tuple((t, s) for s, t in self.points), sample_k)


@dataclass(frozen=True)
class StabilityResult:
    """How a stability wait ended: when the sample was first continuously in band, and how long it took."""

    target_sample_k: float
    setpoint_k: float
    reached_at: float
    waited_s: float
    last_reading_k: float


class TemperatureController(ABC):
    """A VT unit: set point, ramp rate, readings, stability, safe hold. Backends supply the wire."""

    name = "VT controller"

    def __init__(self, clock: Clock, limits: VtLimits, calibration: MasCalibration | None = None) -> None:
        self._clock = clock
        self.limits = limits
        self.calibration = calibration
        self._setpoint_k: float | None = None

    # --- backend hooks -------------------------------------------------------------------
    @abstractmethod
    def identify(self) -> str:
        """The instrument's identification string."""

    @abstractmethod
    def read_sensor_k(self) -> float:
        """One reading of the control sensor in kelvin."""

    @abstractmethod
    def _send_setpoint_k(self, setpoint_k: float) -> None:
        """Write an already checked set point (ramped at the checked rate)."""

    @abstractmethod
    def _send_ramp_k_per_min(self, rate_k_per_min: float) -> None:
        """Write an already checked ramp rate."""

    @abstractmethod
    def _hold_at_k(self, setpoint_k: float | None) -> float:
        """Stop any ramp and hold `setpoint_k` (clamped), or if None the present set point clamped; return it."""

    @abstractmethod
    def close(self) -> None:
        """Release the transport."""

    def preflight(self) -> str:
        """Identify the instrument and check its configuration; return a one-line summary."""
        return f"{self.identify()}; sensor reads {self.read_sensor_k():.2f} K"

    def _setpoint_reached(self, setpoint_k: float) -> bool:
        """Whether the instrument's own set point has reached `setpoint_k` (a ramp finished); True if it cannot lag."""
        return True

    # --- shared logic --------------------------------------------------------------------
    @property
    def setpoint_k(self) -> float | None:
        """The last set point this driver wrote (sensor kelvin), or None."""
        return self._setpoint_k

    def setpoint_for_sample_k(self, sample_k: float) -> float:
        """The set point (sensor kelvin) for a sample temperature, through the calibration."""
        return self.calibration.setpoint_k(sample_k) if self.calibration else float(sample_k)

    def check_temperature_k(self, sample_k: float) -> float:
        """Refuse a sample temperature whose set point or value lies outside the probe limits; return the set point."""
        setpoint_k = self.setpoint_for_sample_k(sample_k)
        lim = self.limits
        for what, value in (("sample temperature", float(sample_k)), ("set point", setpoint_k)):
            if not (lim.min_k <= value <= lim.max_k):  # also refuses NaN
                raise UnsafeTemperatureRequest(
                    f"{self.name}: {what} {value:.3f} K (for sample {sample_k} K) is outside the probe "
                    f"limits [{lim.min_k}, {lim.max_k}] K; nothing was sent"
                )
        return setpoint_k

    def set_sample_temperature_k(self, sample_k: float) -> float:
        """Check, convert and write a sample temperature; return the set point written (sensor K)."""
        setpoint_k = self.check_temperature_k(sample_k)
        log.info("%s: sample %.3f K -> set point %.3f K", self.name, sample_k, setpoint_k)
        self._guarded(lambda: self._send_setpoint_k(setpoint_k), f"set point {setpoint_k:.3f} K")
        self._setpoint_k = setpoint_k
        return setpoint_k

    def set_ramp_rate_k_per_min(self, rate: float) -> None:
        """Set the set-point ramp rate; refused above the probe's maximum (or not > 0)."""
        limit = self.limits.max_ramp_k_per_min
        if not (0 < rate <= limit):
            raise UnsafeTemperatureRequest(
                f"{self.name}: ramp rate {rate} K/min is outside (0, {limit}] K/min; nothing was sent"
            )
        self._guarded(lambda: self._send_ramp_k_per_min(float(rate)), f"ramp rate {rate} K/min")

    def read_sample_k(self) -> float:
        """One sensor reading converted to sample temperature through the calibration."""
        sensor_k = self.read_sensor_k()
        return self.calibration.sample_k(sensor_k) if self.calibration else sensor_k

    def in_band(self, sample_k: float, tolerance_k: float) -> tuple[bool, float]:
        """One reading: is the sample within tolerance of `sample_k`? For excursion watching."""
        reading_k = self.read_sample_k()
        return abs(reading_k - sample_k) <= tolerance_k, reading_k

    def wait_stable(
        self, sample_k: float, tolerance_k: float, hold_s: float, timeout_s: float, poll_s: float = 10.0
    ) -> StabilityResult:
        """Wait until the set point has reached its target and the sample reading stays in tolerance for hold_s.

        VtStabilityTimeout after timeout_s. The hold counts only once the backend says its set point
        finished ramping (`_setpoint_reached`), asked only while the reading is in band.
        """
        if poll_s <= 0 or tolerance_k <= 0 or hold_s < 0 or timeout_s <= 0:
            raise ValueError(
                f"{self.name}: wait_stable needs poll_s > 0, tolerance_k > 0, hold_s >= 0, timeout_s > 0"
            )
        setpoint_k = self.setpoint_for_sample_k(sample_k)
        start = self._clock.now()
        band_since: float | None = None
        ramp_done = False
        polls = 0
        while True:
            reading_k = self.read_sample_k()
            now = self._clock.now()
            polls += 1
            if abs(reading_k - sample_k) <= tolerance_k and not ramp_done:
                ramp_done = self._setpoint_reached(setpoint_k)  # asked only in band, until it says yes
            if abs(reading_k - sample_k) <= tolerance_k and ramp_done:
                band_since = now if band_since is None else band_since
                if now - band_since >= hold_s:
                    log.info(
                        "%s: stable at %.3f K (target %.3f ± %.3f K) after %.0f s, %d readings",
                        self.name, reading_k, sample_k, tolerance_k, now - start, polls,
                    )
                    return StabilityResult(sample_k, setpoint_k, band_since, now - start, reading_k)
            else:
                band_since = None
            if now - start >= timeout_s:
                raise VtStabilityTimeout(
                    f"{self.name}: sample not stable at {sample_k:.3f} ± {tolerance_k:.3f} K for {hold_s:.0f} s "
                    f"within {timeout_s:.0f} s (waited {now - start:.0f} s, last reading {reading_k:.3f} K, "
                    f"set point {setpoint_k:.3f} K)"
                )
            self._clock.sleep(poll_s)

    def hold_safe(self) -> None:
        """Stop ramping and hold the present reading clamped to the limits; logs, never raises, on failure."""
        hold_k: float | None
        try:
            hold_k = self.limits.clamp_k(self.read_sensor_k())
        except VtError as exc:
            hold_k = self._setpoint_k  # last checked set point, or None: keep the instrument's own
            log.error("%s: hold_safe could not read the sensor (%s); holding set point %s", self.name, exc, hold_k)
        try:
            held_k = self._hold_at_k(hold_k)
            self._setpoint_k = held_k
            log.warning("%s: holding safe set point %.3f K, ramp off", self.name, held_k)
        except Exception as exc:  # noqa: BLE001 - the safe path must never raise
            log.error("%s: hold_safe failed to hold set point %s: %s", self.name, hold_k, exc)

    def _guarded(self, write, what: str) -> None:
        """Run a write; on a VT failure leave the controller holding a safe set point, then re-raise."""
        try:
            write()
        except VtError as exc:
            log.error("%s: writing %s failed (%s); putting the controller in a safe hold", self.name, what, exc)
            self.hold_safe()
            raise

    def __enter__(self) -> "TemperatureController":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TopSpinVt(TemperatureController):
    """The spectrometer's own VT unit (Bruker BVT/BSVT) driven through TopSpin's teset/teget.

    TopSpin has no ramp command, so the ramp is done here: the set point is stepped towards the
    target at the checked rate, one teset every `ramp_step_s` of clock time (set_sample_temperature_k
    blocks for |change| / rate).
    """

    def __init__(
        self,
        spectrometer,
        clock: Clock,
        limits: VtLimits,
        calibration: MasCalibration | None = None,
        *,
        ramp_step_s: float = 30.0,
    ) -> None:
        super().__init__(clock, limits, calibration)
        self.name = "TopSpin VT"
        self._spectrometer = spectrometer
        self._ramp_k_per_min = limits.max_ramp_k_per_min
        self._ramp_step_s = ramp_step_s

    def identify(self) -> str:
        """A fixed description (TopSpin offers no identification of the VT unit)."""
        return f"TopSpin VT via {type(self._spectrometer).__name__}"

    def read_sensor_k(self) -> float:
        """teget: the VT unit's sensor reading in kelvin."""
        try:
            value = float(self._spectrometer.teget())
        except Exception as exc:  # noqa: BLE001 - any spectrometer failure is a VT comms failure here
            raise VtCommunicationError(f"{self.name}: teget failed: {exc}") from exc
        if not (0.0 < value < 2000.0):  # also NaN
            raise VtSensorError(f"{self.name}: teget returned an invalid reading {value!r}")
        return value

    def _teset(self, setpoint_k: float) -> None:
        try:
            self._spectrometer.teset(setpoint_k)
        except Exception as exc:  # noqa: BLE001
            raise VtCommunicationError(f"{self.name}: teset {setpoint_k:.3f} K failed: {exc}") from exc

    def _send_ramp_k_per_min(self, rate_k_per_min: float) -> None:
        self._ramp_k_per_min = rate_k_per_min

    def _send_setpoint_k(self, setpoint_k: float) -> None:
        start_k = self._setpoint_k if self._setpoint_k is not None else self.limits.clamp_k(self.read_sensor_k())
        step_k = self._ramp_k_per_min * self._ramp_step_s / 60.0
        present_k = start_k
        while abs(setpoint_k - present_k) > step_k:
            present_k += step_k if setpoint_k > present_k else -step_k
            self._teset(present_k)
            self._setpoint_k = present_k
            self._clock.sleep(self._ramp_step_s)
        self._teset(setpoint_k)

    def _hold_at_k(self, setpoint_k: float | None) -> float:
        if setpoint_k is None:
            setpoint_k = self.limits.clamp_k(self.read_sensor_k())
        self._teset(setpoint_k)
        return setpoint_k

    def close(self) -> None:
        """Nothing to release: the spectrometer driver owns the channel."""


def open_topspin_vt(entry: Mapping[str, Any], address: str, clock: Clock, *, spectrometer: Any = None,
                    **_context: Any) -> TopSpinVt:
    """The registry's way in: the spectrometer's own VT unit, through the station's open spectrometer."""
    if spectrometer is None:
        raise VtError(f"TopSpin VT ({address}): needs the station's spectrometer, which this run does not open")
    return TopSpinVt(spectrometer, clock, VtLimits(**entry["limits"]))
