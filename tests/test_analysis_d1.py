"""The series analysis reads each point's D1: short recycle delays warned about, or corrected with measured T1."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.api import analyze_paths
from analysis.errors import AnalysisInputError
from analysis.synthetic import acquisition_time_s, detailed_balance_rates, exchange_volumes, write_synthetic_exsy

SHIFTS = [2.31, 1.29, -4.56]
P = np.array([0.5, 0.3, 0.2])
T1_S = np.array([3.0, 2.0, 1.0])


@pytest.fixture(scope="module")
def saturated_series(tmp_path_factory):
    """One temperature, D1 = 1 s with T1 up to 3 s: every F1 row starts at M0 (1 - exp(-(D1 + AQ)/T1))."""
    root = tmp_path_factory.mktemp("d1")
    d1_s = 1.0
    start = 1 - np.exp(-(d1_s + acquisition_time_s(2048, 40.0, 73.578)) / T1_S)
    k = detailed_balance_rates({(0, 1): 0.3, (0, 2): 0.5, (1, 2): 0.4}, P)
    paths = []
    for n, t in enumerate((0.01, 0.1, 0.5, 2.0)):
        volumes = exchange_volumes(k, P, T1_S, t) * start[:, None]
        paths.append(write_synthetic_exsy(root / str(10 + n), volumes, SHIFTS, mixing_time_s=t, temperature_k=300.0,
                                          d1_s=d1_s, noise=0.0005, seed=n))
    return paths


def test_short_d1_is_recorded_and_warned(saturated_series):
    result = analyze_paths(saturated_series, SHIFTS, model="matrix")
    assert [p["d1_s"] for p in result["points"]] == [1.0] * 4
    assert any("D1 + AQ" in w and "3 x T1" in w for w in result["warnings"])
    populations = np.array(result["fits"][0]["populations"])
    assert abs(populations[0] - P[0]) > 0.03  # Li2S (longest T1) under-counted: the bias the warning names


def test_measured_t1_corrects_the_populations(saturated_series):
    result = analyze_paths(saturated_series, SHIFTS, model="matrix", t1_by_temperature={300.2: list(T1_S)})
    assert not any("D1 + AQ" in w for w in result["warnings"])
    assert np.allclose(result["fits"][0]["populations"], P, atol=0.01)
    assert len(result["points"][0]["relaxation_factors"]) == 3
    rates = {(r["from"], r["to"]): r["k_per_s"] for r in result["fits"][0]["rates"]}
    assert rates[("S1", "S2")] == pytest.approx(0.3, rel=0.05)


def test_measured_t1_table_refusals(saturated_series):
    with pytest.raises(AnalysisInputError, match="no T1 measured within"):
        analyze_paths(saturated_series, SHIFTS, t1_by_temperature={350.0: list(T1_S)})
    with pytest.raises(AnalysisInputError, match="3 positive T1"):
        analyze_paths(saturated_series, SHIFTS, t1_by_temperature={300.0: [1.0, 2.0]})
