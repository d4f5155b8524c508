"""The Maccor MacNet driver against the MacNet simulator over real loopback sockets, in virtual time."""

from __future__ import annotations

import json
import socket
import time
import xml.etree.ElementTree as ET
from typing import Iterator

import pytest

from acquisition.instruments import REGISTRY, load
from drivers.clock import VirtualClock
from drivers.cycler import CyclerLimits
from drivers.maccor_macnet import MacNetRefused, MaccorChannel, open_from_station, parse_address
from drivers.maccor_macnet.procedure import maccor_time, procedure_xml
from drivers.maccor_macnet.wire import object_end
from drivers.program_cycler import ChannelProgram, ProgramRefused, ProgramStep
from drivers.source_meter import CyclerCommunicationError, CyclerConfigurationError, CyclerUnreachable
from hardware_sim.cell import Li2SCell
from hardware_sim.macnet_channel import ES_CAPACITY, ES_VOLTAGE, RF2_V_SAFETY
from hardware_sim.macnet_sim import SimulatedMaccor
from maccor_support import CURRENT_A, SMALL_MASS_G, example_plan_steps, program_from_plan, short_program, watch



@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def sim(clock: VirtualClock) -> Iterator[SimulatedMaccor]:
    with SimulatedMaccor(clock, channels=4, cell_factory=lambda i: Li2SCell(active_mass_g=SMALL_MASS_G, seed=i)) as s:
        yield s


def channel_of(sim: SimulatedMaccor, clock: VirtualClock, number: int = 2, **options: float) -> MaccorChannel:
    channel = MaccorChannel("127.0.0.1", sim.json_port, number, clock=clock, **options)  # type: ignore[arg-type]
    channel.preflight()
    return channel


def test_fixed_capacity_protocol_every_step_ends_on_its_capacity_or_voltage(sim: SimulatedMaccor,
                                                                            clock: VirtualClock) -> None:
    plan_steps = example_plan_steps(active_mass="0.01 mg", cycles=3, sample_interval="1 s")
    channel = channel_of(sim, clock)
    channel.start(program_from_plan(plan_steps, "run-7:Li2S-LiI-LPSC-cell1"))
    state, records = watch(channel, clock, poll_s=600.0)
    assert state.state == "finished" and state.reason == "O (normal end)"
    assert state.label == "run-7:Li2S-LiI-LPSC-cell1"
    # every record of the tester's data file exactly once, in order, as the tester wrote it
    rows = sim.channels[1].test.rows  # type: ignore[union-attr]
    assert [r.record_id for r in records] == list(range(1, len(rows) + 1))
    assert [r.voltage_v for r in records] == pytest.approx([row.voltage_v for row in rows], abs=1e-6)
    assert len(plan_steps) == 16
    for step in plan_steps:
        mine = [r for r in records if r.step_index == step.index]
        column = "charge_capacity_ah" if step.mode == "charge" else "discharge_capacity_ah"
        passed_ah = getattr(mine[-1], column) - getattr(mine[0], column)
        end_code = next(row.end_status for row in rows if row.record == mine[-1].record_id)
        if step.mode == "charge":
            assert step.end_capacity_ah is not None
            assert end_code == ES_CAPACITY
            assert abs(passed_ah / step.end_capacity_ah - 1) <= 1e-3
        else:
            assert end_code == ES_VOLTAGE
            assert abs(mine[-1].voltage_v - 0.8) <= 2e-3
            assert passed_ah > 0.9 * (plan_steps[0].end_capacity_ah or 0.0)
    assert [r.cycle for r in records if r.step_index == plan_steps[-1].index][0] == 8  # 5 activation + 3 cycles


def test_a_new_driver_reattaches_and_backfills_every_record_once(sim: SimulatedMaccor, clock: VirtualClock) -> None:
    first = channel_of(sim, clock)
    first.start(short_program())
    clock.sleep(40.0)  # into the charge (about 70 s)
    seen = first.records_after(None)
    first.close()  # exsylab dies; the tester keeps running the procedure
    clock.sleep(60.0)  # into the discharge
    again = channel_of(sim, clock)  # knows nothing: label and plan steps come from the tester's procedure
    state = again.state()
    assert state.state == "running" and state.label == "run-1:cell A" and state.step_index == 1
    final, rest = watch(again, clock, poll_s=30.0, after=seen[-1].record_id)
    ids = [r.record_id for r in seen + rest]
    assert final.state == "finished" and ids == list(range(1, len(sim.channels[1].test.rows) + 1))  # type: ignore[union-attr]
    rest_records = [r for r in rest if r.step_index == 2]  # the 60 s rest, a record every 5 s
    assert rest_records[-1].test_time_s - rest_records[0].test_time_s == pytest.approx(60.0, abs=1e-6)
    assert len(rest_records) == 13 and all(r.current_a == 0.0 for r in rest_records)


