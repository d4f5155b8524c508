"""The fault matrix (docs/fault-matrix.md): one test per row, the real runner on the simulated station.

Each test runs the Runner with open_station's simulators over their real wires (pty, loopback
TCP, automation folder) in virtual time, injects one fault when a chosen step starts (anything
that must happen later is timed on the virtual clock or by the run's own events, never by a real
sleep), and checks
the outcome the matrix promises: the journal is consistent (nothing left 'running' unless the
journal itself failed, failed steps carry a reason), the instruments are safe (cycler outputs
off in the simulator, the VT holding with its ramp off) and a notification reached the
notification command.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from acquisition.api import build_lanes
from acquisition.control import Control
from acquisition.cycler_lane import CyclerLane
from acquisition.journal import Journal
from acquisition.nmr_lane import NmrLane
from acquisition.notify import Notifier
from acquisition.report import build_report
from acquisition.run_folder import RunFolder
from acquisition.runner import Runner, RunResult
from acquisition.station_runtime import OpenContext, StationRuntime, make_clock, open_station, roles_of
from drivers.clock import VirtualClock
from protocols import load_plan
from protocols.plan import Acquire2D, CyclerStep, Step
from protocols.station import NotificationSpec
from drivers.bruker_params import dataset_complete

HEARTBEAT_TIMEOUT_S = 3.0  # a dead TopSpin side is noticed after this much silence (real seconds)

EXSY = """kind: vt-exsy
name: fm-exsy
dataset: fm_exsy
template: {name: fm_template, expno: 1}
temperatures: [20 degC, 30 degC]
mixing_times: [10 ms, 100 ms]
acquisition: {ns: 2, ds: 0, td1: 4, td2: 256, d1: 0.5 s, t1_increment: 1 ms, sw: 100, sfo1: 73.578, mas_rate: 10 kHz}
equilibration: {tolerance: 0.5 K, hold: 2 min, timeout: 30 min}
expno: {start: 100, per_temperature_block: 10, on_collision: error}
title: "{name}: T = {temperature_k:.1f} K, tmix = {mixing_time_s:g} s"
on_vt_excursion: reacquire
excursion_tolerance_k: 2.0
"""

CYCLING = """kind: cycling
name: fm-cycling
cell: {name: fm-cell, channel: ch1, active_mass: 1.5 mg, area: 0.785 cm2}
sample_interval: 60 s
steps:
  - loop:
      count: 2
      steps:
        - charge: {current_density: 0.132 mA/cm2, until: {specific_capacity: 60 mAh/g, voltage: 2.3 V}}
        - discharge: {current_density: 0.132 mA/cm2, until: {voltage: 0.8 V, specific_capacity: 60 mAh/g}}
