"""The design criterion (analysis/design.py): its variances are the fit's, it prefers informative mixing times,
it weighs the VT move, it breaks ties by order, and it stops counting quantities already at target."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.arrhenius import BOLTZMANN_EV_PER_K, fit_arrhenius
from analysis.design import (Candidate, CandidateSource, DesignState, TemperatureModel, arrhenius_ea_variance,
                             model_from_fit)
from analysis.exchange_models import fit_matrix
from analysis.synthetic import detailed_balance_rates, exchange_volumes

POPULATIONS = np.array([0.5, 0.35, 0.15])
T1_S = np.array([2.0, 1.5, 3.0])
EA_EV = {(0, 1): 0.107, (0, 2): 0.142, (1, 2): 0.117}
K293 = {(0, 1): 0.3, (0, 2): 0.5, (1, 2): 0.4}


def _rates(temperature_k: float) -> np.ndarray:
    forward = {pair: k * np.exp(-EA_EV[pair] / BOLTZMANN_EV_PER_K * (1 / temperature_k - 1 / 293.15))
               for pair, k in K293.items()}
    return detailed_balance_rates(forward, POPULATIONS)


def _model(temperature_k: float, noise_sd: float = 0.002) -> TemperatureModel:
    return TemperatureModel(temperature_k, _rates(temperature_k), 1 / T1_S, POPULATIONS.copy(), noise_sd)


def _state(times_by_t: dict[float, list[float]], target: float = 0.01) -> DesignState:
    return DesignState.start({t: _model(t) for t in times_by_t}, times_by_t, "ea_stderr_ev", target)


def test_design_variance_of_log_k_is_the_fits_own() -> None:
    """Fit noisy volumes from an independent forward model; the design's stderr of ln k equals the fit's k_se / k."""
    rng = np.random.default_rng(7)
    times = np.array([0.01, 0.1, 0.3, 1.0, 2.0, 5.0])
    k = _rates(293.15)
    clean = np.array([exchange_volumes(k, POPULATIONS, T1_S, t) for t in times])
    noisy = clean + rng.normal(0, 0.003, clean.shape)
    fit = fit_matrix(times, noisy)
    model = model_from_fit(293.15, fit.k_per_s, fit.t1_s, fit.populations, times, noisy,
                           fit.rms_residual)
    state = DesignState.start({293.15: model}, {293.15: list(times)}, "rate_relative_stderr", 0.05)
    design = state.variances()
    for idx, (i, j) in enumerate([(0, 1), (0, 2), (1, 2)]):
        assert np.sqrt(design[f"293.15/{i}-{j}"]) == pytest.approx(fit.k_stderr_per_s[i, j] / fit.k_per_s[i, j],
                                                                  rel=0.03), (i, j)


def test_arrhenius_variance_is_the_weighted_lines() -> None:
    temps = np.array([293.0, 313.0, 333.0, 353.0, 373.0])
    rel_se = np.array([0.05, 0.1, 0.08, 0.2, 0.04])
    k = 3.0 * np.exp(-0.12 / (BOLTZMANN_EV_PER_K * temps))  # exactly on the line: no scatter inflation
    fit = fit_arrhenius(temps, k, rel_se * k)
    assert np.sqrt(arrhenius_ea_variance(temps, rel_se ** 2)) == pytest.approx(fit.ea_stderr_ev, rel=1e-6)


def test_it_prefers_mixing_times_where_the_build_up_carries_the_rates() -> None:
    """At equal cost, a mixing time near 1 / (k + R1) beats one far too short or far too long."""
    state = _state({293.15: [0.01, 0.5, 2.0], 373.15: [0.01, 0.5, 2.0]})
    times = [0.001, 0.01, 0.1, 0.3, 1.0, 3.0, 30.0, 100.0]
    ranked = state.rank([Candidate(293.15, t, 3600.0) for t in times])
    best = ranked[0].candidate.mixing_time_s
    assert 0.1 <= best <= 3.0
    gain = {s.candidate.mixing_time_s: s.gain_per_h for s in ranked}
    assert gain[best] > 5 * gain[0.001] and gain[best] > 5 * gain[100.0]
    assert all(s.objective_after <= state.objective() for s in ranked)  # more data never hurts


def test_it_weighs_the_vt_move() -> None:
    """The gain per hour is the information per hour of cost: a move makes a candidate dearer by its hours."""
    state = _state({293.15: [0.01, 0.5, 2.0], 373.15: [0.01, 0.5, 2.0]})
    source = CandidateSource([293.15, 373.15], [0.5, 1.0], {0.5: 1800.0, 1.0: 2000.0},
                             lambda a, b: 0.0 if a == b else 4 * 3600.0)
    here = state.rank(source(293.15))
    free = state.rank([Candidate(c.temperature_k, c.mixing_time_s, 1800.0 if c.mixing_time_s == 0.5 else 2000.0)
                       for c in source(293.15)])
    other_free = next(s for s in free if s.candidate.temperature_k == 373.15 and s.candidate.mixing_time_s == 1.0)
    other_moved = next(s for s in here if s.candidate.temperature_k == 373.15 and s.candidate.mixing_time_s == 1.0)
    assert other_moved.gain_per_h * (2000.0 + 4 * 3600.0) == pytest.approx(other_free.gain_per_h * 2000.0)
    assert here[0].candidate.temperature_k == 293.15  # a 4-hour move does not pay here
    assert free[0].candidate.temperature_k != here[0].candidate.temperature_k or \
        free[0].gain_per_h > here[0].gain_per_h


def test_ties_keep_the_candidates_order() -> None:
    state = _state({293.15: [0.01, 0.5, 2.0], 373.15: [0.01, 0.5, 2.0]})
    twins = [Candidate(293.15, 1.0, 3600.0), Candidate(293.15, 1.0, 3600.0)]
    ranked = state.rank(twins)
    assert ranked[0].candidate is twins[0] and ranked[1].candidate is twins[1]


def test_quantities_at_target_leave_the_objective_and_the_look_ahead_needs_budget() -> None:
    state = _state({293.15: [0.01, 0.5, 2.0], 373.15: [0.01, 0.5, 2.0]}, target=0.01)
    source = CandidateSource([293.15, 373.15], [0.3, 1.0, 3.0], {0.3: 1800.0, 1.0: 1900.0, 3.0: 2200.0},
                             lambda a, b: 0.0 if a == b else 3600.0)
    hours = state.hours_to_target(source, 373.15, budget_s=1000 * 3600.0, max_points=500)
    assert hours is not None and hours > 0
    assert state.hours_to_target(source, 373.15, budget_s=0.5 * hours * 3600.0, max_points=500) is None
    state.calibrate({q: 0.001 for q in state.variances()})  # the analysis says every pair is at target
    assert state.objective() == 0.0
    assert state.hours_to_target(source, 373.15, budget_s=3600.0, max_points=5) == 0.0
