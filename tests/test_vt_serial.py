"""The real Lake Shore 336 driver against the simulator over a real pty (and TCP), in virtual time.

Most tests run sim and driver with a short message gap (FAST_GAP_S) to stay quick; the tests of
documented behaviour at the end (docs/dialects/lakeshore336.md) use the simulator's defaults, the
manual's 50 ms message gap included, and some use a plain pyserial client without our driver.
"""

from __future__ import annotations

import logging
import re
import time

import pytest
import serial

from drivers.clock import VirtualClock
from drivers.lakeshore import LakeShore336
from drivers.errors import InstrumentConfigurationError, InstrumentUnreachable
from drivers.vt import (
    MasCalibration,
    UnsafeTemperatureRequest,
    VtCommunicationError,
    VtConfigurationError,
    VtHeaterError,
    VtLimits,
    VtSensorError,
    VtStabilityTimeout,
    VtUnreachable,
)
from hardware_sim.vt_sim import IN_PROCESS_COMMAND_GAP_REAL_S, SimulatedLakeShore336

FAST_GAP_S = IN_PROCESS_COMMAND_GAP_REAL_S
LIMITS = VtLimits(min_k=250.0, max_k=400.0, max_ramp_k_per_min=5.0)
CAL = MasCalibration(10_000.0, ((293.0, 297.0), (373.0, 377.0)))


@pytest.fixture
def bench():
    """A started simulator and a driver on its pty, the test thread taking part in virtual time."""
    clock = VirtualClock()
    sim = SimulatedLakeShore336(clock, seed=1, tcp_port=0, min_command_gap_real_s=FAST_GAP_S)
    path = sim.start()
    with clock.participant():
        driver = LakeShore336(path, clock, LIMITS, CAL, timeout_s=0.3, min_command_gap_real_s=FAST_GAP_S)
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
    assert sim.model.ramping() and sim.model.effective_setpoint_k() < 294.0  # SETP? reads the ramping value...
    assert vt.retry_count == 0  # ...and the write was not retried for it
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
    assert "337.000" in message and re.search(r"waited 18\d\d s", message) and "last reading 33" in message
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
    with SimulatedLakeShore336(clock, min_command_gap_real_s=FAST_GAP_S) as sim, clock.participant():
        vt = LakeShore336(sim.link_path, clock, LIMITS, hot, timeout_s=0.2, min_command_gap_real_s=FAST_GAP_S)
        with pytest.raises(UnsafeTemperatureRequest, match="set point 402.000 K"):
            vt.set_sample_temperature_k(399.0)
        assert not any(c.startswith("SETP ") for c in sim.commands)
        vt.close()


def test_transient_faults_are_retried_and_counted_in_the_log(bench, caplog):
    _, sim, vt = bench
    caplog.set_level(logging.WARNING, logger="drivers.lakeshore")
    sim.inject("no_reply", count=1)
    first = vt.read_sensor_k()
    sim.inject("garbled", count=1)
    second = vt.read_sensor_k()
    sim.inject("sensor_dropout", count=1)
    third = vt.read_sensor_k()
    for reading in (first, second, third):
        assert 292.5 < reading < 293.5
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == vt.retry_count >= 3  # exactly 3 unless the machine is so loaded a reply is late
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
    vt = LakeShore336(sim.tcp_url, clock, LIMITS, CAL, timeout_s=0.2, min_command_gap_real_s=FAST_GAP_S)
    try:
        assert vt.identify().startswith("LSCI,MODEL336")
        assert vt.set_sample_temperature_k(305.0) == pytest.approx(301.0)
        assert sim.model.setpoint_k == pytest.approx(301.0)
        assert 292.5 < vt.read_sensor_k() < 301.5
    finally:
        vt.close()


# ---- documented behaviour (docs/dialects/lakeshore336.md), simulator defaults -----------------
GAP_S = 0.25  # a plain client's pause between messages: well over the manual's 50 ms, even when the machine is loaded


def _plain(path: str) -> serial.Serial:
    """A plain pyserial client with the manual's serial settings (no exsylab code)."""
    return serial.Serial(path, baudrate=57600, bytesize=serial.SEVENBITS, parity=serial.PARITY_ODD,
                         stopbits=serial.STOPBITS_ONE, timeout=0.5)


def _ask(port: serial.Serial, query: str) -> str:
    time.sleep(GAP_S)
    port.write(query.encode() + b"\r\n")
    return port.read_until(b"\r\n").decode().strip()


def _tell(port: serial.Serial, command: str) -> None:
    time.sleep(GAP_S)
    port.write(command.encode() + b"\r\n")
    port.flush()


