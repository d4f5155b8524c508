"""Neware BTS .nda and .ndax files, read with NewareNDA (d-cogswell/NewareNDA), turned into BDF columns.

NewareNDA gives one row per record: `Cycle` (its "charge first" cycle number), `Step` and
`Step_Index`, `Status` (CC_Chg, CC_DChg, CV_Chg, Rest, ...), `Time` (s since the step began),
`Voltage`, `Current(mA)` (negative on discharge), `Charge_Capacity(mAh)` and
`Discharge_Capacity(mAh)` (both reset at every step) and `Timestamp` (instrument local time).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from analysis.errors import AnalysisInputError
from common.bdf_columns import CHARGE_AH, CURRENT, CYCLE, DISCHARGE_AH, STEP_COUNT, STEP_INDEX, TEST_TIME, VOLTAGE

from .model import CyclingData, cumulative_from_step_counter, library_version, step_count_of

_NEEDED = ("Cycle", "Step", "Step_Index", "Time", "Voltage", "Current(mA)", "Charge_Capacity(mAh)",
           "Discharge_Capacity(mAh)")


def test_time_s(step: np.ndarray, step_time_s: np.ndarray) -> np.ndarray:
    """Time since the test started: each step starts where the previous one's last record left off."""
    new_step = np.concatenate([[False], step[1:] != step[:-1]])
    ends = np.where(new_step, np.concatenate([[0.0], step_time_s[:-1]]), 0.0)
    return np.cumsum(ends) + step_time_s


def read(path: Path) -> CyclingData:
    """An .nda/.ndax file as BDF columns; Neware's cycle numbers as NewareNDA reports them."""
    import NewareNDA

    frame = NewareNDA.read(str(path), log_level="ERROR")
    missing = [c for c in _NEEDED if c not in frame.columns]
    if missing:
        raise AnalysisInputError(f"{path}: NewareNDA gave no {', '.join(missing)} column")
    if frame.empty:
        raise AnalysisInputError(f"{path}: no records")
    step = frame["Step"].to_numpy()
    step_count = step_count_of(step)
    columns = {
        TEST_TIME: test_time_s(step, frame["Time"].to_numpy(dtype=float)),
        VOLTAGE: frame["Voltage"].to_numpy(dtype=float), CURRENT: frame["Current(mA)"].to_numpy(dtype=float) * 1e-3,
        CYCLE: frame["Cycle"].to_numpy(dtype=int), STEP_COUNT: step_count,
        STEP_INDEX: frame["Step_Index"].to_numpy(dtype=int),
        CHARGE_AH: cumulative_from_step_counter(frame["Charge_Capacity(mAh)"].to_numpy(dtype=float), step_count) * 1e-3,
        DISCHARGE_AH: cumulative_from_step_counter(frame["Discharge_Capacity(mAh)"].to_numpy(dtype=float),
                                                   step_count) * 1e-3,
    }
    vendor = NewareNDA.read_metadata(str(path)) if hasattr(NewareNDA, "read_metadata") else {}
    metadata: dict[str, Any] = {
        "source_file": str(path), "reader": library_version("NewareNDA"),
        "start_time_local": str(frame["Timestamp"].iloc[0]) if "Timestamp" in frame.columns else None,
        "time_zone": "unknown: Neware stores local time without a zone, so no Unix Time column is written",
        "capacity_source": "Charge_Capacity(mAh) and Discharge_Capacity(mAh), per step, summed over steps",
        "vendor_metadata": {k: v for k, v in vendor.items() if isinstance(v, (str, int, float))},
    }
    mass_mg = vendor.get("active_mass_mg")
    if isinstance(mass_mg, (int, float)) and mass_mg > 0:
        metadata["active_mass_g"] = float(mass_mg) * 1e-3
        metadata["active_mass_source"] = "the Neware file's active mass"
    return CyclingData(columns, metadata)
