"""The Python API behind the CLI: start a run, resume it, ask its status, pause or stop it."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

from analysis.cycling import LI2S_EQUILIBRIUM_V, summarize_cycling, write_cycle_csv
from analysis.errors import AnalysisInputError
from drivers.clock import Clock, RealClock, VirtualClock
from protocols import InputError, Plan, load_plan, load_protocol
from protocols.errors import MISSING
from protocols.plan import Acquire2D, CyclerStep
from protocols.station import StationSpec

from . import control as control_mod
from .control import Control, RunLock, runner_alive
from .bdf import TEST_TIME, UNIX_TIME, read_bdf
from .cycler_lane import CyclerLane, limits_of
from .journal import Journal
from .nmr_lane import NmrLane, planned_collisions
from .notify import Notifier
from .progress import ProgressView, eta_from_records
from .report import write_report
from .run_folder import DATASETS_FILE, SUMMARY_FILE, RunFolder, create_run_folder, open_run_folder, restore_secrets
from .runner import Runner, RunResult
from .station_runtime import StationRuntime, open_station, spectrometer_folders

log = logging.getLogger(__name__)


def start_run(protocol_paths: Sequence[str | Path], station_path: str | Path | None = None,
              run_dir: str | Path | None = None, *, show_progress: bool = True,
              seed: int = 0) -> tuple[RunFolder, RunResult]:
    """Validate, compile, make the run folder, and run to the end (or failure, or stop)."""
    plan, station = load_plan(protocol_paths, station_path)
    if run_dir is None:
        from .run_folder import default_run_dir

        run_dir = default_run_dir(Path("runs"), "-".join(plan.protocols)[:60])
    folder = create_run_folder(Path(run_dir), [Path(p) for p in protocol_paths],
                               Path(station_path) if station_path else None)
    folder.write_json("plan.json", plan.to_json_dict())
    journal = Journal(folder.journal)
    journal.set_meta(created_at=time.time(), simulated=station.simulated, seed=seed)
    journal.close()
    return folder, _execute(folder, plan, station, show_progress=show_progress, seed=seed)


def resume_run(run_dir: str | Path, *, show_progress: bool = True) -> tuple[RunFolder, RunResult | None]:
    """Resume: un-pause a live runner, or restart a dead one at the first unfinished step."""
    folder = open_run_folder(Path(run_dir))
    if runner_alive(folder):
        control_mod.request(folder, "run")
        return folder, None
    protocols = folder.protocol_copies()
    station_copy = folder.station_copy()
    plan, station = load_plan(protocols, station_copy)
    restore_secrets(folder, station)  # the copy leaves the webhook token out
    if folder.plan.exists():
        recorded = json.loads(folder.plan.read_text())
        if [s["label"] for s in recorded["steps"]] != [s.label for s in plan.steps]:
            raise InputError(folder.plan, "steps", MISSING, "the inputs in the run folder no longer compile to the recorded plan")
    else:  # the run was killed before it got going: start it now
        folder.write_json("plan.json", plan.to_json_dict())
    journal = Journal(folder.journal)
    meta = journal.meta()
    journal.close()
    return folder, _execute(folder, plan, station, show_progress=show_progress, seed=int(meta.get("seed", 0)) + 1)


def _make_clock(station: StationSpec, journal: Journal, folder: RunFolder) -> Clock:
    """Virtual time on the built-in simulated station; wall time (or an accelerated bench's time) otherwise.

    A resumed virtual run continues after the last moment anything was recorded, so that time in
    the journal and the BDF files never runs backwards.
    """
    if station.simulated:
        recorded = [t for t in [journal.last_time(), *(_last_unix_time(p) for p in folder.cycler.glob("*.csv"))]
                    if t is not None]
        return VirtualClock(start=max(recorded) if recorded else time.time())
    return RealClock(speed=station.clock_speed, epoch_unix_s=station.clock_epoch_unix_s)


def _bdf_times(bdf: Path) -> tuple[float, float] | None:
    """(test start, last sample) Unix times of a BDF file; None for a summary, an empty or a missing file."""
    try:
        columns = read_bdf(bdf)
    except Exception:  # noqa: BLE001 - a summary CSV or a file cut short: not a clock source
        return None
    unix, test = columns.get(UNIX_TIME), columns.get(TEST_TIME)
    if unix is None or test is None or not len(unix):
        return None
    return float(unix[0] - test[0]), float(unix[-1])


def _last_unix_time(bdf: Path) -> float | None:
    times = _bdf_times(bdf)
    return times[1] if times else None


def _test_start_unix_s(bdf: Path) -> float | None:
    """A resumed cell keeps its test time: it started when its BDF file says."""
    times = _bdf_times(bdf) if bdf.exists() else None
    return times[0] if times else None


def _execute(folder: RunFolder, plan: Plan, station: StationSpec, *, show_progress: bool, seed: int) -> RunResult:
    lock = RunLock(folder)
    if not lock.acquire():
        raise InputError(folder.root, "RUN_DIR", MISSING, "a runner is already running this folder")
    handler = logging.FileHandler(folder.logs / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(threadName)s]: %(message)s"))
    root_logger = logging.getLogger()
    root_logger.addHandler(handler)
    previous_level = root_logger.level
    root_logger.setLevel(logging.INFO)
    journal = Journal(folder.journal)
    runtime = None
    lanes: dict[str, Any] = {}
    try:
        clock = _make_clock(station, journal, folder)
        cells = {s.channel: s for s in plan.steps if isinstance(s, CyclerStep)}
        cell_meta = _cell_metadata(folder, cells)
        _refuse_collisions(folder, plan, station, journal)
        runtime = open_station(station, clock, folder.root, seed=seed, cells=cell_meta)
        control = Control(folder)
        control_mod.request(folder, "run")
        control.install_sigint()
        notifier = Notifier(station.notifications)
        lanes.update(build_lanes(plan, runtime, folder, cell_meta))
        view = ProgressView(plan, clock, journal.steps()) if show_progress else None
        runner = Runner(plan, journal, lanes, clock, control, notifier, on_step=view.on_step if view else None)
        if view is not None:
            with view:
                result = runner.run()
        else:
            result = runner.run()
        _write_outputs(folder, journal, cells, cell_meta)
        return result
    finally:
        for lane in lanes.values():
            if isinstance(lane, CyclerLane):
                lane.close()
        if runtime is not None:
            runtime.close()
        journal.close()
        root_logger.removeHandler(handler)
        root_logger.setLevel(previous_level)
        handler.close()
        lock.release()


def build_lanes(plan: Plan, runtime: StationRuntime, folder: RunFolder,
                cell_meta: dict[str, dict[str, Any]]) -> dict[str, NmrLane | CyclerLane]:
    """One executor per lane of the plan, on the open station; cycler data go to the run folder."""
    station = runtime.station
    lanes: dict[str, NmrLane | CyclerLane] = {}
    for lane_name, steps in plan.lanes.items():
        first = steps[0]
        if isinstance(first, CyclerStep):
            bdf = folder.cycler / f"{first.cell}.csv"
            channel = runtime.cycler_channel(first.channel, limits_of(first), _test_start_unix_s(bdf))
            meta = {**cell_meta.get(first.channel, {}), "instrument": runtime.smus[first.channel].identify(),
                    "resource": station.cyclers[first.channel].resource}
            lanes[lane_name] = CyclerLane(channel, bdf, meta)
        else:
            lanes[lane_name] = NmrLane(runtime.spectrometer, runtime.vt, simulated=station.simulated,
                                       overdue_factor=station.spectrometer.overdue_factor if station.spectrometer else 1.5)
            acquisitions = [s for s in steps if isinstance(s, Acquire2D)]
            if acquisitions:
                runtime.vt.calibration = runtime.calibration_for(acquisitions[0].mas_rate_hz)
    return lanes


def _refuse_collisions(folder: RunFolder, plan: Plan, station: StationSpec, journal: Journal) -> None:
    """An expno of a step yet to run that already holds data is refused before any instrument is opened."""
    acquisitions = [s for s in plan.steps if isinstance(s, Acquire2D)]
    if not acquisitions:
        return
    started = {r.index for r in journal.steps() if r.status != "pending"}
    _, data_dir = spectrometer_folders(station, folder.root)
    problems = planned_collisions(data_dir, [s for s in acquisitions if s.index not in started])
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InputError(folder.root, "expno", MISSING, f"refusing to overwrite: {problems[0]}{more}")


def _cell_metadata(folder: RunFolder, cells: dict[str, CyclerStep]) -> dict[str, dict[str, Any]]:
    """Per channel: the cell as its protocol describes it (for the BDF metadata and the simulated cell)."""
    out = {}
    for channel, step in cells.items():
        protocol = next((p for p in (load_protocol(c) for c in folder.protocol_copies())
                         if getattr(p, "cell", None) is not None and p.cell.channel == channel), None)
        cell = protocol.cell if protocol is not None else None
        out[channel] = {"cell": step.cell, "channel": channel, "protocol": step.protocol,
                        "active_mass_g": cell.active_mass_g if cell else None,
                        "area_cm2": cell.area_cm2 if cell else None,
                        "active_material": cell.active_material if cell else None,
                        "theoretical_capacity_mah_g": cell.theoretical_capacity_mah_g if cell else None}
    return out


def _write_outputs(folder: RunFolder, journal: Journal, cells: dict[str, CyclerStep],
                   metadata: dict[str, dict[str, Any]]) -> None:
    """datasets.json (links to every TopSpin dataset), per-cell cycle summaries, summary.json."""
    folder.write_json(DATASETS_FILE, [
        {"dataset_dir": str(Path(d["path"]).parent.parent), "name": d["dataset"], "expno": d["expno"],
         "path": d["path"], "temperature_k": d["temperature_k"], "sample_temperature_k": d["sample_temperature_k"],
         "setpoint_k": d["setpoint_k"], "mixing_time_s": d["mixing_time_s"], "status": d["status"],
         "note": d["note"], "step": d["idx"]}
        for d in journal.datasets()
    ])
    cycling = {}
    for channel, step in cells.items():
        bdf = folder.cycler / f"{step.cell}.csv"
        mass_g = metadata[channel]["active_mass_g"]
        if bdf.exists() and mass_g:
            try:
                summary, _ = summarize_cycling(bdf, mass_g, equilibrium_v=LI2S_EQUILIBRIUM_V)
            except AnalysisInputError as exc:  # e.g. a channel stopped before its second sample
                log.warning("no cycle summary for %s: %s", step.cell, exc)
                continue
            write_cycle_csv(summary["cycles"], folder.cycler / f"{step.cell}.cycles.csv")
            cycling[step.cell] = {"cycles": summary["n_cycles"], "bdf": str(bdf),
                                  "mean_coulombic_efficiency_pct": summary["average"]["coulombic_efficiency_pct"]}
    write_report(folder, journal, cycling)
    records = journal.steps()
    folder.write_json(SUMMARY_FILE, {
        "state": journal.meta().get("state"),
        "steps": {status: sum(1 for r in records if r.status == status)
                  for status in ("done", "failed", "skipped", "pending", "running")},
        "datasets": {status: sum(1 for d in journal.datasets() if d["status"] == status)
                     for status in ("done", "partial", "flagged", "failed")},
        "cycling": cycling,
    })


def run_status(run_dir: str | Path) -> dict[str, Any]:
    """What a run is doing (or did), from its journal: for `exsylab status` and scripts."""
    folder = open_run_folder(Path(run_dir))
    if not folder.journal.exists():
        raise InputError(folder.root, "RUN_DIR", MISSING, "the run has not started (no journal yet): `exsylab resume` starts it")
    journal = Journal(folder.journal)
    try:
        records = journal.steps()
        meta = journal.meta()
        alive = runner_alive(folder)
        command = folder.control.read_text().strip() if folder.control.exists() else "run"
        state = meta.get("state", "unknown")
        if state == "running" and not alive:
            state = "interrupted (resume with `exsylab resume`)"
        elif alive and command == "pause":
            state = "paused"
        return {
            "run_dir": str(folder.root),
            "state": state,
            "runner_alive": alive,
            "steps": {status: sum(1 for r in records if r.status == status)
                      for status in ("pending", "running", "done", "failed", "skipped")},
            "lanes": eta_from_records(records),
            "datasets": journal.datasets(),
            "recent_events": journal.events(limit=10),
            "failed": [{"index": r.index, "label": r.label, "error": r.outcome.get("error", "")}
                       for r in records if r.status == "failed"],
        }
    finally:
        journal.close()


def request_control(run_dir: str | Path, command: str) -> None:
    """pause / stop / run (resume) a live runner from another process."""
    folder = open_run_folder(Path(run_dir))
    if not runner_alive(folder):
        raise InputError(folder.root, "RUN_DIR", MISSING, "no runner is running this folder")
    control_mod.request(folder, command)  # type: ignore[arg-type]