def test_stop_resets_the_channel_and_the_data_stay_readable_from_the_archive(sim: SimulatedMaccor,
                                                                             clock: VirtualClock) -> None:
    channel = channel_of(sim, clock)
    channel.start(short_program())
    clock.sleep(100.0)
    assert channel.state().state == "running"
    channel.stop()
    assert sim.channels[1].test is None and sim.channels[1].current_a() == 0.0
    assert channel.state().state == "idle"
    records = channel.records_after(None)
    assert records and records[-1].record_id == len(records)
    with pytest.raises(MacNetRefused, match="File name exists in Archive"):  # a job label runs once
        channel.start(short_program())


def test_safety_limit_puts_the_channel_into_protection(sim: SimulatedMaccor, clock: VirtualClock) -> None:
    channel = channel_of(sim, clock)
    tight = CyclerLimits(voltage_min_v=0.5, voltage_max_v=1.7, current_max_a=1e-3)
    program = ChannelProgram("run-2:cell B", (ProgramStep(0, "charge", CURRENT_A, None, 2.3, None, 1.0),), tight)
    channel.start(program)
    assert sim.channels[1].safety.v_max == pytest.approx(1.7)
    state, records = watch(channel, clock, poll_s=120.0)
    assert state.state == "protection" and state.reason == "P (V safety absolute)"
    assert sim.channels[1].rf2 == RF2_V_SAFETY and records[-1].voltage_v == pytest.approx(1.7, abs=0.05)


def test_start_refuses_a_busy_channel_without_touching_it(sim: SimulatedMaccor, clock: VirtualClock) -> None:
    channel = channel_of(sim, clock)
    channel.start(short_program())
    before = list(sim.requests)
    with pytest.raises(CyclerConfigurationError, match="channel is Active, not available"):
        channel.start(short_program("run-1:cell A again"))
    assert [r for r in sim.requests[len(before):] if r[0] == 6] == []


@pytest.mark.parametrize("step, reason", [
    (ProgramStep(4, "rest", 0.0, 1e-6, None, 60.0, 1.0), "rest cannot end on capacity"),
    (ProgramStep(4, "rest", 0.0, None, 1.0, 60.0, 1.0), "rest cannot end on voltage"),
    (ProgramStep(4, "rest", 0.0, None, None, None, 1.0), "rest needs a time end"),
    (ProgramStep(4, "charge", 0.0, 1e-6, None, None, 1.0), "current must be > 0"),
    (ProgramStep(4, "charge", 6.0, 1e-6, None, None, 1.0), "exceeds the channel's largest current range"),
    (ProgramStep(4, "discharge", 1e-4, None, None, None, 1.0), "needs a capacity, voltage or time end"),
    (ProgramStep(4, "charge", 1e-4, None, None, 0.001, 1.0), "outside Maccor's 0.01 s"),
    (ProgramStep(4, "charge", 1e-4, None, 2.0, None, 0.001), "sample interval"),
    (ProgramStep(4, "charge", float("nan"), None, 2.0, None, 1.0), "not a finite number"),
])
def test_check_refuses_what_a_maccor_procedure_cannot_express(sim: SimulatedMaccor, clock: VirtualClock,
                                                              step: ProgramStep, reason: str) -> None:
    channel = channel_of(sim, clock)  # preflight read the channel's current ranges (3, 1): 5 A at most
    requests = len(sim.requests)
    with pytest.raises(ProgramRefused, match=reason) as refused:
        channel.check([short_program().steps[0], step])
    assert refused.value.step_index == 4 and len(sim.requests) == requests  # pure: nothing on the wire


def test_a_silent_tester_times_out_in_one_line(sim: SimulatedMaccor, clock: VirtualClock) -> None:
    channel = channel_of(sim, clock, timeout_s=0.2, retries=1)
    sim.inject("mute")
    started = time.monotonic()
    with pytest.raises(CyclerCommunicationError, match=r"MacNet \(4, 7\) failed after 2 attempts: no reply within 0.2 s"):
        channel.state()
    assert time.monotonic() - started < 5.0
    sim.clear_faults()
    assert channel.state().state == "idle"  # a fresh connection after the timeout


