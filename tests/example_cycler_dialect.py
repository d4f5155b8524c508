"""A throwaway second cycler model for tests/test_registry.py: what a new dialect adds, and nothing more.

Its "driver file" and "simulator file" in one: a 2450-compatible SMU under another name, with
the two registry functions every driver and simulator provides.
"""

from __future__ import annotations

from typing import Any, Mapping

from drivers.keithley2450 import Keithley2450
from hardware_sim.cell import Li2SCell
from hardware_sim.smu_sim import SimulatedKeithley2450


class ExampleSmu(Keithley2450):
    """A source-meter that speaks the 2450's SCPI subset."""


def open_from_station(entry: Mapping[str, Any], address: str, clock: Any, **_context: Any) -> ExampleSmu:
    return ExampleSmu(address, clock=clock)


def simulate_for_station(entry: Mapping[str, Any], clock: Any, **_context: Any) -> tuple[SimulatedKeithley2450, str]:
    sim = SimulatedKeithley2450(clock, Li2SCell(active_mass_g=1.5e-3, area_cm2=0.785))
    return sim, sim.start()