limits: {voltage_min: 0.5 V, voltage_max: 3.5 V, current_max: 1 mA, capacity_max: 1000 mAh/g}
"""


@dataclass
class Outcome:
    """What a faulted run left behind."""

    result: RunResult | None
    error: BaseException | None
    journal_path: Path
    notifications: list[dict[str, Any]]
    runtime: StationRuntime
    steps: list[Any] = field(default_factory=list)
    datasets: list[dict[str, Any]] = field(default_factory=list)

    def status(self, index: int) -> str:
        return next(s.status for s in self.steps if s.index == index)


def _notifier_spec(path: Path) -> NotificationSpec:
    script = f"import sys; open({str(path)!r}, 'a').write(sys.stdin.read().replace(chr(10), ' ') + chr(10))"
    return NotificationSpec(command=[sys.executable, "-c", script])


def run_with_fault(tmp_path: Path, protocols: list[str], inject: Callable[[StationRuntime, Runner], None],
                   *, at: Callable[[Step], bool], keep_open: bool = False, io_timeout_s: float | None = None) -> Outcome:
    """Run the protocols on the simulated station; call `inject` once, when the first step matching `at` starts.

    `io_timeout_s`: the instruments' reply timeout (real seconds), given to the factory as selftest's
    --timeout is, so that an instrument that stays silent fails the test quickly.
    """
    paths = []
    for i, text in enumerate(protocols):
        path = tmp_path / f"protocol-{i}.yaml"
        path.write_text(text)
        paths.append(path)
    plan, station = load_plan(paths, None)
    notify_file = tmp_path / "notifications.jsonl"
    station.notifications = _notifier_spec(notify_file)
    station.spectrometer.heartbeat_timeout_s = HEARTBEAT_TIMEOUT_S
    folder = RunFolder(tmp_path / "run")
    for sub in (folder.root, folder.cycler):
        sub.mkdir(parents=True, exist_ok=True)
    roles = roles_of(station, plan.lanes)
    clock = make_clock(station, roles, virtual_start_s=1_790_000_000.0)
    assert isinstance(clock, VirtualClock)  # every instrument is sim://
    cells = {s.channel: {"active_mass_g": 1.5e-3, "area_cm2": 0.785} for s in plan.steps if isinstance(s, CyclerStep)}
    ctx = OpenContext(workdir=folder.root, seed=3, cells=cells, templates=plan.templates(), io_timeout_s=io_timeout_s)
    runtime = open_station(station, clock, roles, ctx, holder=f"fault matrix {folder.root}")
    journal = Journal(folder.journal)
    lanes = build_lanes(plan, runtime, folder, cells)
    injected: list[int] = []
    holder: dict[str, Runner] = {}

    def on_step(step: Step, status: str) -> None:
        if status == "running" and not injected and at(step):
            injected.append(step.index)
            inject(runtime, holder["runner"])

    notifier = Notifier(station.notifications)
    runner = Runner(plan, journal, lanes, clock, Control(folder), notifier, on_step=on_step)
    holder["runner"] = runner
    result, error = None, None
    try:
        result = runner.run()
    except Exception as exc:  # noqa: BLE001 - a failing journal ends run(); the test judges it
        error = exc
    finally:
        for lane in lanes.values():
            if isinstance(lane, CyclerLane):
                lane.close()
        if not keep_open:
            runtime.close()
        journal.close()
        notifier.close()  # notifications are sent from a thread: let it deliver them all
    assert injected, "the fault was never injected: no step matched"
    check = Journal(folder.journal)
    try:
        steps, datasets = check.steps(), check.datasets()
    finally:
        check.close()
    notifications = [json.loads(line) for line in notify_file.read_text().splitlines()] if notify_file.exists() else []
    return Outcome(result, error, folder.journal, notifications, runtime, steps, datasets)


# The reply timeouts go through the factory (OpenContext.io_timeout_s, as selftest's --timeout), never
# through private driver attributes.
VT_IO_TIMEOUT_S = 1.0  # a VT that stays silent is given up on after this (real seconds; a loaded machine answers well inside it)
SMU_IO_TIMEOUT_S = 0.5  # likewise a cycler link


def _kind(kind: str) -> Callable[[Step], bool]:
    return lambda step: step.kind == kind


def assert_consistent(outcome: Outcome, *, allow_running: bool = False) -> None:
    """No step left running; every failed step says why; skipped steps name the failure."""
    for step in outcome.steps:
        if not allow_running:
            assert step.status != "running", f"step {step.index} left running"
        if step.status == "failed":
            assert step.outcome.get("error"), f"failed step {step.index} carries no reason"
        if step.status == "skipped":
            assert "failed" in step.outcome.get("reason", "")


def assert_cyclers_off(outcome: Outcome) -> None:
    for name, sim in outcome.runtime.simulators.items():
        if name.startswith("cycler:"):
            assert not sim.output_on, f"{name} output left on"


def assert_vt_holding(outcome: Outcome) -> None:
    """The VT's last commands stopped the ramp and set a set point within the probe limits."""
    vt_sim = outcome.runtime.simulators["vt"]
    ramps = [c for c in vt_sim.commands if c.startswith("RAMP ")]
    setpoints = [float(c.split(",")[1]) for c in vt_sim.commands if c.startswith("SETP ")]
    assert ramps and ramps[-1].startswith("RAMP 1,0"), ramps[-3:]
    assert setpoints and 173.0 <= setpoints[-1] <= 423.0