def test_plain_client_sees_the_ramping_set_point_until_rampst_reads_0():
    clock = VirtualClock()
    with SimulatedLakeShore336(clock) as sim, _plain(sim.link_path) as port:
        for command in ("RAMP 1,1,5.0", "RANGE 1,3", "SETP 1,313.0"):
            _tell(port, command)
        assert _ask(port, "RAMPST? 1") == "1"
        clock.advance(60.0)
        mid = float(_ask(port, "SETP? 1"))
        assert mid == pytest.approx(298.0, abs=0.1)  # 5 K/min for a minute: the present set point, not 313
        assert _ask(port, "RAMPST? 1") == "1"
        clock.advance(200.0)
        assert float(_ask(port, "SETP? 1")) == pytest.approx(313.0)
        assert _ask(port, "RAMPST? 1") == "0"
        assert sim.dropped == []


def test_plain_client_breaking_the_50_ms_rule_loses_the_second_message():
    clock = VirtualClock()
    quiet_s = 1.0  # the manual's 50 ms, stretched so that "at once" stays inside it on a loaded machine
    with SimulatedLakeShore336(clock, min_command_gap_real_s=quiet_s) as sim, _plain(sim.link_path) as port:
        time.sleep(quiet_s)
        port.write(b"KRDG? A\r\n")
        assert port.read_until(b"\r\n").endswith(b"\r\n")
        port.write(b"RDGST? A\r\n")  # at once after the reply: inside the quiet time
        port.timeout = 0.2
        assert port.read_until(b"\r\n") == b""
        assert sim.dropped == ["RDGST? A"]
        time.sleep(quiet_s)
        assert _ask(port, "RDGST? A") == "000"  # after the pause it is answered


def test_driver_paces_itself_at_the_documented_default():
    clock = VirtualClock()
    with SimulatedLakeShore336(clock) as sim, clock.participant():
        vt = LakeShore336(sim.link_path, clock, LIMITS, CAL, timeout_s=0.5)
        try:
            start = time.monotonic()
            for _ in range(5):
                vt.read_sensor_k()  # KRDG? and RDGST?: ten messages
            elapsed_s = time.monotonic() - start
        finally:
            vt.close()
    assert sim.dropped == [] and vt.retry_count == 0
    assert len(sim.commands) == 10 and elapsed_s >= 9 * 0.05


def test_a_driver_that_does_not_pace_loses_messages():
    clock = VirtualClock()
    with SimulatedLakeShore336(clock) as sim, clock.participant():
        vt = LakeShore336(sim.link_path, clock, LIMITS, timeout_s=0.1, retries=1, min_command_gap_real_s=0.0)
        try:
            with pytest.raises(VtCommunicationError, match="no complete reply"):
                for _ in range(3):
                    vt.read_sensor_k()
        finally:
            vt.close()
    assert sim.dropped


def test_preflight_checks_identity_units_output_mode_sensor_heater_and_sets_tlimit():
    clock = VirtualClock()
    with SimulatedLakeShore336(clock, seed=3) as sim, clock.participant():
        vt = LakeShore336(sim.link_path, clock, LIMITS, timeout_s=0.5)
        try:
            summary = vt.preflight()
        finally:
            vt.close()
    assert summary.startswith("LSCI,MODEL336,SIM0003,2.9; input A in kelvin; output 1 closed loop on A")
    assert "TLIMIT A 400.0 K" in summary and "\n" not in summary
    assert sim.model.temperature_limit_k == 400.0
    assert [c for c in sim.commands if c.startswith(("INTYPE", "OUTMODE", "TLIMIT", "RDGST", "HTRST"))] == [
        "INTYPE? A", "OUTMODE? 1", "TLIMIT A,400.0", "TLIMIT? A", "RDGST? A", "HTRST? 1"]
    assert not any(c.startswith(("SETP ", "RANGE ", "RAMP ")) for c in sim.commands)  # preflight moves nothing


def _refused(sim_kwargs: dict, match: str, *, set_point_error: type[Exception] = VtConfigurationError,
             then=lambda vt: vt.set_sample_temperature_k(300.0)) -> str:
    """Preflight on a misconfigured simulator: the configuration error, one line; `then` fails as well."""
    clock = VirtualClock()
    with SimulatedLakeShore336(clock, min_command_gap_real_s=FAST_GAP_S, **sim_kwargs) as sim, clock.participant():
        vt = LakeShore336(sim.link_path, clock, LIMITS, timeout_s=0.5, min_command_gap_real_s=FAST_GAP_S)
        try:
            with pytest.raises(VtConfigurationError, match=match) as err:
                vt.preflight()
            with pytest.raises(set_point_error):
                then(vt)  # nor does a set point (or a reading) bypass the check
        finally:
            vt.close()
        if set_point_error is VtConfigurationError:
            assert not any(c.startswith(("SETP ", "RANGE ")) for c in sim.commands)
    message = str(err.value)
    assert isinstance(err.value, InstrumentConfigurationError) and "\n" not in message
    assert message.startswith(f"Lake Shore 336 at {sim.link_path}: ")
    return message


