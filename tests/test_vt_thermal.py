"""Physics of the simulated VT probe (pure model, virtual time)."""

from __future__ import annotations

import pytest

from drivers.clock import VirtualClock
from hardware_sim.thermal import ThermalModel


def _ramped_move(model: ThermalModel, clock: VirtualClock, target_k: float, seconds: int) -> list[float]:
    model.heater_range = 3
    model.ramp_rate_k_per_min = 5.0
    model.ramp_enabled = True
    model.setpoint_k = target_k
    trace = []
    for _ in range(seconds):
        clock.advance(1.0)
        trace.append(model.true_sensor_k())
    return trace


def test_ramped_move_is_rate_limited_overshoots_a_little_and_settles():
    clock = VirtualClock()
    model = ThermalModel(clock)
    trace = _ramped_move(model, clock, 313.0, 1800)
    assert model.effective_setpoint_k() == 313.0
    assert trace[119] < 293.0 + 10.0  # set point only 10 K up after 2 min at 5 K/min
    overshoot_k = max(trace) - 313.0
    assert 0.1 < overshoot_k < 0.6
    assert trace[-1] == pytest.approx(313.0, abs=0.01)


def test_sample_lags_sensor_and_sits_above_it_by_mas_heating():
    clock = VirtualClock()
    model = ThermalModel(clock, mas_rate_hz=10_000.0)
    _ramped_move(model, clock, 313.0, 300)
    assert model.sample_k() < model.true_sensor_k()  # still catching up
    clock.advance(3600.0)
    assert model.sample_k() - model.true_sensor_k() == pytest.approx(4.0, abs=0.01)
    slow = ThermalModel(VirtualClock(), mas_rate_hz=5_000.0)
    assert slow.mas_heating_k() == pytest.approx(1.0)  # proportional to rate squared


def test_noise_is_small_and_deterministic_for_seed_and_time():
    readings = []
    for _ in range(2):
        clock = VirtualClock()
        model = ThermalModel(clock, seed=7)
        series = []
        for _ in range(200):
            clock.advance(10.0)
            series.append(model.sensor_k())
        readings.append(series)
    assert readings[0] == readings[1]
    deviations = [r - 293.0 for r in readings[0]]
    assert 0.005 < (sum(d * d for d in deviations) / len(deviations)) ** 0.5 < 0.05
    other = ThermalModel(VirtualClock(), seed=8)
    other._clock.advance(10.0)
    assert other.sensor_k() != readings[0][0]


def test_stuck_heater_stays_short_of_set_point_and_heater_off_drifts_to_ambient():
    clock = VirtualClock()
    model = ThermalModel(clock)
    model.set_stuck_heater(True)
    model.heater_range = 3
    model.setpoint_k = 330.0
    clock.advance(7200.0)
    assert 330.0 - model.true_sensor_k() > 3.0
    model.set_stuck_heater(False)
    model.heater_range = 0
    clock.advance(7200.0)
    assert model.true_sensor_k() == pytest.approx(293.0, abs=0.01)


def test_long_idle_gap_is_cheap_and_exact():
    clock = VirtualClock()
    model = ThermalModel(clock)
    model.heater_range = 3
    model.setpoint_k = 350.0
    clock.advance(40 * 3600.0)
    assert model.true_sensor_k() == pytest.approx(350.0, abs=1e-6)


def test_ramp_status_rate_zero_is_no_ramp_and_an_inactive_output_heats_nothing():
    clock = VirtualClock()
    model = ThermalModel(clock)
    model.heater_range = 3
    model.ramp_rate_k_per_min = 5.0
    model.ramp_enabled = True
    model.setpoint_k = 303.0
    assert model.ramping() and model.effective_setpoint_k() == 293.0
    clock.advance(150.0)
    assert model.ramping() is False and model.effective_setpoint_k() == 303.0
    model.ramp_rate_k_per_min = 0.0  # the manual: a rate of 0 is infinite
    model.setpoint_k = 320.0
    assert model.effective_setpoint_k() == 320.0 and not model.ramping()
    model.set_output_active(False)
    clock.advance(7200.0)
    assert model.true_sensor_k() == pytest.approx(293.0, abs=0.01)


def test_temperature_limit_cuts_the_heater_when_crossed():
    clock = VirtualClock()
    model = ThermalModel(clock)
    model.set_temperature_limit_k(305.0)
    model.heater_range = 3
    model.setpoint_k = 330.0
    clock.advance(3600.0)
    assert model.heater_range == 0 and model.limit_tripped  # reading the range brings the model up to now
    assert model.true_sensor_k() < 300.0
    calm = ThermalModel(VirtualClock())
    calm.set_temperature_limit_k(400.0)
    calm.heater_range = 3
    calm.setpoint_k = 350.0
    calm._clock.advance(3600.0)
    assert calm.heater_range == 3 and not calm.limit_tripped
