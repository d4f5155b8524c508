"""Hardware-in-the-loop: the real Keithley 2450 driver through pyvisa-py ('@py') against the simulator over TCP."""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from acquisition.bdf import (CHARGE_AH, CURRENT, DISCHARGE_AH, STEP_COUNT, TEST_TIME, BdfRecorder,
                             BdfWriter, read_bdf)
from analysis.cycling import LI2S_EQUILIBRIUM_V, summarize_cycling
from acquisition.cycler_lane import limits_of, spec_of
from drivers.clock import VirtualClock
from drivers.cycler import (CyclerChannel, CyclerCommunicationError, CyclerLimits, CyclerSafetyTrip, CyclerSample,
                            CyclerStepSpec, StepResult, run_steps)
from drivers.keithley2450 import Keithley2450
from hardware_sim.cell import Li2SCell
from hardware_sim.smu_sim import SimulatedKeithley2450
from protocols import CyclerStep, compile_plan, parse_protocol, simulated_station
from protocols.loader import read_yaml_mapping

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cycling-fixed-capacity.yaml"

AREA_CM2 = 0.785
SMALL_MASS_G = 1e-5  # a tiny cell: the paper's current density, steps of minutes, so 1 s sampling stays fast
CURRENT_A = 0.132e-3 * AREA_CM2
LIMITS = CyclerLimits(voltage_min_v=0.5, voltage_max_v=2.5, current_max_a=1e-3)


class Bench:
    """A simulator on a loopback port plus the real driver connected to it."""

    def __init__(self, clock: VirtualClock, mass_g: float = SMALL_MASS_G, *, timeout_s: float = 0.3, retries: int = 2):
        self.sim = SimulatedKeithley2450(clock, Li2SCell(active_mass_g=mass_g))
        self.resource = self.sim.start()
        self.smu = Keithley2450(self.resource, clock=clock, timeout_s=timeout_s, retries=retries)
        self.smu.preflight()

    def close(self) -> None:
        self.smu.close()
        self.sim.stop()


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def bench(clock: VirtualClock) -> Iterator[Bench]:
    b = Bench(clock)
    yield b
    b.close()


def capacity_ah(mah_g: float, mass_g: float = SMALL_MASS_G) -> float:
    return mah_g * mass_g * 1e-3


def example_plan_steps(*, active_mass: str, cycles: int, sample_interval: str) -> list[CyclerStep]:
    """The example protocol file, resized, compiled by the protocol compiler (the production expansion)."""
    data = read_yaml_mapping(EXAMPLE)
    data["cell"]["active_mass"] = active_mass
    data["sample_interval"] = sample_interval
    data["steps"][1]["loop"]["count"] = cycles
    plan = compile_plan([parse_protocol(data, EXAMPLE)], simulated_station())
    return [s for s in plan.steps if isinstance(s, CyclerStep)]


def test_identify_and_output_read_back(bench: Bench) -> None:
    assert "MODEL 2450" in bench.smu.identify()
    bench.smu.source_current(1e-4, voltage_max_v=2.5, voltage_min_v=0.5)
    bench.smu.output(True)
    assert bench.sim.output_on and bench.sim.source_current_a == pytest.approx(1e-4)
    assert bench.smu.safe_off() is True
    assert not bench.sim.output_on and bench.sim.source_current_a == 0.0


