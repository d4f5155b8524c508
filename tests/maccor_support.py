"""Shared by the Maccor tests and bench/bench_maccor.py: the example protocol as a ChannelProgram, and a watch loop.

The cycler lane (branch neware14) owns the production mapping of plan steps to a ChannelProgram
and the supervision loop; this is the minimum the Maccor dialect is tested with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from acquisition.cycler_lane import limits_of
from drivers.cycler import CyclerLimits
from drivers.program_cycler import ChannelProgram, ChannelState, ProgramCycler, ProgramRecord, ProgramStep
from protocols import CyclerStep, compile_plan, parse_protocol, simulated_station
from protocols.loader import read_yaml_mapping

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cycling-fixed-capacity.yaml"
SMALL_MASS_G = 1e-5
"""A tiny cell: minutes-long steps at the paper's current density."""
CURRENT_A = 0.132e-3 * 0.785
LIMITS = CyclerLimits(voltage_min_v=0.5, voltage_max_v=3.5, current_max_a=1e-3)


def short_program(label: str = "run-1:cell A") -> ChannelProgram:
    """Charge 200 mAh/g (or to 2.3 V), discharge to 0.8 V, rest 60 s: about 200 s on a SMALL_MASS_G cell."""
    return ChannelProgram(label, (
        ProgramStep(0, "charge", CURRENT_A, 200 * SMALL_MASS_G * 1e-3, 2.3, None, 1.0),
        ProgramStep(1, "discharge", CURRENT_A, None, 0.8, None, 1.0),
        ProgramStep(2, "rest", 0.0, None, None, 60.0, 5.0)), LIMITS)


def example_plan_steps(*, active_mass: str | None = None, cycles: int | None = None,
                       sample_interval: str | None = None) -> list[CyclerStep]:
    """examples/cycling-fixed-capacity.yaml, optionally resized, compiled by the protocol compiler."""
    data: dict[str, Any] = read_yaml_mapping(EXAMPLE)
    if active_mass is not None:
        data["cell"]["active_mass"] = active_mass
    if sample_interval is not None:
        data["sample_interval"] = sample_interval
    if cycles is not None:
        data["steps"][1]["loop"]["count"] = cycles
    plan = compile_plan([parse_protocol(data, EXAMPLE)], simulated_station())
    return [s for s in plan.steps if isinstance(s, CyclerStep)]


def program_from_plan(steps: list[CyclerStep], label: str) -> ChannelProgram:
    """The plan's steps of one cell as a vendor-neutral ChannelProgram."""
    program_steps = tuple(ProgramStep(s.index, s.mode, s.current_a, s.end_capacity_ah, s.end_voltage_v, s.end_time_s,
                                      s.sample_interval_s) for s in steps)
    return ChannelProgram(label, program_steps, limits_of(steps[0]))


def watch(channel: ProgramCycler, clock: Any, *, poll_s: float, after: int | None = None,
          max_polls: int = 100_000) -> tuple[ChannelState, list[ProgramRecord]]:
    """Poll state and new records every `poll_s` (clock time) until the job is no longer running."""
    records: list[ProgramRecord] = []
    for _ in range(max_polls):
        clock.sleep(poll_s)
        state = channel.state()
        new = channel.records_after(records[-1].record_id if records else after)
        records += new
        if state.state not in ("running", "paused"):
            return state, records
    raise AssertionError(f"job still running after {max_polls} polls")
