"""The Keithley 2450 as its reference manual documents it (docs/dialects/keithley2450.md), over real TCP.

Each test pins one behaviour of the dialect file: first with a plain pyvisa script (no exsylab
driver), so the simulator answers what the manual says rather than what our driver sends, then
with the driver coping.
"""

from __future__ import annotations

import socket
from typing import Any, Iterator

import pytest
import pyvisa

from drivers.clock import VirtualClock
from drivers.cycler import CyclerChannel, CyclerConfigurationError, CyclerLimits, CyclerSafetyTrip, CyclerStepSpec
from drivers.errors import InstrumentConfigurationError, InstrumentUnreachable
from drivers.keithley2450 import CyclerCommunicationError, CyclerError, CyclerUnreachable, Keithley2450
from drivers.source_meter import SourceMeter
from hardware_sim.cell import Li2SCell
from hardware_sim.smu_sim import SimulatedKeithley2450

MASS_G = 1e-5
CURRENT_A = 1e-4


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def sim(clock: VirtualClock) -> Iterator[SimulatedKeithley2450]:
    with SimulatedKeithley2450(clock, Li2SCell(active_mass_g=MASS_G)) as s:
        yield s


@pytest.fixture
def plain(sim: SimulatedKeithley2450) -> Iterator[Any]:
    """A plain pyvisa-py session, as any lab script would open it."""
    rm = pyvisa.ResourceManager("@py")
    inst: Any = rm.open_resource(f"TCPIP::127.0.0.1::{sim.port}::SOCKET", read_termination="\n", write_termination="\n",
                            timeout=1000)
    yield inst
    inst.close()


def driver(sim: SimulatedKeithley2450, clock: VirtualClock, **kwargs: object) -> Keithley2450:
    return Keithley2450(f"TCPIP::127.0.0.1::{sim.port}::SOCKET", clock=clock, timeout_s=0.5, **kwargs)  # type: ignore[arg-type]


def charge_cell(sim: SimulatedKeithley2450, clock: VirtualClock, seconds: float) -> None:
    """Bring the cell onto its plateau with the simulator's own commands (no driver)."""
    for command in (":OUTP:CURR:SMOD HIMP", ":SOUR:FUNC CURR", f":SOUR:CURR {CURRENT_A}", ":OUTP ON"):
        sim.handle(command)
    clock.advance(seconds)
    sim.handle(":OUTP OFF")
    sim.handle("*RST")  # back to the power-on settings; the cell keeps its charge


# --- power-on defaults and :READ? elements ------------------------------------------------------


def test_plain_pyvisa_sees_the_power_on_defaults(plain) -> None:
    assert plain.query("*LANG?") == "SCPI"
    assert plain.query(":SOUR:FUNC?") == "VOLT"
    assert plain.query(":SENS:FUNC?") == '"CURR:DC"'
    assert plain.query(":OUTP:CURR:SMOD?") == "NORM" and plain.query(":OUTP:VOLT:SMOD?") == "NORM"
    assert plain.query(":SENS:VOLT:RSEN?") == "0" and plain.query(":ROUT:TERM?") == "FRON"
    assert plain.query(":OUTP?") == "0"
    assert plain.query(":SYST:ERR?") == '0,"No error"'


def test_read_elements_follow_the_configured_functions(plain, sim: SimulatedKeithley2450, clock) -> None:
    charge_cell(sim, clock, 100.0)
    plain.write(":OUTP:VOLT:SMOD HIMP")
    plain.write(":OUTP ON")  # power-on functions: a 0 V source, sensing current
    source_v, reading_a = (float(x) for x in plain.query(':READ? "defbuffer1", SOUR, READ').split(","))
    # SOUR is a voltage (read back: the cell holds the terminals up), READ a current: the cell discharges
    # into the 0 V source at the default 105 uA current limit
    assert 1.0 < source_v < 2.0 and reading_a == pytest.approx(-105e-6, rel=1e-3)
    plain.write(":OUTP OFF")
    for command in (":SOUR:FUNC CURR", ":SOUR:CURR 0", ':SENS:FUNC "VOLT"', ":OUTP ON"):
        plain.write(command)
    source_a, reading_v = (float(x) for x in plain.query(':READ? "defbuffer1", SOUR, READ').split(","))
    assert source_a == 0.0 and reading_v == pytest.approx(sim.cell.terminal_voltage_v(0.0), abs=1e-3)


def test_driver_reads_only_what_it_configured(sim: SimulatedKeithley2450, clock) -> None:
    smu = driver(sim, clock)
    with pytest.raises(CyclerError, match="read before a source was configured"):
        smu.read()
    smu.preflight()
    charge_cell(sim, clock, 100.0)
    ocv_v = smu.measure_open_circuit_v(2.5)
    assert ocv_v == pytest.approx(sim.cell.terminal_voltage_v(0.0), abs=1e-3) and not sim.output_on
    smu.source_current(-CURRENT_A, voltage_max_v=2.5, voltage_min_v=0.5)  # discharge: a voltage source
    smu.output(True)
    voltage_v, current_a, _ = smu.read()
    assert sim.source_function == "VOLT" and sim.sense_function == "CURR"
    assert voltage_v > 1.0 and current_a == pytest.approx(-CURRENT_A, rel=1e-3)
    smu.close()


