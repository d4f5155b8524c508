"""Sample temperature from a chemical-shift thermometer, fitted against the VT set point (MAS calibration).

The thermometer is linear near its reference: T = T_ref + (shift - shift_ref) / slope. For lead
nitrate 207Pb the slope is +0.753 ppm/K (Bielecki & Burum, J. Magn. Reson. A 116, 215 (1995),
doi:10.1006/jmra.1995.0010; Kemp et al. 2010 find 0.725 ppm/K over 153-293 K and curvature below
~130 K). The reference shift depends on the spectrometer's referencing and is given by the user.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from analysis.errors import AnalysisFitError, AnalysisInputError

LEAD_NITRATE_SLOPE_PPM_PER_K = 0.753  # 207Pb in Pb(NO3)2, Bielecki & Burum 1995


@dataclass(frozen=True)
class Thermometer:
    """A chemical-shift thermometer: its line's shift at a reference temperature and the slope d(shift)/dT."""

    nucleus: str
    reference_shift_ppm: float
    reference_temperature_k: float
    slope_ppm_per_k: float

    def __post_init__(self) -> None:
        for name in ("reference_shift_ppm", "reference_temperature_k", "slope_ppm_per_k"):
            if not math.isfinite(getattr(self, name)):
                raise AnalysisInputError(f"thermometer {name}: {getattr(self, name)!r} is not a number")
        if self.slope_ppm_per_k == 0:
            raise AnalysisInputError("thermometer slope_ppm_per_k: 0 measures no temperature")
        if self.reference_temperature_k <= 0:
            raise AnalysisInputError(f"thermometer reference_temperature_k: {self.reference_temperature_k} K")

    def temperature_k(self, shift_ppm: float) -> float:
        """Sample temperature of a measured shift."""
        return self.reference_temperature_k + (shift_ppm - self.reference_shift_ppm) / self.slope_ppm_per_k


def as_thermometer(given: Thermometer | Mapping[str, object]) -> Thermometer:
    """A Thermometer, or one from a mapping with the same field names (a protocol's table)."""
    if isinstance(given, Thermometer):
        return given
    try:
        return Thermometer(str(given.get("nucleus", "?")), float(given["reference_shift_ppm"]),  # type: ignore[arg-type]
                           float(given["reference_temperature_k"]), float(given["slope_ppm_per_k"]))  # type: ignore[arg-type]
    except KeyError as exc:
        raise AnalysisInputError(f"thermometer: missing {exc} (needs reference_shift_ppm, reference_temperature_k, "
                                 f"slope_ppm_per_k)") from None
    except (TypeError, ValueError) as exc:
        raise AnalysisInputError(f"thermometer: {exc}") from None


def fit_calibration(setpoints_k: Sequence[float], shifts_ppm: Sequence[float],
                    thermometer: Thermometer | Mapping[str, object]) -> tuple[list[tuple[float, float]], float]:
    """Calibration points [(setpoint_k, sample_k)] and the rms residual (K) of the thermometer readings.

    Sample temperatures come from the thermometer; a straight line sample = a + b setpoint is fitted
    (least squares) and the points are that line at each set point, sorted; residual_k is the rms of
    the readings about the line (a repeated set point appears once). One set point gives an offset.
    """
    meter = as_thermometer(thermometer)
    setpoints = np.asarray(setpoints_k, float)
    shifts = np.asarray(shifts_ppm, float)
    if setpoints.size == 0 or setpoints.shape != shifts.shape:
        raise AnalysisInputError(f"calibration: {setpoints.size} set points and {shifts.size} shifts")
    if not (np.all(np.isfinite(setpoints)) and np.all(np.isfinite(shifts))):
        raise AnalysisInputError("calibration: set points and shifts must be finite numbers")
    samples = np.array([meter.temperature_k(s) for s in shifts])
    order = np.argsort(setpoints)
    setpoints, samples = setpoints[order], samples[order]
    if np.unique(setpoints).size < 2:
        offset = float(np.mean(samples - setpoints))
        return [(float(setpoints[0]), float(setpoints[0] + offset))], float(np.std(samples - setpoints - offset))
    slope, intercept = np.polyfit(setpoints, samples, 1)
    if not (0.5 < slope < 2.0):
        raise AnalysisFitError(f"calibration: sample temperature moves {slope:.3g} K per K of set point "
                               f"(thermometer slope or reference wrong?)")
    line = intercept + slope * setpoints
    residual_k = float(np.sqrt(np.mean((samples - line) ** 2)))
    points = [(float(x), float(y)) for x, y in zip(setpoints, line)]
    return [p for i, p in enumerate(points) if i == 0 or p[0] != points[i - 1][0]], residual_k
