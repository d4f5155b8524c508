"""Instrument registries: a station entry's `driver:` name -> its driver and its simulator, one table per kind.

Each entry names two functions by "module:function", imported only when used (so the run path
never imports a simulator's POSIX-only modules on a Windows spectrometer PC):

- the driver's `open_from_station(entry, address, clock, **context) -> driver`, with the entry as a
  plain mapping of SI field names and `address` the real address to open;
- the simulator's `simulate_for_station(entry, clock, **context) -> (simulator, address)`, which
  starts the simulator for a `sim://` address and returns where its driver should connect.

Adding an instrument model is its driver file, its simulator file and one line here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Literal

Kind = Literal["vt", "spectrometer", "cycler"]


@dataclass(frozen=True)
class DriverEntry:
    """Where a driver and its simulator live ("module:function"); simulator None: simulated with its host.

    `program_check` marks a cycler that runs its own step programs (the program-cycler lane drives
    it): "module:function" taking a ChannelProgram and raising ProgramRefused, with no wire, so
    that `exsylab plan` refuses what the dialect cannot express.
    """

    driver: str
    simulator: str | None
    program_check: str | None = None


REGISTRY: dict[Kind, dict[str, DriverEntry]] = {
    "spectrometer": {
        "topspin": DriverEntry("drivers.topspin:open_from_station", "hardware_sim.topspin_sim:simulate_for_station"),
    },
    "vt": {
        "lakeshore336": DriverEntry("drivers.lakeshore:open_from_station", "hardware_sim.vt_sim:simulate_for_station"),
        "topspin": DriverEntry("drivers.vt:open_topspin_vt", None),  # the spectrometer's own VT: as real as it is
    },
    "cycler": {
        "keithley2450": DriverEntry("drivers.keithley2450:open_from_station", "hardware_sim.smu_sim:simulate_for_station"),
        "neware-bts": DriverEntry("drivers.neware_bts:open_from_station", "hardware_sim.bts_sim:simulate_for_station",
                                  program_check="drivers.neware_bts:check_program"),
        "maccor-macnet": DriverEntry("drivers.maccor_macnet:open_from_station",
                                     "hardware_sim.macnet_sim:simulate_for_station",
                                     program_check="drivers.maccor_macnet:check_program"),
    },
}


class UnknownDriver(ValueError):
    """A station entry names a driver no registry knows."""


def entry_for(kind: Kind, name: str) -> DriverEntry:
    """The registry entry of a driver name, or UnknownDriver listing the known ones."""
    table = REGISTRY[kind]
    if name not in table:
        raise UnknownDriver(f"unknown {kind} driver {name!r} (known: {', '.join(sorted(table))})")
    return table[name]


def load(target: str) -> Callable[..., Any]:
    """Import "module:function" and return the function."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
