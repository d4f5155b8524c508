"""The real Lake Shore 336 driver against the simulator over a real pty (and TCP), in virtual time."""

from __future__ import annotations

import logging

import pytest

from drivers.clock import VirtualClock
from drivers.lakeshore import LakeShore336
from drivers.vt import (
    MasCalibration,
    UnsafeTemperatureRequest,
    VtCommunicationError,
    VtLimits,
    VtSensorError,
    VtStabilityTimeout,
)
from hardware_sim.vt_sim import SimulatedLakeShore336

LIMITS = VtLimits(min_k=250.0, max_k=400.0, max_ramp_k_per_min=5.0)
CAL = MasCalibration(10_000.0, ((293.0, 297.0), (373.0, 377.0)))


@pytest.fixture
def bench():
    """A started simulator and a driver on its pty, the test thread taking part in virtual time."""
    clock = VirtualClock()
    sim = SimulatedLakeShore336(clock, seed=1, tcp_port=0)
    path = sim.start()
    with clock.participant():
        driver = LakeShore336(path, clock, LIMITS, CAL, timeout_s=0.3)
        try:
            yield clock, sim, driver
        finally:
            driver.close()
            sim.stop()


def test_reaches_set_point_and_detects_stability(bench):
    clock, sim, vt = bench
    assert vt.identify() == "LSCI,MODEL336,SIM0001,2.9"
    start = clock.now()
    setpoint_k = vt.set_sample_temperature_k(317.0)
    assert setpoint_k == pytest.approx(313.0)
    assert sim.model.setpoint_k == pytest.approx(313.0)
    assert sim.model.ramp_enabled and sim.model.ramp_rate_k_per_min == 5.0  # ramp forced on within the limit
    assert sim.model.heater_range == 3
    result = vt.wait_stable(317.0, tolerance_k=0.3, hold_s=300.0, timeout_s=3600.0, poll_s=10.0)
    assert result.setpoint_k == pytest.approx(313.0)
    assert abs(result.last_reading_k - 317.0) <= 0.3
    assert result.waited_s >= 300.0 + 20.0 / 5.0 * 60.0 * 0.8  # the ramp alone takes 4 minutes
    assert result.reached_at >= start and clock.now() - start == pytest.approx(result.waited_s)
    assert abs(sim.model.true_sensor_k() - 313.0) < 0.3
    ok, reading_k = vt.in_band(317.0, 0.3)
    assert ok and abs(reading_k - 317.0) <= 0.3
    assert vt.in_band(330.0, 0.3)[0] is False


def test_stuck_heater_times_out_cleanly(bench):
    clock, sim, vt = bench
    sim.inject("stuck_heater")
    vt.set_sample_temperature_k(337.0)
    with pytest.raises(VtStabilityTimeout) as err:
        vt.wait_stable(337.0, tolerance_k=0.5, hold_s=120.0, timeout_s=1800.0)
    message = str(err.value)
    assert "337.000" in message and "waited 1800 s" in message and "last reading 33" in message
    assert sim.model.setpoint_k == pytest.approx(333.0)  # still holding the checked set point


def test_unsafe_requests_are_refused_before_anything_is_written(bench):
    _, sim, vt = bench
    vt.identify()
    sent = list(sim.commands)
    for sample_k in (420.0, 200.0, float("nan")):
        with pytest.raises(UnsafeTemperatureRequest, match="outside the probe limits"):
            vt.set_sample_temperature_k(sample_k)
    with pytest.raises(UnsafeTemperatureRequest, match="ramp rate 12"):
        vt.set_ramp_rate_k_per_min(12.0)
    assert sim.commands == sent


def test_calibrated_sample_limit_is_checked_on_the_set_point():
    clock = VirtualClock()
    hot = MasCalibration(10_000.0, ((293.0, 290.0), (373.0, 370.0)))  # sample cooler than sensor
    with SimulatedLakeShore336(clock) as sim, clock.participant():
        vt = LakeShore336(sim.link_path, clock, LIMITS, hot, timeout_s=0.2)
        with pytest.raises(UnsafeTemperatureRequest, match="set point 402.000 K"):
            vt.set_sample_temperature_k(399.0)
        assert not any(c.startswith("SETP ") for c in sim.commands)
        vt.close()


