"""The runner's own logic: journal transitions, skipping done steps, failures, stop and pause.

The lanes here are plain executors that let clock time pass (no instrument is involved);
the runner against real drivers and simulators is tested in test_run_simulated.py.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from acquisition.control import Control, request
from acquisition.journal import Journal
from acquisition.notify import Notifier
from acquisition.run_folder import RunFolder
from acquisition.runner import Runner, StepContext, StepFailed, StopRequested
from drivers.clock import VirtualClock
from protocols.plan import Plan, Stability, WaitStable
from protocols.station import NotificationSpec


def _plan(lanes: dict[str, int]) -> Plan:
    steps = []
    for lane, count in lanes.items():
        for _ in range(count):
            steps.append(WaitStable(index=len(steps), lane=lane, protocol="p", label=f"{lane} step {len(steps)}",
                                    estimate_s=100.0, temperature_k=300.0,
                                    stability=Stability(tolerance_k=0.5, hold_s=100.0, timeout_s=1000.0)))
    return Plan(protocols=["p"], station="test", steps=steps)


class ClockLane:
    """Lets each step's estimate pass on the clock; can fail or stop at chosen steps."""

    def __init__(self, fail_at: set[int] = frozenset(), fatal: bool = True, stop_at: set[int] = frozenset()) -> None:
        self.executed: list[int] = []
        self.reconciled: list[int] = []
        self.safe_calls = 0
        self.fail_at, self.fatal, self.stop_at = fail_at, fatal, stop_at

    def kinds(self) -> dict[str, Callable[[Any, StepContext], dict[str, Any]]]:
        return {"wait_stable": self.execute}

    def execute(self, step, ctx: StepContext) -> dict[str, Any]:
        if step.index in self.stop_at:
            raise StopRequested()
        ctx.clock.sleep(step.estimate_s)
        if step.index in self.fail_at:
            raise StepFailed(f"injected failure at {step.index}", lane_fatal=self.fatal)
        self.executed.append(step.index)
        return {"slept_s": step.estimate_s}

    def reconcile(self, step, progress, ctx) -> str:
        self.reconciled.append(step.index)
        return "done" if progress.get("finished") else "redo"

    def make_safe(self) -> None:
        self.safe_calls += 1


class PauseTimer:
    """The runner's real-time timer for a paused lane: no real sleep; calls `on_wait` at each poll."""

    def __init__(self, on_wait: Callable[[int], None]) -> None:
        self.waits = 0
        self._on_wait = on_wait

    def wait_real_s(self, seconds: float) -> None:
        self.waits += 1
        self._on_wait(self.waits)


def _runner(tmp_path: Path, plan: Plan, lanes: dict[str, ClockLane], clock=None,
            real_timer=None) -> tuple[Runner, Journal, Notifier]:
    folder = RunFolder(tmp_path)
    journal = Journal(tmp_path / "journal.sqlite")
    notifier = Notifier(NotificationSpec())
    runner = Runner(plan, journal, lanes, clock or VirtualClock(start=0.0), Control(folder), notifier,
                    real_timer=real_timer)
    return runner, journal, notifier


def test_all_steps_run_once_in_order_and_are_journalled(tmp_path: Path) -> None:
    lane = ClockLane()
    runner, journal, notifier = _runner(tmp_path, _plan({"nmr": 5}), {"nmr": lane})
    result = runner.run()
    assert result.ok and lane.executed == [0, 1, 2, 3, 4]
    assert [r.status for r in journal.steps()] == ["done"] * 5
    assert result.virtual_duration_s == 500.0
    assert notifier.sent[-1]["event"] == "run done"


def test_lanes_run_concurrently_in_virtual_time(tmp_path: Path) -> None:
    lanes = {"nmr": ClockLane(), "cycler:ch1": ClockLane()}
    runner, journal, _ = _runner(tmp_path, _plan({"nmr": 3, "cycler:ch1": 4}), lanes)
    result = runner.run()
    assert result.ok
    assert result.virtual_duration_s == 400.0  # the longest lane, not the sum


def test_resume_skips_done_steps_and_reconciles_the_running_one(tmp_path: Path) -> None:
    plan = _plan({"nmr": 4})
    journal = Journal(tmp_path / "journal.sqlite")
    journal.add_steps(plan.steps)
    journal.transition(0, "running", at=1.0)
    journal.transition(0, "done", at=2.0)
    journal.transition(1, "running", at=3.0)
    journal.event(1, "progress", at=3.5, detail={"finished": True})
    journal.transition(2, "running", at=4.0)  # found running without a 'finished' note: redone
    journal.close()
    lane = ClockLane()
    runner, journal, _ = _runner(tmp_path, plan, {"nmr": lane})
    assert runner.run().ok
    assert lane.reconciled == [1, 2]
    assert lane.executed == [2, 3]
    assert [r.attempts for r in journal.steps()] == [1, 1, 2, 1]


class LoopEndLane(ClockLane):
    """Ends a loop after step 1: steps 2..3 are skipped, step 4 runs."""

    def execute(self, step, ctx: StepContext) -> dict[str, Any]:
        outcome = super().execute(step, ctx)
        if step.index == 1:
            ctx.skip_steps(2, 3, "cycle 1: coulombic efficiency 90 % < 95 %")
        return outcome


