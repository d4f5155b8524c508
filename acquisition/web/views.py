"""What the page and the JSON API show of a run, read from its folder: journal, plan, BDF files; never from the instruments.

The instruments belong to the run's lanes while it runs, so the server reports what the run
recorded (each reading with the time it was taken), never a query of its own on their wires.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from analysis.cycling import LI2S_EQUILIBRIUM_V, summarize_cycling
from analysis.readers.bdf_csv import load_bdf
from analysis.errors import AnalysisInputError
from common.bdf_columns import CURRENT, CYCLE, TEST_TIME, UNIX_TIME, VOLTAGE

from ..api import run_status
from ..journal import Journal
from ..run_folder import RunFolder

EXSY_KIND = "acquire_2d"
TRACE_POINTS = 500  # the sample-temperature and voltage traces sent to the page are thinned to this many


def run_snapshot(run_dir: Path) -> dict[str, Any]:
    """A run's state, lanes (step, done/total, ETA), datasets and the versions of its plots, for the page."""
    folder = RunFolder(run_dir)
    if not folder.journal.exists():
        return {"state": "starting", "lanes": {}, "datasets": [], "steps": {}, "versions": {}, "failed": []}
    status = run_status(run_dir)
    exsy = [d for d in status["datasets"] if d["kind"] == EXSY_KIND and d["status"] == "done"]
    latest = max(exsy, key=lambda d: d["at"]) if exsy else None
    cells = sorted(p.name.removesuffix(".csv") for p in folder.cycler.glob("*.csv") if not p.name.endswith(".cycles.csv"))
    versions = {"contour": f"{latest['dataset']}-{latest['expno']}" if latest else "",
                "buildup": str(len(exsy)) if exsy else "",
                "temperature": str(len(status["datasets"])) if status["datasets"] else "",
                **{f"cycling-{cell}": _bdf_version(folder.cycler / f"{cell}.csv") for cell in cells}}
    return {"state": status["state"], "runner_alive": status["runner_alive"], "steps": status["steps"],
            "lanes": status["lanes"], "failed": status["failed"], "cells": cells,
            "datasets": [{k: d[k] for k in ("dataset", "expno", "kind", "status", "temperature_k", "params", "at")}
                         for d in status["datasets"]],
            "latest_exsy": latest and {"dataset": latest["dataset"], "expno": latest["expno"],
                                       "temperature_k": latest["temperature_k"],
                                       "mixing_time_s": latest["params"].get("mixing_time_s")},
            "report": (folder.root / "report.md").exists(), "versions": versions}


def _bdf_version(bdf: Path) -> str:
    """Changes whenever rows are added (the size of the file), so the page fetches the plot again."""
    try:
        return str(bdf.stat().st_size)
    except OSError:
        return ""


def _thin(points: list[Any]) -> list[Any]:
    step = max(1, len(points) // TRACE_POINTS)
    return points[::step] if step > 1 else points


def instrument_state(run_dir: Path) -> dict[str, Any]:
    """The instruments as the run last recorded them: VT set point and sample temperature trace, MAS rate, cyclers."""
    folder = RunFolder(run_dir)
    out: dict[str, Any] = {"vt": None, "cyclers": {}}
    if folder.journal.exists():
        out["vt"] = _vt_state(folder)
    for bdf in sorted(folder.cycler.glob("*.csv")):
        if bdf.name.endswith(".cycles.csv"):
            continue
        cell = bdf.name.removesuffix(".csv")
        row = _last_row(bdf)
        if row is not None:
            out["cyclers"][cell] = row
    return out


def temperature_trace(folder: RunFolder) -> list[tuple[float, float, float | None]]:
    """(Unix time, sample K, set point K) pairs the NMR lane recorded: step ends, acquisition starts and ends."""
    journal = Journal(folder.journal)
    try:
        steps = journal.steps()
    finally:
        journal.close()
    points: list[tuple[float, float, float | None]] = []
    for s in steps:
        o = s.outcome
        setpoint = o.get("setpoint_k")
        if s.started_at is not None and isinstance(o.get("sample_start_k"), (int, float)):
            points.append((s.started_at, float(o["sample_start_k"]), setpoint))
        for key in ("sample_end_k", "sample_k"):
            if s.ended_at is not None and isinstance(o.get(key), (int, float)):
                points.append((s.ended_at, float(o[key]), setpoint))
                break
    return _thin(sorted(points, key=lambda p: p[0]))


def _vt_state(folder: RunFolder) -> dict[str, Any] | None:
    trace = temperature_trace(folder)
    mas = _mas_rate_hz(folder)
    if not trace and mas is None:
        return None
    last = trace[-1] if trace else None
    return {"sample_k": last[1] if last else None, "setpoint_k": last[2] if last else None,
            "at": last[0] if last else None, "mas_rate_hz": mas,
            "trace": [{"at": t, "sample_k": k} for t, k, _ in trace]}


def _mas_rate_hz(folder: RunFolder) -> float | None:
    """The MAS rate the plan's acquisitions ask for (the simulated probe spins at it; a real one is set by hand)."""
    try:
        steps = json.loads(folder.plan.read_text())["steps"]
    except (OSError, ValueError, KeyError):
        return None
    rates = [s["acquisition"]["mas_rate_hz"] for s in steps if isinstance(s.get("acquisition"), dict)
             and s["acquisition"].get("mas_rate_hz") is not None]
    return float(rates[0]) if rates else None


def _last_row(bdf: Path) -> dict[str, Any] | None:
    """The newest complete row of a cell's BDF file: voltage, current, cycle, when."""
    try:
        with open(bdf, "rb") as handle:
            header = handle.readline().decode("utf-8", "replace").strip().split(",")
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 4096))
            lines = handle.read().decode("utf-8", "replace").split("\n")
    except OSError:
        return None
    complete = [line for line in lines[:-1] if line.strip()]  # the last piece may be a row being written
    if not complete or complete[-1].strip().split(",") == header:
        return None
    values = dict(zip(header, complete[-1].strip().split(",")))
    try:
        return {"voltage_v": float(values[VOLTAGE]), "current_a": float(values[CURRENT]),
                "cycle": int(float(values[CYCLE])), "at": float(values[UNIX_TIME]) if UNIX_TIME in values else None,
                "test_time_s": float(values[TEST_TIME])}
    except (KeyError, ValueError):
        return None


def cycling_data(bdf: Path) -> dict[str, Any] | None:
    """Voltage against time and capacity / CE per cycle of one cell so far; None before two rows exist."""
    try:
        summary, _ = summarize_cycling(bdf, equilibrium_v=LI2S_EQUILIBRIUM_V)
        columns = load_bdf(bdf)
    except AnalysisInputError:  # fewer than two rows yet, a row being written, or no mass in the metadata
        return None
    points = _thin(list(zip(columns[TEST_TIME].tolist(), columns[VOLTAGE].tolist())))
    return {"voltage": [{"test_time_s": t, "voltage_v": v} for t, v in points],
            "cycles": [{k: c.get(k) for k in ("cycle", "charge_mah_per_g", "discharge_mah_per_g", "coulombic_efficiency_pct")} for c in summary["cycles"]]}