def test_example_fixed_capacity_protocol_hits_targets_and_bdf_agrees(bench: Bench, clock: VirtualClock,
                                                                     tmp_path: Path) -> None:
    plan_steps = example_plan_steps(active_mass="0.01 mg", cycles=3, sample_interval="1 s")
    steps = [spec_of(s) for s in plan_steps]
    channel = CyclerChannel("cell-1", bench.smu, clock, limits_of(plan_steps[0]))
    path = tmp_path / "cell-1.bdf.csv"
    with BdfWriter(path, {"active_mass_g": SMALL_MASS_G, "area_cm2": AREA_CM2}) as writer:
        recorder = BdfRecorder(writer)
        results = run_steps(channel, steps,
                            lambda k, spec: recorder.begin_step(spec.mode, 1 if spec.mode == "charge" else 2))
    assert len(results) == len(steps) == 16
    for spec, result in zip(steps, results):
        if spec.mode == "charge":
            assert result.ended_by == "capacity"
            assert spec.end_capacity_ah is not None
            assert abs(result.capacity_ah / spec.end_capacity_ah - 1) <= 1e-3
        else:
            assert result.ended_by == "voltage"
            assert abs(result.final_voltage_v - 0.8) <= 2e-3
            assert result.capacity_ah > 0.9 * (steps[0].end_capacity_ah or 0.0)

    cols = read_bdf(path)
    # the file's own current-time integral, step by step, equals the capacities it reports
    for step in np.unique(cols[STEP_COUNT]):
        sel = cols[STEP_COUNT] == step
        t, i = cols[TEST_TIME][sel], cols[CURRENT][sel]
        integral_ah = float(np.sum(0.5 * (i[1:] + i[:-1]) * np.diff(t))) / 3600.0
        column = CHARGE_AH if i.mean() > 0 else DISCHARGE_AH
        reported_ah = cols[column][sel][-1] - cols[column][sel][0]
        assert abs(integral_ah) == pytest.approx(reported_ah, rel=1e-9)
    assert np.all(np.diff(cols[CHARGE_AH]) >= 0) and np.all(np.diff(cols[DISCHARGE_AH]) >= 0)
    assert np.all(np.diff(cols[TEST_TIME]) >= 0)

    summary = summarize_cycling(path, SMALL_MASS_G, equilibrium_v=LI2S_EQUILIBRIUM_V)[0]["cycles"]
    assert [round(r["charge_mah_per_g"], 1) for r in summary] == [200.0, 300.0, 400.0, 500.0, 600.0,
                                                                 600.0, 600.0, 600.0]
    assert all(90.0 < r["coulombic_efficiency_pct"] < 100.0 for r in summary)
    assert summary[-1]["coulombic_efficiency_pct"] > summary[0]["coulombic_efficiency_pct"]
    assert all(1.6 < r["mean_charge_voltage_v"] < 1.9 and 1.3 < r["mean_discharge_voltage_v"] < 1.6
               for r in summary)
    assert all(0.05 < r["activation_overpotential_v"] < 0.15 for r in summary)  # paper: about 100 mV


def test_voltage_limit_breach_stops_the_channel_within_one_sample(bench: Bench, clock: VirtualClock) -> None:
    limits = CyclerLimits(voltage_min_v=0.5, voltage_max_v=1.9, current_max_a=1e-3)
    channel = CyclerChannel("cell-1", bench.smu, clock, limits)
    seen: list[CyclerSample] = []
    spec = CyclerStepSpec("charge", CURRENT_A, end_capacity_ah=capacity_ah(1100.0), sample_interval_s=1.0,
                          voltage_limit_v=2.5)
    with pytest.raises(CyclerSafetyTrip, match=r"cell-1.*voltage .* above the limit 1.9") as trip:
        channel.run_step(spec, lambda s, cap, t: seen.append(s))
    over = [s for s in seen if s.voltage_v > 1.9]
    assert len(over) == 1 and over[0] is seen[-1]  # the first sample beyond the limit is the last one
    assert trip.value.result.ended_by == "safety" and trip.value.result.samples == len(seen)
    assert not bench.sim.output_on and bench.sim.source_current_a == 0.0
    # nothing was sourced after the trip sample: the last READ precedes the switch-off commands
    reads = [k for k, c in enumerate(bench.sim.commands_received) if c.startswith(":READ?")]
    off = bench.sim.commands_received.index(":OUTP OFF")
    assert reads[-1] < off


def test_source_compliance_trip_is_a_safety_stop(bench: Bench, clock: VirtualClock) -> None:
    channel = CyclerChannel("cell-1", bench.smu, clock, LIMITS)
    spec = CyclerStepSpec("charge", CURRENT_A, end_capacity_ah=capacity_ah(1100.0), sample_interval_s=1.0,
                          voltage_limit_v=1.95)
    with pytest.raises(CyclerSafetyTrip, match="holding the cell at its voltage limit"):
        channel.run_step(spec)
    assert any(c.startswith(":SOUR:CURR:VLIM:TRIP?") for c in bench.sim.commands_received)
    assert not bench.sim.output_on


def test_current_and_capacity_limits_are_enforced(bench: Bench, clock: VirtualClock) -> None:
    limits = CyclerLimits(voltage_min_v=0.5, voltage_max_v=2.5, current_max_a=1e-3, capacity_max_ah=capacity_ah(50))
    channel = CyclerChannel("cell-1", bench.smu, clock, limits)
    with pytest.raises(ValueError, match="above the limit"):
        channel.run_step(CyclerStepSpec("charge", 2e-3, end_time_s=10.0))
    with pytest.raises(CyclerSafetyTrip, match="step capacity"):
        channel.run_step(CyclerStepSpec("charge", CURRENT_A, end_capacity_ah=capacity_ah(100.0), sample_interval_s=1.0))
    assert not bench.sim.output_on