def test_celsius_controller_is_refused_because_setp_would_be_celsius():
    clock = VirtualClock()
    sim = SimulatedLakeShore336(clock, units="C")
    sim.handle("SETP 1,40")
    assert sim.model.setpoint_k == pytest.approx(313.15)  # the instrument takes SETP in its preferred units
    assert float(sim.handle("SETP? 1")) == pytest.approx(40.0)
    assert float(sim.handle("KRDG? A")) - float(sim.handle("CRDG? A")) == pytest.approx(273.15, abs=0.05)
    message = _refused({"units": "C"}, "Celsius as its preferred units")
    assert "set the input's units to kelvin" in message
    _refused({"units": "S"}, "sensor units as its preferred units")


def test_output_not_in_closed_loop_on_the_control_input_is_refused_and_heats_nothing():
    clock = VirtualClock()
    sim = SimulatedLakeShore336(clock, output_mode=0)
    for line in ("RANGE 1,3", "SETP 1,330"):
        sim.handle(line)
    clock.advance(3600.0)
    assert sim.model.true_sensor_k() == pytest.approx(293.0, abs=0.01)  # RANGE has no effect with the output off
    message = _refused({"output_mode": 0}, r"output 1 is in off mode on A \(OUTMODE\? 1 -> 0,1\)")
    assert "OUTMODE 1,1,1,0" in message
    _refused({"control_input": "B"}, "closed loop PID mode on B")
    _refused({"output_mode": 3}, "open loop mode")


def test_invalid_reading_status_is_refused_and_never_taken_as_a_reading():
    _refused({"reading_status": 1}, r"invalid reading \(RDGST\? A -> 1\)", set_point_error=VtSensorError,
             then=lambda vt: vt.read_sensor_k())
    clock = VirtualClock()
    with SimulatedLakeShore336(clock, min_command_gap_real_s=FAST_GAP_S, reading_status=32) as sim, \
            clock.participant():
        assert 292.0 < float(sim.handle("KRDG? A")) < 294.0  # a plausible number ...
        vt = LakeShore336(sim.link_path, clock, LIMITS, timeout_s=0.5, min_command_gap_real_s=FAST_GAP_S)
        try:
            with pytest.raises(VtSensorError, match=r"RDGST\? A -> 032: temperature over range"):
                vt.read_sensor_k()  # ... that RDGST? says is not a reading
        finally:
            vt.close()


def test_heater_fault_is_refused_at_preflight_and_fails_a_move_clearly():
    message = _refused({"heater_fault": 1}, r"heater output 1 reports open load \(HTRST\? 1 -> 1\)",
                       set_point_error=VtHeaterError)
    assert "check the heater wiring" in message
    clock = VirtualClock()
    with SimulatedLakeShore336(clock, min_command_gap_real_s=FAST_GAP_S) as sim, clock.participant():
        vt = LakeShore336(sim.link_path, clock, LIMITS, timeout_s=0.5, min_command_gap_real_s=FAST_GAP_S)
        try:
            vt.preflight()
            sim.set_heater_fault(2)
            with pytest.raises(VtHeaterError, match="reports short"):
                vt.set_sample_temperature_k(320.0)
            assert sim.model.ramp_enabled is False  # the failed move left the controller holding
        finally:
            vt.close()


def test_tlimit_switches_the_outputs_off_when_the_host_is_gone():
    clock = VirtualClock()
    sim = SimulatedLakeShore336(clock)
    for line in ("TLIMIT A,305", "RAMP 1,0,5.0", "RANGE 1,3", "SETP 1,330"):  # a host that died after these
        sim.handle(line)
    assert float(sim.handle("TLIMIT? A")) == 305.0
    clock.advance(3600.0)
    assert sim.handle("RANGE? 1") == "0" and sim.model.limit_tripped
    assert sim.model.true_sensor_k() < 300.0  # cut above 305 K, drifting back to ambient


def test_missing_port_is_a_one_line_unreachable_error_naming_it():
    with pytest.raises(VtUnreachable) as err:
        LakeShore336("/dev/serial/by-id/no-such-lakeshore", VirtualClock(), LIMITS)
    message = str(err.value)
    assert isinstance(err.value, InstrumentUnreachable) and "\n" not in message
    assert message.startswith("Lake Shore 336 at /dev/serial/by-id/no-such-lakeshore: cannot open the port")


def test_port_is_held_exclusively(bench):
    clock, sim, vt = bench
    with pytest.raises(VtUnreachable, match="another process holds it") as err:
        LakeShore336(sim.link_path, clock, LIMITS, min_command_gap_real_s=FAST_GAP_S)
    assert "\n" not in str(err.value)
    assert vt.identify().startswith("LSCI")  # the holder is unaffected


def test_a_ramp_that_ends_elsewhere_than_commanded_is_an_error(bench):
    _, sim, vt = bench
    vt.set_sample_temperature_k(307.0)  # set point 303 K
    sim.handle("SETP 1,301")  # someone at the front panel
    with pytest.raises(VtCommunicationError, match=r"ramp ended at set point 301.000 K, not the commanded 303.000"):
        vt.wait_stable(307.0, tolerance_k=3.0, hold_s=60.0, timeout_s=3600.0)
