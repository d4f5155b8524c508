"""The one executor: runs a plan's lanes against the station, journalling every step transition.

Each lane (the NMR line, each cycler channel) runs in its own thread, in plan order, one step
at a time; an instrument belongs to one lane. Steps already done in the journal are skipped,
so the same code starts and resumes a run.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol as TypingProtocol

from drivers.clock import Clock, RealTimer
from protocols.plan import Plan, Step

from . import run_log
from .control import Control
from .journal import Journal
from .notify import Notifier

log = logging.getLogger(__name__)

# how often a paused lane looks at the control file (real seconds: a pause is not run time)
PAUSE_POLL_REAL_S = 0.2


class StepFailed(Exception):
    """A step could not be completed; the instrument has been made safe. `lane_fatal` ends the lane."""

    def __init__(self, message: str, *, lane_fatal: bool = True, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.lane_fatal = lane_fatal
        self.detail = detail or {}


def _internal_error(lane: str, step: Step, exc: Exception) -> StepFailed:
    """An unexpected exception in a step, logged with its traceback, as a lane-fatal StepFailed."""
    log.error("lane %s: step %d raised %r\n%s", lane, step.index, exc, traceback.format_exc())
    return StepFailed(f"internal error: {type(exc).__name__}: {exc}", detail={"error_type": type(exc).__name__})


class StopRequested(Exception):
    """The user asked the run to stop; the current step was ended safely."""


class LaneExecutor(TypingProtocol):
    """What a lane needs: the step kinds it runs, run one step, reconcile a step found running on resume, make safe."""

    def kinds(self) -> dict[str, Callable[[Any, "StepContext"], dict[str, Any]]]: ...

    def execute(self, step: Step, ctx: "StepContext") -> dict[str, Any]: ...

    def reconcile(self, step: Step, outcome: dict[str, Any], ctx: "StepContext") -> str: ...

    def make_safe(self) -> None: ...


@dataclass
class StepContext:
    """What a step executor may use: the clock, the journal, and the user's wishes."""

    clock: Clock
    journal: Journal
    control: Control
    notifier: Notifier
    step_index: int = -1
    skip: tuple[int, int, str] | None = None
    on_note: Callable[[int, str, dict[str, Any]], None] | None = None  # the live view's, if any

    def should_stop(self) -> bool:
        return self.control.state() == "stop"

    def skip_steps(self, first_index: int, last_index: int, reason: str) -> None:
        """After this step, the lane skips its steps first_index..last_index (a loop whose end condition held)."""
        self.skip = (first_index, last_index, reason)

    def note(self, status: str, **detail: Any) -> None:
        """A journal event for the current step (an excursion, a retry, a partial dataset), shown live too."""
        self.journal.event(self.step_index, status, at=self.clock.now(), detail=detail)
        if self.on_note is not None:
            self.on_note(self.step_index, status, detail)

    def running(self, **detail: Any) -> None:
        """Re-commit 'running' with detail resume will need (e.g. the expno being acquired)."""
        self.journal.event(self.step_index, "progress", at=self.clock.now(), detail=detail)


@dataclass
class LaneResult:
    lane: str
    status: str  # done, failed, stopped
    message: str = ""
    steps_done: int = 0


@dataclass
class RunResult:
    """How a run ended."""

    status: str  # done, failed, stopped
    lanes: dict[str, LaneResult] = field(default_factory=dict)
    virtual_duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "done"


