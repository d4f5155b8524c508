"""Thermal physics of a MAS VT probe: ramp-limited set point, sensor response with overshoot, sample lag.

The controller-side facts it models (see docs/dialects/lakeshore336.md): a ramp moves the effective
set point towards the target at the ramp rate (rate 0 = no ramp); an output that is off or faulty
delivers nothing whatever its range; above the temperature limit every output switches off.

The sensor follows the drive temperature as a damped second-order system (time scale ~60 s,
a few tenths of a kelvin of overshoot on a ramped 20 K move); the sample follows the sensor
with its own lag and sits above it by MAS frictional heating (proportional to rate squared).
State is integrated lazily and exactly (zero-order hold, matrix exponential) up to clock.now()
whenever it is queried, so long idle gaps cost one step.
"""

from __future__ import annotations

import random
import threading

import numpy as np
from scipy.linalg import expm

from drivers.clock import Clock

_RAMP_STEP_S = 1.0  # integration step while the set point is ramping (or the sensor may cross TLIMIT)
_LIMIT_MARGIN_K = 2.0  # overshoot allowance: drive temperatures this close to TLIMIT are integrated finely


class ThermalModel:
    """First-order-like probe response with a ramp-limited set point, overshoot, noise, sample lag and MAS heating."""

    def __init__(
        self,
        clock: Clock,
        *,
        ambient_k: float = 293.0,
        seed: int = 0,
        mas_rate_hz: float = 10_000.0,
        time_constant_s: float = 60.0,
        damping: float = 0.65,
        sample_time_constant_s: float = 90.0,
        mas_heating_k_at_10khz: float = 4.0,
        noise_k: float = 0.02,
        stuck_deficit_k: float = 4.0,
    ) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self.ambient_k = float(ambient_k)
        self.seed = int(seed)
        self.mas_rate_hz = float(mas_rate_hz)
        self.noise_k = float(noise_k)
        self.stuck_deficit_k = float(stuck_deficit_k)
        self.mas_heating_k_at_10khz = float(mas_heating_k_at_10khz)
        self.stuck_heater = False
        self.output_active = True  # False: the output delivers nothing (mode off, heater fault), whatever the range
        self.temperature_limit_k = 0.0  # TLIMIT: above it every output switches off (0 = feature off)
        self.limit_tripped = False
        self._target_k = self.ambient_k
        self._effective_k = self.ambient_k
        self._ramp_k_per_min = 10.0
        self._ramp_enabled = False
        self._heater_range = 0
        # state: sensor temperature, its rate of change, sample temperature
        self._x = np.array([self.ambient_k, 0.0, self.ambient_k + self.mas_heating_k()])
        self._t = clock.now()
        omega = 2.15 / time_constant_s  # 63 % rise in about time_constant_s
        self._a = np.array(
            [
                [0.0, 1.0, 0.0],
                [-omega**2, -2 * damping * omega, 0.0],
                [1.0 / sample_time_constant_s, 0.0, -1.0 / sample_time_constant_s],
            ]
        )
        # inputs: drive temperature (K), constant 1 (for the MAS heating offset)
        self._b = np.array([[0.0, 0.0], [omega**2, 0.0], [0.0, 1.0 / sample_time_constant_s]])
        self._steps: dict[float, tuple[np.ndarray, np.ndarray]] = {}

    # --- controls (each applies from the present clock time on) ---------------------------
    @property
    def setpoint_k(self) -> float:
        """The target set point (the ramp moves the effective set point towards it)."""
        return self._target_k

    @setpoint_k.setter
    def setpoint_k(self, value: float) -> None:
        with self._lock:
            self._advance()
            self._target_k = float(value)
            if not self._ramp_active():
                self._effective_k = self._target_k

    @property
    def ramp_rate_k_per_min(self) -> float:
        """Set-point ramp rate in K/min (used when the ramp is enabled)."""
        return self._ramp_k_per_min

    @ramp_rate_k_per_min.setter
    def ramp_rate_k_per_min(self, value: float) -> None:
        with self._lock:
            self._advance()
            self._ramp_k_per_min = float(value)
            if not self._ramp_active():
                self._effective_k = self._target_k

    @property
    def ramp_enabled(self) -> bool:
        """Whether set-point changes are ramped; switching it off jumps to the target."""
        return self._ramp_enabled

    @ramp_enabled.setter
    def ramp_enabled(self, value: bool) -> None:
        with self._lock:
            self._advance()
            self._ramp_enabled = bool(value)
            if not self._ramp_active():
                self._effective_k = self._target_k

    @property
    def heater_range(self) -> int:
        """0 off (the probe drifts to ambient), 1..3 on (TLIMIT may have switched it off meanwhile)."""
        with self._lock:
            self._advance()
            return self._heater_range

    @heater_range.setter
    def heater_range(self, value: int) -> None:
        with self._lock:
            self._advance()
            self._heater_range = int(value)

    def set_output_active(self, active: bool) -> None:
        """Whether the control output can heat at all (closed-loop mode on its input, no heater fault)."""
        with self._lock:
            self._advance()
            self.output_active = bool(active)

    def set_temperature_limit_k(self, limit_k: float) -> None:
        """TLIMIT: the sensor temperature above which the controller switches every output off (0 = off)."""
        with self._lock:
            self._advance()
            self.temperature_limit_k = max(0.0, float(limit_k))

    def ramping(self) -> bool:
        """RAMPST?: whether the effective set point is still moving towards the target."""
        with self._lock:
            self._advance()
            return self._ramp_active() and self._effective_k != self._target_k

    def set_mas_rate_hz(self, rate_hz: float) -> None:
        """Change the spinning rate from now on; the sample follows the new frictional heating with its lag."""
        if rate_hz < 0:
            raise ValueError(f"MAS rate must be >= 0 Hz, got {rate_hz}")
        with self._lock:
            self._advance()
            self.mas_rate_hz = float(rate_hz)

    def set_stuck_heater(self, stuck: bool) -> None:
        """A heater that cannot reach set points above ambient (stays stuck_deficit_k short)."""
        with self._lock:
            self._advance()
            self.stuck_heater = bool(stuck)

    # --- readings ------------------------------------------------------------------------
    def effective_setpoint_k(self) -> float:
        """The ramping set point at the present time."""
        with self._lock:
            self._advance()
            return self._effective_k

    def true_sensor_k(self) -> float:
        """Sensor temperature without measurement noise."""
        with self._lock:
            self._advance()
            return float(self._x[0])

    def sensor_k(self) -> float:
        """Sensor reading at clock.now(): true value plus noise fixed by seed and time."""
        with self._lock:
            self._advance()
            noise = random.Random(f"{self.seed}:{round(self._t * 1000)}").gauss(0.0, self.noise_k)
            return float(self._x[0]) + noise

    def sample_k(self) -> float:
        """Sample temperature at clock.now(): lags the sensor and is warmed by MAS friction."""
        with self._lock:
            self._advance()
            return float(self._x[2])

    def mas_heating_k(self) -> float:
        """Steady-state frictional heating of the sample above the sensor: 4 K x (rate / 10 kHz)^2 by default
        (air-bearing friction power grows with the square of the rim speed; docs/nmr-simulation.md)."""
        return self.mas_heating_k_at_10khz * (self.mas_rate_hz / 10_000.0) ** 2

    # --- integration ---------------------------------------------------------------------
    def _ramp_active(self) -> bool:
        """Ramping on with a finite rate (the manual: a rate of 0 is infinite, as if ramping were off)."""
        return self._ramp_enabled and self._ramp_k_per_min > 0

    def _drive_k(self, setpoint_k: float) -> float:
        if self._heater_range == 0 or not self.output_active:
            return self.ambient_k
        if self.stuck_heater and setpoint_k > self.ambient_k:
            return max(self.ambient_k, setpoint_k - self.stuck_deficit_k)
        return setpoint_k

    def _near_limit(self) -> bool:
        """Whether the heater could take the sensor over TLIMIT (then integrate finely to cut it in time)."""
        limit_k = self.temperature_limit_k
        return limit_k > 0 and self._heater_range != 0 and self._drive_k(self._effective_k) > limit_k - _LIMIT_MARGIN_K

    def _step_matrices(self, dt: float) -> tuple[np.ndarray, np.ndarray]:
        key = round(dt, 9)
        if key not in self._steps:
            m = np.zeros((5, 5))
            m[:3, :3] = self._a
            m[:3, 3:] = self._b
            e = expm(m * dt)
            if len(self._steps) > 64:
                self._steps.clear()
            self._steps[key] = (e[:3, :3], e[:3, 3:])
        return self._steps[key]

    def _advance(self) -> None:
        now = self._clock.now()
        while self._t < now:
            ramping = self._ramp_active() and self._effective_k != self._target_k
            fine = ramping or self._near_limit()
            dt = min(_RAMP_STEP_S, now - self._t) if fine else now - self._t
            start_k = self._effective_k
            if ramping:
                step_k = self._ramp_k_per_min / 60.0 * dt
                gap_k = self._target_k - self._effective_k
                self._effective_k = self._target_k if abs(gap_k) <= step_k else self._effective_k + np.sign(gap_k) * step_k
            drive_k = self._drive_k(0.5 * (start_k + self._effective_k))
            ad, bd = self._step_matrices(dt)
            self._x = ad @ self._x + bd @ np.array([drive_k, self.mas_heating_k()])
            self._t += dt
            if self.temperature_limit_k > 0 and self._x[0] > self.temperature_limit_k and self._heater_range != 0:
                self._heater_range = 0  # the instrument switches its outputs off; the host must switch them on again
                self.limit_tripped = True
