"""Fuzzing replies that arrive over the real wire: arbitrary bytes from the simulators' raw fault.

No reply, however malformed, may crash a driver or be taken as a reading: the driver raises
its communication/sensor error after its retries, and the runner's step fails cleanly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from drivers.clock import VirtualClock
from drivers.keithley2450 import CyclerCommunicationError, Keithley2450, _parse_reading
from drivers.lakeshore import LakeShore336, parse_kelvin_reading
from drivers.vt import VtError, VtLimits
from hardware_sim.smu_sim import SimulatedKeithley2450
from hardware_sim.vt_sim import IN_PROCESS_COMMAND_GAP_REAL_S, SimulatedLakeShore336
from test_fault_matrix import EXSY, CYCLING, assert_consistent, assert_cyclers_off, events_of, run_with_fault

# near misses of real replies, and plain noise
_NEAR_MISSES = st.sampled_from([
    "+0.000", "0", "-5.000", "nan", "+inf", "1e999", "+293.15x", "293,15", "+29 3.15", "+2.9315E+02 K", "--293",
    "+1.6932E+00,+1.0E-04", "+1.6932E+00,+1.0E-04,+2.0E+00,+3", "9.91E37,+1.0E-04,+2.0E+00", ",,", "ON", "",
])
_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=40)
_REPLY = st.one_of(_NEAR_MISSES, _TEXT, st.tuples(_NEAR_MISSES, _TEXT).map("".join))
_ENDING = st.sampled_from(["\r\n", "\n", "", "\r"])


def _accepted(parse, text: str) -> bool:
    try:
        parse(text)
    except ValueError:
        return False
    return True


@pytest.fixture(scope="module")
def lakeshore():
    clock = VirtualClock()
    with SimulatedLakeShore336(clock, seed=1, min_command_gap_real_s=IN_PROCESS_COMMAND_GAP_REAL_S) as sim:
        driver = LakeShore336(sim.link_path, clock, VtLimits(173.0, 423.0, 5.0), timeout_s=0.3, retry_wait_s=0.1,  # generous: a loaded machine
                              min_command_gap_real_s=IN_PROCESS_COMMAND_GAP_REAL_S)
        try:
            yield sim, driver
        finally:
            driver.close()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reply=_REPLY, ending=_ENDING)
def test_vt_never_takes_garbage_as_a_reading(lakeshore, reply: str, ending: str) -> None:
    sim, driver = lakeshore
    first_line = reply.split("\r\n")[0]
    assume(not (ending == "\r\n" and _accepted(parse_kelvin_reading, first_line)))
    sim.inject("raw", reply=(reply + ending).encode("latin-1"))
    try:
        with pytest.raises(VtError):
            driver.read_sensor_k()
    finally:
        sim.clear_faults()
    assert 250.0 < driver.read_sensor_k() < 350.0  # the link is usable again once the garbage stops


@pytest.fixture(scope="module")
def keithley():
    clock = VirtualClock()
    with SimulatedKeithley2450(clock) as sim:
        driver = Keithley2450(f"TCPIP::127.0.0.1::{sim.port}::SOCKET", timeout_s=0.3, clock=clock)
        driver.preflight()
        driver.source_current(0.0, voltage_max_v=2.5, voltage_min_v=0.0)  # 0 A, output on: open-circuit readings
        driver.output(True)
        try:
            yield sim, driver
        finally:
            driver.close()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reply=_REPLY, ending=_ENDING)
def test_cycler_never_takes_garbage_as_a_reading(keithley, reply: str, ending: str) -> None:
    sim, driver = keithley
    first_line = reply.split("\n")[0]
    assume(not (ending in ("\n", "\r\n") and _accepted(_parse_reading, first_line.rstrip("\r"))))
    sim.inject("raw", reply=(reply + ending).encode("latin-1"))
    try:
        with pytest.raises(CyclerCommunicationError):
            driver.read()
    finally:
        sim.clear_faults()
    voltage_v, current_a, _ = driver.read()
    assert 0.0 < voltage_v < 5.0 and current_a == 0.0


def test_runner_step_fails_cleanly_on_vt_garbage(tmp_path: Path) -> None:
    def garbage(rt, runner) -> None:
        rt.vt._timeout_s = 0.1
        rt.vt._serial.timeout = 0.1
        rt.simulators["vt"].inject("raw", reply=b"+2\x00\xff93.1#5\r\n")

    out = run_with_fault(tmp_path, [EXSY, CYCLING], garbage, at=lambda s: s.kind == "wait_stable")
    assert out.result.status == "failed" and out.result.lanes["cycler:ch1"].status == "done"
    failed = [s for s in out.steps if s.status == "failed"]
    assert len(failed) == 1 and "Lake Shore" in failed[0].outcome["error"]
    assert_consistent(out)
    assert "step failed" in events_of(out)


def test_runner_step_fails_cleanly_on_cycler_garbage(tmp_path: Path) -> None:
    def garbage(rt, runner) -> None:
        rt.simulators["cycler:ch1"].inject("raw", count=8, reply=b"+1.6E+00,GARBAGE\n")

    out = run_with_fault(tmp_path, [CYCLING], garbage, at=lambda s: s.kind == "cycler_step" and s.index > 0)
    assert out.result.status == "failed"
    failed = [s for s in out.steps if s.status == "failed"]
    assert len(failed) == 1 and "malformed reply" in failed[0].outcome["error"]
    assert_consistent(out)
    assert_cyclers_off(out)
