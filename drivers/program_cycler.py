"""Cyclers that run their own step programs (Neware BTS, Maccor): what the cycler lane supervises.

exsylab compiles a cell's steps into the vendor's program, starts it and then only watches:
the instrument, not the host, ends each step on its capacity, voltage or time. If exsylab
dies the cell keeps cycling; resume finds the job by its label, backfills the records it
missed (by record id, so each is written once) and goes on watching.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, Sequence

from drivers.cycler import CyclerLimits
from drivers.source_meter import CyclerError

ProgramMode = Literal["charge", "discharge", "rest"]
ChannelStateName = Literal["idle", "running", "paused", "finished", "stopped", "alarm", "protection"]


@dataclass(frozen=True)
class ProgramStep:
    """One step of a cell's program, vendor-neutral; `index` is the plan step it came from."""

    index: int
    mode: ProgramMode
    current_a: float
    end_capacity_ah: float | None
    end_voltage_v: float | None
    end_time_s: float | None
    sample_interval_s: float
    control: Literal["current", "voltage"] = "current"
    hold_voltage_v: float | None = None
    end_current_a: float | None = None
    end_dvdt_v_per_s: float | None = None
    ends_loop: bool = False
    """After this step a loop's end condition (CE, capacity fade, a pulse at its cut-off) is judged."""


def not_compiled_reason(step: ProgramStep) -> str | None:
    """What a step asks that exsylab does not yet compile into any vendor program (the dialects refuse it)."""
    if step.control == "voltage":
        return "a constant-voltage hold is not compiled into this vendor's program yet (it runs on a Keithley 2450)"
    if step.end_dvdt_v_per_s is not None:
        return "a rest that ends on dV/dt is not compiled into this vendor's program yet"
    if step.ends_loop:
        return "a loop end condition (CE, capacity fade, a GITT cut-off) is not compiled into this vendor's program yet"
    return None


@dataclass(frozen=True)
class ChannelProgram:
    """Everything a vendor program holds: the steps in order, the safety limits, and the job's label."""

    label: str
    """How resume recognises its own job on the channel (run id and cell)."""
    steps: tuple[ProgramStep, ...]
    limits: CyclerLimits


class ProgramRefused(CyclerError):
    """A step the dialect cannot express; `exsylab plan` shows it before anything starts."""

    def __init__(self, step_index: int, reason: str) -> None:
        super().__init__(f"step {step_index}: {reason}")
        self.step_index = step_index
        self.reason = reason


@dataclass(frozen=True)
class ChannelState:
    """What the channel reports now; `step_index` is the plan step running (mapped from the vendor's counter)."""

    state: ChannelStateName
    label: str | None
    step_index: int | None
    cycle: int | None
    voltage_v: float | None
    current_a: float | None
    reason: str = ""
    """The vendor's words for an alarm, a protection state or a stop."""


@dataclass(frozen=True)
class ProgramRecord:
    """One data point as the instrument logged it; `record_id` increases by one per point on the job."""

    record_id: int
    test_time_s: float
    unix_time_s: float
    voltage_v: float
    current_a: float
    charge_capacity_ah: float
    """Charge passed in this record's step so far (the instrument's step capacity; 0 on a discharge)."""
    discharge_capacity_ah: float
    cycle: int
    vendor_step: int
    step_index: int


class ProgramCycler(Protocol):
    """One channel of a program-running cycler, as the cycler lane uses it."""

    channel: str
    records_poll_every: int
    """Fetch records at every Nth status poll (and at every step change): 1 where records are cheap."""

    def preflight(self) -> str:
        """One line naming the instrument and channel, or raise CyclerError saying why it cannot be used."""

    def check(self, steps: Sequence[ProgramStep]) -> None:
        """Raise ProgramRefused for the first step this dialect cannot express (pure, no wire)."""

    def attach(self, program: ChannelProgram) -> None:
        """Watch this program's job, already on the channel (resume): map its counters to plan steps; starts nothing."""

    def start(self, program: ChannelProgram) -> None:
        """Compile, send and start the program on the channel (and attach to it)."""

    def state(self) -> ChannelState:
        """Poll the channel's status."""

    def records_after(self, record_id: int | None) -> list[ProgramRecord]:
        """Every record of the current job after `record_id` (None: from its first), in order."""

    def stop(self) -> None:
        """Stop the job on the channel (the cell is left at rest, output off)."""

    def close(self) -> None:
        """Release the connection; the job, if any, keeps running."""