def test_a_silent_tester_during_start_leaves_nothing_started(sim: SimulatedMaccor, clock: VirtualClock) -> None:
    channel = channel_of(sim, clock, timeout_s=0.2, retries=1)
    sim.inject("mute")
    with pytest.raises(CyclerCommunicationError, match="failed after 2 attempts"):
        channel.start(short_program())
    sim.clear_faults()
    assert sim.channels[1].test is None and channel.state().state == "idle"


def test_a_dropped_connection_is_retried_once(sim: SimulatedMaccor, clock: VirtualClock) -> None:
    channel = channel_of(sim, clock)
    sim.inject("drop", 1)
    assert channel.state().state == "idle" and channel.retry_count == 1


def test_registry_opens_channels_of_one_simulated_tester(clock: VirtualClock) -> None:
    entry = REGISTRY["cycler"]["maccor-macnet"]
    peers: dict = {}
    sims = []
    channels = []
    for name, number in (("cycler:a", 1), ("cycler:b", 3)):
        station_entry = {"driver": "maccor-macnet", "resource": "sim://maccor1", "settings": {"channel": number}}
        sim, address = load(entry.simulator or "")(station_entry, clock, cell={"active_mass_g": 1e-5}, peers=peers)
        peers[name] = sim
        sims.append(sim)
        channels.append(load(entry.driver)(station_entry, address, clock))
    try:
        assert sims[0] is sims[1]
        assert "channel 3: idle" in channels[1].preflight()
    finally:
        for channel in channels:
            channel.close()
        sims[0].stop()


@pytest.mark.parametrize("settings, message", [
    ({}, "setting channel must be"),
    ({"channel": 0}, "setting channel must be"),
    ({"channel": 1, "chanel": 2}, "unknown setting"),
    ({"channel": 1, "binary_port": "x"}, "binary_port must be a port"),
])
def test_open_from_station_refuses_bad_settings(clock: VirtualClock, settings: dict, message: str) -> None:
    with pytest.raises(CyclerConfigurationError, match=message):
        open_from_station({"settings": settings}, "127.0.0.1:57570", clock)


def test_address_parsing() -> None:
    assert parse_address("tester.lab:57571") == ("tester.lab", 57571)
    assert parse_address("10.0.0.5") == ("10.0.0.5", 57570)
    for bad in ("host:", ":57570", "host:70000", "host:port"):
        with pytest.raises(ValueError, match="must be host:port"):
            parse_address(bad)


def test_json_framing_splits_a_stream_of_bare_objects() -> None:
    stream = b' {"a": "}{\\"", "b": {"c": 1}}{"d": 2}\r\n'
    end = object_end(stream)
    assert end is not None and stream[:end].strip() == b'{"a": "}{\\"", "b": {"c": 1}}'
    assert object_end(stream[:end - 1]) is None
    with pytest.raises(ValueError):
        object_end(b"[1, 2]")


def test_capacity_limit_is_held_by_the_tester(sim: SimulatedMaccor, clock: VirtualClock) -> None:
    channel = channel_of(sim, clock)
    limits = CyclerLimits(voltage_min_v=0.5, voltage_max_v=3.5, current_max_a=1e-3, capacity_max_ah=1e-6)
    program = ChannelProgram("run-3:cell C", (ProgramStep(0, "charge", CURRENT_A, None, 2.3, None, 1.0),), limits)
    channel.start(program)
    state, records = watch(channel, clock, poll_s=60.0)
    assert state.state == "protection" and state.reason == "Safety Capacity"
    assert records[-1].charge_capacity_ah == pytest.approx(1e-6, rel=1e-6)


def test_a_capacity_end_at_or_above_the_capacity_limit_is_refused(sim: SimulatedMaccor, clock: VirtualClock) -> None:
    channel = channel_of(sim, clock)
    limits = CyclerLimits(voltage_min_v=0.5, voltage_max_v=3.5, current_max_a=1e-3, capacity_max_ah=1e-6)
    program = ChannelProgram("run-4:cell D", (ProgramStep(3, "charge", CURRENT_A, 2e-6, None, None, 1.0),), limits)
    with pytest.raises(ProgramRefused, match="not below the capacity limit") as refused:
        channel.start(program)
    assert refused.value.step_index == 3 and sim.channels[1].test is None and not sim.procedures