def test_a_loop_end_skips_its_steps_and_resume_does_not_run_them(tmp_path: Path) -> None:
    plan = _plan({"cycler:ch1": 5})
    lane = LoopEndLane()
    runner, journal, _ = _runner(tmp_path, plan, {"cycler:ch1": lane})
    assert runner.run().ok
    assert lane.executed == [0, 1, 4]
    records = journal.steps()
    assert [r.status for r in records] == ["done", "done", "skipped", "skipped", "done"]
    assert records[2].outcome == {"loop_exit": "cycle 1: coulombic efficiency 90 % < 95 %"}
    journal.transition(4, "pending", at=1e4)  # as if the run had stopped before its last step
    journal.close()
    again = ClockLane()
    runner, journal, _ = _runner(tmp_path, plan, {"cycler:ch1": again})
    assert runner.run().ok
    assert again.executed == [4]  # the loop's skipped steps stay skipped; steps skipped after a failure would rerun


def test_a_fatal_failure_skips_the_rest_of_its_lane_but_not_other_lanes(tmp_path: Path) -> None:
    lanes = {"nmr": ClockLane(fail_at={1}), "cycler:ch1": ClockLane()}
    runner, journal, notifier = _runner(tmp_path, _plan({"nmr": 3, "cycler:ch1": 3}), lanes)
    result = runner.run()
    assert result.status == "failed"
    statuses = {r.index: r.status for r in journal.steps()}
    assert statuses == {0: "done", 1: "failed", 2: "skipped", 3: "done", 4: "done", 5: "done"}
    assert lanes["nmr"].safe_calls >= 1
    assert any(e["event"] == "step failed" and "injected" in e["error"] for e in notifier.sent)
    failed = next(r for r in journal.steps() if r.status == "failed")
    assert "injected failure" in failed.outcome["error"]


def test_a_non_fatal_failure_lets_the_lane_go_on(tmp_path: Path) -> None:
    lane = ClockLane(fail_at={1}, fatal=False)
    runner, journal, _ = _runner(tmp_path, _plan({"nmr": 3}), {"nmr": lane})
    assert runner.run().status == "failed"
    assert [r.status for r in journal.steps()] == ["done", "failed", "done"]


def test_stop_requested_leaves_the_step_pending_for_resume(tmp_path: Path) -> None:
    lane = ClockLane(stop_at={2})
    runner, journal, _ = _runner(tmp_path, _plan({"nmr": 4}), {"nmr": lane})
    result = runner.run()
    assert result.status == "stopped"
    assert [r.status for r in journal.steps()] == ["done", "done", "pending", "pending"]
    assert lane.safe_calls >= 1


def test_pause_then_resume_through_the_control_file(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    request(folder, "pause")
    lane = ClockLane()
    seen: list[tuple[list[int], bool]] = []

    def on_wait(n: int) -> None:  # the lane is paused at a safe point: look, then resume
        if n == 3:
            seen.append((list(lane.executed), any(e["status"] == "paused" for e in journal.events())))
            request(folder, "run")

    runner, journal, _ = _runner(tmp_path, _plan({"nmr": 2}), {"nmr": lane}, real_timer=PauseTimer(on_wait))
    assert runner.run().ok
    assert seen == [([], True)]  # nothing ran while paused, and the pause was journalled
    assert lane.executed == [0, 1]


def test_stop_through_the_control_file_while_paused(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    request(folder, "pause")
    lane = ClockLane()
    timer = PauseTimer(lambda n: request(folder, "stop") if n == 2 else None)
    runner, journal, _ = _runner(tmp_path, _plan({"nmr": 2}), {"nmr": lane}, real_timer=timer)
    assert runner.run().status == "stopped"
    assert timer.waits == 2
    assert lane.executed == [] and lane.safe_calls >= 1
    assert [r.status for r in journal.steps()] == ["pending", "pending"]


class _Boom(ClockLane):
    def execute(self, step, ctx: StepContext) -> dict[str, Any]:
        if step.index == 1:
            raise KeyError("a bug")
        return super().execute(step, ctx)


def test_an_unexpected_exception_fails_the_step_makes_safe_notifies_and_skips_the_lane(tmp_path: Path) -> None:
    lanes = {"nmr": _Boom(), "cycler:ch1": ClockLane()}
    runner, journal, notifier = _runner(tmp_path, _plan({"nmr": 3, "cycler:ch1": 2}), lanes)
    result = runner.run()
    assert result.status == "failed" and result.lanes["cycler:ch1"].status == "done"
    statuses = {r.index: r.status for r in journal.steps()}
    assert statuses == {0: "done", 1: "failed", 2: "skipped", 3: "done", 4: "done"}
    failed = next(r for r in journal.steps() if r.status == "failed")
    assert failed.outcome["error"].startswith("internal error: KeyError") and failed.outcome["error_type"] == "KeyError"
    assert lanes["nmr"].safe_calls >= 1
    assert any(e["event"] == "step failed" and "internal error" in e["error"] for e in notifier.sent)


def test_a_step_kind_the_lane_does_not_run_is_refused_before_starting(tmp_path: Path) -> None:
    class CyclerOnly(ClockLane):
        def kinds(self):
            return {"cycler_step": self.execute}

    lane = CyclerOnly()
    with pytest.raises(ValueError, match=r"lane nmr cannot run step kinds \['wait_stable'\]"):
        _runner(tmp_path, _plan({"nmr": 2}), {"nmr": lane})
    assert lane.executed == []


def test_ctrl_c_once_pauses_twice_stops(tmp_path: Path) -> None:
    control = Control(RunFolder(tmp_path))
    assert control.state() == "run"
    control.interrupt()
    assert control.state() == "pause"
    control.interrupt()
    assert control.state() == "stop"
