"""One simulated Maccor test channel: runs a test procedure on a Li2S cell, as MacTest32 would.

Pure state, no I/O: the MacNet server (hardware_sim/macnet_sim.py) calls `advance_to(unix_s)`
before every answer. The channel reads the procedure file the way Maccor's procedure editor
writes it (its own reader, not exsylab's writer): Charge / Dischrge at a constant current, Rest,
AdvCycle and End steps; StepTime, Amp-hr and Voltage ends that jump to their Step; a StepTime
report interval. A step ends on its capacity exactly (the crossing time is solved, not sampled),
on its time exactly, and on its voltage by bisection to within 0.1 mV. The (6, 10) safety
voltages are enforced on every integration piece: a violation ends the test in the Problem state
with RF2 253, "P (V safety absolute)"; an Amp-hr end marked ChanSafetyEnd ends it Completed with
RF2 189, "Safety Capacity". A data record is written at the start of every step, at
every report interval and at every step end (ES codes as in MacNet's RF2 list).
"""

from __future__ import annotations

import copy
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from drivers.maccor_macnet.datafile import DataRow, format_row, header_line
from hardware_sim.cell import Li2SCell

STAT_AVAILABLE, STAT_ACTIVE, STAT_SUSPENDED, STAT_COMPLETED, STAT_PROBLEM = 0, 2, 3, 4, 5
RF1_OF_KIND = {"charge": 1, "discharge": 2, "rest": 4}
RF1_PROBLEM, RF1_SUSPENDED, RF1_COMPLETE = 29, 30, 31
ES_START, ES_REPORT, ES_TIME, ES_VOLTAGE, ES_CAPACITY = 0, 1, 129, 133, 136
RF2_NONE, RF2_SUSPENDED, RF2_NORMAL_END, RF2_V_SAFETY = 128, 192, 193, 253
RF2_SAFETY_CAPACITY = 189
HOLD_CHARGE_AS_PER_G = 3.6
"""Charge per gram of active material integrated at most in one piece (1 mAh/g), as the SMU simulator does."""
MAX_PIECE_S = 60.0
VOLTAGE_TOL_V = 1e-4
STEP_KINDS = {"CHARGE": "charge", "DISCHRGE": "discharge", "REST": "rest", "ADVCYCLE": "advcycle", "END": "end"}


class ProcedureError(ValueError):
    """A procedure MacTest32 would not compile (the reason as (6, 11) reports it)."""


@dataclass(frozen=True)
class End:
    """One EndEntry: what is compared, how, the value and the 1-based step to go to."""

    kind: str  # "time", "capacity", "voltage"
    oper: str
    value: float
    goto: int
    safety: bool = False
    """ChanSafetyEnd: the end is a safety limit (the test ends with RF2 189 "Safety Capacity")."""


@dataclass(frozen=True)
class SimStep:
    """One TestStep as the channel runs it."""

    kind: str
    current_a: float = 0.0
    ends: tuple[End, ...] = ()
    report_s: float | None = None


def parse_time_s(text: str) -> float:
    """A Maccor time field (`hh:mm:ss.ss`, parts may be empty: `::.01`) in seconds."""
    parts = text.strip().split(":")
    if len(parts) != 3:
        raise ProcedureError(f"time {text!r} is not hh:mm:ss")
    hours, minutes, seconds = (float(p) if p else 0.0 for p in parts)
    return hours * 3600 + minutes * 60 + seconds


def parse_procedure(xml_bytes: bytes) -> list[SimStep]:
    """The steps of a Maccor procedure file; ProcedureError with the reason for anything it cannot run."""
    try:
        root = ET.fromstring(xml_bytes)
    except ET.ParseError as exc:
        raise ProcedureError(f"not a procedure file: {exc}") from None
    if root.tag != "MaccorTestProcedure":
        raise ProcedureError(f"root element {root.tag!r} is not MaccorTestProcedure")
    steps = []
    for number, node in enumerate(root.iter("TestStep"), start=1):
        type_text = (node.findtext("StepType") or "").strip().upper()
        kind = STEP_KINDS.get(type_text)
        if kind is None:
            raise ProcedureError(f"step {number}: step type {type_text!r} is not simulated")
        if kind in ("advcycle", "end"):
            steps.append(SimStep(kind))
            continue
        current_a = 0.0
        if kind != "rest":
            if (node.findtext("StepMode") or "").strip().upper() != "CURRENT":
                raise ProcedureError(f"step {number}: only Current mode is simulated")
            try:
                current_a = float(node.findtext("StepValue") or "")
            except ValueError:
                raise ProcedureError(f"step {number}: StepValue is not a current") from None
        ends = []
        for entry in node.iter("EndEntry"):
            end_type = (entry.findtext("EndType") or "").strip().upper()
            oper = (entry.findtext("Oper") or "").strip()
            value_text = entry.findtext("Value") or ""
            try:
                goto = int(entry.findtext("Step") or "")
                value = parse_time_s(value_text) if end_type == "STEPTIME" else float(value_text)
            except ValueError:
                raise ProcedureError(f"step {number}: end {end_type} has a bad value or step") from None
            kinds = {"STEPTIME": "time", "AMP-HR": "capacity", "VOLTAGE": "voltage"}
            if end_type not in kinds or oper not in ("=", ">=", "<="):
                raise ProcedureError(f"step {number}: end {end_type!r} {oper!r} is not simulated")
            safety = (entry.findtext("ChanSafetyEnd") or "").strip().upper() == "TRUE"
            ends.append(End(kinds[end_type], oper, value, goto, safety))
        report_s = None
        for report in node.iter("ReportEntry"):
            if (report.findtext("ReportType") or "").strip().upper() == "STEPTIME":
                report_s = parse_time_s(report.findtext("Value") or "")
        steps.append(SimStep(kind, current_a, tuple(ends), report_s))
    if not steps or steps[-1].kind != "end":
        raise ProcedureError("the procedure does not finish with an End step")
    for number, step in enumerate(steps, start=1):
        for end in step.ends:
            if not 1 <= end.goto <= len(steps):
                raise ProcedureError(f"step {number}: goto step {end.goto} does not exist")
    return steps


