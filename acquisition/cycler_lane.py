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
                          sample_interval_s=step.sample_interval_s)


class CyclerLane:
    """Executes one cell's steps on its channel and writes every sample to the cell's BDF file."""

    def __init__(self, channel: CyclerChannel, bdf_path: Path, metadata: dict[str, Any]) -> None:
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
        return outcome

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
