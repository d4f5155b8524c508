"""The cycler lane for instrument-run programs (Neware BTS, Maccor): compile, start once, supervise, collect.

The cell's plan steps become one ChannelProgram; the first step starts it, and each plan step is
done when the instrument's step counter moves past it. Every record goes to the cell's BDF file
as it arrives (record k of the job is row k, so a resume backfills from the row count and writes
each record exactly once), each is checked against the safety limits again (a breach stops the
job), and each vendor step transition is journalled with how the step ended. Resume never starts
the program again: it finds the job by its label and goes on watching it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from drivers.cycler import CyclerSample
from drivers.errors import InstrumentError
from drivers.program_cycler import ChannelProgram, ChannelState, ProgramCycler, ProgramRecord, ProgramRefused, ProgramStep
from protocols import InputError, Plan
from protocols.errors import MISSING
from protocols.plan import CyclerStep, Step
from protocols.station import StationSpec

from .bdf import CHARGE_AH, DISCHARGE_AH, STEP_COUNT, STEP_INDEX, TEST_TIME, BdfWriter, read_bdf
from .cycler_lane import limits_of
from .instruments import UnknownDriver, entry_for, load
from .program_supervisor import ProgramSupervisor, Watch, supervisor_for
from .runner import StepContext, StepFailed, StopRequested

log = logging.getLogger(__name__)

LANE_WAIT_S = 3600.0
"""Longest a lane sleeps without news (the supervisor wakes it for records, state changes and stop)."""
CAPACITY_END_REL = 1e-3
"""A step counts as ended on capacity within 0.1 % of its target."""
VOLTAGE_END_V = 5e-3
"""... and on voltage within this distance of its cut-off (the last logged record)."""
FAILED_STATES = ("stopped", "alarm", "protection")


def program_of(steps: Sequence[CyclerStep], label: str) -> ChannelProgram:
    """The cell's plan steps as one vendor-neutral program with the protocol's limits (pure)."""
    return ChannelProgram(label=label, limits=limits_of(steps[0]), steps=tuple(
        ProgramStep(index=s.index, mode=s.mode, current_a=s.current_a, end_capacity_ah=s.end_capacity_ah,
                    end_voltage_v=s.end_voltage_v, end_time_s=s.end_time_s, sample_interval_s=s.sample_interval_s,
                    control=s.control, hold_voltage_v=s.hold_voltage_v, end_current_a=s.end_current_a,
                    end_dvdt_v_per_s=s.end_dvdt_v_per_s, ends_loop=s.loop_exit is not None)
        for s in steps))


def job_label(run_root: Path, cell: str) -> str:
    """How the job is known on the instrument: this run folder and this cell (Neware's barcode)."""
    digest = hashlib.sha1(str(run_root.resolve()).encode()).hexdigest()[:10]
    return f"exsylab-{digest}-{cell}"[:64]


def is_program_driver(driver: str) -> bool:
    """True for a cycler driver whose registry entry runs programs on the instrument (an unknown name: False,
    preflight refuses it naming the known ones)."""
    try:
        return entry_for("cycler", driver).program_check is not None
    except UnknownDriver:
        return False


def check_programs(plan: Plan, station: StationSpec, source: str | Path) -> None:
    """Refuse, before anything moves, a step a program cycler's dialect cannot express (InputError, one line)."""
    for lane, steps in plan.lanes.items():
        cycler_steps = [s for s in steps if isinstance(s, CyclerStep)]
        if not cycler_steps:
            continue
        spec = station.cyclers.get(cycler_steps[0].channel)
        if spec is None or not is_program_driver(spec.driver):
            continue
        check = entry_for("cycler", spec.driver).program_check
        assert check is not None
        try:
            load(check)(program_of(cycler_steps, "plan"))
        except ProgramRefused as exc:
            label = next((s.label for s in cycler_steps if s.index == exc.step_index), str(exc.step_index))
            raise InputError(source, f"cyclers.{cycler_steps[0].channel}.driver", spec.driver,
                             f"{label!r} (plan step {exc.step_index}) cannot run on it: {exc.reason}") from None


@dataclass
class _StepStats:
    """What the records say about one plan step so far."""

    first_time_s: float
    last: ProgramRecord
    records: int = 1


class ProgramCyclerLane:
    """Runs one cell's plan steps as a program on its channel and writes every record to the cell's BDF file."""

    def __init__(self, channel: ProgramCycler, bdf_path: Path, metadata: dict[str, Any], steps: Sequence[CyclerStep],
                 label: str, *, poll_interval_s: float, supervisor: ProgramSupervisor) -> None:
        self.channel = channel
        self.bdf_path = bdf_path
        self.steps = {s.index: s for s in steps}
        self.program = program_of(steps, label)
        self.poll_interval_s = poll_interval_s
        self.supervisor = supervisor
        self._writer = BdfWriter(bdf_path, {**metadata, "job_label": label}, append=bdf_path.exists())
        self._rows, self._bases = self._resume_point()
        self._stats: dict[int, _StepStats] = {}
        self._watch: Watch | None = None
        self._state: ChannelState | None = None
        self._ctx: StepContext | None = None

    # --- the BDF file ------------------------------------------------------------------------------

    def _resume_point(self) -> tuple[int, tuple[int, int, float, float]]:
        """(rows already in the file, (step index, step count, charge base, discharge base) of its last step)."""
        if self._writer.last_row is None:
            return 0, (-1, 0, 0.0, 0.0)
        columns = read_bdf(self.bdf_path)
        n = len(columns[TEST_TIME])
        last_index = int(columns[STEP_INDEX][-1])
        tail = n
        while tail > 0 and int(columns[STEP_INDEX][tail - 1]) == last_index:
            tail -= 1
        charge0 = float(columns[CHARGE_AH][tail - 1]) if tail else 0.0
        discharge0 = float(columns[DISCHARGE_AH][tail - 1]) if tail else 0.0
        return n, (last_index, int(columns[STEP_COUNT][-1]), charge0, discharge0)

    def _write(self, record: ProgramRecord, ctx: StepContext) -> None:
        index, count, charge0, discharge0 = self._bases
        if record.step_index != index:
            if record.step_index not in self.steps:
                raise StepFailed(f"{self.channel.channel}: record {record.record_id} is of vendor step "
                                 f"{record.vendor_step} (cycle {record.cycle}), which is no step of the plan; job left running")
            self._vendor_transition(index, record, ctx)
            charge0 += self._step_charge(index)[0]
            discharge0 += self._step_charge(index)[1]
            index, count = record.step_index, count + 1
            self._bases = (index, count, charge0, discharge0)
        sample = CyclerSample(record.test_time_s, record.unix_time_s, record.voltage_v, record.current_a)
        self._writer.write(sample, self.steps[index].cycle, count, index, charge0 + record.charge_capacity_ah,
                           discharge0 + record.discharge_capacity_ah)
        self._rows += 1
        stats = self._stats.get(index)
        if stats is None:
            self._stats[index] = _StepStats(record.test_time_s, record)
        else:
            stats.last, stats.records = record, stats.records + 1

    def _step_charge(self, index: int) -> tuple[float, float]:
        stats = self._stats.get(index)
        if stats is None:  # a step begun before a resume: its capacity is in the file's last row
            return self._writer_tail_capacity()
        return stats.last.charge_capacity_ah, stats.last.discharge_capacity_ah

    def _writer_tail_capacity(self) -> tuple[float, float]:
        last = self._writer.last_row
        _, _, charge0, discharge0 = self._bases
        if last is None:
            return 0.0, 0.0
        return last[CHARGE_AH] - charge0, last[DISCHARGE_AH] - discharge0

    def _vendor_transition(self, ended_index: int, record: ProgramRecord, ctx: StepContext) -> None:
        """Journal a vendor step change: which step ended, how, and where the job went."""
        detail: dict[str, Any] = {"vendor_step": record.vendor_step, "vendor_cycle": record.cycle,
                                  "plan_step": record.step_index, "record_id": record.record_id}
        if ended_index in self.steps:
            detail.update(ended_step=ended_index, **self._outcome(ended_index))
        ctx.journal.event(ended_index if ended_index in self.steps else record.step_index, "vendor_step",
                          at=ctx.clock.now(), detail=detail)

    def _outcome(self, index: int, ended_by: str | None = None) -> dict[str, Any]:
        step = self.steps[index]
        stats = self._stats.get(index)
        if stats is None:
            return {"ended_by": ended_by or "unknown", "samples": 0}
        last = stats.last
        capacity_ah = last.charge_capacity_ah if step.mode == "charge" else last.discharge_capacity_ah
        if ended_by is None:
            ended_by = "unknown"
            if step.end_capacity_ah is not None and abs(capacity_ah - step.end_capacity_ah) <= CAPACITY_END_REL * step.end_capacity_ah:
                ended_by = "capacity"
            elif step.end_voltage_v is not None and (
                    abs(last.voltage_v - step.end_voltage_v) <= VOLTAGE_END_V
                    or (step.mode == "charge") == (last.voltage_v > step.end_voltage_v)):
                ended_by = "voltage"
            elif step.end_time_s is not None and last.test_time_s - stats.first_time_s >= step.end_time_s - step.sample_interval_s:
                ended_by = "time"
        return {"ended_by": ended_by, "capacity_ah": capacity_ah, "duration_s": last.test_time_s - stats.first_time_s,
                "final_voltage_v": last.voltage_v, "samples": stats.records, "vendor_step": last.vendor_step,
                "vendor_cycle": last.cycle}

    def _safety(self, record: ProgramRecord) -> str:
        step = self.steps.get(record.step_index)
        if step is None:
            return ""
        if not step.voltage_min_v <= record.voltage_v <= step.voltage_max_v:
            return f"voltage {record.voltage_v:.4f} V outside {step.voltage_min_v:g}..{step.voltage_max_v:g} V"
        if abs(record.current_a) > step.current_max_a * 1.01:
            return f"current {record.current_a:.4e} A beyond the limit {step.current_max_a:g} A"
        capacity_ah = max(record.charge_capacity_ah, record.discharge_capacity_ah)
        if step.capacity_max_ah is not None and capacity_ah > step.capacity_max_ah:
            return f"step capacity {capacity_ah:.6e} Ah above the limit {step.capacity_max_ah:.6e} Ah"
        return ""

    # --- the lane --------------------------------------------------------------------------------

    def kinds(self) -> dict[str, Callable[[Any, StepContext], dict[str, Any]]]:
        return {"cycler_step": self._run}

    def execute(self, step: Step, ctx: StepContext) -> dict[str, Any]:
        return self.kinds()[step.kind](step, ctx)

    def reconcile(self, step: Step, progress: dict[str, Any], ctx: StepContext) -> str:
        """A step found running on resume is watched again (the job was never stopped): reattach, never restart."""
        return "redo"

    def _begin(self, step: CyclerStep, ctx: StepContext) -> Watch:
        """Reattach to our job if the channel runs (or ran) it, else start it if nothing of it exists yet."""
        state = self.channel.state()
        first = min(self.steps)
        if state.label == self.program.label:
            self.channel.attach(self.program)
            ctx.note("reattached", label=self.program.label, state=state.state, rows_in_file=self._rows)
            log.info("%s: reattached to job %s (%s); backfilling after record %d", self.channel.channel,
                     self.program.label, state.state, self._rows)
        elif self._rows == 0 and step.index == first:
            self.channel.start(self.program)
            ctx.note("program_started", label=self.program.label, steps=len(self.program.steps))
        else:
            raise StepFailed(f"{self.channel.channel}: job {self.program.label} is not on the channel (it shows "
                             f"{state.state}, job {state.label!r}); refusing to start the cell's program again")
        watch = Watch(self.channel, self._rows, self.poll_interval_s, ctx.clock.signal(), should_stop=ctx.should_stop)
        self.supervisor.attach(watch)
        return watch

    def _run(self, step: CyclerStep, ctx: StepContext) -> dict[str, Any]:
        self._ctx = ctx
        if ctx.should_stop():
            raise StopRequested()
        try:
            if self._watch is None:
                self._watch = self._begin(step, ctx)
            return self._supervise(step, ctx, self._watch)
        except InstrumentError as exc:
            raise StepFailed(f"{self.channel.channel}: {exc}", detail={"error_type": type(exc).__name__}) from exc
        except OSError as exc:
            raise StepFailed(f"{self.channel.channel}: cannot write the cell's data to {self.bdf_path}: {exc}; "
                             "job left running", detail={"error_type": type(exc).__name__}) from exc

    def _supervise(self, step: CyclerStep, ctx: StepContext, watch: Watch) -> dict[str, Any]:
        while True:
            records, state, error = watch.take()
            for record in records:
                self._write(record, ctx)
                breach = self._safety(record)
                if breach:
                    self._stop_job(ctx)
                    raise StepFailed(f"{self.channel.channel}: safety limit: {breach}; vendor job stopped",
                                     detail=self._outcome(record.step_index, "safety"))
            if error is not None:
                raise StepFailed(f"{self.channel.channel}: {error}; job left as it is",
                                 detail={"error_type": type(error).__name__})
            if state is not None:
                self._state = state
                if state.label != self.program.label:
                    raise StepFailed(f"{self.channel.channel}: the channel now runs job {state.label!r}, not ours")
                later = any(i > step.index for i in self._stats)
                if later or (state.state == "finished" and step.index in self._stats):
                    return self._outcome(step.index)
                if state.state == "finished":
                    raise StepFailed(f"{self.channel.channel}: the job finished before plan step {step.index} ran")
                if state.state in FAILED_STATES:
                    raise StepFailed(f"{self.channel.channel}: the cycler reports {state.state}: {state.reason}",
                                     detail=self._outcome(step.index, state.state))
            if ctx.should_stop():
                self._stop_job(ctx)
                raise StopRequested()
            ctx.clock.wait(watch.signal, LANE_WAIT_S)

    def _stop_job(self, ctx: StepContext) -> None:
        """Stop the vendor job, then write the records it logged up to the stop (nothing left behind)."""
        try:
            self.channel.stop()
        except InstrumentError as exc:
            log.error("%s: stopping the job failed: %s", self.channel.channel, exc)
        self._drain(ctx)

    def _drain(self, ctx: StepContext) -> None:
        """Write every record the job logged that the file does not hold yet."""
        for record in self.channel.records_after(self._rows):
            if record.record_id > self._rows:
                self._write(record, ctx)

    def make_safe(self) -> None:
        """Stop watching; a job of ours that still runs is stopped (a failed or stopped lane)."""
        if self._watch is not None:
            self.supervisor.detach(self._watch)
            self._watch = None
        try:
            state = self.channel.state()
        except InstrumentError as exc:
            log.error("%s: cannot read the channel to leave it safe: %s", self.channel.channel, exc)
            return
        if state.label != self.program.label or self._ctx is None:
            return
        try:
            if state.state in ("running", "paused"):
                self._stop_job(self._ctx)
            else:
                self._drain(self._ctx)
        except (StepFailed, InstrumentError, OSError) as exc:
            log.error("%s: writing the job's last records failed: %s", self.channel.channel, exc)

    def close(self) -> None:
        try:
            self._writer.close()
        except OSError as exc:
            log.error("closing the cell's data file %s failed: %s", self.bdf_path, exc)


def build_program_lane(steps: list[CyclerStep], channel: ProgramCycler, bdf: Path, metadata: dict[str, Any],
                       run_root: Path, poll_interval_s: float, clock: Any) -> ProgramCyclerLane:
    """The lane of one cell on a program cycler, polled by the run's one supervisor."""
    return ProgramCyclerLane(channel, bdf, metadata, steps, job_label(run_root, steps[0].cell),
                             poll_interval_s=poll_interval_s, supervisor=supervisor_for(clock))


def stop_orphaned_jobs(run_root: Path, plan: Plan, station: StationSpec, source: str | Path) -> list[str]:
    """`exsylab stop` with no runner alive: stop this run's vendor jobs still running; one line per channel.

    Only real addresses: a `sim://` cycler died with the runner that started it. Nothing else is
    touched; the journal notes what was stopped. Returns [] when the run has no program cycler.
    """
    from .journal import Journal
    from .run_folder import open_run_folder
    from .station_runtime import OpenContext, PreflightRefused, cycler_role, make_clock, open_station, roles_of

    cells = {s.channel: s.cell for s in plan.steps if isinstance(s, CyclerStep)
             if (spec := station.cyclers.get(s.channel)) is not None and is_program_driver(spec.driver)}
    if not cells:
        return []
    roles = [r for r in roles_of(station, [cycler_role(c) for c in cells]) if not r.simulated]
    lines = [f"{c}: simulated (sim://), it ended with the runner" for c in cells
             if station.cyclers[c].resource.startswith("sim://")]
    if roles:
        clock = make_clock(station, roles, virtual_start_s=0.0)
        try:
            runtime = open_station(station, clock, roles, OpenContext(workdir=run_root),
                                   holder=f"exsylab stop {run_root}")
        except PreflightRefused as exc:
            raise InputError(source, exc.field, exc.address, exc.reason) from None
        try:
            for role in roles:
                channel_name = role.name.split(":", 1)[1]
                label = job_label(run_root, cells[channel_name])
                channel = runtime.cyclers[channel_name]
                state = channel.state()
                if state.label == label and state.state in ("running", "paused"):
                    channel.stop()
                    lines.append(f"{channel_name}: stopped job {label}")
                else:
                    lines.append(f"{channel_name}: job {label} is not running (channel {state.state}, job "
                                 f"{state.label!r}); nothing stopped")
        finally:
            runtime.close(make_safe=False)
    journal = Journal(open_run_folder(run_root).journal)
    try:
        journal.event(None, "vendor_jobs_stopped", at=time.time(), detail={"lines": lines})
    finally:
        journal.close()
    return lines
