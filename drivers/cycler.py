"""Constant-current step execution on one cycler channel: coulomb counting, end conditions, safety.

A step samples at `sample_interval_s`, and near its end condition shortens the interval by
predicting the crossing (exact for capacity and time at constant current; a damped secant
for voltage), so a capacity step ends within 0.1 % and a voltage cut-off within 2 mV.
Safety limits are checked on every sample; any breach or error leaves the channel at 0 A, off.
The channel is typed on `drivers.source_meter.SourceMeter`, so any host-driven instrument fits;
that instrument itself holds the limit the step's current direction could cross (upper on
charge, lower on discharge), so a host that dies mid-step cannot push the cell past it.
"""

from __future__ import annotations

import atexit
import logging
import math
import threading
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Literal

from drivers.source_meter import (CyclerCommunicationError, CyclerConfigurationError, CyclerError, CyclerSafetyTrip,
                                  CyclerUnreachable, SourceMeter)

__all__ = [
    "CyclerChannel", "CyclerCommunicationError", "CyclerConfigurationError", "CyclerError", "CyclerLimits",
    "CyclerSafetyTrip", "CyclerSample", "CyclerStepSpec", "CyclerUnreachable", "SourceMeter", "StepResult",
    "run_steps",
]

log = logging.getLogger(__name__)

CAPACITY_TOLERANCE_REL = 2e-4
"""A capacity step ends once within this fraction of its target (well inside the 0.1 % promise)."""
VOLTAGE_TOLERANCE_V = 1e-3
"""A voltage step ends once within this distance of its cut-off (inside the 2 mV promise)."""
MIN_INTERVAL_S = 1e-3
"""Shortest wait between two samples while closing in on an end condition."""
APPROACH_FRACTION = 0.5
"""Close in on a voltage cut-off by this fraction of the predicted time to reach it."""
SLOPE_MIN_DV_V = 4e-4
"""A voltage change below this (near the noise) does not update the slope estimate."""
LIMIT_QUERY_FRACTION = 0.01
"""Ask the instrument whether it holds its voltage limit once within this fraction (at least 10 mV) of it."""


@dataclass(frozen=True)
class CyclerSample:
    """One measurement: time since the test started, wall time, terminal voltage, current (+ = charge)."""

    test_time_s: float
    unix_time_s: float
    voltage_v: float
    current_a: float


@dataclass(frozen=True)
class CyclerLimits:
    """Whole-run safety limits of a channel, checked on every sample."""

    voltage_min_v: float
    voltage_max_v: float
    current_max_a: float
    capacity_max_ah: float | None = None
    temperature_max_k: float | None = None

    def __post_init__(self) -> None:
        if not self.voltage_min_v < self.voltage_max_v:
            raise ValueError(f"voltage_min_v {self.voltage_min_v} must be below voltage_max_v {self.voltage_max_v}")
        if self.current_max_a <= 0:
            raise ValueError(f"current_max_a must be > 0, got {self.current_max_a}")


@dataclass(frozen=True)
class CyclerStepSpec:
    """One constant-current step (plain data): mode, current magnitude and end conditions."""

    mode: Literal["charge", "discharge", "rest"]
    current_a: float = 0.0
    end_capacity_ah: float | None = None
    end_voltage_v: float | None = None
    end_time_s: float | None = None
    sample_interval_s: float = 1.0
    voltage_limit_v: float | None = None
    """The voltage the instrument holds as its own limit on this step (upper on charge and rest, lower on
    discharge); None: the channel's voltage_max_v / voltage_min_v."""
    control: Literal["current", "voltage"] = "current"
    """voltage: hold `hold_voltage_v` with `current_a` as the current limit (a CV hold, charge or discharge)."""
    hold_voltage_v: float | None = None
    end_current_a: float | None = None
    """A voltage hold ends once |I| has fallen below this."""
    end_dvdt_v_per_s: float | None = None
    """A rest ends once |dV/dt|, fitted over the last `dvdt_window_s`, is below this."""
    dvdt_window_s: float = 600.0


EndReason = Literal["capacity", "voltage", "time", "current", "slope", "safety", "stopped"]


@dataclass(frozen=True)
class StepResult:
    """How a step ended, after how long, with how much charge passed and at what voltage."""

    ended_by: EndReason
    duration_s: float
    capacity_ah: float
    final_voltage_v: float
    samples: int
    message: str = ""


_live_channels: "weakref.WeakSet[CyclerChannel]" = weakref.WeakSet()
_live_lock = threading.Lock()
_atexit_registered = False