def test_a_fault_on_one_channel_stops_that_channel_only(sim: SimulatedMaccor, clock: VirtualClock) -> None:
    healthy, faulty = channel_of(sim, clock, 1), channel_of(sim, clock, 4)
    healthy.start(short_program("run-5:cell E"))
    tight = CyclerLimits(voltage_min_v=0.5, voltage_max_v=1.7, current_max_a=1e-3)
    faulty.start(ChannelProgram("run-5:cell F", (ProgramStep(0, "charge", CURRENT_A, None, 2.3, None, 1.0),), tight))
    clock.sleep(900.0)
    assert faulty.state().state == "protection"
    assert healthy.state().state == "finished" and healthy.state().reason == "O (normal end)"
    assert sim.channels[1].test is None and sim.channels[2].test is None  # the channels between are untouched


def test_the_procedure_file_has_maccors_layout() -> None:
    xml = procedure_xml(short_program()).decode()
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<?maccor-application progid="Maccor Procedure File"?>')
    root = ET.fromstring(xml)
    assert [s.findtext("StepType") for s in root.iter("TestStep")] == [" Charge ", "Dischrge", "  Rest  ", "  End   "]
    charge = next(root.iter("TestStep"))
    ends = [(e.findtext("EndType"), e.findtext("Oper"), e.findtext("Step"), e.findtext("Value"))
            for e in charge.iter("EndEntry")]
    assert ends == [(" Amp-hr ", ">= ", "002", "2e-06"), ("Voltage ", ">= ", "002", "2.3")]
    assert charge.findtext("StepMode") == "Current " and charge.findtext("StepNote") == "exsylab step 0"
    assert charge.findtext("Reports/ReportEntry/Value") == "00:00:01.00"
    assert maccor_time(3600 * 25 + 61.5) == "25:01:01.50"


def _raw_json(sim: SimulatedMaccor, payload: bytes) -> dict:
    with socket.create_connection(("127.0.0.1", sim.json_port), timeout=2.0) as sock:
        sock.sendall(payload)
        reply = b""
        while not reply.endswith(b"\r\n"):
            reply += sock.recv(4096)
    return json.loads(reply)


@pytest.mark.parametrize("payload, message", [
    (b"not json at all", "Parse error"),
    (b'{"jsonrpc": "2.0", "method": "Other", "params": {"FClass": 1, "FNum": 1}, "id": 1}',
     "Method MacNet, jsonrpc 2.0 or id not found"),
    (b'{"jsonrpc": "2.0", "method": "MacNet", "params": {"FNum": 1}, "id": 1}',
     '"FClass" key does not exist or value syntax error'),
    (b'{"jsonrpc": "2.0", "method": "MacNet", "params": {"FClass": 9, "FNum": 1}, "id": 1}', "Invalid FClass"),
    (b'{"jsonrpc": "2.0", "method": "MacNet", "params": {"FClass": 4, "FNum": 99}, "id": 1}', "Invalid FNum"),
    (b'{"jsonrpc": "2.0", "method": "MacNet", "params": {"FClass": 4, "FNum": 7, "Chan": 4}, "id": 1}',
     "Illegal value"),
])
def test_the_simulator_refuses_bad_json_in_the_helps_words(sim: SimulatedMaccor, payload: bytes, message: str) -> None:
    assert _raw_json(sim, payload)["error"]["message"] == message


def test_function_class_zero_echoes(sim: SimulatedMaccor) -> None:
    message = {"jsonrpc": "2.0", "method": "MacNet", "params": {"FClass": 0, "FNum": 0, "x": [1, "}"]}, "id": 7}
    assert _raw_json(sim, json.dumps(message).encode()) == message


def test_preflight_refuses_a_channel_the_tester_does_not_have(sim: SimulatedMaccor, clock: VirtualClock) -> None:
    channel = MaccorChannel("127.0.0.1", sim.json_port, 5, clock=clock)
    with pytest.raises(CyclerConfigurationError, match="has 4 channels; check the station's channel setting"):
        channel.preflight()


def test_an_unreachable_tester_is_one_line(clock: VirtualClock) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once the probe is closed
    channel = MaccorChannel("127.0.0.1", port, 1, clock=clock, timeout_s=0.5, retries=0)
    with pytest.raises(CyclerUnreachable, match=rf"127.0.0.1:{port} channel 1: MacNet \(1, 1\) failed .*cannot connect"):
        channel.preflight()
