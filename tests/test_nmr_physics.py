"""EXSY spin physics: Arrhenius rates, detailed balance, the mixing (volume) matrix."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import expm

from hardware_sim.nmr_physics import (
    BOLTZMANN_EV_PER_K,
    ArrheniusRate,
    ExsySample,
    Site,
    paper_sample,
)


def test_arrhenius_rate_recovers_activation_energy() -> None:
    law = ArrheniusRate.from_rate(0.03, 293.0, 0.107)
    assert law.at(293.0) == pytest.approx(0.03)
    temperatures = np.array([293.0, 313.0, 333.0, 353.0, 373.0])
    ln_k = np.log([law.at(t) for t in temperatures])
    slope = np.polyfit(1.0 / temperatures, ln_k, 1)[0]
    assert -slope * BOLTZMANN_EV_PER_K == pytest.approx(0.107, rel=1e-9)
    with pytest.raises(ValueError, match="temperature"):
        law.at(0.0)


def test_paper_sample_rates_follow_the_paper_activation_energies() -> None:
    sample = paper_sample()
    assert sample.names == ["Li2S", "LPSC", "LiI"]
    assert [s.shift_ppm for s in sample.sites] == [2.31, 1.29, -4.56]
    lpsc, li2s = sample.sites[1], sample.sites[0]
    assert lpsc.linewidth_hz < li2s.linewidth_hz  # LPSC has the narrower line
    expected_ea = {("Li2S", "LPSC"): 0.107, ("Li2S", "LiI"): 0.142, ("LPSC", "LiI"): 0.117}
    index = {n: i for i, n in enumerate(sample.names)}
    for (a, b), ea in expected_ea.items():
        k_cold = sample.rate_matrix(293.0)[index[a], index[b]]
        k_hot = sample.rate_matrix(373.0)[index[a], index[b]]
        fitted = math.log(k_hot / k_cold) / (1 / 293.0 - 1 / 373.0) * BOLTZMANN_EV_PER_K
        assert fitted == pytest.approx(ea, rel=1e-9)
    assert 0.02 <= sample.rate_matrix(293.0)[index["Li2S"], index["LPSC"]] <= 0.05


def test_detailed_balance_and_symmetric_volumes() -> None:
    sample = paper_sample()
    p = sample.populations
    k = sample.rate_matrix(330.0)
    flux = p[:, None] * k
    np.testing.assert_allclose(flux, flux.T, rtol=1e-12)
    assert np.all(np.diag(k) == 0)
    a = sample.mixing_matrix(2.0, 330.0)
    np.testing.assert_allclose(a, a.T, rtol=1e-10)
    np.testing.assert_allclose(sample.mixing_matrix(0.0, 330.0), np.diag(p), atol=1e-15)
    reference = expm(-sample.relaxation_exchange_matrix(330.0) * 2.0) @ np.diag(p)
    np.testing.assert_allclose(a, reference, rtol=1e-10, atol=1e-15)


def test_without_t1_decay_exchange_conserves_and_equilibrates_magnetisation() -> None:
    sites = tuple(Site(n, s, p, 10.0, 1e12) for n, s, p in (("a", 1.0, 0.6), ("b", -1.0, 0.4)))
    sample = ExsySample(sites, {("a", "b"): ArrheniusRate(5.0, 0.0)})
    a = sample.mixing_matrix(0.3, 300.0)
    np.testing.assert_allclose(a.sum(axis=0), [0.6, 0.4], rtol=1e-9)  # each F1 column keeps its total
    late = sample.mixing_matrix(50.0, 300.0)
    np.testing.assert_allclose(late, np.outer([0.6, 0.4], [0.6, 0.4]), rtol=1e-6)
    # two-site exchange: the cross/diagonal build-up follows k_ab + k_ba
    k_sum = 5.0 + 5.0 * 0.6 / 0.4
    expected_cross = 0.6 * 0.4 * (1 - math.exp(-k_sum * 0.3))
    assert a[1, 0] == pytest.approx(expected_cross, rel=1e-9)


def test_sample_without_lii_has_two_sites_and_no_exchange() -> None:
    sample = paper_sample(with_lii=False)
    assert sample.names == ["Li2S", "LPSC"]
    assert not sample.rate_matrix(373.0).any()
    a = sample.mixing_matrix(20.0, 373.0)
    assert a[0, 1] == 0.0 and a[1, 0] == 0.0


def test_invalid_samples_are_refused() -> None:
    site = Site("x", 0.0, 1.0, 10.0, 1.0)
    with pytest.raises(ValueError, match="duplicate"):
        ExsySample((site, site))
    with pytest.raises(ValueError, match="distinct sites"):
        ExsySample((site,), {("x", "y"): ArrheniusRate(1.0, 0.1)})
    with pytest.raises(ValueError, match="T1"):
        ExsySample((Site("x", 0.0, 1.0, 10.0, 0.0),))
    other = Site("y", 1.0, 1.0, 10.0, 1.0)
    with pytest.raises(ValueError, match="both directions"):
        ExsySample((site, other), {("x", "y"): ArrheniusRate(1.0, 0.1), ("y", "x"): ArrheniusRate(1.0, 0.1)})
    with pytest.raises(ValueError, match="mixing time"):
        paper_sample().mixing_matrix(-1.0, 300.0)


@settings(max_examples=40, deadline=None)
@given(t_s=st.floats(0.0, 30.0), temperature_k=st.floats(250.0, 400.0))
def test_volumes_are_nonnegative_and_decay(t_s: float, temperature_k: float) -> None:
    sample = paper_sample()
    a = sample.mixing_matrix(t_s, temperature_k)
    assert np.all(a >= -1e-12)
    assert a.sum() <= 1.0 + 1e-9  # T1 relaxation only removes observable magnetisation