def _all_off_at_exit() -> None:
    """Leave every channel that was sourcing at 0 A, output off, when the process exits."""
    with _live_lock:
        channels = list(_live_channels)
    for channel in channels:
        if not channel.smu.closed:  # a driver closed on purpose has nothing left to switch
            channel.off()


def _register_live(channel: "CyclerChannel") -> None:
    global _atexit_registered
    with _live_lock:
        _live_channels.add(channel)
        if not _atexit_registered:  # registered late so it runs before pyvisa's own cleanup
            atexit.register(_all_off_at_exit)
            _atexit_registered = True


class CyclerChannel:
    """One cell on one source-meter: runs steps, counts coulombs, enforces limits."""

    def __init__(
        self,
        name: str,
        smu: SourceMeter,
        clock: Any,
        limits: CyclerLimits,
        *,
        test_start_unix_s: float | None = None,
        temperature_k: Callable[[], float] | None = None,
    ) -> None:
        self.name = name
        self.smu = smu
        self.clock = clock
        self.limits = limits
        self.test_start_unix_s = clock.now() if test_start_unix_s is None else test_start_unix_s
        self._temperature_k = temperature_k

    # --- public ------------------------------------------------------------------------------

    def off(self) -> None:
        """0 A and output off; never raises."""
        if not self.smu.safe_off():
            log.error("cycler %s: could not confirm the output is off", self.name)
        with _live_lock:
            _live_channels.discard(self)

    def run_step(
        self,
        spec: CyclerStepSpec,
        on_sample: Callable[[CyclerSample, float, float], None] | None = None,
        *,
        start_capacity_ah: float = 0.0,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> StepResult:
        """Run one step to its first end condition; afterwards the source is at 0 A (off if stopped or failed).

        `on_sample(sample, step_capacity_ah, step_time_s)` sees every sample. Raises
        CyclerSafetyTrip (with `.result`) on a limit breach, CyclerCommunicationError when the
        instrument is lost; in both cases, and on any other exception, the channel is left off.
        """
        self._validate(spec)
        try:
            return self._run(spec, on_sample, start_capacity_ah, should_stop)
        except BaseException:
            self.off()
            raise

    # --- internals ---------------------------------------------------------------------------

    def _validate(self, spec: CyclerStepSpec) -> None:
        where = f"cycler {self.name}: step {spec.mode}"
        if spec.mode not in ("charge", "discharge", "rest"):
            raise ValueError(f"{where}: unknown mode {spec.mode!r}")
        if not (math.isfinite(spec.current_a) and spec.current_a >= 0):
            raise ValueError(f"{where}: current_a must be a magnitude >= 0, got {spec.current_a}")
        if spec.current_a > self.limits.current_max_a:
            raise ValueError(f"{where}: current {spec.current_a} A above the limit {self.limits.current_max_a} A")
        if spec.mode != "rest" and spec.current_a == 0:
            raise ValueError(f"{where}: needs a current > 0")
        if spec.mode == "rest" and (spec.end_capacity_ah is not None or spec.end_voltage_v is not None):
            raise ValueError(f"{where}: a rest ends on time (or its voltage slope) only")
        if spec.end_dvdt_v_per_s is not None and (spec.mode != "rest" or spec.end_time_s is None
                                                  or not spec.dvdt_window_s > 0):
            raise ValueError(f"{where}: a dV/dt end belongs to a rest with a time limit and a window > 0")
        if spec.control == "voltage":
            if spec.mode == "rest" or spec.hold_voltage_v is None or spec.end_voltage_v is not None:
                raise ValueError(f"{where}: a voltage hold charges or discharges at hold_voltage_v, with no voltage end")
            if not self.limits.voltage_min_v <= spec.hold_voltage_v <= self.limits.voltage_max_v:
                raise ValueError(f"{where}: hold voltage {spec.hold_voltage_v} V outside the limits")
            if spec.end_current_a is None and spec.end_time_s is None:
                raise ValueError(f"{where}: a voltage hold needs an end current or a time")
        elif spec.end_current_a is not None:
            raise ValueError(f"{where}: an end current belongs to a voltage hold")
        if (spec.end_capacity_ah is None and spec.end_voltage_v is None and spec.end_time_s is None
                and spec.end_current_a is None):
            raise ValueError(f"{where}: no end condition (capacity, voltage, current or time)")
        if not spec.sample_interval_s > 0:
            raise ValueError(f"{where}: sample_interval_s must be > 0")
        if spec.end_voltage_v is not None and not (
            self.limits.voltage_min_v <= spec.end_voltage_v <= self.limits.voltage_max_v
        ):
            raise ValueError(f"{where}: cut-off {spec.end_voltage_v} V outside the limits")

    def _window_v(self, spec: CyclerStepSpec) -> tuple[float, float]:
        """(lower, upper) voltage the instrument holds for this step."""
        lower, upper = self.limits.voltage_min_v, self.limits.voltage_max_v
        if spec.voltage_limit_v is not None:
            if spec.mode == "discharge":
                lower = spec.voltage_limit_v
            else:
                upper = spec.voltage_limit_v
        return lower, upper

    def _near_held_limit(self, spec: CyclerStepSpec, v: float, window_v: tuple[float, float]) -> bool:
        lower, upper = window_v
        if spec.mode == "charge":
            return v >= upper - max(0.01, LIMIT_QUERY_FRACTION * abs(upper))
        if spec.mode == "discharge":
            return v <= lower + max(0.01, LIMIT_QUERY_FRACTION * abs(lower))
        return False

    def _safety_reason(self, spec: CyclerStepSpec, v: float, i: float, cap_ah: float,
                       window_v: tuple[float, float]) -> str:
        lim = self.limits
        if v > lim.voltage_max_v:
            return f"voltage {v:.4f} V above the limit {lim.voltage_max_v} V"
        if v < lim.voltage_min_v:
            return f"voltage {v:.4f} V below the limit {lim.voltage_min_v} V"
        if abs(i) > lim.current_max_a * 1.01:
            return f"current {i:.4e} A beyond the limit {lim.current_max_a} A"
        if lim.capacity_max_ah is not None and cap_ah > lim.capacity_max_ah:
            return f"step capacity {cap_ah:.6e} Ah above the limit {lim.capacity_max_ah} Ah"
        if lim.temperature_max_k is not None and self._temperature_k is not None:
            temperature_k = self._temperature_k()
            if temperature_k > lim.temperature_max_k:
                return f"temperature {temperature_k:.2f} K above the limit {lim.temperature_max_k} K"
        if spec.control == "current" and self._near_held_limit(spec, v, window_v) and self.smu.limit_reached():
            held_v = window_v[1] if spec.mode == "charge" else window_v[0]
            return f"source-meter holding the cell at its voltage limit: {v:.4f} V (limit {held_v} V)"
        return ""

    def _measure(self) -> CyclerSample:
        voltage_v, current_a, _instrument_time_s = self.smu.read()
        now = self.clock.now()
        return CyclerSample(now - self.test_start_unix_s, now, voltage_v, current_a)

    def _run(
        self,
        spec: CyclerStepSpec,
        on_sample: Callable[[CyclerSample, float, float], None] | None,
        start_capacity_ah: float,
        should_stop: Callable[[], bool],
    ) -> StepResult:
        sign = {"charge": 1.0, "discharge": -1.0, "rest": 0.0}[spec.mode]
        window_v = self._window_v(spec)
        if spec.control == "voltage":
            assert spec.hold_voltage_v is not None  # _validate checked it
            self.smu.source_voltage(spec.hold_voltage_v, current_limit_a=spec.current_a)
        else:
            self.smu.source_current(sign * spec.current_a, voltage_min_v=window_v[0], voltage_max_v=window_v[1])
        self.smu.output(True)
        slope = _SlopeWindow(spec.dvdt_window_s) if spec.end_dvdt_v_per_s is not None else None
        _register_live(self)
        t0 = self.clock.now()
        cap = start_capacity_ah
        samples = 0
        prev: CyclerSample | None = None
        slope_v_s = 0.0
        while True:
            sample = self._measure()
            samples += 1
            if prev is not None:
                dt = sample.unix_time_s - prev.unix_time_s
                passed = 0.5 * (sample.current_a + prev.current_a) * dt / 3600.0
                cap += passed * (sign or 1.0)
                dv = sample.voltage_v - prev.voltage_v
                # keep the last slope when this step is too short to rise above the noise
                if dt > 0 and (abs(dv) >= SLOPE_MIN_DV_V or dt >= 0.99 * spec.sample_interval_s):
                    slope_v_s = dv / dt
            elapsed = sample.unix_time_s - t0
            if slope is not None:
                slope.add(sample.unix_time_s, sample.voltage_v)
            if on_sample is not None:
                on_sample(sample, cap, elapsed)
            reason = self._safety_reason(spec, sample.voltage_v, sample.current_a, cap, window_v)
            if reason:  # run_step's handler switches the channel off
                message = f"cycler {self.name}: safety stop: {reason}"
                log.error(message)
                result = StepResult(ended_by="safety", duration_s=elapsed, capacity_ah=cap,
                                    final_voltage_v=sample.voltage_v, samples=samples, message=message)
                raise CyclerSafetyTrip(message, result)
            ended = self._ended_by(spec, sign, sample, cap, elapsed, should_stop, slope)
            if ended:
                if ended == "stopped":
                    self.off()
                else:  # nothing flows between steps (after a discharge the output goes off)
                    self.smu.source_current(0.0, voltage_min_v=window_v[0], voltage_max_v=window_v[1])
                return StepResult(ended_by=ended, duration_s=elapsed, capacity_ah=cap,
                                  final_voltage_v=sample.voltage_v, samples=samples)
            wait = self._next_interval(spec, sign, sample, cap, elapsed, slope_v_s)
            prev = sample
            self.clock.sleep(wait)

    def _ended_by(self, spec: CyclerStepSpec, sign: float, sample: CyclerSample, cap: float, elapsed: float,
                  should_stop: Callable[[], bool], slope: "_SlopeWindow | None") -> EndReason | None:
        v = sample.voltage_v
        if spec.end_capacity_ah is not None and cap >= spec.end_capacity_ah * (1 - CAPACITY_TOLERANCE_REL):
            return "capacity"
        if spec.end_voltage_v is not None and sign * (v - spec.end_voltage_v) >= -VOLTAGE_TOLERANCE_V:
            return "voltage"
        if spec.end_current_a is not None and elapsed > 0 and abs(sample.current_a) < spec.end_current_a:
            return "current"
        if spec.end_dvdt_v_per_s is not None and slope is not None:
            dvdt = slope.slope_v_per_s()
            if dvdt is not None and abs(dvdt) < spec.end_dvdt_v_per_s:
                return "slope"
        if spec.end_time_s is not None and elapsed >= spec.end_time_s - 1e-9:
            return "time"
        if should_stop():
            return "stopped"
        return None

    def _next_interval(self, spec: CyclerStepSpec, sign: float, sample: CyclerSample, cap: float,
                       elapsed: float, slope_v_s: float) -> float:
        """The base interval, shortened so the next sample lands on (or closer to) the end condition."""
        wait = spec.sample_interval_s
        if spec.end_time_s is not None:
            wait = min(wait, spec.end_time_s - elapsed)
        rate_ah_s = abs(sample.current_a) / 3600.0
        if spec.end_capacity_ah is not None and rate_ah_s > 0:
            wait = min(wait, (spec.end_capacity_ah - cap) / rate_ah_s)
        if spec.end_voltage_v is not None and sign * slope_v_s > 0:
            gap_v = sign * (spec.end_voltage_v - sample.voltage_v)
            wait = min(wait, APPROACH_FRACTION * gap_v / abs(slope_v_s))
        return max(wait, MIN_INTERVAL_S)


class _SlopeWindow:
    """dV/dt by least squares over the last `window_s` of samples (None until the samples span the window)."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._points: deque[tuple[float, float]] = deque()

    def add(self, t_s: float, voltage_v: float) -> None:
        self._points.append((t_s, voltage_v))
        while len(self._points) > 2 and self._points[-1][0] - self._points[1][0] >= self.window_s:
            self._points.popleft()

    def slope_v_per_s(self) -> float | None:
        if len(self._points) < 3 or self._points[-1][0] - self._points[0][0] < self.window_s * (1 - 1e-9):
            return None
        t = [p[0] for p in self._points]
        v = [p[1] for p in self._points]
        t_mean, v_mean = sum(t) / len(t), sum(v) / len(v)
        denominator = sum((x - t_mean) ** 2 for x in t)
        return sum((x - t_mean) * (y - v_mean) for x, y in zip(t, v)) / denominator if denominator > 0 else None


def run_steps(
    channel: CyclerChannel,
    steps: list[CyclerStepSpec],
    on_step_start: Callable[[int, CyclerStepSpec], Callable[[CyclerSample, float, float], None] | None] | None = None,
    *,
    should_stop: Callable[[], bool] = lambda: False,
) -> list[StepResult]:
    """Run `steps` in order on `channel`; `on_step_start(k, spec)` may return each step's on_sample.

    Stops early (returning the results so far) when a step ends "stopped"; safety trips and
    communication errors propagate with the channel off.
    """
    results = []
    for k, spec in enumerate(steps):
        on_sample = on_step_start(k, spec) if on_step_start is not None else None
        result = channel.run_step(spec, on_sample, should_stop=should_stop)
        results.append(result)
        if result.ended_by == "stopped":
            break
    return results

