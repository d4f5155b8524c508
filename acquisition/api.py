"""The Python API behind the CLI: start a run, resume it, ask its status, pause or stop it."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from analysis.cycling import LI2S_EQUILIBRIUM_V, summarize_cycling, write_cycle_csv
from analysis.errors import AnalysisInputError
from drivers.clock import Clock, VirtualClock
from protocols import InputError, Plan, load_plan, load_protocol
from protocols.errors import MISSING
from protocols.adaptive_step import AdaptiveExsy
from protocols.nmr_steps import FitCalibration
from protocols.plan import CyclerStep, MoveTemperature, Step
from protocols.station import StationSpec

from . import control as control_mod
from . import run_log
from .bdf import TEST_TIME, UNIX_TIME, cell_bdf_path, find_cell_bdf, read_bdf
from .control import Control, RunLock, runner_alive
from .calibration_run import run_fit_calibration
from .cycler_lane import CyclerLane, limits_of
from .adaptive_report import adaptive_status
from .program_cycler_lane import (ProgramCyclerLane, build_program_lane, check_programs, is_program_driver,
                                  stop_orphaned_jobs)
from .journal import Journal
from .nmr_lane import ACQUISITION_STEPS, NmrLane, planned_collisions
from .notify import Notifier
from .progress import ProgressView, eta_from_records
from .report import write_report
from .run_folder import (DATASETS_FILE, SUMMARY_FILE, RunFolder, check_new_run_dir, create_run_folder, open_run_folder,
                         restore_secrets)
from .runner import Runner, RunResult, StepContext
from .station_runtime import (OpenContext, PreflightRefused, Role, StationRuntime, cycler_role, make_clock,
                              open_station, roles_of)

log = logging.getLogger(__name__)


def start_run(protocol_paths: Sequence[str | Path], station_path: str | Path | None = None,
              run_dir: str | Path | None = None, *, show_progress: bool = True,
              seed: int = 0, signals: bool = False, station_held: bool = False) -> tuple[RunFolder, RunResult]:
    """Validate, compile, preflight the instruments, make the run folder, and run to the end (or failure, or stop).

    `signals` (the CLI's choice): Ctrl-C pauses, twice stops, SIGTERM stops, for the run's duration only.
    `station_held`: the caller (exsylab serve) holds every real instrument's lock already.
    Nothing is created before every real instrument the plan uses has been locked, opened and
    checked: a refusal is an InputError naming the station file, the instrument and the reason.
    """
    plan, station = load_plan(protocol_paths, station_path)
    check_programs(plan, station, station_path or "built-in simulated station")
    if run_dir is None:
        from .run_folder import default_run_dir

        run_dir = default_run_dir(Path("runs"), "-".join(plan.protocols)[:60])
    root = Path(run_dir).resolve()
    check_new_run_dir(root)
    roles = roles_of(station, plan.lanes)
    clock = make_clock(station, roles, virtual_start_s=time.time())
    cells = _cell_metadata(plan, [load_protocol(p) for p in protocol_paths], station)
    ctx = OpenContext(workdir=root, seed=seed, cells=cells, templates=plan.templates(), station_held=station_held)
    _refuse_collisions(root, plan, station, started=set())
    source = station_path or "built-in simulated station"
    runtime = _open(station, source, clock, roles, ctx, root, real=True)
    try:
        folder = create_run_folder(root, [Path(p) for p in protocol_paths], Path(station_path) if station_path else None)
        folder.write_json("plan.json", plan.to_json_dict())
        journal = Journal(folder.journal)
        journal.set_meta(created_at=time.time(), virtual_time=isinstance(clock, VirtualClock), seed=seed)
        journal.close()
        try:
            _open(station, source, clock, roles, ctx, root, real=False, runtime=runtime)
        except InputError:  # a simulated instrument refused: nothing ran, so the folder just made goes again
            runtime.close()
            shutil.rmtree(root, ignore_errors=True)
            raise
    except BaseException:
        runtime.close()
        raise
    return folder, _execute(folder, plan, runtime, cells, show_progress=show_progress, signals=signals)


def resume_run(run_dir: str | Path, *, show_progress: bool = True, signals: bool = False,
               station_held: bool = False) -> tuple[RunFolder, RunResult | None]:
    """Resume: un-pause a live runner, or restart a dead one at the first unfinished step (station_held: as start_run)."""
    folder = open_run_folder(Path(run_dir))
    if runner_alive(folder):
        control_mod.request(folder, "run")
        return folder, None
    protocols = folder.protocol_copies()
    station_copy = folder.station_copy()
    plan, station = load_plan(protocols, station_copy)
    check_programs(plan, station, station_copy or "built-in simulated station")
    restore_secrets(folder, station)  # the copy leaves the webhook token out
    if folder.plan.exists():
        recorded = json.loads(folder.plan.read_text())
        if [s["label"] for s in recorded["steps"]] != [s.label for s in plan.steps]:
            raise InputError(folder.plan, "steps", MISSING, "the inputs in the run folder no longer compile to the recorded plan")
    else:  # the run was killed before it got going: start it now
        folder.write_json("plan.json", plan.to_json_dict())
    journal = Journal(folder.journal)
    meta = journal.meta()
    _refuse_collisions(folder.root, plan, station, started={r.index for r in journal.steps() if r.status != "pending"})
    recorded_times = [t for t in [journal.last_time(), *(_last_unix_time(p) for p in folder.cycler.glob("*.csv"))]
                      if t is not None]
    journal.close()
    roles = roles_of(station, plan.lanes)
    # a resumed virtual run continues after the last moment anything was recorded: time never runs backwards
    clock = make_clock(station, roles, virtual_start_s=max(recorded_times) if recorded_times else time.time())
    cells = _cell_metadata(plan, [load_protocol(p) for p in protocols], station)
    # the run's seed again: simulated data are fixed by it and the point (a resumed run writes what an uninterrupted one would)
    ctx = OpenContext(workdir=folder.root, seed=int(meta.get("seed", 0)), cells=cells, templates=plan.templates())
    source = station_copy or "built-in simulated station"
    runtime = _open(station, source, clock, roles, ctx, folder.root, real=True)
    try:
        _open(station, source, clock, roles, ctx, folder.root, real=False, runtime=runtime)
    except BaseException:
        runtime.close()
        raise
    return folder, _execute(folder, plan, runtime, cells, show_progress=show_progress, signals=signals)


def _open(station: StationSpec, source: str | Path, clock: Clock, roles: list[Role], ctx: OpenContext, root: Path,
          *, real: bool, runtime: StationRuntime | None = None) -> StationRuntime:
    """Open the real (or the simulated) instruments of the run; a refusal becomes one InputError line."""
    try:
        return open_station(station, clock, roles, ctx, holder=f"exsylab run {root}", runtime=runtime,
                            phase=(lambda r: not r.simulated) if real else (lambda r: r.simulated))
    except PreflightRefused as exc:
        raise InputError(source, exc.field, exc.address, exc.reason) from None


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


def _execute(folder: RunFolder, plan: Plan, runtime: StationRuntime, cells: dict[str, dict[str, Any]], *,
             show_progress: bool, signals: bool) -> RunResult:
    """Run the plan on the open station; its instruments are made safe and closed when it ends, however it ends."""
    lock = RunLock(folder)
    if not lock.acquire():
        runtime.close()
        raise InputError(folder.root, "RUN_DIR", MISSING,
                         f"a runner is already running this folder ({lock.holder() or 'holder unknown'})")
    journal = Journal(folder.journal)
    notifier = Notifier(runtime.station.notifications)
    tag = str(folder.root)
    try:
        with run_log.capture(folder.logs / "run.log", tag):
            if lock.takeover:
                log.warning("%s", lock.takeover)
            for message in runtime.locks.takeovers if runtime.locks is not None else ():
                log.warning("%s", message)
            result = _run_lanes(folder, plan, runtime, cells, journal, notifier, tag,
                                show_progress=show_progress, signals=signals)
            _write_outputs(folder, journal, cells)
            return result
    finally:
        notifier.close()
        journal.close()
        lock.release()


def _run_lanes(folder: RunFolder, plan: Plan, runtime: StationRuntime, cells: dict[str, dict[str, Any]],
               journal: Journal, notifier: Notifier, tag: str, *, show_progress: bool, signals: bool) -> RunResult:
    """Build the lanes and run them; afterwards the cell files are closed and the instruments safe."""
    lanes: dict[str, Any] = {}
    try:
        for role, summary in runtime.summaries.items():
            log.info("preflight %s: %s", role, summary)
        control = Control(folder)
        control_mod.request(folder, "run")
        lanes.update(build_lanes(plan, runtime, folder, cells))
        view = ProgressView(plan, runtime.clock, journal.steps()) if show_progress else None
        runner = Runner(plan, journal, lanes, runtime.clock, control, notifier,
                        on_step=view.on_step if view else None, on_estimate=view.on_estimate if view else None,
                        on_note=view.on_note if view else None,
                        log_tag=tag)
        with contextlib.ExitStack() as stack:
            if signals:
                stack.enter_context(control_mod.handle_signals(control))
            if view is not None:
                stack.enter_context(view)
            return runner.run()
    finally:
        for lane in lanes.values():
            if isinstance(lane, (CyclerLane, ProgramCyclerLane)):
                lane.close()
        runtime.close()


def _nmr_lane(lane: str, steps: list[Step], runtime: StationRuntime, folder: RunFolder,
              cells: dict[str, dict[str, Any]]) -> NmrLane:
    spec = runtime.station.spectrometer
    assert runtime.vt is not None and runtime.spectrometer is not None  # roles_of opened both for the nmr lane
    def fit_calibration(step: FitCalibration, ctx: StepContext) -> dict[str, Any]:
        return run_fit_calibration(step, ctx, folder.root, runtime.station, folder.station_copy())

    nmr = NmrLane(runtime.spectrometer, runtime.vt, overdue_factor=spec.overdue_factor if spec else 1.5,
                  fit_calibration=fit_calibration)
    mas_rates = [a.mas_rate_hz for s in steps if (a := getattr(s, "acquisition", None)) is not None]
    setpoints_only = any(isinstance(s, MoveTemperature) and s.temperature_is_setpoint for s in steps)
    if mas_rates and not setpoints_only:  # a calibration run measures the sample against plain set points
        runtime.vt.calibration = runtime.calibration_for(mas_rates[0])
    return nmr


def _cycler_lane(lane: str, steps: list[Step], runtime: StationRuntime, folder: RunFolder,
                 cells: dict[str, dict[str, Any]]) -> CyclerLane | ProgramCyclerLane:
    """A host-driven lane on a source-meter, or the program-cycler lane when the registry says the driver runs programs."""
    first = steps[0]
    assert isinstance(first, CyclerStep)
    bdf = cell_bdf_path(folder.cycler, first.cell, runtime.station.institution, runtime.clock.now())
    spec = runtime.station.cyclers[first.channel]
    meta = {**cells.get(first.channel, {}), "instrument": runtime.summaries.get(cycler_role(first.channel), ""),
            "resource": spec.resource}
    cycler_steps = [s for s in steps if isinstance(s, CyclerStep)]
    if is_program_driver(spec.driver):
        return build_program_lane(cycler_steps, runtime.cyclers[first.channel], bdf, meta, folder.root,
                                  spec.poll_interval_s, runtime.clock)
    channel = runtime.cycler_channel(first.channel, limits_of(first), _test_start_unix_s(bdf))
    return CyclerLane(channel, bdf, meta, cycler_steps)


LANE_BUILDERS: dict[str, Callable[..., Any]] = {"nmr": _nmr_lane, "cycler": _cycler_lane}
"""Lane name (before any ':') -> the function that builds its executor on the open station."""


def build_lanes(plan: Plan, runtime: StationRuntime, folder: RunFolder,
                cells: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One executor per lane of the plan, on the open station; cycler data go to the run folder."""
    return {lane: LANE_BUILDERS[lane.split(":", 1)[0]](lane, steps, runtime, folder, cells)
            for lane, steps in plan.lanes.items()}


def _refuse_collisions(root: Path, plan: Plan, station: StationSpec, started: set[int]) -> None:
    """An expno of a step yet to run that already holds data is refused before any instrument is opened."""
    acquisitions = [s for s in plan.steps if isinstance(s, ACQUISITION_STEPS) and s.index not in started]
    # an adaptive step may write any expno from its start to start + max_points - 1
    acquisitions += [s.point_step(n, s.temperatures_k[0], s.seed_mixing_times_s[0]) for s in plan.steps
                     if isinstance(s, AdaptiveExsy) and s.index not in started for n in range(s.max_points)]
    if not acquisitions or station.spectrometer is None:
        return
    _, data_dir = station.spectrometer.folders(root)
    problems = planned_collisions(data_dir, acquisitions)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InputError(root, "expno", MISSING, f"refusing to overwrite: {problems[0]}{more}")


def _ambient_temperature_degc(station: StationSpec, channel: str) -> float | None:
    """Around the cell: the cycler entry's `ambient_temperature`, else the VT unit's `ambient` when the station
    file states it; None (no BDF column) when neither does."""
    cycler = station.cyclers.get(channel)
    if cycler is not None and cycler.ambient_temperature_k is not None:
        return round(cycler.ambient_temperature_k - 273.15, 6)
    if station.vt is not None and "ambient_k" in station.vt.model_fields_set:
        return round(station.vt.ambient_k - 273.15, 6)
    return None


def _cell_metadata(plan: Plan, protocols: list[Any], station: StationSpec) -> dict[str, dict[str, Any]]:
    """Per channel: the cell as its protocol describes it (for the BDF metadata and the simulated cell)."""
    out = {}
    cells = {s.channel: s for s in plan.steps if isinstance(s, CyclerStep)}
    for channel, step in cells.items():
        protocol = next((p for p in protocols if getattr(p, "cell", None) is not None and p.cell.channel == channel), None)
        cell = protocol.cell if protocol is not None else None
        out[channel] = {"cell": step.cell, "channel": channel, "protocol": step.protocol,
                        "active_mass_g": cell.active_mass_g if cell else None,
                        "area_cm2": cell.area_cm2 if cell else None,
                        "active_material": cell.active_material if cell else None,
                        "theoretical_capacity_mah_g": cell.theoretical_capacity_mah_g if cell else None,
                        "applied_pressure_pa": cell.pressure_pa if cell else None,
                        "ambient_temperature_degc": _ambient_temperature_degc(station, channel)}
    return out


def _write_outputs(folder: RunFolder, journal: Journal, metadata: dict[str, dict[str, Any]]) -> None:
    """datasets.json (links to every TopSpin dataset, any step kind), per-cell cycle summaries, summary.json."""
    folder.write_json(DATASETS_FILE, [
        {"dataset_dir": str(Path(d["path"]).parent.parent), "name": d["dataset"], "expno": d["expno"],
         "path": d["path"], "kind": d["kind"], "temperature_k": d["temperature_k"],
         "sample_temperature_k": d["sample_temperature_k"], "setpoint_k": d["setpoint_k"], "params": d["params"],
         "status": d["status"], "note": d["note"], "step": d["idx"]}
        for d in journal.datasets()
    ])
    cycling = {}
    for meta in metadata.values():
        bdf = find_cell_bdf(folder.cycler, meta["cell"])
        mass_g = meta["active_mass_g"]
        if bdf is not None and mass_g:
            try:
                summary, _ = summarize_cycling(bdf, mass_g, equilibrium_v=LI2S_EQUILIBRIUM_V)
            except AnalysisInputError as exc:  # e.g. a channel stopped before its second sample
                log.warning("no cycle summary for %s: %s", meta["cell"], exc)
                continue
            write_cycle_csv(summary["cycles"], folder.cycler / f"{meta['cell']}.cycles.csv")
            cycling[meta["cell"]] = {"cycles": summary["n_cycles"], "bdf": str(bdf),
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
            "adaptive": adaptive_status(journal),
        }
    finally:
        journal.close()


def request_control(run_dir: str | Path, command: str) -> list[str]:
    """pause / stop / run (resume) a live runner from another process.

    `stop` with no runner alive stops the run's vendor jobs that still run on program cyclers
    (they outlive exsylab); returns one line per channel then, [] when a live runner was asked.
    """
    folder = open_run_folder(Path(run_dir))
    if not runner_alive(folder):
        if command == "stop" and folder.journal.exists():
            station_copy = folder.station_copy()
            plan, station = load_plan(folder.protocol_copies(), station_copy)
            restore_secrets(folder, station)
            lines = stop_orphaned_jobs(folder.root, plan, station, station_copy or "built-in simulated station")
            if lines:
                return lines
        raise InputError(folder.root, "RUN_DIR", MISSING, "no runner is running this folder")
    control_mod.request(folder, command)  # type: ignore[arg-type]
    return []