def test_transient_faults_are_retried_and_counted_in_the_log(bench, caplog):
    _, sim, vt = bench
    caplog.set_level(logging.WARNING, logger="drivers.lakeshore")
    sim.inject("no_reply", count=1)
    first = vt.read_sensor_k()
    sim.inject("garbled", count=2)
    second = vt.read_sensor_k()
    sim.inject("sensor_dropout", count=1)
    third = vt.read_sensor_k()
    for reading in (first, second, third):
        assert 292.5 < reading < 293.5
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == vt.retry_count >= 4  # exactly 4 unless the machine is so loaded a reply is late
    assert any("no complete reply" in m for m in retries)
    assert any("invalid sensor reading" in m for m in retries)


def test_persistent_garbling_is_an_error_never_a_reading(bench):
    _, sim, vt = bench
    sim.inject("garbled")
    with pytest.raises(VtCommunicationError, match=r"Lake Shore 336 at .*KRDG\? A.*after 3 attempts"):
        vt.read_sensor_k()
    sim.inject("sensor_dropout")
    sim.clear_faults()
    assert 292.5 < vt.read_sensor_k() < 293.5


def test_sensor_dropout_during_wait_is_a_clear_error(bench):
    _, sim, vt = bench
    vt.set_sample_temperature_k(307.0)
    sim.inject("sensor_dropout")
    with pytest.raises(VtSensorError, match="invalid sensor reading"):
        vt.wait_stable(307.0, tolerance_k=0.3, hold_s=60.0, timeout_s=600.0)
    assert sim.model.setpoint_k == pytest.approx(303.0)  # the checked set point, nothing else


def test_failed_write_leaves_controller_holding_present_reading(bench, caplog):
    clock, sim, vt = bench
    vt.set_sample_temperature_k(317.0)
    clock.sleep(120.0)  # mid-ramp
    sim.inject("no_reply", count=3)  # exhausts the retries of the next query, then the link is fine
    with pytest.raises(VtCommunicationError, match=r"RAMP\? 1"):
        vt.set_sample_temperature_k(337.0)
    present_k = sim.model.true_sensor_k()
    assert sim.model.ramp_enabled is False
    assert sim.model.setpoint_k == pytest.approx(present_k, abs=0.5)
    assert 293.0 < sim.model.setpoint_k < 313.0
    assert not any(c == "SETP 1,333.000" for c in sim.commands)
    assert any("holding safe set point" in r.getMessage() for r in caplog.records)


def test_hold_safe_never_raises_on_a_dead_link(bench, caplog):
    _, sim, vt = bench
    sim.inject("no_reply")
    vt.hold_safe()
    assert any("hold_safe failed" in r.getMessage() for r in caplog.records)


def test_reconnects_after_port_vanishes_and_returns(bench, caplog):
    clock, sim, vt = bench
    caplog.set_level(logging.WARNING, logger="drivers.lakeshore")
    vt.set_sample_temperature_k(307.0)
    before = clock.now()
    sim.inject("port_vanish", duration_s=5.0)
    reading_k = vt.read_sensor_k()
    assert 292.8 < reading_k < 303.5
    assert vt.reconnect_count == 1
    assert clock.now() - before >= 5.0
    assert any("reconnected" in r.getMessage() for r in caplog.records)
    assert sim.model.setpoint_k == pytest.approx(303.0)  # the controller kept its set point
    vt.set_sample_temperature_k(309.0)
    assert sim.model.setpoint_k == pytest.approx(305.0)


def test_port_that_never_returns_is_a_bounded_clear_error(bench):
    clock, sim, vt = bench
    sim.inject("port_vanish", duration_s=1e6)
    before = clock.now()
    with pytest.raises(VtCommunicationError, match="not back after 6 reconnect attempts"):
        vt.read_sensor_k()
    assert clock.now() - before < 200.0


def test_tcp_socket_url(bench):
    clock, sim, _ = bench
    assert sim.tcp_url is not None and sim.tcp_url.startswith("socket://127.0.0.1:")
    vt = LakeShore336(sim.tcp_url, clock, LIMITS, CAL, timeout_s=0.2)
    try:
        assert vt.identify().startswith("LSCI,MODEL336")
        assert vt.set_sample_temperature_k(305.0) == pytest.approx(301.0)
        assert sim.model.setpoint_k == pytest.approx(301.0)
        assert 292.5 < vt.read_sensor_k() < 301.5
    finally:
        vt.close()