def events_of(outcome: Outcome) -> list[str]:
    return [n["event"] for n in outcome.notifications]


def after_clock_s(clock: VirtualClock, seconds: float, action: Callable[[], None]) -> None:
    """Do `action` when `seconds` of clock time have passed, as one more participant of the virtual clock.

    Joined before this returns (from the lane thread that injects), so time cannot run past the moment.
    """
    joined = clock.participant()
    joined.__enter__()

    def wait_then_act() -> None:
        try:
            clock.sleep(seconds)
            action()
        finally:
            joined.__exit__(None, None, None)

    threading.Thread(target=wait_then_act, name="fault-timer", daemon=True).start()


# ---- VT (Lake Shore 336 on a pty) ---------------------------------------------------------

def test_vt_serial_timeout_recovered_by_retry(tmp_path: Path) -> None:
    def silence(rt: StationRuntime, runner: Runner) -> None:
        rt.simulators["vt"].inject("no_reply", count=2)

    out = run_with_fault(tmp_path, [EXSY], silence, at=_kind("wait_stable"), io_timeout_s=VT_IO_TIMEOUT_S)
    assert out.result.status == "done"
    assert out.runtime.vt.retry_count >= 2
    assert_consistent(out)
    assert events_of(out) == ["run done"]


def test_vt_garbled_reply_recovered_by_retry(tmp_path: Path) -> None:
    out = run_with_fault(tmp_path, [EXSY], lambda rt, r: rt.simulators["vt"].inject("garbled", count=2),
                         at=_kind("acquire_2d"))
    assert out.result.status == "done"
    assert out.runtime.vt.retry_count >= 2
    assert all(d["status"] == "done" for d in out.datasets)
    assert events_of(out) == ["run done"]


def test_vt_port_vanishing_recovered_by_reconnect(tmp_path: Path) -> None:
    out = run_with_fault(tmp_path, [EXSY], lambda rt, r: rt.simulators["vt"].inject("port_vanish", duration_s=3.0),
                         at=_kind("wait_stable"))
    assert out.result.status == "done"
    assert out.runtime.vt.reconnect_count >= 1
    assert_consistent(out)


def test_vt_sensor_dropout_once_recovered_by_retry(tmp_path: Path) -> None:
    out = run_with_fault(tmp_path, [EXSY], lambda rt, r: rt.simulators["vt"].inject("sensor_dropout", count=1),
                         at=_kind("wait_stable"))
    assert out.result.status == "done"
    assert out.runtime.vt.retry_count >= 1


def test_vt_silent_for_good_stops_run_safely(tmp_path: Path) -> None:
    def silence(rt: StationRuntime, runner: Runner) -> None:
        rt.simulators["vt"].inject("no_reply")

    out = run_with_fault(tmp_path, [EXSY, CYCLING], silence, at=_kind("wait_stable"), io_timeout_s=VT_IO_TIMEOUT_S)
    assert out.result.status == "failed"
    assert out.result.lanes["nmr"].status == "failed" and "Lake Shore" in out.result.lanes["nmr"].message
    assert out.result.lanes["cycler:ch1"].status == "done"  # the cycler lane runs on
    assert_consistent(out)
    assert_cyclers_off(out)
    assert "step failed" in events_of(out) and events_of(out)[-1] == "run failed"


def test_vt_never_stable_stops_run_safely(tmp_path: Path) -> None:
    out = run_with_fault(tmp_path, [EXSY], lambda rt, r: rt.simulators["vt"].inject("stuck_heater"),
                         at=lambda s: s.kind == "move_temperature" and s.temperature_k > 300)
    assert out.result.status == "failed"
    failed = [s for s in out.steps if s.status == "failed"]
    assert len(failed) == 1 and failed[0].kind == "wait_stable" and "stable" in failed[0].outcome["error"]
    assert all(s.status == "skipped" for s in out.steps if s.index > failed[0].index)
    assert_consistent(out)
    assert_vt_holding(out)
    assert "step failed" in events_of(out)


