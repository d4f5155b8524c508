"""Battery Data Format (BDF) CSV files for cycler data: writing crash-safe, reading, per-cycle summary.

One file per cell, `Institution__Cell__YYYYMMDD_NNN.bdf.csv`, with the BDF preferred labels as
header and a metadata JSON beside it (`....bdf.json`, the sidecar BDF's JSON parser looks for).
Capacity columns are cumulative since the start of the test (never reset), as BDF validators
expect; the cycle count rises when a charge follows a discharge (a Li2S cathode starts
discharged, so every cycle begins with a charge). Ambient temperature and applied pressure are
constant columns, written when the station and the cell description give them.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from drivers.cycler import CyclerSample

from common.bdf_columns import (AMBIENT_TEMPERATURE, APPLIED_PRESSURE, BDF_SUFFIX, CHARGE_AH, CURRENT, CYCLE,
                                DISCHARGE_AH, INT_COLUMNS, STEP_COUNT, STEP_INDEX, TEST_TIME, UNIX_TIME, VOLTAGE,
                                bdf_file_name, canonical_label)
from common.bdf_columns import COLUMNS as BDF_COLUMNS

CONSTANT_KEYS = {AMBIENT_TEMPERATURE: "ambient_temperature_degc", APPLIED_PRESSURE: "applied_pressure_pa"}
"""Constant column -> the metadata key that carries its value."""


class BdfError(Exception):
    """A BDF file that cannot be written or read as asked."""


def metadata_path(path: Path) -> Path:
    """Where the metadata JSON of a BDF CSV lives: `cell.bdf.csv` -> `cell.bdf.json`."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".csv") + ".json")


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _complete_lines(path: Path) -> int:
    """Truncate a torn last line (a crash mid-row) and return the file size kept."""
    with open(path, "rb+") as f:
        data = f.read()
        keep = data.rfind(b"\n") + 1
        if keep != len(data):
            f.truncate(keep)
        return keep


def find_cell_bdf(cycler_dir: Path, cell: str) -> Path | None:
    """The cell's BDF file already in a run's cycler folder (an older run's `CELL.csv` too), if any."""
    cycler_dir = Path(cycler_dir)
    legacy = cycler_dir / f"{cell}.csv"
    if legacy.exists():
        return legacy
    return next(iter(sorted(cycler_dir.glob(f"*__{cell}__*{BDF_SUFFIX}"))), None)


def cell_bdf_path(cycler_dir: Path, cell: str, institution: str, start_unix_s: float) -> Path:
    """The cell's BDF file: the one already there (a resumed run), else a new BDF-named one dated by the test start (UTC)."""
    date = time.strftime("%Y%m%d", time.gmtime(start_unix_s))
    return find_cell_bdf(cycler_dir, cell) or Path(cycler_dir) / bdf_file_name(institution, cell, date)


def file_header(path: Path) -> list[str]:
    """The canonical labels of a BDF CSV's header line."""
    with open(path, encoding="ascii", newline="") as f:
        first = f.readline()
    return [canonical_label(h) for h in next(csv.reader([first]))] if first.strip() else []


