"""MAS temperature calibration from a chemical-shift thermometer (lead nitrate 207Pb, 0.753 ppm/K)."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.calibration import LEAD_NITRATE_SLOPE_PPM_PER_K, Thermometer, fit_calibration
from analysis.errors import AnalysisFitError, AnalysisInputError
from common.calibration import interpolate

LEAD_NITRATE = Thermometer("207Pb", -3490.0, 293.0, LEAD_NITRATE_SLOPE_PPM_PER_K)


def shifts_for(sample_k: np.ndarray, meter: Thermometer = LEAD_NITRATE) -> np.ndarray:
    return meter.reference_shift_ppm + meter.slope_ppm_per_k * (sample_k - meter.reference_temperature_k)


def test_known_frictional_heating_offset_recovered_within_0_1_k():
    setpoints = np.array([250.0, 275.0, 300.0, 325.0, 350.0])
    rng = np.random.default_rng(7)
    readings = shifts_for(setpoints + 4.0) + rng.normal(0, 0.02, setpoints.size)  # 0.02 ppm shift noise
    points, residual_k = fit_calibration(setpoints, readings, LEAD_NITRATE)
    assert [p[0] for p in points] == list(setpoints)
    assert all(abs(sample - setpoint - 4.0) < 0.1 for setpoint, sample in points)
    assert residual_k < 0.1
    assert abs(interpolate(points, 310.0) - 314.0) < 0.1  # the station file's calibration map reads it


def test_thermometer_as_a_protocol_table_and_unsorted_set_points():
    table = {"nucleus": "207Pb", "reference_shift_ppm": -3490.0, "reference_temperature_k": 293.0,
             "slope_ppm_per_k": 0.753}
    setpoints = np.array([340.0, 260.0, 300.0])
    points, residual_k = fit_calibration(setpoints, shifts_for(setpoints + 2.5), table)
    assert [round(x) for x, _ in points] == [260, 300, 340]
    assert points[1][1] == pytest.approx(302.5, abs=1e-6) and residual_k == pytest.approx(0.0, abs=1e-6)


def test_single_set_point_is_an_offset():
    points, _ = fit_calibration([300.0], shifts_for(np.array([303.0])), LEAD_NITRATE)
    assert points == [(300.0, pytest.approx(303.0))]


def test_refusals():
    with pytest.raises(AnalysisInputError, match="set points"):
        fit_calibration([300.0, 310.0], [1.0], LEAD_NITRATE)
    with pytest.raises(AnalysisInputError, match="slope_ppm_per_k"):
        fit_calibration([300.0], [1.0], {"reference_shift_ppm": 0, "reference_temperature_k": 293})
    with pytest.raises(AnalysisInputError, match="measures no temperature"):
        Thermometer("207Pb", 0.0, 293.0, 0.0)
    setpoints = np.array([260.0, 300.0, 340.0])  # a thermometer slope ten times off
    with pytest.raises(AnalysisFitError, match="K per K"):
        fit_calibration(setpoints, shifts_for(setpoints, Thermometer("207Pb", -3490, 293, 7.53)), LEAD_NITRATE)