def test_vt_sensor_dropout_for_good_stops_run_safely(tmp_path: Path) -> None:
    out = run_with_fault(tmp_path, [EXSY], lambda rt, r: rt.simulators["vt"].inject("sensor_dropout"),
                         at=_kind("acquire_2d"))
    assert out.result.status == "failed"
    failed = [s for s in out.steps if s.status == "failed"]
    assert len(failed) == 1 and "invalid sensor" in failed[0].outcome["error"]
    assert_consistent(out)
    assert "step failed" in events_of(out)


# ---- TopSpin (automation folder) ----------------------------------------------------------

def test_topspin_side_dead_pauses_the_lane_which_continues_when_topspin_returns(tmp_path: Path) -> None:
    def kill_then_restart(rt: StationRuntime, runner: Runner) -> None:
        topspin = rt.simulators["spectrometer"]
        topspin.inject("dead")
        notify = runner.notifier.notify

        def operator(event: dict[str, Any]) -> None:  # the user, told the lane paused, restarts TopSpin's script
            notify(event)
            if event.get("event") == "lane paused":
                topspin.clear_faults()

        runner.notifier.notify = operator  # type: ignore[method-assign]

    out = run_with_fault(tmp_path, [EXSY], kill_then_restart, at=_kind("acquire_2d"))
    assert out.result.status == "done", out.result.lanes
    assert_consistent(out)
    journal = Journal(out.journal_path)
    try:
        statuses = [e["status"] for e in journal.events(limit=10_000)]
    finally:
        journal.close()
    assert "paused" in statuses and "resumed" in statuses
    assert {"lane paused", "lane resumed"} <= set(events_of(out))
    done = [(d["temperature_k"], d["params"]["mixing_time_s"]) for d in out.datasets if d["status"] == "done"]
    assert len(done) == len(set(done)) == 4
    for d in out.datasets:
        if d["status"] != "done":
            assert (Path(d["path"]) / "exsylab-status.txt").exists() or not dataset_complete(Path(d["path"]))


@pytest.mark.parametrize("fault, words", [("acq_error", "acquisition error"), ("spinning_failure", "spinning"),
                                          ("disk_full", "disk full")])
def test_topspin_acquisition_fault_marks_dataset_and_stops_run_safely(tmp_path: Path, fault: str, words: str) -> None:
    out = run_with_fault(tmp_path, [EXSY], lambda rt, r: rt.simulators["spectrometer"].inject(fault),
                         at=_kind("acquire_2d"))
    assert out.result.status == "failed"
    failed = [s for s in out.steps if s.status == "failed"]
    assert len(failed) == 1 and failed[0].kind == "acquire_2d"
    journal = Journal(out.journal_path)
    try:
        report = build_report(RunFolder(tmp_path / "run"), journal, {})
    finally:
        journal.close()
    assert f"step {failed[0].index} ({failed[0].label}) **failed**" in report and "skipped after their lane failed" in report
    assert words in failed[0].outcome["error"].lower() or words in json.dumps(out.datasets).lower()
    marked = [d for d in out.datasets if d["status"] == "failed"]
    if fault != "disk_full":  # disk full already refuses to create the dataset: nothing to mark
        assert marked and (Path(marked[0]["path"]) / "exsylab-status.txt").read_text().startswith("failed")
    assert_consistent(out)
    assert_vt_holding(out)
    assert "step failed" in events_of(out)


# ---- cycler (Keithley 2450 over loopback TCP) ---------------------------------------------

@pytest.mark.parametrize("fault", ["drop_connection", "malformed"])
def test_cycler_transient_fault_recovered_by_retry(tmp_path: Path, fault: str) -> None:
    def once(rt: StationRuntime, runner: Runner) -> None:
        rt.simulators["cycler:ch1"].inject(fault, count=1)

    out = run_with_fault(tmp_path, [CYCLING], once, at=_kind("cycler_step"), io_timeout_s=SMU_IO_TIMEOUT_S)
    assert out.result.status == "done"
    assert out.runtime.cyclers["ch1"].retry_count >= 1
    assert_consistent(out)
    assert_cyclers_off(out)


