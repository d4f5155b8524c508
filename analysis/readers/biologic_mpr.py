"""BioLogic EC-Lab .mpr files, read with galvani (echemdata/galvani), turned into BDF columns.

galvani gives EC-Lab's own columns: `time/s` since the technique started, `Ewe/V`, `I/mA` or
`<I>/mA` where EC-Lab recorded it, `dq/mA.h` (charge since the previous point, + on charge),
`half cycle`, `cycle number` (when recorded) and `Ns` (the sequence of the technique).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from analysis.errors import AnalysisInputError
from common.bdf_columns import CHARGE_AH, CURRENT, CYCLE, DISCHARGE_AH, STEP_COUNT, STEP_INDEX, TEST_TIME, VOLTAGE

from .model import CyclingData, library_version, step_count_of


def _current_a(data: np.ndarray, names: tuple[str, ...], time_s: np.ndarray) -> tuple[np.ndarray, str]:
    """The measured current in A and the column it came from; from dq over dt where EC-Lab saved no current."""
    for name in ("I/mA", "<I>/mA"):
        if name in names:
            return np.asarray(data[name], dtype=float) * 1e-3, name
    if "dq/mA.h" not in names:
        raise AnalysisInputError("no current column (I/mA, <I>/mA) and no dq/mA.h to derive one from")
    dq_ah = np.asarray(data["dq/mA.h"], dtype=float) * 1e-3
    dt_s = np.diff(time_s, prepend=time_s[0])
    current = np.divide(dq_ah * 3600.0, dt_s, out=np.zeros_like(dq_ah), where=dt_s > 0)
    return current, "dq/mA.h divided by the time since the previous point"


def read(path: Path) -> CyclingData:
    """An .mpr file's GCPL-style data as BDF columns; EC-Lab's cycle numbers kept (from half cycles when absent)."""
    from galvani import BioLogic

    mpr = BioLogic.MPRfile(str(path))
    data = mpr.data
    names = tuple(data.dtype.names or ())
    missing = [n for n in ("time/s", "Ewe/V") if n not in names]
    if missing:
        raise AnalysisInputError(f"{path}: the .mpr file has no {', '.join(missing)} column (columns: {', '.join(names)})")
    time_s = np.asarray(data["time/s"], dtype=float)
    current_a, current_source = _current_a(data, names, time_s)
    if "dq/mA.h" in names:
        dq_ah = np.asarray(data["dq/mA.h"], dtype=float) * 1e-3
    else:  # integrate the current (trapezoid) where EC-Lab saved no charge increments
        dq_ah = np.concatenate([[0.0], 0.5 * (current_a[1:] + current_a[:-1]) * np.diff(time_s) / 3600.0])
    if "cycle number" in names:
        cycle, cycle_source = np.asarray(data["cycle number"], dtype=float).astype(int), "cycle number"
    elif "half cycle" in names:
        cycle, cycle_source = np.asarray(data["half cycle"]).astype(int) // 2, "half cycle // 2 (EC-Lab's cycle)"
    else:
        raise AnalysisInputError(f"{path}: the .mpr file has no cycle number or half cycle column")
    step_id = np.asarray(data["Ns"]).astype(int) if "Ns" in names else np.zeros(len(time_s), dtype=int)
    columns = {
        TEST_TIME: time_s - time_s[0], VOLTAGE: np.asarray(data["Ewe/V"], dtype=float), CURRENT: current_a,
        CYCLE: cycle, STEP_COUNT: step_count_of(step_id), STEP_INDEX: step_id,
        CHARGE_AH: np.cumsum(np.clip(dq_ah, 0.0, None)), DISCHARGE_AH: np.cumsum(np.clip(-dq_ah, 0.0, None)),
    }
    start = getattr(mpr, "timestamp", None) or getattr(mpr, "startdate", None)
    metadata = {
        "source_file": str(path), "reader": library_version("galvani"),
        "start_time_local": str(start) if start is not None else None,
        "time_zone": "unknown: EC-Lab stores local time without a zone, so no Unix Time column is written",
        "test_time_origin_s": float(time_s[0]), "current_source": current_source, "cycle_source": cycle_source,
        "capacity_source": "dq/mA.h summed by sign" if "dq/mA.h" in names else "current integrated",
        "vendor_columns": list(names),
    }
    return CyclingData(columns, metadata)