class BdfWriter:
    """Appends rows to one cell's BDF CSV; flushes every row and fsyncs per batch so a crash loses nothing written.

    A new file has `columns` (exsylab's cycler columns by default) and then each constant column
    whose value the metadata gives; an appended file keeps the header it has (older labels too).
    """

    def __init__(self, path: Path, metadata: dict, *, append: bool = False, columns: list[str] | None = None,
                 fsync_rows: int = 1000, fsync_interval_s: float = 1.0) -> None:
        self.path = Path(path)
        self.fsync_rows = fsync_rows
        self.fsync_interval_s = fsync_interval_s
        self.last_row: dict[str, float] | None = None
        self.last_cycle_has_discharge = False
        constants = {label: float(metadata[key]) for label, key in CONSTANT_KEYS.items()
                     if metadata.get(key) is not None}
        meta_file = metadata_path(self.path)
        if append and self.path.exists():
            _complete_lines(self.path)
            self.columns = file_header(self.path)
            existing = read_bdf(self.path)
            if len(existing[TEST_TIME]):
                self.last_row = {name: float(values[-1]) for name, values in existing.items()}
                in_last_cycle = existing[CYCLE] == existing[CYCLE][-1]
                self.last_cycle_has_discharge = bool(np.any(existing[CURRENT][in_last_cycle] < 0))
            old_meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.exists() else {}
            old_meta.update(metadata)
            old_meta["resumed_count"] = int(old_meta.get("resumed_count", 0)) + 1
            _write_json_atomic(meta_file, old_meta)
            self._file = open(self.path, "a", encoding="ascii", newline="")
        else:
            if self.path.exists():
                raise BdfError(f"BDF file {self.path} exists; refusing to overwrite (use append=True to resume)")
            self.columns = [*(columns or BDF_COLUMNS), *(c for c in constants if c not in (columns or ()))]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _write_json_atomic(meta_file, {**metadata, "format": "Battery Data Format CSV",
                                           "columns": self.columns, "capacity_columns": "cumulative since test start"})
            self._file = open(self.path, "x", encoding="ascii", newline="")
            self._file.write(",".join(self.columns) + "\n")
            self._sync()
        self.constants = {c: constants.get(c, (self.last_row or {}).get(c)) for c in CONSTANT_KEYS if c in self.columns}
        self._unsynced = 0
        self._last_sync = time.monotonic()

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._unsynced = 0
        self._last_sync = time.monotonic()

    def write_row(self, values: dict[str, float]) -> None:
        """Append one row given by label (constant columns filled in; flushed at once, fsynced per batch)."""
        row = {**self.constants, **values}
        present = [row.get(c) for c in self.columns]
        if None in present:
            raise BdfError(f"{self.path}: row without {[c for c, v in zip(self.columns, present) if v is None]}")
        numbers = [float(v) for v in present if v is not None]
        if not math.isfinite(sum(numbers)):  # any nan/inf makes the sum non-finite
            raise BdfError(f"{self.path}: refusing a non-finite value in row {dict(zip(self.columns, numbers))}")
        self._file.write(",".join(str(int(v)) if c in INT_COLUMNS else repr(v)
                                  for c, v in zip(self.columns, numbers)) + "\n")
        self._file.flush()
        self._unsynced += 1
        if self._unsynced >= self.fsync_rows or time.monotonic() - self._last_sync >= self.fsync_interval_s:
            self._sync()

    def write(self, sample: CyclerSample, cycle: int, step_count: int, step_index: int,
              charge_capacity_ah: float, discharge_capacity_ah: float) -> None:
        """Append one cycler sample with its counters and cumulative capacities."""
        self.write_row({TEST_TIME: sample.test_time_s, VOLTAGE: sample.voltage_v, CURRENT: sample.current_a,
                        CYCLE: cycle, STEP_COUNT: step_count, STEP_INDEX: step_index, CHARGE_AH: charge_capacity_ah,
                        DISCHARGE_AH: discharge_capacity_ah, UNIX_TIME: sample.unix_time_s})

    def close(self) -> None:
        """Flush, fsync and close."""
        if not self._file.closed:
            self._sync()
            self._file.close()

    def __enter__(self) -> "BdfWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BdfRecorder:
    """Turns a channel's samples into BDF rows: cycle and step counting, cumulative capacities."""

    def __init__(self, writer: BdfWriter) -> None:
        self.writer = writer
        last = writer.last_row or {}
        self.cycle = int(last.get(CYCLE, 1))
        self.step_count = int(last.get(STEP_COUNT, 0))
        self.charge_total_ah = float(last.get(CHARGE_AH, 0.0))
        self.discharge_total_ah = float(last.get(DISCHARGE_AH, 0.0))
        self._cycle_has_discharge = writer.last_cycle_has_discharge

    def begin_step(self, mode: str, step_index: int, *, start_capacity_ah: float = 0.0
                   ) -> Callable[[CyclerSample, float, float], None]:
        """Start a step (or resume one already `start_capacity_ah` in); returns the on_sample callback."""
        resumed = start_capacity_ah > 0
        if not resumed:
            if mode == "charge" and self._cycle_has_discharge:
                self.cycle += 1
                self._cycle_has_discharge = False
            self.step_count += 1
        if mode == "discharge":
            self._cycle_has_discharge = True
        charge_base = self.charge_total_ah - (start_capacity_ah if mode == "charge" else 0.0)
        discharge_base = self.discharge_total_ah - (start_capacity_ah if mode == "discharge" else 0.0)
        cycle, step_count = self.cycle, self.step_count

        def on_sample(sample: CyclerSample, step_capacity_ah: float, _step_time_s: float) -> None:
            charge = charge_base + (step_capacity_ah if mode == "charge" else 0.0)
            discharge = discharge_base + (step_capacity_ah if mode == "discharge" else 0.0)
            self.writer.write(sample, cycle, step_count, step_index, charge, discharge)
            self.charge_total_ah, self.discharge_total_ah = charge, discharge

        return on_sample


def read_bdf(path: Path) -> dict[str, np.ndarray]:
    """All columns of a BDF CSV by their BDF labels, older exsylab labels mapped (a torn last line is ignored)."""
    path = Path(path)
    with open(path, encoding="ascii", newline="") as f:
        text = f.read()
    lines = text.split("\n")
    if not lines or not lines[0]:
        raise BdfError(f"{path}: empty file, no BDF header")
    header = [canonical_label(h) for h in next(csv.reader([lines[0]]))]
    missing = [c for c in (TEST_TIME, VOLTAGE, CURRENT) if c not in header]
    if missing:
        raise BdfError(f"{path}: not a BDF file, missing required columns {missing}")
    body = lines[1:-1]  # the last element is '' after a final newline, or a torn row
    rows = [line.split(",") for line in body if line]
    for n, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise BdfError(f"{path}: line {n} has {len(row)} fields, header has {len(header)}")
    data = np.array(rows, dtype=float).reshape(len(rows), len(header))
    return {name: (data[:, k].astype(int) if name in INT_COLUMNS else data[:, k]) for k, name in enumerate(header)}