def test_cycler_timeout_recovered_by_retry(tmp_path: Path) -> None:
    def late(rt: StationRuntime, runner: Runner) -> None:
        rt.simulators["cycler:ch1"].inject("timeout", count=1)

    out = run_with_fault(tmp_path, [CYCLING], late, at=lambda s: s.kind == "cycler_step" and s.index == 1,
                         io_timeout_s=SMU_IO_TIMEOUT_S)
    assert out.result.status == "done"
    assert out.runtime.cyclers["ch1"].retry_count >= 1


def test_cycler_connection_lost_stops_channel_only(tmp_path: Path) -> None:
    # more drops than the driver retries: the step fails; the link is back in time for safe_off
    def drop(rt: StationRuntime, runner: Runner) -> None:
        rt.simulators["cycler:ch1"].inject("drop_connection", count=4)

    out = run_with_fault(tmp_path, [EXSY, CYCLING], drop, at=lambda s: s.kind == "cycler_step" and s.index > 8,
                         io_timeout_s=SMU_IO_TIMEOUT_S)
    assert out.result.status == "failed"
    assert out.result.lanes["cycler:ch1"].status == "failed" and out.result.lanes["nmr"].status == "done"
    assert_consistent(out)
    assert_cyclers_off(out)
    assert "step failed" in events_of(out)


# ---- disk full ----------------------------------------------------------------------------

def _fill_bdf(runtime: StationRuntime, runner: Runner) -> None:
    """From now on every write of the cell's data file gets ENOSPC from the kernel (/dev/full)."""
    lane = runner.executors["cycler:ch1"]
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        os.dup2(full, lane._writer._file.fileno())
    finally:
        os.close(full)


def test_disk_full_writing_cycler_data_stops_channel(tmp_path: Path) -> None:
    out = run_with_fault(tmp_path, [EXSY, CYCLING], _fill_bdf, at=lambda s: s.kind == "cycler_step" and s.index > 0)
    assert out.result.lanes["cycler:ch1"].status == "failed"
    assert out.result.lanes["nmr"].status == "done"
    failed = [s for s in out.steps if s.status == "failed"]
    assert len(failed) == 1 and "No space left" in failed[0].outcome["error"]
    assert_consistent(out)
    assert_cyclers_off(out)
    assert "step failed" in events_of(out)


def _fill_journal(runtime: StationRuntime, runner: Runner) -> None:
    """From now on every write of the journal's WAL gets ENOSPC from the kernel (/dev/full)."""
    wal = str(runner.journal.path) + "-wal"
    fds = [int(fd) for fd in os.listdir("/proc/self/fd") if os.path.realpath(f"/proc/self/fd/{fd}") == wal]
    assert fds, f"the journal's WAL {wal} is not open"
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        for fd in fds:
            os.dup2(full, fd)
    finally:
        os.close(full)


def test_disk_full_writing_journal_stops_run_safely(tmp_path: Path) -> None:
    out = run_with_fault(tmp_path, [EXSY, CYCLING], _fill_journal, at=lambda s: s.kind == "acquire_2d")
    failed_run = out.error is not None or (out.result is not None and out.result.status == "failed")
    assert failed_run
    if out.error is not None:
        assert isinstance(out.error, sqlite3.Error) and "full" in str(out.error)
    assert_consistent(out, allow_running=True)  # the journal could not take the last transitions
    assert_cyclers_off(out)
    assert_vt_holding(out)
    assert any("journal" in json.dumps(n) for n in out.notifications)


# ---- VT excursion during an acquisition ---------------------------------------------------

EXCURSION_EXSY = EXSY.replace("acquisition: {ns: 2, ds: 0, td1: 4, td2: 256, d1: 0.5 s,",
                              "acquisition: {ns: 4, ds: 0, td1: 16, td2: 256, d1: 10 s,")