def test_open_circuit_read_refused_while_output_is_on(sim: SimulatedKeithley2450, clock) -> None:
    sim.handle(":OUTP ON")
    with pytest.raises(CyclerConfigurationError, match="output is ON"):
        driver(sim, clock).measure_open_circuit_v(2.5)
    assert sim.output_on  # left as found


# --- output-off state ---------------------------------------------------------------------------


def test_normal_off_state_discharges_the_cell_and_himp_does_not(sim: SimulatedKeithley2450, clock) -> None:
    charge_cell(sim, clock, 100.0)
    sim.handle(":OUTP:CURR:SMOD NORM")
    before = sim.cell.stored_mah_g
    clock.advance(60.0)
    sim.handle("*OPC?")
    drained_mah_g = before - sim.cell.stored_mah_g
    assert drained_mah_g == pytest.approx(1e-5 * 60 / 3.6 / MASS_G, rel=0.05)  # 10 % of the 100 uA range
    sim.handle(":OUTP:SMOD HIMP")
    before = sim.cell.stored_mah_g
    clock.advance(3600.0)
    sim.handle("*OPC?")
    assert sim.cell.stored_mah_g == before


def test_preflight_and_every_reconnect_reassert_himp(sim: SimulatedKeithley2450, clock) -> None:
    smu = driver(sim, clock)
    smu.preflight()
    assert sim.off_mode == {"CURR": "HIMP", "VOLT": "HIMP"}
    sim.power_cycle()  # power-on defaults: NORMAL again, connection gone
    assert sim.off_mode == {"CURR": "NORM", "VOLT": "NORM"}
    assert smu.output_is_on() is False  # the driver reconnects ...
    assert sim.off_mode == {"CURR": "HIMP", "VOLT": "HIMP"}  # ... and re-asserts HIMP before anything else
    smu.close()


def test_a_power_cycle_mid_step_is_an_error_not_a_silent_default(sim: SimulatedKeithley2450, clock) -> None:
    smu = driver(sim, clock)
    smu.preflight()
    smu.source_current(CURRENT_A, voltage_max_v=2.5, voltage_min_v=0.5)
    smu.output(True)
    sim.power_cycle()
    with pytest.raises(CyclerCommunicationError, match="lost its configuration"):
        smu.read()
    assert sim.off_mode["VOLT"] == "HIMP" and not sim.output_on
    smu.close()


# --- command set --------------------------------------------------------------------------------


def test_tsp_mode_answers_lang_only_and_preflight_refuses(clock) -> None:
    with SimulatedKeithley2450(clock, language="TSP") as sim:
        rm = pyvisa.ResourceManager("@py")
        plain: Any = rm.open_resource(f"TCPIP::127.0.0.1::{sim.port}::SOCKET", read_termination="\n",
                                 write_termination="\n", timeout=200)
        assert plain.query("*LANG?") == "TSP"
        with pytest.raises(pyvisa.errors.VisaIOError, match="VI_ERROR_TMO"):
            plain.query(":SOUR:FUNC?;*OPC?")  # every SCPI command goes unanswered
        plain.close()
        smu = driver(sim, clock)
        with pytest.raises(CyclerConfigurationError) as refused:
            smu.preflight()
        message = str(refused.value)
        assert isinstance(refused.value, InstrumentConfigurationError) and "\n" not in message
        assert sim.port and str(sim.port) in message and "command set is TSP" in message
        assert "MENU > System > Settings > Command Set" in message and "*LANG SCPI" in message
        smu.write("*LANG SCPI")
        sim.power_cycle()
        assert smu.preflight().startswith("KEITHLEY INSTRUMENTS,MODEL 2450")
        smu.close()


# --- event log ----------------------------------------------------------------------------------


def test_refused_settings_land_in_the_event_log(plain) -> None:
    plain.write(":SOUR:CURR:VLIM 500")  # beyond 210 V
    plain.write(":SOUR:FUNC WATTS")
    plain.write(":SOUR:BOGUS 1")
    assert plain.query("*OPC?") == "1"  # *OPC? only says the commands finished
    assert plain.query(":SYST:ERR?") == '-222,"Parameter data out of range"'
    assert plain.query(":SYST:ERR?") == '-224,"Illegal parameter value"'
    assert plain.query(":SYST:ERR?") == '-113,"Undefined header"'
    assert plain.query(":SYST:ERR?") == '0,"No error"'
    assert plain.query(":SOUR:CURR:VLIM?") == "+2.100000E+01"  # the refused value was not taken