def test_time_and_rest_steps_and_stop_request(bench: Bench, clock: VirtualClock) -> None:
    channel = CyclerChannel("cell-1", bench.smu, clock, LIMITS)
    charged = channel.run_step(CyclerStepSpec("charge", CURRENT_A, end_time_s=12.5, sample_interval_s=5.0))
    assert charged.ended_by == "time" and charged.duration_s == pytest.approx(12.5)
    assert charged.capacity_ah == pytest.approx(CURRENT_A * 12.5 / 3600.0, rel=1e-3)
    rest = channel.run_step(CyclerStepSpec("rest", end_time_s=30.0, sample_interval_s=10.0))
    assert rest.ended_by == "time" and rest.samples == 4 and abs(rest.capacity_ah) < 1e-12
    calls = iter(range(1000))
    stopped = channel.run_step(CyclerStepSpec("charge", CURRENT_A, end_time_s=1e4, sample_interval_s=1.0),
                               should_stop=lambda: next(calls) >= 3)
    assert stopped.ended_by == "stopped" and stopped.samples == 4
    assert not bench.sim.output_on


def test_resumed_step_continues_from_capacity_already_passed(bench: Bench, clock: VirtualClock) -> None:
    channel = CyclerChannel("cell-1", bench.smu, clock, LIMITS)
    target = capacity_ah(100.0)
    result = channel.run_step(CyclerStepSpec("charge", CURRENT_A, end_capacity_ah=target, sample_interval_s=1.0),
                              start_capacity_ah=0.75 * target)
    assert result.ended_by == "capacity" and result.capacity_ah == pytest.approx(target, rel=1e-3)
    assert result.duration_s == pytest.approx(0.25 * target / CURRENT_A * 3600.0, rel=1e-2)


