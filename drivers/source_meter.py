"""What a host-driven cycler needs of its instrument: the interface `drivers.cycler` is typed on.

A host-driven instrument (a source-measure unit, or a cycler in direct-control mode) sources a
current that exsylab sets and reads back voltage and current; exsylab decides when a step ends.
A second model is one new driver file that implements `SourceMeter`; nothing in
`drivers/cycler.py` changes. Errors are `drivers.errors.InstrumentError` subclasses
(`CyclerError` and its children below).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from drivers.errors import InstrumentConfigurationError, InstrumentError, InstrumentUnreachable

__all__ = [
    "CyclerCommunicationError", "CyclerConfigurationError", "CyclerError", "CyclerSafetyTrip",
    "CyclerUnreachable", "SourceMeter",
]


class CyclerError(InstrumentError):
    """Base class of every cycler failure."""


class CyclerCommunicationError(CyclerError):
    """The instrument could not be reached or answered nonsense, after retries."""


class CyclerUnreachable(CyclerCommunicationError, InstrumentUnreachable):
    """The instrument's address cannot be opened (refused connection, no such resource, locked by another session)."""


class CyclerConfigurationError(CyclerError, InstrumentConfigurationError):
    """The instrument answers but is set up so that it cannot be used, or refused a setting (its own error text)."""


class CyclerSafetyTrip(CyclerError):
    """A safety limit stopped the channel; `result` holds the step's StepResult when known."""

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


@runtime_checkable
class SourceMeter(Protocol):
    """A host-driven cycler channel: source a current, protect the cell's voltage window, measure."""

    resource: str

    @property
    def closed(self) -> bool:
        """True once close() was called."""

    def source_current(self, current_a: float, *, voltage_max_v: float, voltage_min_v: float) -> None:
        """Source `current_a` (+ = charge); the instrument itself keeps the cell inside [voltage_min_v, voltage_max_v].

        The instrument must hold the limit that protects the direction of the current even if
        the host dies: a charge never above `voltage_max_v`, a discharge never below
        `voltage_min_v`. Changing direction may switch the output off (the caller switches it on).
        """

    def source_voltage(self, voltage_v: float, *, current_limit_a: float) -> None:
        """Hold the cell at `voltage_v`, the current (either direction) limited to `current_limit_a` (a CV hold)."""

    def output(self, on: bool) -> None:
        """Switch the output on or off, confirmed by the instrument."""

    def read(self) -> tuple[float, float, float]:
        """(voltage_v, current_a, instrument_time_s) of one measurement, as configured by source_current."""

    def output_is_on(self) -> bool:
        """The output state as the instrument reports it."""

    def limit_reached(self) -> bool:
        """True when the instrument is holding the cell at the protecting voltage limit instead of the set current."""

    def safe_off(self) -> bool:
        """No current, output off (no load on the cell); never raises. True when confirmed off."""

    def identify(self) -> str:
        """The instrument's identification string."""

    def preflight(self) -> str:
        """Identify the instrument and check its configuration; a one-line summary, or a configuration error."""

    def measure_open_circuit_v(self, voltage_max_v: float) -> float:
        """The cell's open-circuit voltage, read without ever loading it (for selftest)."""

    def close(self) -> None:
        """Release the transport (the output state is left as it is)."""