class Runner:
    """Executes a plan against lane executors, durably and resumably."""

    def __init__(self, plan: Plan, journal: Journal, executors: dict[str, LaneExecutor], clock: Clock,
                 control: Control, notifier: Notifier, *, on_step: Callable[[Step, str], None] | None = None,
                 on_estimate: Callable[[Step, float], None] | None = None,
                 on_note: Callable[[int, str, dict[str, Any]], None] | None = None,
                 log_tag: str | None = None, real_timer: RealTimer | None = None) -> None:
        missing = set(plan.lanes) - set(executors)
        if missing:
            raise ValueError(f"no executor for lanes {sorted(missing)}")
        for lane, steps in plan.lanes.items():
            unknown = sorted({s.kind for s in steps} - set(executors[lane].kinds()))
            if unknown:
                raise ValueError(f"lane {lane} cannot run step kinds {unknown} (it runs {sorted(executors[lane].kinds())})")
        self._log_tag = log_tag
        self._real_timer = real_timer or RealTimer()
        self.plan = plan
        self.journal = journal
        self.executors = executors
        self.clock = clock
        self.control = control
        self.notifier = notifier
        self._on_step = on_step or (lambda step, status: None)
        self._on_estimate = on_estimate or (lambda step, estimate_s: None)
        self._on_note = on_note
        self.journal.add_steps(plan.steps)

    def run(self) -> RunResult:
        """Run every lane to its end; returns when all lanes have finished, failed or stopped."""
        start = self.clock.now()
        self.journal.set_meta(state="running", started_at=start)
        results: dict[str, LaneResult] = {}
        threads = []
        for lane, steps in self.plan.lanes.items():
            thread = threading.Thread(target=self._lane_thread, args=(lane, steps, results), name=f"lane-{lane}", daemon=True)
            threads.append(thread)
        # register every lane with the clock before any starts, so virtual time waits for all of them
        barrier = threading.Barrier(len(threads) + 1) if threads else None
        self._barrier = barrier
        for thread in threads:
            thread.start()
        if barrier is not None:
            barrier.wait()
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.2)  # short joins keep the main thread responsive to Ctrl-C
        statuses = {r.status for r in results.values()}
        status = "failed" if "failed" in statuses else "stopped" if "stopped" in statuses else "done"
        result = RunResult(status=status, lanes=results, virtual_duration_s=self.clock.now() - start)
        event: dict[str, Any] = {"event": f"run {status}", "lanes": {
            k: v.status + (f": {v.message}" if v.message else "") for k, v in results.items()}}
        try:
            self.journal.set_meta(state=status, ended_at=self.clock.now())
        except (sqlite3.Error, OSError) as exc:  # disk full: the user must still hear of it
            event["journal_error"] = f"journal {self.journal.path} not writable: {exc}"
            self.notifier.notify(event)
            raise
        self.notifier.notify(event)
        return result

    def _lane_thread(self, lane: str, steps: list[Step], results: dict[str, LaneResult]) -> None:
        if self._log_tag is not None:
            run_log.register_thread(self._log_tag)
        with self.clock.participant():
            if self._barrier is not None:
                self._barrier.wait()
            try:
                results[lane] = self._run_lane(lane, steps)
            except BaseException as exc:  # a bug must not leave instruments live or the run hanging
                log.error("lane %s crashed: %s\n%s", lane, exc, traceback.format_exc())
                self._safe(lane)
                results[lane] = LaneResult(lane, "failed", f"internal error: {exc!r}")

    def _safe(self, lane: str) -> None:
        try:
            self.executors[lane].make_safe()
        except Exception as exc:  # making safe must never raise past here; it is logged
            log.error("making lane %s safe failed: %s", lane, exc)

    def _run_lane(self, lane: str, steps: list[Step]) -> LaneResult:
        executor = self.executors[lane]
        records = {r.index: r for r in self.journal.steps()}
        done = 0
        failures: list[str] = []
        # A finished step's 'done' is committed together with the next step's 'running', in one
        # transaction before the next step does anything; it is flushed alone before any wait.
        finished: list[tuple[int, str, dict[str, Any] | None]] = []

        def commit(*changes: tuple[int, str, dict[str, Any] | None]) -> None:
            self.journal.transitions([*finished, *changes], at=self.clock.now())
            finished.clear()

        skipping: tuple[int, int, str] | None = None  # a loop's end condition held: its remaining steps are skipped
        for step in steps:
            record = records.get(step.index)
            ctx = StepContext(self.clock, self.journal, self.control, self.notifier, step.index, on_note=self._on_note)
            if record is not None and (record.status == "done" or record.status == "skipped"
                                       and "loop_exit" in record.outcome):
                done += 1
                continue  # failed steps, and steps skipped after a failure, run again on resume
            if skipping is not None and skipping[0] <= step.index <= skipping[1]:
                finished.append((step.index, "skipped", {"loop_exit": skipping[2]}))
                self._on_step(step, "skipped")
                done += 1
                continue
            if record is not None and record.status == "running":
                commit()
                verdict = executor.reconcile(step, self._last_progress(step.index), ctx)
                if verdict == "done":
                    commit((step.index, "done", {"reconciled": True}))
                    done += 1
                    continue
            if self.control.state() != "run":
                commit()
                if not self._wait_while_paused(lane):
                    self._safe(lane)
                    return LaneResult(lane, "stopped", "stopped by the user", done)
            commit((step.index, "running", {"label": step.label}))
            self._on_step(step, "running")
            try:
                outcome = executor.execute(step, ctx)
            except StopRequested:
                commit((step.index, "pending", {"stopped": True}))
                self._safe(lane)
                return LaneResult(lane, "stopped", "stopped by the user", done)
            except Exception as exc:  # StepFailed, or a bug / unforeseen fault: the step fails, the lane is made safe
                failure = exc if isinstance(exc, StepFailed) else _internal_error(lane, step, exc)
                self._safe(lane)
                commit((step.index, "failed", {"error": str(failure), **failure.detail}))
                self._on_step(step, "failed")
                self.notifier.notify({"event": "step failed", "lane": lane, "step": step.index,
                                      "label": step.label, "error": str(failure)})
                if failure.lane_fatal:
                    self._skip_rest(lane, steps, step.index, f"lane stopped after step {step.index} failed")
                    return LaneResult(lane, "failed", str(failure), done)
                failures.append(f"step {step.index}: {failure}")
                continue
            except BaseException:
                commit()
                raise
            finished.append((step.index, "done", outcome))
            if ctx.skip is not None:
                skipping = ctx.skip
            self._revise_estimates(steps, step, outcome)
            self._on_step(step, "done")
            done += 1
        commit()
        self._safe(lane)
        if failures:
            return LaneResult(lane, "failed", "; ".join(failures), done)
        return LaneResult(lane, "done", "", done)

    def _revise_estimates(self, steps: list[Step], finished: Step, outcome: dict[str, Any]) -> None:
        """The lane's later steps whose estimate depends on this outcome get it revised, in the journal and the view."""
        revised = [(s, e) for s in steps if s.index > finished.index
                   and (e := s.estimate_after(finished.index, outcome)) is not None]
        if revised:
            self.journal.set_estimates([(s.index, e) for s, e in revised])
            for s, e in revised:
                self._on_estimate(s, e)

    def _skip_rest(self, lane: str, steps: list[Step], failed_index: int, reason: str) -> None:
        self.journal.transitions([(s.index, "skipped", {"reason": reason}) for s in steps if s.index > failed_index],
                                 at=self.clock.now())

    def _last_progress(self, index: int) -> dict[str, Any]:
        detail: dict[str, Any] = {}
        for event in self.journal.events(limit=100000):
            if event["index"] == index and event["status"] in ("progress", "running"):
                detail.update(event["detail"])
        return detail

    def _wait_while_paused(self, lane: str) -> bool:
        """Block at a safe point while paused; False when the user asked to stop."""
        announced = False
        while True:
            state = self.control.state()
            if state == "run":
                return True
            if state == "stop":
                return False
            if not announced:
                log.info("lane %s paused at a safe point", lane)
                self.journal.event(None, "paused", at=self.clock.now(), detail={"lane": lane})
                announced = True
            self._real_timer.wait_real_s(PAUSE_POLL_REAL_S)  # a pause is not run time