def test_a_step_is_refused_with_the_instruments_text(sim: SimulatedKeithley2450, clock) -> None:
    smu = driver(sim, clock)
    smu.preflight()
    channel = CyclerChannel("cell-1", smu, clock, CyclerLimits(voltage_min_v=0.5, voltage_max_v=400.0,
                                                               current_max_a=1e-3))
    with pytest.raises(CyclerConfigurationError, match=r'refused the source setting.*-222,"Parameter data out of range"'):
        channel.run_step(CyclerStepSpec("charge", CURRENT_A, end_time_s=10.0))
    assert not sim.output_on
    smu.close()


def test_old_events_are_cleared_and_reported_by_preflight(sim: SimulatedKeithley2450, clock) -> None:
    sim.handle(":NOT:A:COMMAND")
    summary = driver(sim, clock).preflight()
    assert "1 old event(s) cleared" in summary and not sim.errors


# --- sense and terminals ------------------------------------------------------------------------


@pytest.mark.parametrize("four_wire, terminals", [(True, "rear"), (False, "front")])
def test_sense_and_terminals_from_the_station(sim: SimulatedKeithley2450, clock, four_wire: bool,
                                              terminals: str) -> None:
    summary = driver(sim, clock, four_wire=four_wire, terminals=terminals).preflight()
    assert sim.remote_sense == {"CURR": four_wire, "VOLT": four_wire}
    assert sim.terminals == {"rear": "REAR", "front": "FRON"}[terminals]
    assert ("4-wire" if four_wire else "2-wire") in summary and f"{terminals} terminals" in summary


def test_changing_terminals_with_the_output_on_turns_it_off(plain, sim: SimulatedKeithley2450) -> None:
    plain.write(":OUTP ON")
    plain.write(":ROUT:TERM REAR")
    assert plain.query(":OUTP?") == "0"


# --- lower voltage limit held by the instrument -------------------------------------------------


def test_a_dead_host_cannot_discharge_below_the_lower_limit(sim: SimulatedKeithley2450, clock) -> None:
    charge_cell(sim, clock, 100.0)
    smu = driver(sim, clock)
    smu.preflight()
    smu.source_current(-CURRENT_A, voltage_max_v=2.5, voltage_min_v=0.5)
    smu.output(True)
    smu.close()  # the host dies mid-discharge, output on
    clock.advance(86_400.0)
    sim.handle("*OPC?")
    assert sim.output_on and sim.cell.terminal_voltage_v(sim._effective_current_a) == pytest.approx(0.5, abs=1e-3)


def test_a_current_source_voltage_limit_does_not_protect_a_discharge(sim: SimulatedKeithley2450, clock) -> None:
    """Why the driver discharges with a voltage source: VLIM clamps |V| from above only (manual, current source)."""
    charge_cell(sim, clock, 100.0)
    for command in (":SOUR:FUNC CURR", f":SOUR:CURR {-CURRENT_A}", ":SOUR:CURR:VLIM 2.5", ":OUTP ON"):
        sim.handle(command)
    clock.advance(86_400.0)
    sim.handle("*OPC?")
    assert sim.cell.terminal_voltage_v(sim._effective_current_a) < 0.0  # driven far below any lower limit


def test_holding_the_lower_limit_is_a_safety_stop(sim: SimulatedKeithley2450, clock) -> None:
    charge_cell(sim, clock, 100.0)
    smu = driver(sim, clock)
    smu.preflight()
    channel = CyclerChannel("cell-1", smu, clock, CyclerLimits(voltage_min_v=0.5, voltage_max_v=2.5,
                                                               current_max_a=1e-3))
    spec = CyclerStepSpec("discharge", CURRENT_A, end_time_s=3600.0, sample_interval_s=5.0, voltage_limit_v=0.9)
    with pytest.raises(CyclerSafetyTrip, match="holding the cell at its voltage limit.*limit 0.9 V"):
        channel.run_step(spec)
    assert not sim.output_on
    smu.close()


# --- access, reachability, bounded logs ---------------------------------------------------------


def test_visa_lock_is_not_available_on_socket_resources(sim: SimulatedKeithley2450, clock) -> None:
    smu = driver(sim, clock)
    assert isinstance(smu, SourceMeter)
    assert smu.exclusive_lock is False and "no VISA lock" in smu.preflight()
    other = driver(sim, clock)  # pyvisa-py cannot refuse a second SOCKET session: the run lock file must
    assert "MODEL 2450" in other.identify()
    other.close()
    smu.close()


def test_unreachable_address_is_one_line_naming_it(clock) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    resource = f"TCPIP::127.0.0.1::{port}::SOCKET"
    with pytest.raises(CyclerUnreachable) as failed:
        Keithley2450(resource, clock=clock, timeout_s=0.5)
    assert isinstance(failed.value, InstrumentUnreachable) and resource in str(failed.value)
    assert "\n" not in str(failed.value)


def test_command_log_is_bounded(clock) -> None:
    sim = SimulatedKeithley2450(clock, command_log_size=10)
    for _ in range(50):
        sim.handle("*OPC?;:OUTP?")
    assert len(sim.commands_received) == 10 and sim.commands_received[-1] == ":OUTP?"