def test_vt_excursion_during_an_acquisition_flags_the_dataset_and_reacquires_the_point(tmp_path: Path) -> None:
    """A disturbance in the probe (set point pushed 8 K up for 5 min of clock time) mid-acquisition."""
    def disturb(rt: StationRuntime, runner: Runner) -> None:
        model, clock = rt.simulators["vt"].model, rt.clock
        normal_k = model.setpoint_k
        model.setpoint_k = normal_k + 8.0
        after_clock_s(clock, 300.0, lambda: setattr(model, "setpoint_k", normal_k))  # the controller's own recovery

    outcome = run_with_fault(tmp_path, [EXCURSION_EXSY], disturb, at=_kind("acquire_2d"))
    assert outcome.result is not None and outcome.result.ok
    assert_consistent(outcome)
    first = [d for d in outcome.datasets if d["idx"] == outcome.steps[2].index]
    statuses = sorted(d["status"] for d in first)
    assert statuses == ["done", "flagged"], first
    flagged = next(d for d in first if d["status"] == "flagged")
    done = next(d for d in first if d["status"] == "done")
    assert done["expno"] != flagged["expno"] and done["expno"] > 1000
    assert (Path(flagged["path"]) / "exsylab-status.txt").read_text().startswith("flagged")
    points = [(d["temperature_k"], d["params"]["mixing_time_s"]) for d in outcome.datasets if d["status"] == "done"]
    assert len(points) == len(set(points)) == 4


def test_after_a_spinning_failure_resume_acquires_the_failed_and_skipped_points(tmp_path: Path) -> None:
    """Spinning fails: the lane stops safely. The user restores spinning and resumes: every point, once."""
    out = run_with_fault(tmp_path, [EXSY], lambda rt, r: rt.simulators["spectrometer"].inject("spinning_failure"),
                         at=_kind("acquire_2d"), keep_open=True)
    try:
        assert out.result.status == "failed"
        out.runtime.simulators["spectrometer"].clear_faults()
        plan, _ = load_plan([tmp_path / "protocol-0.yaml"], None)
        journal = Journal(out.journal_path)
        nmr = NmrLane(out.runtime.spectrometer, out.runtime.vt)
        runner = Runner(plan, journal, {"nmr": nmr}, out.runtime.clock, Control(RunFolder(tmp_path / "run")),
                        Notifier(NotificationSpec()))
        assert runner.run().ok
        datasets = journal.datasets()
        events = journal.events(limit=1000)
        journal.close()
    finally:
        out.runtime.close()
    done = [(d["temperature_k"], d["params"]["mixing_time_s"]) for d in datasets if d["status"] == "done"]
    assert sorted(done) == sorted({(s.temperature_k, s.mixing_time_s) for s in plan.steps if s.kind == "acquire_2d"})
    # zg was refused, so the failed attempt left no data: its expno is used again; the journal keeps the story
    assert [e["index"] for e in events if e["status"] == "failed"] == [2]
    assert any(e["status"] == "skipped" for e in events) and len(datasets) == len(done)


@pytest.mark.parametrize("policy", ["halt", "finish"])
def test_stop_during_an_acquisition_halts_it_or_lets_it_finish_as_the_protocol_says(tmp_path: Path, policy: str) -> None:
    from acquisition.control import request

    def stop_once_acquiring(rt: StationRuntime, runner: Runner) -> None:
        # `exsylab stop` from another terminal, one second of clock time into the acquisition
        after_clock_s(rt.clock, 1.0, lambda: request(RunFolder(tmp_path / "run"), "stop"))

    protocol = EXCURSION_EXSY.replace("on_vt_excursion: reacquire", f"on_vt_excursion: reacquire\non_stop: {policy}")
    out = run_with_fault(tmp_path, [protocol], stop_once_acquiring, at=_kind("acquire_2d"))
    assert out.result.status == "stopped"
    assert_consistent(out)
    assert_vt_holding(out)
    first = out.steps[2]
    (dataset,) = [d for d in out.datasets if d["idx"] == first.index]
    if policy == "halt":
        assert first.status == "pending" and dataset["status"] == "partial"
        assert (Path(dataset["path"]) / "exsylab-status.txt").read_text().startswith("partial")
    else:
        assert first.status == "done" and dataset["status"] == "done"
        assert dataset_complete(Path(dataset["path"]))
    assert all(s.status == "pending" for s in out.steps[3:])
