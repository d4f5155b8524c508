"""Exchange models, diffusion model and Arrhenius fits against independently generated truth."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.arrhenius import BOLTZMANN_EV_PER_K, fit_arrhenius
from analysis.errors import AnalysisFitError
from analysis.exchange_models import (cross_fraction, fit_diffusion, fit_matrix, fit_two_site, sphere_uptake,
                                      two_site_volumes)
from analysis.synthetic import detailed_balance_rates, exchange_volumes

TIMES_S = np.geomspace(0.01, 10, 8)


def _series(k, p, t1, noise=0.0, seed=0):
    v = np.array([exchange_volumes(k, p, t1, t) for t in TIMES_S])
    return v + np.random.default_rng(seed).normal(0, noise, v.shape)


@settings(max_examples=40, deadline=None)
@given(st.floats(0.01, 5), st.floats(0.1, 3), st.floats(0.05, 2), st.floats(0.05, 2), st.floats(0.001, 20))
def test_perrin_dwyer_equals_matrix_exponential(k_ab, ratio, r1a, r1b, t):
    p = np.array([1.0, ratio])
    k = detailed_balance_rates({(0, 1): k_ab}, p)
    expected = exchange_volumes(k, p, 1 / np.array([r1a, r1b]), t)
    got = two_site_volumes(k[0, 1], k[1, 0], r1a, r1b, p[0], p[1], np.array([t]))[0]
    assert np.allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_matrix_model_recovers_three_site_rates_within_stderr():
    p = np.array([0.45, 0.35, 0.2])
    k = detailed_balance_rates({(0, 1): 0.3, (0, 2): 0.5, (1, 2): 0.4}, p)
    fit = fit_matrix(TIMES_S, _series(k, p, np.array([4.0, 2.0, 1.0]), noise=0.002, seed=3))
    off = ~np.eye(3, dtype=bool)
    z = np.abs(fit.k_per_s - k)[off] / fit.k_stderr_per_s[off]
    assert np.all(z < 4), z
    assert np.all(fit.k_stderr_per_s[off] < 0.1 * k[off])
    assert np.allclose(fit.t1_s, [4.0, 2.0, 1.0], rtol=0.15)
    assert np.allclose(fit.predict(TIMES_S), _series(k, p, np.array([4.0, 2.0, 1.0])), atol=0.01)


def test_two_site_model_recovers_a_two_site_system():
    p = np.array([0.6, 0.4])
    k = detailed_balance_rates({(0, 1): 0.8}, p)
    fit = fit_two_site(TIMES_S, _series(k, p, np.array([3.0, 1.5]), noise=0.001, seed=1))
    assert fit.k_per_s[0, 1] == pytest.approx(0.8, abs=4 * fit.k_stderr_per_s[0, 1])
    assert fit.k_per_s[1, 0] == pytest.approx(1.2, abs=4 * fit.k_stderr_per_s[1, 0])


def test_sphere_uptake_limits_and_branch_continuity():
    assert sphere_uptake(np.array([0.0]))[0] == 0.0
    assert sphere_uptake(np.array([5.0]))[0] == pytest.approx(1.0, abs=1e-12)
    lo, hi = sphere_uptake(np.array([0.01 - 1e-12, 0.01 + 1e-12]))
    assert hi - lo == pytest.approx(0.0, abs=1e-9)
    assert np.all(np.diff(sphere_uptake(np.geomspace(1e-6, 3, 200))) > 0)


def test_diffusion_model_recovers_d():
    radius_m, d_true = 2.5e-6, 2e-13
    p = np.array([0.6, 0.4])
    f_eq = 2 * p[0] * p[1] / (p[0] + p[1]) ** 2
    f = f_eq * sphere_uptake(d_true * TIMES_S / radius_m ** 2)
    v = np.zeros((TIMES_S.size, 2, 2))  # volumes whose diagonal gives p and whose cross fraction is f
    v[:, 0, 0], v[:, 1, 1] = p[0] * (1 - f), p[1] * (1 - f)
    v[:, 0, 1] = v[:, 1, 0] = 0.5 * f
    v[0, 0, 0], v[0, 1, 1] = p[0] * (1 - f[0]), p[1] * (1 - f[0])
    assert np.allclose(cross_fraction(v, 0, 1), f)
    fit = fit_diffusion(TIMES_S, v, radius_m)
    d, _ = fit.d_m2_per_s[(0, 1)]
    assert d == pytest.approx(d_true, rel=0.02)
    k_ex = np.pi ** 2 * d / radius_m ** 2
    assert fit.k_per_s[0, 1] + fit.k_per_s[1, 0] == pytest.approx(k_ex)


def test_arrhenius_recovers_ea_and_prefactor():
    temps = np.array([293.0, 313.0, 333.0, 353.0, 373.0])
    values = 1e3 * np.exp(-0.117 / (BOLTZMANN_EV_PER_K * temps))
    fit = fit_arrhenius(temps, values)
    assert fit.ea_ev == pytest.approx(0.117, abs=1e-9)
    assert fit.prefactor == pytest.approx(1e3, rel=1e-6)
    noisy = values * (1 + 0.02 * np.random.default_rng(0).standard_normal(5))
    fit = fit_arrhenius(temps, noisy, 0.02 * noisy)
    assert abs(fit.ea_ev - 0.117) < 3 * fit.ea_stderr_ev and fit.ea_stderr_ev > 0


def test_fits_refuse_hopeless_input():
    with pytest.raises(AnalysisFitError):
        fit_arrhenius(np.array([300.0, 300.0]), np.array([1.0, 2.0]))
    with pytest.raises(AnalysisFitError):
        fit_arrhenius(np.array([300.0, 320.0]), np.array([1.0, -2.0]))
    with pytest.raises(AnalysisFitError):
        fit_matrix(TIMES_S[:1], np.ones((1, 3, 3)))
    with pytest.raises(AnalysisFitError):
        fit_matrix(TIMES_S, np.full((8, 2, 2), np.nan))
