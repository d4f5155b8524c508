"""A cycler lane: one cell's constant-current steps and rests, streamed to its BDF file.

A safety trip or a lost instrument ends this lane (channel off) while the rest of the run
goes on. On resume a step that was running continues from the capacity the BDF file says
was already passed, or restarts, as the protocol says.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from drivers.cycler import CyclerChannel, CyclerError, CyclerLimits, CyclerStepSpec
from protocols.plan import CyclerStep, Step

from .bdf import CHARGE_AH, DISCHARGE_AH, STEP_INDEX, BdfRecorder, BdfWriter, read_bdf
from .runner import StepContext, StepFailed, StopRequested

log = logging.getLogger(__name__)


def limits_of(step: CyclerStep) -> CyclerLimits:
    return CyclerLimits(voltage_min_v=step.voltage_min_v, voltage_max_v=step.voltage_max_v,
                        current_max_a=step.current_max_a, capacity_max_ah=step.capacity_max_ah,
                        temperature_max_k=step.temperature_max_k)


def spec_of(step: CyclerStep) -> CyclerStepSpec:
    return CyclerStepSpec(mode=step.mode, current_a=step.current_a, end_capacity_ah=step.end_capacity_ah,
                          end_voltage_v=step.end_voltage_v, end_time_s=step.end_time_s,
                          sample_interval_s=step.sample_interval_s, control=step.control,
                          hold_voltage_v=step.hold_voltage_v, end_current_a=step.end_current_a,
                          end_dvdt_v_per_s=step.end_dvdt_v_per_s,
                          **({"dvdt_window_s": step.dvdt_window_s} if step.dvdt_window_s is not None else {}))


def loop_exit_reason(step: CyclerStep, ended_by: str, cycle_ah: Callable[[int], tuple[float, float]]) -> str:
    """Why the loop (or pulse train) this step closes ends now, or "" to go on; cycle_ah(n) = (charge, discharge) Ah."""
    rule = step.loop_exit
    if rule is None:
        return ""
    if rule.on_voltage_end and ended_by == "voltage":
        return f"pulse reached its cut-off {step.end_voltage_v:g} V"
    charge_ah, discharge_ah = cycle_ah(step.cycle)
    if rule.coulombic_efficiency_below_pct is not None and charge_ah > 0:
        ce_pct = 100.0 * discharge_ah / charge_ah
        if ce_pct < rule.coulombic_efficiency_below_pct:
            return f"cycle {step.cycle}: coulombic efficiency {ce_pct:.2f} % < {rule.coulombic_efficiency_below_pct:g} %"
    if rule.discharge_capacity_below_pct is not None and rule.reference_cycle is not None:
        reference_ah = cycle_ah(rule.reference_cycle)[1]
        if reference_ah > 0 and discharge_ah < rule.discharge_capacity_below_pct / 100.0 * reference_ah:
            return (f"cycle {step.cycle}: discharge {discharge_ah * 1e3:.4g} mAh < {rule.discharge_capacity_below_pct:g} % "
                    f"of cycle {rule.reference_cycle}'s {reference_ah * 1e3:.4g} mAh")
    return ""


class CyclerLane:
    """Executes one cell's steps on its channel and writes every sample to the cell's BDF file."""

    def __init__(self, channel: CyclerChannel, bdf_path: Path, metadata: dict[str, Any],
                 steps: list[CyclerStep] | None = None) -> None:
        """`steps`: the lane's plan steps (their modes and cycles give per-cycle capacities for loop ends)."""
        self.steps = {s.index: s for s in steps or []}
        self.channel = channel
        self.bdf_path = bdf_path
        self._writer = BdfWriter(bdf_path, metadata, append=bdf_path.exists())
        self._recorder = BdfRecorder(self._writer)
        self._continue_from_ah: dict[int, float] = {}

    def close(self) -> None:
        """Close the data file; a failing close (disk full) is logged, never raised past the run's cleanup."""
        try:
            self._writer.close()
        except OSError as exc:
            log.error("closing the cell's data file %s failed: %s", self.bdf_path, exc)

    def kinds(self) -> dict[str, Callable[[Any, StepContext], dict[str, Any]]]:
        """The step kinds this lane executes, each with its executor (the dispatch table)."""
        return {"cycler_step": self._run}

    def execute(self, step: Step, ctx: StepContext) -> dict[str, Any]:
        return self.kinds()[step.kind](step, ctx)  # the runner checked every kind of the plan before starting

    def _run(self, step: CyclerStep, ctx: StepContext) -> dict[str, Any]:
        start_capacity_ah = self._continue_from_ah.pop(step.index, 0.0)
        if ctx.should_stop():
            raise StopRequested()
        on_sample = self._recorder.begin_step(step.mode, step.index, start_capacity_ah=start_capacity_ah)
        try:
            result = self.channel.run_step(spec_of(step), on_sample, start_capacity_ah=start_capacity_ah,
                                           should_stop=ctx.should_stop)
        except CyclerError as exc:
            raise StepFailed(f"{step.channel}: {exc}; channel off", detail={"error_type": type(exc).__name__}) from exc
        except OSError as exc:  # the cell's data file cannot be written (disk full): stop, nothing unrecorded
            raise StepFailed(f"{step.channel}: cannot write the cell's data to {self.bdf_path}: {exc}; channel off",
                             detail={"error_type": type(exc).__name__}) from exc
        outcome = {"ended_by": result.ended_by, "capacity_ah": result.capacity_ah, "duration_s": result.duration_s,
                   "final_voltage_v": result.final_voltage_v, "samples": result.samples,
                   "resumed_from_ah": start_capacity_ah}
        if result.ended_by == "stopped":
            raise StopRequested()
        if result.ended_by == "safety":
            raise StepFailed(f"{step.channel}: safety limit: {result.message}; channel off", detail=outcome)
        reason = loop_exit_reason(step, result.ended_by, lambda cycle: self._cycle_ah(cycle, ctx, step, outcome))
        if reason and step.loop_exit is not None:
            ctx.skip_steps(step.loop_exit.first_index, step.loop_exit.last_index, reason)
            ctx.note("loop_exit", reason=reason, skips=[step.loop_exit.first_index, step.loop_exit.last_index])
            log.info("%s: %s; steps %d-%d skipped", step.channel, reason, step.loop_exit.first_index,
                     step.loop_exit.last_index)
        return outcome

    def _cycle_ah(self, cycle: int, ctx: StepContext, current: CyclerStep,
                  outcome: dict[str, Any]) -> tuple[float, float]:
        """(charge, discharge) Ah a cycle passed, from the journal's done steps (and this step's outcome)."""
        outcomes = {r.index: r.outcome for r in ctx.journal.steps() if r.status == "done" and r.index in self.steps}
        outcomes[current.index] = outcome
        charge_ah = discharge_ah = 0.0
        for index, result in outcomes.items():
            step = self.steps[index]
            if step.cycle == cycle and "capacity_ah" in result:
                if step.mode == "charge":
                    charge_ah += float(result["capacity_ah"])
                elif step.mode == "discharge":
                    discharge_ah += float(result["capacity_ah"])
        return charge_ah, discharge_ah

    def reconcile(self, step: Step, progress: dict[str, Any], ctx: StepContext) -> str:
        """A step found running on resume is run again: from the capacity already passed, or afresh, by policy."""
        if isinstance(step, CyclerStep) and step.on_resume == "continue" and step.mode != "rest":
            passed_ah = self.capacity_passed_ah(step)
            self._continue_from_ah[step.index] = passed_ah
            ctx.note("resume_continue", capacity_passed_ah=passed_ah)
        return "redo"

    def capacity_passed_ah(self, step: CyclerStep) -> float:
        """Capacity this step had already passed according to the BDF file (for resume)."""
        if not self.bdf_path.exists():
            return 0.0
        columns = read_bdf(self.bdf_path)
        mine = columns[STEP_INDEX] == step.index
        if not mine.any():
            return 0.0
        values = columns[CHARGE_AH if step.mode == "charge" else DISCHARGE_AH][mine]
        return float(values[-1] - values[0])  # cumulative columns: what this step added

    def make_safe(self) -> None:
        self.channel.off()
