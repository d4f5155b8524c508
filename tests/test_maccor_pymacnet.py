"""The public MacNet client (pymacnet) against our simulator, and our driver against pymacnet's MaccorSpoofer."""

from __future__ import annotations

import socket
import time
from typing import Any, Iterator

import pytest

from drivers.clock import VirtualClock
from drivers.maccor_macnet import MaccorChannel
from drivers.maccor_macnet.procedure import procedure_xml
from drivers.source_meter import CyclerCommunicationError
from hardware_sim.cell import Li2SCell
from hardware_sim.macnet_channel import STAT_ACTIVE, STAT_AVAILABLE
from hardware_sim.macnet_sim import SimulatedMaccor
from maccor_support import short_program

pymacnet = pytest.importorskip("pymacnet")
from pymacnet.maccorspoofer import MaccorSpoofer  # noqa: E402


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def sim(clock: VirtualClock) -> Iterator[SimulatedMaccor]:
    with SimulatedMaccor(clock, channels=8, cell_factory=lambda i: Li2SCell(active_mass_g=1e-5, seed=i)) as s:
        yield s


def config(sim_json_port: int, sim_binary_port: int, **extra: Any) -> dict[str, Any]:
    """A pymacnet ChannelInterface configuration, with the keys its README lists."""
    return {"server_ip": "127.0.0.1", "json_msg_port": sim_json_port, "bin_msg_port": sim_binary_port,
            "msg_buffer_size_bytes": 1024, "channel": 3, "test_name": "pymacnet-test-1", "c_rate_ah": 1,
            "v_max_v": 2.5, "v_min_v": 0.5, "v_max_safety_limit_v": 3.5, "v_min_safety_limit_v": 0.5,
            "i_max_safety_limit_a": 0.001, "i_min_safety_limit_a": 0.001, "power_safety_limit_chg_w": 0,
            "power_safety_limit_dsg_w": 0, "data_record_time_s": 1.0, "data_record_voltage_delta_vbys": 0.0,
            "data_record_current_delta_abys": 0.0, "test_procedure": "cc-cycle", **extra}


def test_pymacnet_cycler_interface_reads_our_tester(sim: SimulatedMaccor) -> None:
    cycler = pymacnet.CyclerInterface(config(sim.json_port, sim.binary_port))
    assert cycler.get_num_channels() == 8
    info = cycler.read_system_info()
    assert info["FClass"] == 1 and info["FNum"] == 1 and info["MacTest32EXEversionMajor"] == 3
    status = cycler.read_channel_status(3)  # pymacnet numbers channels from 1, the wire from 0
    assert status["Chan"] == 3 and status["Stat"] == STAT_AVAILABLE
    assert 0.0 < status["Voltage"] < 2.0  # a Li2S cell starts discharged
    assert sim.requests[-1] == (4, 7)


def test_pymacnet_all_channel_statuses_sends_channel_minus_one(sim: SimulatedMaccor) -> None:
    """pymacnet 1.1.3 subtracts 1 from the (4, 1) start channel it sets to 0: the tester refuses Chan -1."""
    cycler = pymacnet.CyclerInterface(config(sim.json_port, sim.binary_port))
    with pytest.raises(KeyError, match="result"):
        cycler.read_all_channel_statuses()


def test_pymacnet_starts_resets_and_sets_variables_on_our_tester(sim: SimulatedMaccor) -> None:
    sim.procedures["cc-cycle"] = procedure_xml(short_program())  # the lab's procedure folder holds it
    channel = pymacnet.ChannelInterface(config(sim.json_port, sim.binary_port))
    assert channel.start_test_with_procedure() is True
    chan = sim.channels[2]
    assert chan.stat == STAT_ACTIVE and chan.test is not None and chan.test.name == "pymacnet-test-1"
    assert chan.safety.v_max == pytest.approx(3.5) and chan.safety.i_charge == pytest.approx(0.001)
    assert channel.read_channel_status()["Stat"] == STAT_ACTIVE
    assert channel.set_channel_variable(var_num=2, var_value=0.25) is True and chan.variables[1] == 0.25
    assert channel.start_test_with_procedure() is False  # the channel is in use (Maccor: "Channel in use")
    assert channel.reset_channel() is True
    assert chan.stat == STAT_AVAILABLE and "pymacnet-test-1.003" in sim.archive


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def spoofer() -> Iterator[tuple[int, int]]:
    ports = (_free_port(), _free_port())
    server = MaccorSpoofer({"server_ip": "127.0.0.1", "json_port": ports[0], "tcp_port": ports[1],
                            "num_channels": 8})
    server.start()
    for _ in range(200):  # the spoofer binds in its own threads
        try:
            socket.create_connection(("127.0.0.1", ports[0]), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.01)
    yield ports
    server.stop()


def test_our_driver_against_pymacnets_spoofer(spoofer: tuple[int, int], clock: VirtualClock) -> None:
    """The spoofer answers (1, 1), (1, 2), (4, 7), (6, 5) and (6, 10) with canned replies; no (3, 1), (1, 3), (4, 6), no files."""
    json_port, binary_port = spoofer
    channel = MaccorChannel("127.0.0.1", json_port, 2, clock=clock, binary_port=binary_port, timeout_s=1.0,
                            retries=0)
    try:
        summary = channel.preflight()
        assert "8 channels" in summary and "channel 2: idle" in summary and "(3, 1) not answered" in summary
        state = channel.state()
        assert state.state == "idle" and state.label is None and state.voltage_v == pytest.approx(3.85)
        assert channel.records_after(None) == []  # an idle channel holds no job
        channel.stop()
        with pytest.raises(CyclerCommunicationError, match=r"sending run-1_cell_A.000 failed.*expected ACK"):
            channel.start(short_program())  # the spoofer's binary port only echoes: no procedure can be sent
    finally:
        channel.close()
