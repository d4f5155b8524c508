"""Live progress: current step per lane, steps done of total, elapsed, and an ETA corrected by actual durations."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from drivers.clock import Clock
from protocols.plan import Plan, Step

from .journal import StepRecord


def format_duration(seconds: float) -> str:
    """'1 d 02:03:04' style, for humans."""
    seconds = int(round(max(seconds, 0.0)))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days} d {clock}" if days else clock


@dataclass
class LaneProgress:
    total: int
    done: int = 0
    failed: int = 0
    current: str = ""
    estimated_done_s: float = 0.0
    actual_done_s: float = 0.0
    remaining_estimate_s: float = 0.0
    started: dict[int, float] = field(default_factory=dict)

    def eta_s(self) -> float:
        """Remaining plan estimate scaled by how actual durations compared with estimates so far."""
        factor = self.actual_done_s / self.estimated_done_s if self.estimated_done_s > 0 else 1.0
        return self.remaining_estimate_s * factor


def eta_from_records(records: list[StepRecord]) -> dict[str, dict[str, Any]]:
    """Per-lane counts and ETA from the journal (for `exsylab status`)."""
    lanes: dict[str, LaneProgress] = {}
    for r in records:
        lane = lanes.setdefault(r.lane, LaneProgress(total=0))
        lane.total += 1
        if r.status == "done":
            lane.done += 1
            if r.started_at is not None and r.ended_at is not None and r.estimate_s > 0:
                lane.estimated_done_s += r.estimate_s
                lane.actual_done_s += r.ended_at - r.started_at
        elif r.status == "failed":
            lane.failed += 1
        elif r.status in ("pending", "running"):
            lane.remaining_estimate_s += r.estimate_s
            if r.status == "running":
                lane.current = r.label
    return {name: {"done": p.done, "total": p.total, "failed": p.failed, "current": p.current,
                   "eta_s": p.eta_s()} for name, p in lanes.items()}


class ProgressView:
    """A rich Live view fed by the runner's step callbacks."""

    def __init__(self, plan: Plan, clock: Clock, records: list[StepRecord], console: Console | None = None) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._start = clock.now()
        recorded = {r.index: r.estimate_s for r in records}  # revised estimates survive a resume
        self._estimates = {s.index: recorded.get(s.index, s.estimate_s) for s in plan.steps}
        self.lanes: dict[str, LaneProgress] = {lane: LaneProgress(total=len(steps)) for lane, steps in plan.lanes.items()}
        status = {r.index: r.status for r in records}
        for step in plan.steps:
            lane = self.lanes[step.lane]
            if status.get(step.index) in ("done", "skipped"):
                lane.done += 1
            else:
                lane.remaining_estimate_s += self._estimates[step.index]
        self._notes: dict[int, str] = {}  # step index -> its latest live account (an adaptive run's progress)
        self._console = console or Console(stderr=True)
        self._live: Live | None = None

    def on_step(self, step: Step, status: str) -> None:
        with self._lock:
            lane = self.lanes[step.lane]
            now = self._clock.now()
            if status == "running":
                lane.current = step.label
                lane.started[step.index] = now
            else:
                lane.remaining_estimate_s -= self._estimates[step.index]
                started = lane.started.pop(step.index, now)
                if status == "done":
                    lane.done += 1
                    lane.estimated_done_s += self._estimates[step.index]
                    lane.actual_done_s += now - started
                elif status == "skipped":  # a loop ended early: its remaining steps are not run
                    lane.done += 1
                else:
                    lane.failed += 1
                lane.current = ""
        if self._live is None and not self._console.is_terminal:
            self._console.print(f"[{format_duration(now - self._start)}] {status:7s} {step.label}", highlight=False)

    def on_estimate(self, step: Step, estimate_s: float) -> None:
        """A pending step's estimate was revised (its D1 is now known): the lane's remaining time follows."""
        with self._lock:
            self.lanes[step.lane].remaining_estimate_s += estimate_s - self._estimates[step.index]
            self._estimates[step.index] = estimate_s

    def on_note(self, index: int, status: str, detail: dict[str, Any]) -> None:
        """A step's journal note: an adaptive run's progress (stderrs against the target, ETA) is shown live."""
        if status != "adaptive_progress":
            return
        from .adaptive_events import progress_text

        text = progress_text(detail)
        with self._lock:
            self._notes[index] = text
        if self._live is None and not self._console.is_terminal:
            self._console.print(f"[{format_duration(self._clock.now() - self._start)}] {text}", highlight=False)

    def __rich__(self) -> Group:
        table = Table(title="exsylab run", expand=False)
        for column in ("lane", "done", "current step", "elapsed", "ETA"):
            table.add_column(column)
        with self._lock:
            elapsed = self._clock.now() - self._start
            for name, lane in self.lanes.items():
                table.add_row(name, f"{lane.done}/{lane.total}" + (f" ({lane.failed} failed)" if lane.failed else ""),
                              lane.current or "-", format_duration(elapsed), format_duration(lane.eta_s()))
            notes = list(self._notes.values())
        return Group(table, *notes)

    def __enter__(self) -> "ProgressView":
        if self._console.is_terminal:
            self._live = Live(self, console=self._console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None