@dataclass
class Safety:
    """The (6, 10) limits of a channel."""

    v_max: float = 10.0
    v_min: float = 0.0
    i_charge: float = 5.0
    i_discharge: float = 5.0
    p_charge: float = 0.0
    p_discharge: float = 0.0


@dataclass
class Test:
    """The test on a channel: its names, procedure, counters and data records."""

    name: str
    procedure: str
    comment: str
    steps: list[SimStep]
    start_unix_s: float
    rows: list[DataRow] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    """The data file's lines, formatted once as each record is written."""
    step_no: int = 1
    cycle: int = 0
    test_time_s: float = 0.0
    step_time_s: float = 0.0
    step_ah: float = 0.0
    step_wh: float = 0.0
    next_report_s: float = math.inf

    def data_file(self) -> bytes:
        """The data file as the tester serves it over (1, 7)."""
        return ("\n".join([header_line(), *self.lines]) + "\n").encode("utf-8")


class SimChannel:
    """A test channel with a Li2S cell on it."""

    def __init__(self, index: int, cell: Li2SCell, now_unix_s: float) -> None:
        self.index = index
        self.cell = cell
        self.safety = Safety()
        self.stat = STAT_AVAILABLE
        self.rf1 = 0
        self.rf2 = 0
        self.test: Test | None = None
        self.variables = [0.0] * 15
        self._t = now_unix_s
        self._current_a = 0.0

    @property
    def number(self) -> int:
        """1-based channel number (the data file's extension)."""
        return self.index + 1

    # --- control ---------------------------------------------------------------------------------

    def start(self, test: Test) -> None:
        """Start `test` now (the caller checked the channel is available)."""
        self.test = test
        self.stat = STAT_ACTIVE
        self._begin_step(test, 1)

    def reset(self) -> Test | None:
        """End the test (output off) and free the channel; returns the test so its file can be archived."""
        test, self.test = self.test, None
        self.stat, self.rf1, self.rf2 = STAT_AVAILABLE, 0, 0
        self._current_a = 0.0
        return test

    def suspend(self) -> bool:
        if self.stat != STAT_ACTIVE:
            return False
        self.stat, self.rf1, self.rf2 = STAT_SUSPENDED, RF1_SUSPENDED, RF2_SUSPENDED
        self._current_a = 0.0
        return True

    def resume(self) -> bool:
        if self.stat != STAT_SUSPENDED or self.test is None:
            return False
        self.stat, self.rf2 = STAT_ACTIVE, RF2_NONE
        self._set_output(self.test.steps[self.test.step_no - 1])
        return True

    # --- readings --------------------------------------------------------------------------------

    def voltage_v(self) -> float:
        return self.cell.terminal_voltage_v(self._current_a)

    def current_a(self) -> float:
        return self._current_a

    # --- time ------------------------------------------------------------------------------------

    def advance_to(self, unix_s: float) -> None:
        """Run the channel up to `unix_s`: the cell rests or follows the procedure."""
        while self._t < unix_s:
            test = self.test
            if test is None or self.stat != STAT_ACTIVE:
                self.cell.advance(unix_s - self._t, 0.0)
                self._t = unix_s
                return
            step = test.steps[test.step_no - 1]
            if step.kind == "advcycle":
                test.cycle += 1
                self._begin_step(test, test.step_no + 1)
                continue
            if step.kind == "end":
                self.stat, self.rf1, self.rf2 = STAT_COMPLETED, RF1_COMPLETE, RF2_NORMAL_END
                self._current_a = 0.0
                continue
            self._run_piece(test, step, unix_s - self._t)

    def _signed(self, step: SimStep) -> float:
        return {"charge": step.current_a, "discharge": -step.current_a}.get(step.kind, 0.0)

    def _set_output(self, step: SimStep) -> None:
        self._current_a = self._signed(step)
        self.rf1, self.rf2 = RF1_OF_KIND.get(step.kind, 0), RF2_NONE

    def _begin_step(self, test: Test, step_no: int) -> None:
        test.step_no = step_no
        test.step_time_s = test.step_ah = test.step_wh = 0.0
        step = test.steps[step_no - 1]
        test.next_report_s = step.report_s if step.report_s else math.inf
        if step.kind in RF1_OF_KIND:
            self._set_output(step)
            self._record(test, ES_START)

    def _record(self, test: Test, end_status: int) -> None:
        voltage_v, current_a = self.cell.measured(self._current_a)
        state = "C" if self._current_a > 0 else "D" if self._current_a < 0 else "R"
        row = DataRow(len(test.rows) + 1, test.cycle, test.step_no, test.test_time_s, test.step_time_s, test.step_ah,
                      test.step_wh, current_a, voltage_v, state, end_status, self._t)
        test.rows.append(row)
        test.lines.append(format_row(row))

    def _integrate(self, test: Test, dt_s: float) -> None:
        current = self._current_a
        self.cell.advance(dt_s, current)
        self._t += dt_s
        test.test_time_s += dt_s
        test.step_time_s += dt_s
        test.step_ah += abs(current) * dt_s / 3600.0
        test.step_wh += abs(current * self.cell.terminal_voltage_v(current)) * dt_s / 3600.0

    def _run_piece(self, test: Test, step: SimStep, budget_s: float) -> None:
        """Integrate up to the next event (report, end, piece size or `budget_s`) and act on it."""
        current = abs(self._current_a)
        dt = min(budget_s, test.next_report_s - test.step_time_s, MAX_PIECE_S)
        if current > 0:
            dt = min(dt, HOLD_CHARGE_AS_PER_G * self.cell.active_mass_g / current)
        for end in step.ends:
            if end.kind == "time":
                dt = min(dt, end.value - test.step_time_s)
            elif end.kind == "capacity" and current > 0:
                dt = min(dt, (end.value - test.step_ah) * 3600.0 / current)
        dt = max(dt, 0.0)
        voltage_ends = [e for e in step.ends if e.kind == "voltage"]
        before = (copy.deepcopy(self.cell), self._t, test.test_time_s, test.step_time_s, test.step_ah, test.step_wh)
        self._integrate(test, dt)
        crossed = next((e for e in voltage_ends if self._beyond(e)), None)
        if crossed is not None:
            self._bisect(test, crossed, before, dt)
        voltage = self.voltage_v()
        if voltage > self.safety.v_max or voltage < self.safety.v_min:
            self._record(test, RF2_V_SAFETY)
            self.stat, self.rf1, self.rf2 = STAT_PROBLEM, RF1_PROBLEM, RF2_V_SAFETY
            self._current_a = 0.0
            return
        if crossed is not None:
            self._end_step(test, crossed, ES_VOLTAGE)
            return
        for end in step.ends:
            if end.kind == "time" and test.step_time_s >= end.value - 1e-9:
                self._end_step(test, end, ES_TIME)
                return
            if end.kind == "capacity" and test.step_ah >= end.value * (1 - 1e-12):
                if end.safety:
                    self._record(test, RF2_SAFETY_CAPACITY)
                    self.stat, self.rf1, self.rf2 = STAT_COMPLETED, RF1_COMPLETE, RF2_SAFETY_CAPACITY
                    self._current_a = 0.0
                    return
                self._end_step(test, end, ES_CAPACITY)
                return
        if test.step_time_s >= test.next_report_s - 1e-9:
            self._record(test, ES_REPORT)
            test.next_report_s += step.report_s or math.inf

    def _beyond(self, end: End) -> bool:
        voltage = self.voltage_v()
        return voltage >= end.value if end.oper == ">=" else voltage <= end.value if end.oper == "<=" else False

    def _bisect(self, test: Test, end: End, before: tuple, dt_s: float) -> None:
        """Re-run the last piece to the time the voltage reaches `end` (within VOLTAGE_TOL_V)."""
        low, high = 0.0, dt_s
        for _ in range(60):
            mid = 0.5 * (low + high)
            self._restore(test, before)
            self._integrate(test, mid)
            if self._beyond(end):
                high = mid
            else:
                low = mid
            if abs(self.voltage_v() - end.value) <= VOLTAGE_TOL_V and self._beyond(end):
                return
        self._restore(test, before)
        self._integrate(test, high)

    def _restore(self, test: Test, before: tuple) -> None:
        cell, self._t, test.test_time_s, test.step_time_s, test.step_ah, test.step_wh = before
        self.cell = copy.deepcopy(cell)

    def _end_step(self, test: Test, end: End, end_status: int) -> None:
        self._record(test, end_status)
        self.rf2 = end_status
        self._begin_step(test, end.goto)
