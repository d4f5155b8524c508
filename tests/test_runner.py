"""The runner's own logic: journal transitions, skipping done steps, failures, stop and pause.

The lanes here are plain executors that let clock time pass (no instrument is involved);
the runner against real drivers and simulators is tested in test_run_simulated.py.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from acquisition.control import Control, request
from acquisition.journal import Journal
from acquisition.notify import Notifier
from acquisition.run_folder import RunFolder
from acquisition.runner import Runner, StepContext, StepFailed, StopRequested
from drivers.clock import VirtualClock
from protocols.plan import Plan, WaitStable
from protocols.station import NotificationSpec


def _plan(lanes: dict[str, int]) -> Plan:
    steps = []
    for lane, count in lanes.items():
        for _ in range(count):
            steps.append(WaitStable(index=len(steps), lane=lane, protocol="p", label=f"{lane} step {len(steps)}",
                                    estimate_s=100.0, temperature_k=300.0, tolerance_k=0.5, hold_s=100.0, timeout_s=1000.0))
    return Plan(protocols=["p"], station="test", steps=steps)


class ClockLane:
    """Lets each step's estimate pass on the clock; can fail or stop at chosen steps."""

    def __init__(self, fail_at: set[int] = frozenset(), fatal: bool = True, stop_at: set[int] = frozenset()) -> None:
        self.executed: list[int] = []
        self.reconciled: list[int] = []
        self.safe_calls = 0
        self.fail_at, self.fatal, self.stop_at = fail_at, fatal, stop_at

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


def _runner(tmp_path: Path, plan: Plan, lanes: dict[str, ClockLane], clock=None) -> tuple[Runner, Journal, Notifier]:
    folder = RunFolder(tmp_path)
    journal = Journal(tmp_path / "journal.sqlite")
    notifier = Notifier(NotificationSpec())
    runner = Runner(plan, journal, lanes, clock or VirtualClock(start=0.0), Control(folder), notifier)
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
    runner, journal, _ = _runner(tmp_path, _plan({"nmr": 2}), {"nmr": lane})
    thread = threading.Thread(target=runner.run)
    thread.start()
    time.sleep(0.5)
    assert lane.executed == [] and thread.is_alive()
    assert any(e["status"] == "paused" for e in journal.events())
    request(folder, "run")
    thread.join(timeout=10)
    assert lane.executed == [0, 1]


def test_stop_through_the_control_file_while_paused(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    request(folder, "pause")
    lane = ClockLane()
    runner, journal, _ = _runner(tmp_path, _plan({"nmr": 2}), {"nmr": lane})
    thread = threading.Thread(target=runner.run)
    thread.start()
    time.sleep(0.3)
    request(folder, "stop")
    thread.join(timeout=10)
    assert lane.executed == [] and lane.safe_calls >= 1
    assert [r.status for r in journal.steps()] == ["pending", "pending"]


def test_ctrl_c_once_pauses_twice_stops(tmp_path: Path) -> None:
    control = Control(RunFolder(tmp_path))
    assert control.state() == "run"
    control.interrupt()
    assert control.state() == "pause"
    control.interrupt()
    assert control.state() == "stop"