def test_transient_faults_are_retried_and_counted_in_the_log(bench: Bench, clock: VirtualClock,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    channel = CyclerChannel("cell-1", bench.smu, clock, LIMITS)
    seen: list[CyclerSample] = []

    def on_sample(sample: CyclerSample, cap: float, t: float) -> None:
        seen.append(sample)
        if len(seen) == 5:
            bench.sim.inject("malformed", 2)
        if len(seen) == 10:
            bench.sim.inject("timeout", 1)
        if len(seen) == 15:
            bench.sim.inject("drop_connection", 1)

    with caplog.at_level(logging.WARNING, logger="drivers.keithley2450"):
        result = channel.run_step(CyclerStepSpec("charge", CURRENT_A, end_time_s=30.0, sample_interval_s=1.0),
                                  on_sample)
    assert result.ended_by == "time"
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == bench.smu.retry_count >= 4  # a slow box may add a genuine timeout
    assert f"retry #{bench.smu.retry_count} in total" in retries[-1]
    assert sum("malformed reply" in m for m in retries) == 2
    assert sum("VI_ERROR_TMO" in m for m in retries) >= 2  # the swallowed reply and the dropped connection
    # no malformed reply was taken as a reading
    assert all(math.isfinite(s.voltage_v) and 0.5 < s.voltage_v < 2.0 for s in seen)
    assert all(s.current_a == pytest.approx(CURRENT_A, rel=1e-3) for s in seen)


def test_unreachable_instrument_raises_and_leaves_the_channel_off(bench: Bench, clock: VirtualClock) -> None:
    channel = CyclerChannel("cell-1", bench.smu, clock, LIMITS)
    seen: list[CyclerSample] = []

    def on_sample(sample: CyclerSample, cap: float, t: float) -> None:
        seen.append(sample)
        if len(seen) == 3:  # more consecutive drops than retries: the read fails for good
            bench.sim.inject("drop_connection", bench.smu.retries + 1)

    with pytest.raises(CyclerCommunicationError, match=r"Keithley2450 TCPIP::127\.0\.0\.1::\d+::SOCKET.*READ"):
        channel.run_step(CyclerStepSpec("charge", CURRENT_A, end_time_s=60.0, sample_interval_s=1.0), on_sample)
    assert not bench.sim.output_on and bench.sim.source_current_a == 0.0  # safe_off got through afterwards


def test_lost_connection_stops_one_channel_while_another_goes_on(clock: VirtualClock, tmp_path: Path) -> None:
    benches = {"A": Bench(clock, timeout_s=0.1, retries=1), "B": Bench(clock)}
    outcome: dict[str, object] = {}
    spec = CyclerStepSpec("charge", CURRENT_A, end_capacity_ah=capacity_ah(200.0), sample_interval_s=1.0)

    def run(name: str) -> None:
        b = benches[name]
        channel = CyclerChannel(name, b.smu, clock, LIMITS)

        dropped: list[float] = []

        def on_sample(sample: CyclerSample, cap: float, t: float) -> None:
            if name == "A" and t >= 20.0 and not dropped:
                b.sim.inject("drop_connection")  # every connection dropped from now on
                dropped.append(t)
        with clock.participant():
            try:
                outcome[name] = channel.run_step(spec, on_sample)
            except Exception as exc:  # noqa: BLE001 - the outcome is what the test checks
                outcome[name] = exc

    try:
        threads = [threading.Thread(target=run, args=(n,)) for n in benches]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        assert not any(t.is_alive() for t in threads)
        assert isinstance(outcome["A"], CyclerCommunicationError)
        assert benches["A"].resource in str(outcome["A"])
        result_b = outcome["B"]
        assert isinstance(result_b, StepResult) and result_b.ended_by == "capacity"
        assert result_b.capacity_ah == pytest.approx(spec.end_capacity_ah, rel=1e-3)
        assert not benches["B"].sim.tripped
    finally:
        for b in benches.values():
            b.close()


def test_temperature_limit_and_interrupt_leave_the_channel_off(bench: Bench, clock: VirtualClock) -> None:
    temperatures = iter([300.0, 301.0, 350.0])
    limits = CyclerLimits(voltage_min_v=0.5, voltage_max_v=2.5, current_max_a=1e-3, temperature_max_k=340.0)
    channel = CyclerChannel("cell-1", bench.smu, clock, limits, temperature_k=lambda: next(temperatures))
    spec = CyclerStepSpec("charge", CURRENT_A, end_time_s=100.0, sample_interval_s=1.0)
    with pytest.raises(CyclerSafetyTrip, match="temperature 350.00 K above the limit 340.0 K") as trip:
        channel.run_step(spec)
    assert trip.value.result.samples == 3 and not bench.sim.output_on

    def interrupt(sample: CyclerSample, cap: float, t: float) -> None:
        if t >= 5.0:
            raise KeyboardInterrupt

    channel = CyclerChannel("cell-1", bench.smu, clock, LIMITS)
    with pytest.raises(KeyboardInterrupt):
        channel.run_step(spec, interrupt)
    assert not bench.sim.output_on and bench.sim.source_current_a == 0.0


EXIT_SCRIPT = """
import atexit
from drivers.clock import VirtualClock
from drivers.cycler import CyclerChannel, CyclerLimits, CyclerStepSpec
from drivers.keithley2450 import Keithley2450
from hardware_sim.cell import Li2SCell
from hardware_sim.smu_sim import SimulatedKeithley2450

clock = VirtualClock()
sim = SimulatedKeithley2450(clock, Li2SCell(active_mass_g=1e-5))
atexit.register(lambda: print("at exit: output_on=%s current=%s" % (sim.output_on, sim.source_current_a)))
smu = Keithley2450(sim.start(), clock=clock, timeout_s=0.5)
smu.preflight()
channel = CyclerChannel("cell-1", smu, clock, CyclerLimits(0.5, 2.5, 1e-3))
channel.run_step(CyclerStepSpec("charge", 1e-4, end_time_s=5.0))
smu.source_current(1e-4, voltage_max_v=2.5, voltage_min_v=0.5)  # sourcing again, then the script ends without switching off
print("before exit: output_on=%s" % sim.output_on)
"""


def test_process_exit_leaves_every_channel_off() -> None:
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", EXIT_SCRIPT], cwd=root, env={"PYTHONPATH": str(root)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "before exit: output_on=True" in done.stdout
    assert "at exit: output_on=False current=0.0" in done.stdout


def test_instrument_gone_for_good_gives_a_communication_error(bench: Bench, clock: VirtualClock) -> None:
    channel = CyclerChannel("cell-1", bench.smu, clock, LIMITS)

    def on_sample(sample: CyclerSample, cap: float, t: float) -> None:
        if t >= 3.0:
            bench.sim.stop()  # the instrument disappears: connections closed, reconnects refused

    with pytest.raises(CyclerCommunicationError, match="failed after 3 attempts"):
        channel.run_step(CyclerStepSpec("charge", CURRENT_A, end_time_s=60.0, sample_interval_s=1.0), on_sample)
